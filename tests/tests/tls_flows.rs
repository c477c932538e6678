//! The main flows with security on: mutual TLS between members, HTTPS, tokens. Writes and
//! reads with compare-and-swap, a failover, a log stream resumed across it, a node joining
//! with `--join https://...` and promoted by the autopilot, a rolling restart, `raftctl`, and
//! a follower brought back through a snapshot sent over mutual TLS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Cluster, Tokens};
use futures_util::StreamExt;
use raft_http_client::{Client, ClientConfig, Event, Expect};
use serde_json::Value;

fn client(c: &Cluster, token: &str) -> Client {
    let cfg = ClientConfig {
        token: Some(token.to_string()),
        ..ClientConfig::default()
    }
    .with_tls_files(&c.certs_dir().join("ca.pem"), None)
    .unwrap();
    Client::with_config(&c.apis, cfg).unwrap()
}

/// Node `i`'s `/v1/status`, or `null` while it does not answer (starting, stopped).
async fn status_of(c: &Cluster, i: usize) -> Value {
    let answer: Option<Value> = async {
        let r = c.http.get(c.url(i, "/v1/status")).send().await.ok()?;
        r.json().await.ok()
    }
    .await;
    answer.unwrap_or_default()
}

async fn secure_cluster() -> (Cluster, Tokens) {
    let mut c = Cluster::new(3, &["--autopilot-promote-after-ms", "300"]);
    c.enable_tls();
    let t = c.enable_tokens();
    c.launch().await;
    (c, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reads_failover_and_a_resumed_stream_over_tls() {
    let (mut c, t) = secure_cluster().await;
    let kv = client(&c, &t.write);
    kv.put("app/db", "db1").await.unwrap();
    kv.put_if("app/db", "db2", Expect::value("db1"))
        .await
        .unwrap();
    assert!(kv
        .put_if("app/db", "db3", Expect::value("db1"))
        .await
        .is_err());
    assert_eq!(kv.get("app/db").await.unwrap().unwrap().value, "db2");
    let first = kv.append("one").await.unwrap().index;

    // A stream of the log, read up to `first`, then the leader dies.
    let reader = client(&c, &t.read);
    let stream = reader.log_stream(Some(first));
    let mut stream = std::pin::pin!(stream);
    match stream.next().await.unwrap().unwrap() {
        Event::Entry(e) => assert_eq!(e.index, first),
        other => panic!("{other:?}"),
    }
    let old = c.leader().await;
    c.kill(old);
    // Writes go on through the new leader; the stream resumes on another node from where
    // it was, missing and repeating nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut written = Vec::new();
    while written.len() < 5 {
        match kv.append(format!("after-{}", written.len())).await {
            Ok(a) => written.push(a.index),
            Err(e) => assert!(
                Instant::now() < deadline,
                "no write after the failover: {e}"
            ),
        }
    }
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        let e = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Event::Entry(e) = e {
            if e.kind == "entry" {
                seen.push(e.index);
            }
        }
    }
    assert_eq!(seen, written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_over_https_with_an_admin_token_and_the_cluster_restarts_in_turn() {
    let (mut c, t) = secure_cluster().await;
    let kv = client(&c, &t.write);
    kv.put("k", "v1").await.unwrap();
    // Node 3's certificate alone does not let it join: it is not a member yet, and being
    // a node grants no right to change the membership. It stops and says what to do.
    let n = c.add_slot();
    c.spawn_joining(n, 0);
    let status = c.wait_exit(n);
    assert!(!status.success());
    let log = c.node_log(n);
    assert!(log.contains("--join-token-file"), "{log}");
    // With an admin token to ask with, it joins through node 0's HTTPS API, and the
    // autopilot promotes it.
    let token_file = c.dir.path().join("join-token");
    std::fs::write(&token_file, format!("{}\n", t.admin)).unwrap();
    c.push_node_args(n, &["--join-token-file", &token_file.display().to_string()]);
    c.spawn_joining(n, 0);
    let admin = client(&c, &t.admin);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let members = admin.members().await.unwrap_or_default();
        if members
            .iter()
            .any(|m| m.id == n as u64 && m.role == "voter")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {n} never became a voter: {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A rolling restart: every node stopped and started in turn, writes in between.
    for i in 0..c.apis.len() {
        c.stop(i);
        if i < 3 {
            c.spawn(i);
        } else {
            // Not in peers.json: it restarts as it started, from its own data.
            c.spawn_joining(i, 0);
        }
        c.wait_ready().await;
        kv.put("k", format!("after restarting {i}")).await.unwrap();
    }
    assert_eq!(
        kv.get("k").await.unwrap().unwrap().value,
        format!("after restarting {}", c.apis.len() - 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raftctl_talks_to_a_secure_cluster() {
    let (c, t) = secure_cluster().await;
    let raftctl = common::build_with("raftctl", &[]);
    let ctl = |token: &str, args: &[&str]| {
        Command::new(&raftctl)
            .args(["--endpoints", &c.apis.join(",")])
            .arg("--cacert")
            .arg(c.certs_dir().join("ca.pem"))
            .args(["--token", token])
            .args(args)
            .output()
            .unwrap()
    };
    let put = ctl(&t.write, &["put", "color", "blue"]);
    assert!(put.status.success(), "{put:?}");
    let get = ctl(&t.read, &["get", "color"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "blue");
    // A read token cannot write: refused (exit status 1), with the reason.
    let refused = ctl(&t.read, &["put", "color", "red"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("forbidden"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_compacted_log_catches_up_through_a_snapshot_over_tls() {
    let mut c = Cluster::new(
        3,
        &[
            "--snapshot-entries",
            "500",
            "--snapshot-tail-entries",
            "50",
            "--snapshot-chunk-bytes",
            "4096",
            "--log-retain-entries",
            "50",
            "--log-segment-bytes",
            "65536",
        ],
    );
    c.enable_tls();
    let t = c.enable_tokens();
    c.launch().await;
    let kv = client(&c, &t.write);
    kv.put("before", "the follower left").await.unwrap();
    let leader = c.leader().await;
    let away = (leader + 1) % 3;
    c.stop(away);
    for b in 0..20 {
        // Large enough that the leader stops sending to the absent follower once its window
        // fills, instead of queueing the whole log for the connection it will get back.
        let batch = (0..100)
            .map(|i| format!("batch {b} entry {i} {}", "x".repeat(1000)))
            .collect();
        kv.append_batch(batch).await.unwrap();
    }
    let last = kv.put("after", "while it was away").await.unwrap().index;
    // The leader drops the oldest segments of its log, past everything the follower holds.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status_of(&c, leader).await;
        if s["first_index"].as_u64().unwrap_or(0) > 100 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader never compacted: {s}\n{}",
            c.node_log(leader)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Back, the follower can only catch up through a snapshot sent over mutual TLS.
    c.spawn(away);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status_of(&c, away).await;
        if s["applied_index"].as_u64().unwrap_or(0) >= last
            && s["snapshots"]["installed"].as_u64().unwrap_or(0) >= 1
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower never caught up: {s}\n{}\nleader: {}\n{}",
            c.node_log(away),
            status_of(&c, leader).await,
            c.node_log(leader)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (key, value) in [
        ("before", "the follower left"),
        ("after", "while it was away"),
    ] {
        let v = c
            .get_json(away, &format!("/v1/kv/{key}?consistency=local"))
            .await;
        assert_eq!(v["value"], value, "{key} on the follower");
    }
    // Its log resumes after the snapshot, and is the leader's from there.
    let log = c.get_json(away, "/v1/log?from=1&limit=5").await;
    let first = log["first"].as_u64().unwrap();
    assert!(first > 100, "{log}");
    assert_eq!(log["entries"][0]["index"], first, "{log}");
    let theirs = c
        .get_json(leader, &format!("/v1/log?from={first}&limit=5"))
        .await;
    assert_eq!(log["entries"], theirs["entries"]);
}
