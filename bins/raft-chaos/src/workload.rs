//! The clients: each runs one operation at a time against a random member (following
//! redirects to the leader, as users do) and records what it sent and what it learned.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_http_client::{Client, ClientConfig, Error, Expect};

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
        let e = self.all();
        (!e.is_empty()).then(|| e[rng.below(e.len() as u64) as usize].clone())
    }

    fn all(&self) -> Vec<String> {
        match self.endpoints.read() {
            Ok(e) => e.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// What a write's failure means for the history: `None` if it surely did not happen (the
/// cluster refused it before proposing, or it was never sent), `Some(code)` otherwise (it
/// may have happened).
fn maybe_applied(e: &Error) -> Option<String> {
    match e {
        // Sent to no one, or answered with a code that means nothing was done (the client
        // gives up at once on those: it makes no retries here).
        Error::Unavailable { .. } | Error::Config(_) => None,
        Error::Api { code, .. } if code == "bad_request" || code == "payload_too_large" => None,
        Error::Api { code, .. } => Some(code.clone()),
        Error::Unknown { message, .. } | Error::Decode { message, .. } => Some(message.clone()),
        Error::PreconditionFailed { .. } | Error::NotFound => Some(e.to_string()),
    }
}

/// The clients' HTTP client: one try per operation (a retry would blur the history), the
/// given timeout, redirects to the leader followed.
pub fn http_client(endpoints: &[String], timeout: Duration) -> Result<Client, String> {
    let cfg = ClientConfig {
        timeout,
        retries: 0,
        ..ClientConfig::default()
    };
    Client::with_config(endpoints, cfg).map_err(|e| e.to_string())
}

/// A key-value client: reads, writes and compare-and-swaps on `keys`, until stopped. Its
/// history.
pub async fn kv_client(
    shared: Shared,
    client: usize,
    keys: Vec<String>,
    mut rng: Rng,
) -> Vec<Operation> {
    let Ok(http) = http_client(&shared.all(), shared.timeout) else {
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
        let node = http.via(&api);
        let k = rng.below(keys.len() as u64) as usize;
        let key = &keys[k];
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
        let invoke = shared.now();
        let outcome = match &op {
            KvOp::Read => match node.get(key).await {
                Ok(got) => {
                    seen[k] = got.map(|kv| kv.value);
                    Some(KvOutcome::Read(seen[k].clone()))
                }
                // A read that failed changed nothing and says nothing.
                Err(_) => None,
            },
            KvOp::Write(v) => match node.put(key, v.clone()).await {
                Ok(_) => {
                    seen[k] = Some(v.clone());
                    Some(KvOutcome::Ok)
                }
                Err(e) => maybe_applied(&e).map(|_| KvOutcome::Unknown),
            },
            KvOp::Cas { expect, new } => {
                let condition = Expect {
                    value: Some(expect.clone()),
                    revision: None,
                };
                match node.put_if(key, new.clone(), condition).await {
                    Ok(_) => {
                        seen[k] = Some(new.clone());
                        Some(KvOutcome::Ok)
                    }
                    Err(Error::PreconditionFailed { current }) => {
                        seen[k] = current.map(|c| c.value);
                        Some(KvOutcome::CasFailed)
                    }
                    Err(e) => maybe_applied(&e).map(|_| KvOutcome::Unknown),
                }
            }
        };
        let complete = shared.now();
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
    let Ok(http) = http_client(&shared.all(), shared.timeout) else {
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
        let answer = http.via(&api).append(text.clone()).await;
        let complete = shared.now();
        let acked = match answer {
            Ok(a) => Some((complete, a.index)),
            Err(e) => {
                if maybe_applied(&e).is_none() {
                    refused.push(Refused {
                        text: text.clone(),
                        code: e.to_string(),
                    });
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                None
            }
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
