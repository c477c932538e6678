//! The main flows with security on: mutual TLS between members, HTTPS, tokens. Writes and
//! reads with compare-and-swap, a failover, a log stream resumed across it, a node joining
//! with `--join https://...` and promoted by the autopilot, a rolling restart, and `raftctl`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Cluster, Tokens};
use futures_util::StreamExt;
use raft_http_client::{Client, ClientConfig, Event, Expect};

fn client(c: &Cluster, token: &str) -> Client {
    let cfg = ClientConfig {
        token: Some(token.to_string()),
        ..ClientConfig::default()
    }
    .with_tls_files(&c.certs_dir().join("ca.pem"), None)
    .unwrap();
    Client::with_config(&c.apis, cfg).unwrap()
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
async fn a_node_joins_over_https_with_its_certificate_and_the_cluster_restarts_in_turn() {
    let (mut c, t) = secure_cluster().await;
    let kv = client(&c, &t.write);
    kv.put("k", "v1").await.unwrap();
    // Node 3 joins through node 0's HTTPS API, authenticated as a member by its own
    // certificate (it holds no token), and the autopilot promotes it.
    let n = c.add_slot();
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
