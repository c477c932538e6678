//! Snapshots on real processes: a follower away for 300,000 writes, behind what the
//! leader's log retention keeps, catches up through a snapshot of the map whose transfer is
//! cut once and resumes, and then serves the leader's log from where its own resumes; a
//! backup seeds a new cluster with the same map.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{bench_binary, Cluster, DEADLINE};
use serde_json::{json, Value};

/// Every entry of node `i`'s `/v1/log`, page by page.
async fn whole_log(c: &Cluster, i: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut from = 1u64;
    loop {
        let v: Value = c
            .get_json(i, &format!("/v1/log?from={from}&limit=10000"))
            .await;
        let entries = v["entries"].as_array().unwrap();
        if entries.is_empty() {
            return out;
        }
        out.extend(entries.iter().cloned());
        from = v["next"].as_u64().unwrap();
    }
}

async fn snapshot_counters(c: &Cluster, i: usize) -> Value {
    c.status(i).await["snapshots"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_away_for_300000_writes_catches_up_through_a_snapshot_that_resumes_after_a_cut()
{
    let mut c = Cluster::start_with(
        3,
        &[
            "--snapshot-entries",
            "20000",
            "--snapshot-tail-entries",
            "1000",
            "--snapshot-chunk-bytes",
            "16384",
            "--log-retain-entries",
            "1000",
            "--log-segment-bytes",
            "1048576",
        ],
    )
    .await;
    let t0 = Instant::now();
    let leader = c.leader().await;
    let away = (leader + 1) % 3;
    c.stop(away);
    // Some keys, then 300,000 more through the bench client (a map whose snapshot takes
    // many chunks).
    for k in 0..100 {
        let r = c
            .http
            .put(c.url(leader, &format!("/v1/kv/key-{k}")))
            .json(&json!({"value": format!("value-{k}")}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let bench = Command::new(bench_binary())
        .args([
            "--target",
            &c.url(leader, ""),
            "--op",
            "kv-put",
            "--leader-only",
        ])
        .args([
            "--clients",
            "64",
            "--requests",
            "300000",
            "--value-size",
            "32",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(
        bench.status.success(),
        "{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    eprintln!("{:?}: 300,000 writes done", t0.elapsed());
    // Wait for a snapshot the last writes started, if they did (taking one copies the whole
    // store, and takes a while): offered midway through the first transfer, a newer
    // snapshot would rightly replace the part, and there would be nothing to resume. Once
    // everything is applied and none is being taken, none will start: no more writes come.
    let start = Instant::now();
    let s = loop {
        let s = c.status(leader).await;
        let (commit, applied) = (
            s["commit_index"].as_u64().unwrap(),
            s["applied_index"].as_u64().unwrap(),
        );
        if applied == commit
            && s["snapshots"]["taking"] == false
            && s["snapshot_index"].as_u64().unwrap() > 0
        {
            break s;
        }
        assert!(
            start.elapsed() < DEADLINE * 2,
            "the last snapshot never came: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        s["first_index"].as_u64().unwrap() > 1000,
        "the leader dropped the oldest segments of its log: {s}"
    );

    // The follower comes back: it needs a snapshot. Cut the transfer once, midway.
    c.spawn(away);
    let start = Instant::now();
    loop {
        let midway: Option<Value> = async {
            let r = c.http.get(c.url(away, "/v1/status")).send().await.ok()?;
            r.json().await.ok()
        }
        .await;
        if let Some(t) = midway
            .as_ref()
            .and_then(|v| v["snapshots"]["transfers"].get(0))
        {
            let (done, total) = (
                t["done_bytes"].as_u64().unwrap(),
                t["total_bytes"].as_u64().unwrap(),
            );
            if done > 0 && done < total / 2 {
                break;
            }
        }
        assert!(
            start.elapsed() < DEADLINE * 2,
            "never saw the transfer midway"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "{:?}: transfer seen midway; killing the follower",
        t0.elapsed()
    );
    c.kill(away);
    c.spawn(away);
    c.wait_ready().await;
    eprintln!("{:?}: follower ready again", t0.elapsed());

    // It caught up through the snapshot: its log resumes after it and is the leader's
    // from there on; the map is the leader's.
    let start = Instant::now();
    let want = whole_log(&c, leader).await;
    let last = want.last().unwrap()["index"].as_u64().unwrap();
    assert!(last > 300_100, "{last}");
    let got = loop {
        let got = whole_log(&c, away).await;
        if got.last().is_some_and(|e| e["index"] == last) {
            break got;
        }
        assert!(
            start.elapsed() < DEADLINE * 2,
            "the follower's log ends at {:?}, the leader's at {last}",
            got.last().map(|e| e["index"].clone())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let resumed = got[0]["index"].as_u64().unwrap();
    assert!(resumed > 1000, "the follower's log starts at {resumed}");
    let skip = want
        .iter()
        .position(|e| e["index"] == resumed)
        .expect("the leader holds what the follower's log starts with");
    assert_eq!(
        got[..],
        want[skip..],
        "the logs differ where both hold them"
    );
    eprintln!("{:?}: logs equal from {resumed}", t0.elapsed());
    for k in (0..100).step_by(7) {
        let v: Value = c
            .get_json(away, &format!("/v1/kv/key-{k}?consistency=local"))
            .await;
        assert_eq!(v["value"], format!("value-{k}"));
    }
    for key in ["bench-0-0", "bench-63-100", "bench-17-2000"] {
        let mine: Value = c
            .get_json(away, &format!("/v1/kv/{key}?consistency=local"))
            .await;
        let theirs: Value = c
            .get_json(leader, &format!("/v1/kv/{key}?consistency=local"))
            .await;
        assert_eq!(mine["value"], theirs["value"], "{key}");
        assert!(mine["value"].is_string(), "{key}: {mine}");
    }
    let follower = snapshot_counters(&c, away).await;
    assert!(follower["installed"].as_u64().unwrap() >= 1, "{follower}");
    let sent = snapshot_counters(&c, leader).await;
    assert!(
        sent["resumed_bytes"].as_u64().unwrap() > 0,
        "the second transfer did not resume: {sent}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restored_into_a_new_single_node_cluster_serves_the_same_map_and_log_after_it() {
    let t0 = Instant::now();
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    for k in 0..50 {
        let r = c
            .http
            .put(c.url(leader, &format!("/v1/kv/app%2Fconfig%2F{k}")))
            .json(&json!({"value": format!("v{k}")}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let r = c
            .http
            .post(c.url(leader, "/v1/log"))
            .json(&json!({"entry": format!("event {k}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    // The backup, from any node (here a follower, with what it has applied).
    let follower = (leader + 1) % 3;
    let start = Instant::now();
    let want = loop {
        let (a, b) = (whole_log(&c, leader).await, whole_log(&c, follower).await);
        if a == b {
            break a;
        }
        assert!(start.elapsed() < DEADLINE, "the follower never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("{:?}: written and caught up", t0.elapsed());
    let backup = c
        .http
        .get(c.url(follower, "/v1/snapshot"))
        .send()
        .await
        .unwrap();
    assert_eq!(backup.status(), 200);
    let bytes = backup.bytes().await.unwrap();
    let file = c.dir.path().join("backup.snap");
    std::fs::write(&file, &bytes).unwrap();

    // A new cluster of one, seeded from it. A damaged copy first: refused, and nothing is
    // left behind to stand in the way of the good one.
    let mut fresh = Cluster::new(1, &[]);
    let mut damaged = bytes.to_vec();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    let damaged_file = c.dir.path().join("damaged.snap");
    std::fs::write(&damaged_file, &damaged).unwrap();
    let refused = Command::new(common::binary())
        .args(["restore", "--from"])
        .arg(&damaged_file)
        .arg("0")
        .current_dir(fresh.dir.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not a usable backup"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let data = fresh.dir.path().join("data");
    let left: Vec<_> = std::fs::read_dir(&data)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a failed restore left {left:?}");
    let out = Command::new(common::binary())
        .args(["restore", "--from"])
        .arg(&file)
        .arg("0")
        .current_dir(fresh.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Restoring twice into the same directory is refused.
    let again = Command::new(common::binary())
        .args(["restore", "--from"])
        .arg(&file)
        .arg("0")
        .current_dir(fresh.dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    eprintln!("{:?}: restored", t0.elapsed());
    fresh.launch().await;
    eprintln!("{:?}: restored node ready", t0.elapsed());
    // The backup holds the map as of its index: the new cluster's log goes on after it.
    let at = fresh.status(0).await["snapshot_index"].as_u64().unwrap();
    let last = want.last().unwrap()["index"].as_u64().unwrap();
    assert!(
        at >= last,
        "the backup covers index {at}, the log ran to {last}"
    );
    let got = whole_log(&fresh, 0).await;
    assert!(
        got.iter().all(|e| e["index"].as_u64().unwrap() > at),
        "the restored log holds entries the backup covers"
    );
    for k in (0..50).step_by(7) {
        let v: Value = fresh
            .http
            .get(fresh.url(0, &format!("/v1/kv/app%2Fconfig%2F{k}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["value"], format!("v{k}"), "{v}");
    }
    // It takes writes as a cluster of its own.
    let r = fresh
        .http
        .post(fresh.url(0, "/v1/log"))
        .json(&json!({"entry": "after the restore"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}
