//! The clients: each runs one operation at a time against a random member (following
//! redirects to the leader, as users do) and records what it sent and what it learned.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cluster::Endpoints;
use crate::linearizable::{KvOp, KvOutcome, Operation};
use crate::log_check::Append;
use crate::rng::Rng;

/// What the clients share.
#[derive(Clone)]
pub struct Shared {
    /// The members' API addresses.
    pub endpoints: Endpoints,
    /// When the run began (operation times count from it).
    pub start: Instant,
    /// Set when the clients should stop.
    pub stop: Arc<AtomicBool>,
    /// How long a client waits for an answer before calling the outcome unknown.
    pub timeout: Duration,
}

impl Shared {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn endpoint(&self, rng: &mut Rng) -> Option<String> {
        let e = match self.endpoints.read() {
            Ok(e) => e.clone(),
            Err(p) => p.into_inner().clone(),
        };
        (!e.is_empty()).then(|| e[rng.below(e.len() as u64) as usize].clone())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// How a request ended, from the client's side.
enum Answer {
    /// The status and the JSON body.
    Got(u16, Value),
    /// The request surely never reached a node (the connection was refused).
    NotSent,
    /// No answer: it may have been applied or not.
    Lost,
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            match r.json::<Value>().await {
                Ok(v) => Answer::Got(status, v),
                Err(_) => Answer::Lost,
            }
        }
        Err(e) if e.is_connect() => Answer::NotSent,
        Err(_) => Answer::Lost,
    }
}

/// Error codes that mean the write was never proposed, or surely not committed: the
/// operation did not happen.
fn surely_not_applied(body: &Value) -> bool {
    matches!(
        body["error"]["code"].as_str(),
        Some(
            "not_leader"
                | "no_leader"
                | "busy"
                | "overwritten"
                | "transfer_in_progress"
                | "bad_request"
                | "payload_too_large"
                | "too_many_reads"
        )
    )
}

/// The client's HTTP client: follows redirects (a follower sends writes to the leader).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())
}

/// A key-value client: reads, writes and compare-and-swaps on `keys`, until stopped. Its
/// history.
pub async fn kv_client(
    shared: Shared,
    client: usize,
    keys: Vec<String>,
    mut rng: Rng,
) -> Vec<Operation> {
    let Ok(http) = http_client(shared.timeout) else {
        return Vec::new();
    };
    let mut history = Vec::new();
    // What this client last saw in each key, to aim its compare-and-swaps.
    let mut seen: Vec<Option<String>> = vec![None; keys.len()];
    let mut n = 0u64;
    while !shared.stopped() {
        let Some(api) = shared.endpoint(&mut rng) else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let k = rng.below(keys.len() as u64) as usize;
        let key = &keys[k];
        let url = format!("http://{api}/v1/kv/{key}");
        n += 1;
        let value = format!("c{client}-{n}");
        let op = match rng.below(10) {
            0..=3 => KvOp::Read,
            4..=6 => KvOp::Write(value.clone()),
            _ => KvOp::Cas {
                expect: seen[k].clone(),
                new: value.clone(),
            },
        };
        let req = match &op {
            KvOp::Read => http.get(&url),
            KvOp::Write(v) => http.put(&url).json(&json!({ "value": v })),
            KvOp::Cas { expect, new } => http
                .put(&url)
                .json(&json!({ "value": new, "expect": expect })),
        };
        let invoke = shared.now();
        let answer = send(req).await;
        let complete = shared.now();
        let outcome = match (&op, answer) {
            (KvOp::Read, Answer::Got(200, v)) => {
                let got = v["value"].as_str().map(String::from);
                seen[k] = got.clone();
                Some(KvOutcome::Read(got))
            }
            (KvOp::Read, Answer::Got(404, v)) if v["error"]["code"] == "key_not_found" => {
                seen[k] = None;
                Some(KvOutcome::Read(None))
            }
            // A read that failed changed nothing and says nothing.
            (KvOp::Read, _) => None,
            (_, Answer::Got(200, _)) => {
                seen[k] = Some(value.clone());
                Some(KvOutcome::Ok)
            }
            (KvOp::Cas { .. }, Answer::Got(412, v)) => {
                seen[k] = v["error"]["current"]["value"].as_str().map(String::from);
                Some(KvOutcome::CasFailed)
            }
            (_, Answer::Got(_, v)) if surely_not_applied(&v) => None,
            (_, Answer::NotSent) => None,
            (_, Answer::Got(..) | Answer::Lost) => Some(KvOutcome::Unknown),
        };
        if let Some(outcome) = outcome {
            let complete = (outcome != KvOutcome::Unknown).then_some(complete);
            history.push(Operation {
                client,
                key: key.clone(),
                op,
                invoke,
                complete,
                outcome,
            });
        } else {
            // Nothing to do here right now (no leader, a refused connection): do not spin.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    history
}

/// An appended entry whose answer said it surely did not happen.
#[derive(Clone, Debug)]
pub struct Refused {
    /// The entry's text.
    pub text: String,
    /// The error code.
    pub code: String,
}

/// A log client: appends unique entries until stopped. Its appends, and those refused for
/// sure (which must never show up in the log).
pub async fn log_client(
    shared: Shared,
    client: usize,
    mut rng: Rng,
) -> (Vec<Append>, Vec<Refused>) {
    let Ok(http) = http_client(shared.timeout) else {
        return (Vec::new(), Vec::new());
    };
    let mut appends = Vec::new();
    let mut refused = Vec::new();
    let mut n = 0u64;
    while !shared.stopped() {
        let Some(api) = shared.endpoint(&mut rng) else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        n += 1;
        let text = format!("a{client}-{n}");
        let invoke = shared.now();
        let answer = send(
            http.post(format!("http://{api}/v1/log"))
                .json(&json!({ "entry": text })),
        )
        .await;
        let complete = shared.now();
        let acked = match answer {
            Answer::Got(201, v) => v["index"].as_u64().map(|i| (complete, i)),
            Answer::Got(_, v) if surely_not_applied(&v) => {
                refused.push(Refused {
                    text: text.clone(),
                    code: v["error"]["code"].as_str().unwrap_or("").to_string(),
                });
                tokio::time::sleep(Duration::from_millis(20)).await;
                None
            }
            Answer::NotSent => {
                refused.push(Refused {
                    text: text.clone(),
                    code: "connection refused".into(),
                });
                tokio::time::sleep(Duration::from_millis(20)).await;
                None
            }
            _ => None,
        };
        appends.push(Append {
            client,
            text,
            invoke,
            acked,
        });
    }
    (appends, refused)
}
