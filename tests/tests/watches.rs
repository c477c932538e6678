//! Following the log and the map: the `wait` long poll, the log stream resumed across a
//! leader change, and a prefix watch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use serde_json::{json, Value};

/// One server-sent event.
#[derive(Debug)]
struct Event {
    event: String,
    id: Option<u64>,
    data: Value,
}

/// A server-sent-events reader over a streaming response.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn open(url: &str, last_id: Option<u64>) -> Sse {
        // No overall timeout: the stream lives as long as the test reads it.
        let http = reqwest::Client::new();
        let mut req = http.get(url);
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{url}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Sse {
            resp,
            buf: String::new(),
        }
    }

    /// The next event (comments skipped), or `None` if none comes within `within`.
    async fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(raw) = raft_http_client::next_event(&mut self.buf) {
                return Some(Event {
                    event: raw.event,
                    id: raw.id,
                    data: serde_json::from_str(&raw.data).unwrap(),
                });
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }
}

async fn append(c: &Cluster, node: usize, text: &str) -> u64 {
    let start = Instant::now();
    loop {
        let r = c
            .http
            .post(c.url(node, "/v1/log"))
            .json(&json!({ "entry": text }))
            .send()
            .await;
        if let Ok(r) = r {
            if r.status().as_u16() == 201 {
                return r.json::<Value>().await.unwrap()["index"].as_u64().unwrap();
            }
        }
        assert!(start.elapsed() < common::DEADLINE, "{text} never committed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_as_soon_as_the_entry_it_waits_for_commits() {
    let c = Cluster::start(3).await;
    let l = c.leader().await;
    let applied = c.status(l).await["applied_index"].as_u64().unwrap();
    let url = c.url(l, &format!("/v1/log?from={}&wait=20s", applied + 1));
    let poll = tokio::spawn(async move {
        let v: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        (Instant::now(), v)
    });
    // The poll is waiting: nothing came yet.
    let start = Instant::now();
    while c.metric(l, "raft_http_long_polls_waiting").await < 1.0 {
        assert!(start.elapsed() < common::DEADLINE, "the poll never waited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !poll.is_finished(),
        "it answered before anything was committed"
    );
    let index = append(&c, l, "awaited").await;
    let acked = Instant::now();
    let (answered, v) = poll.await.unwrap();
    let late = answered.saturating_duration_since(acked);
    assert!(
        late < Duration::from_millis(50),
        "the poll answered {late:?} after the commit was acknowledged"
    );
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries[0]["entry"], "awaited");
    assert_eq!(entries[0]["index"].as_u64(), Some(index));

    // With nothing to wait for, it answers at once; a wait that runs out answers empty.
    let t0 = Instant::now();
    let v = c
        .get_json(l, &format!("/v1/log?from={}&wait=100ms", index + 100))
        .await;
    assert_eq!(v["entries"], json!([]));
    assert!(t0.elapsed() >= Duration::from_millis(100));
    let r = c
        .http
        .get(c.url(l, "/v1/log?wait=soon"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_stream_resumed_with_last_event_id_misses_and_repeats_nothing_across_a_leader_change()
{
    let mut c = Cluster::start(3).await;
    let l = c.leader().await;
    let follower = (l + 1) % 3;
    let mut stream = Sse::open(&c.url(follower, "/v1/log/stream?from=1"), None).await;
    let mut posted = Vec::new();
    for k in 0..20 {
        let text = format!("before-{k}");
        append(&c, l, &text).await;
        posted.push(text);
    }
    // Read some of it, then drop the connection.
    let mut seen: Vec<(u64, Value)> = Vec::new();
    while seen.iter().filter(|(_, e)| e["kind"] == "entry").count() < 10 {
        let e = stream.next(common::DEADLINE).await.expect("an entry event");
        assert_eq!(e.event, "entry");
        seen.push((e.id.unwrap(), e.data));
    }
    let last = seen.last().unwrap().0;
    drop(stream);

    // The leader dies; a new one is elected; more is written.
    c.kill(l);
    let start = Instant::now();
    let l2 = loop {
        // Right after the kill the others may still name the dead leader.
        let now = c.leader().await;
        if now != l {
            break now;
        }
        assert!(start.elapsed() < common::DEADLINE, "no new leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for k in 0..20 {
        let text = format!("after-{k}");
        append(&c, l2, &text).await;
        posted.push(text);
    }
    // Resume on another node from where the first stream stopped.
    let other = c.running().into_iter().find(|&i| i != follower).unwrap();
    let mut stream = Sse::open(&c.url(other, "/v1/log/stream"), Some(last)).await;
    while seen.iter().filter(|(_, e)| e["kind"] == "entry").count() < posted.len() {
        let e = stream.next(common::DEADLINE).await.expect("an entry event");
        seen.push((e.id.unwrap(), e.data));
    }
    let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    let expected: Vec<u64> = (1..=*ids.last().unwrap()).collect();
    assert_eq!(ids, expected, "every index once, in order");
    let texts: Vec<&str> = seen
        .iter()
        .filter_map(|(_, e)| e["entry"].as_str())
        .collect();
    assert_eq!(texts, posted.iter().map(String::as_str).collect::<Vec<_>>());
    for (id, e) in &seen {
        assert_eq!(e["index"].as_u64(), Some(*id), "the event id is the index");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_watch_sees_every_put_and_delete_under_it_in_order_and_lists_agree() {
    let c = Cluster::start(3).await;
    let l = c.leader().await;
    let follower = (l + 1) % 3;
    let mut watch = Sse::open(&c.url(follower, "/v1/kv/watch?prefix=app/"), None).await;
    let put = |key: &str, body: Value| {
        c.http
            .put(c.url(l, &format!("/v1/kv/{key}")))
            .json(&body)
            .send()
    };
    let mut expected = Vec::new();
    for k in 0..5 {
        let v: Value = put(&format!("app/k{k}"), json!({"value": format!("v{k}")}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        expected.push(("put", format!("app/k{k}"), v["revision"].as_u64().unwrap()));
        put("other/x", json!({"value": "not watched"}))
            .await
            .unwrap();
    }
    let r = put("app/k0", json!({"value": "no", "expect": "wrong"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 412, "a refused swap changes nothing");
    let v: Value = c
        .http
        .delete(c.url(l, "/v1/kv/app/k3"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    expected.push(("delete", "app/k3".into(), v["index"].as_u64().unwrap()));
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let e = watch.next(common::DEADLINE).await.expect("a watch event");
        assert_eq!(e.id, e.data["revision"].as_u64());
        got.push((
            if e.event == "put" { "put" } else { "delete" },
            e.data["key"].as_str().unwrap().to_string(),
            e.data["revision"].as_u64().unwrap(),
        ));
    }
    assert_eq!(got, expected);
    assert!(
        watch.next(Duration::from_millis(300)).await.is_none(),
        "nothing else under the prefix"
    );

    // From an old revision, the same history again; the listing shows what is left.
    let mut again = Sse::open(
        &c.url(
            l,
            &format!("/v1/kv/watch?prefix=app/&from_revision={}", expected[0].2),
        ),
        None,
    )
    .await;
    for (kind, key, rev) in &expected {
        let e = again.next(common::DEADLINE).await.unwrap();
        assert_eq!(
            (e.event.as_str(), e.data["key"].as_str(), e.id),
            (*kind, Some(key.as_str()), Some(*rev))
        );
    }
    let v = c.get_json(l, "/v1/kv?prefix=app/").await;
    let keys: Vec<&str> = v["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| kv["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["app/k0", "app/k1", "app/k2", "app/k4"]);
    assert_eq!(v["more"], false);
    let v = c
        .get_json(l, "/v1/kv?prefix=app/&limit=2&start_after=app/k0")
        .await;
    assert_eq!(v["kvs"][0]["key"], "app/k1");
    assert_eq!(
        (v["kvs"].as_array().unwrap().len(), &v["more"]),
        (2, &json!(true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_behind_the_retention_policy_is_told_where_the_log_now_starts_and_ends() {
    // A stream is pulled from the store, never buffered: a watcher that read too slowly
    // (here: one that resumes far behind) finds what it has not read trimmed, and is told.
    // Small segments and frequent snapshots: retention drops whole segments once a
    // snapshot covers them.
    let mut c = Cluster::new(
        3,
        &[
            "--log-retain-entries",
            "20",
            "--log-segment-bytes",
            "4096",
            "--snapshot-entries",
            "20",
            "--snapshot-tail-entries",
            "0",
        ],
    );
    c.launch().await;
    let l = c.leader().await;
    let url = c.url(l, "/v1/log/stream");
    let start = Instant::now();
    loop {
        let last = append(&c, l, "filler").await;
        let mut s = Sse::open(&url, Some(1)).await;
        let e = s.next(Duration::from_secs(10)).await.expect("an event");
        if e.event == "compacted" {
            let first = e.data["first"].as_u64().unwrap();
            assert!(first > 2 && first <= last, "{e:?}, last {last}");
            assert!(
                s.next(Duration::from_secs(2)).await.is_none(),
                "the stream ends after compacted"
            );
            // Resuming from the first index kept works.
            let mut again = Sse::open(&url, Some(first - 1)).await;
            let e = again.next(Duration::from_secs(10)).await.unwrap();
            assert_eq!((e.event.as_str(), e.id), ("entry", Some(first)), "{e:?}");
            return;
        }
        assert_eq!(e.event, "entry", "{e:?}");
        assert!(
            start.elapsed() < common::DEADLINE,
            "nothing was ever trimmed: {e:?}"
        );
    }
}
