//! Server-sent events: parsing, and streams that reconnect and resume.

use std::time::Duration;

use futures_util::Stream;
use serde_json::Value;

use crate::types::{Event, Kv, LogEntry};
use crate::{Client, Error};

/// One server-sent event as it came (what [`next_event`] cuts out of a stream).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RawEvent {
    /// Its `event:` field (`message` when absent).
    pub event: String,
    /// Its `id:` field, when it is a number.
    pub id: Option<u64>,
    /// Its `data:` lines, joined by newlines.
    pub data: String,
}

/// Takes the next complete event out of `buf`, the text of an event stream received so far
/// (comments and empty blocks are skipped); `None` until one is complete.
pub fn next_event(buf: &mut String) -> Option<RawEvent> {
    loop {
        let pos = buf.find("\n\n")?;
        let block: String = buf.drain(..pos + 2).collect();
        let mut ev = RawEvent {
            event: "message".into(),
            ..RawEvent::default()
        };
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                ev.event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("id:") {
                ev.id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !ev.data.is_empty() {
                    ev.data.push('\n');
                }
                ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if !ev.data.is_empty() {
            return Some(ev);
        }
    }
}

/// What a raw event means.
enum Meaning {
    Item(Event),
    /// The node is stopping: reconnect elsewhere.
    Closing,
    /// The stream failed for good.
    Failed(Error),
}

fn decode(raw: &RawEvent, endpoint: &str) -> Meaning {
    let bad = |m: String| {
        Meaning::Failed(Error::Decode {
            endpoint: endpoint.to_string(),
            message: m,
        })
    };
    let data: Value = match serde_json::from_str(&raw.data) {
        Ok(v) => v,
        Err(e) => return bad(format!("event data is not JSON: {e}")),
    };
    match raw.event.as_str() {
        "entry" => match serde_json::from_value::<LogEntry>(data) {
            Ok(e) => Meaning::Item(Event::Entry(e)),
            Err(e) => bad(e.to_string()),
        },
        "put" => match serde_json::from_value::<Kv>(data) {
            Ok(kv) => Meaning::Item(Event::Put(kv)),
            Err(e) => bad(e.to_string()),
        },
        "delete" => match (data["key"].as_str(), data["revision"].as_u64()) {
            (Some(k), Some(r)) => Meaning::Item(Event::Delete {
                key: k.to_string(),
                revision: r,
            }),
            _ => bad(format!("a delete without key or revision: {data}")),
        },
        "compacted" => Meaning::Item(Event::Compacted {
            first: data["first"].as_u64().unwrap_or(0),
        }),
        "closing" => Meaning::Closing,
        _ => Meaning::Failed(Error::Api {
            status: 200,
            code: raw.event.clone(),
            message: data["message"].as_str().unwrap_or("").to_string(),
        }),
    }
}

struct Follow {
    client: Client,
    path: String,
    last: Option<u64>,
    conn: Option<(reqwest::Response, String)>,
    buf: String,
    turn: usize,
    failures: u32,
    ended: bool,
}

impl Follow {
    async fn connect(&mut self) -> Result<(), Error> {
        let order = self.client.order();
        loop {
            let endpoint = order[self.turn % order.len()].clone();
            let mut req = self.client.streams.get(format!("{endpoint}{}", self.path));
            if let Some(id) = self.last {
                req = req.header("Last-Event-ID", id.to_string());
            }
            let why = match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    self.buf.clear();
                    self.conn = Some((resp, endpoint));
                    return Ok(());
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
                    if status != 429 && status != 503 {
                        return Err(Error::Api {
                            status,
                            code,
                            message: body["error"]["message"].as_str().unwrap_or("").into(),
                        });
                    }
                    format!("{endpoint}: {status} {code}")
                }
                Err(e) => format!("{endpoint}: {e}"),
            };
            self.retry(why).await?;
        }
    }

    /// Waits before trying the next endpoint; fails once the retries are spent.
    async fn retry(&mut self, why: String) -> Result<(), Error> {
        self.failures += 1;
        self.turn += 1;
        if self.failures > self.client.cfg.retries {
            return Err(Error::Unavailable {
                tries: self.failures,
                last: why,
            });
        }
        let wait = self.client.pause(self.failures, None);
        tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
        Ok(())
    }

    async fn next(&mut self) -> Option<Result<Event, Error>> {
        loop {
            if self.ended {
                return None;
            }
            if let Some(raw) = next_event(&mut self.buf) {
                let endpoint = self.conn.as_ref().map_or("", |c| c.1.as_str()).to_string();
                match decode(&raw, &endpoint) {
                    Meaning::Item(ev) => {
                        self.failures = 0;
                        if let Some(i) = ev.index() {
                            self.last = Some(i);
                        }
                        if matches!(ev, Event::Compacted { .. }) {
                            self.ended = true;
                        }
                        return Some(Ok(ev));
                    }
                    Meaning::Closing => {
                        self.conn = None;
                        self.turn += 1;
                        continue;
                    }
                    Meaning::Failed(e) => {
                        self.ended = true;
                        return Some(Err(e));
                    }
                }
            }
            if self.conn.is_none() {
                if let Err(e) = self.connect().await {
                    self.ended = true;
                    return Some(Err(e));
                }
            }
            let Some((resp, endpoint)) = self.conn.as_mut() else {
                continue;
            };
            match resp.chunk().await {
                Ok(Some(bytes)) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(None) | Err(_) => {
                    // The connection dropped: resume elsewhere after the last event.
                    let why = format!("{endpoint}: the stream ended");
                    self.conn = None;
                    if let Err(e) = self.retry(why).await {
                        self.ended = true;
                        return Some(Err(e));
                    }
                }
            }
        }
    }
}

/// The events of `path`, reconnecting and resuming after the last one seen.
pub(crate) fn follow(
    client: Client,
    path: String,
) -> impl Stream<Item = Result<Event, Error>> + Send {
    let state = Follow {
        client,
        path,
        last: None,
        conn: None,
        buf: String::new(),
        turn: 0,
        failures: 0,
        ended: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        let item = s.next().await?;
        Some((item, s))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_at_blank_lines_and_comments_are_skipped() {
        let mut buf = String::from(
            ": keep-alive\n\nevent: put\nid: 7\ndata: {\"key\":\"k\",\"value\":\"v\",\"revision\":7}\n\nevent: ent",
        );
        let e = next_event(&mut buf).unwrap_or_default();
        assert_eq!((e.event.as_str(), e.id), ("put", Some(7)));
        assert!(matches!(decode(&e, "x"), Meaning::Item(Event::Put(ref kv)) if kv.value == "v"));
        assert_eq!(next_event(&mut buf), None, "the rest is incomplete");
        assert_eq!(buf, "event: ent");
        let mut closing = String::from("event: closing\ndata: {\"message\":\"m\"}\n\n");
        let c = next_event(&mut closing).unwrap_or_default();
        assert!(matches!(decode(&c, "x"), Meaning::Closing));
    }
}
