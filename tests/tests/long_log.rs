//! A long log on real processes: a million entries, every one of them stored once (in the
//! Raft log's segments, summarised as they close), then a follower killed and restarted:
//! it opens from the summaries, loses nothing, and serves the same log as the leader.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{bench_binary, Cluster, DEADLINE};
use serde_json::Value;

/// The files of `dir` whose names end with `.ext`, and their total size.
fn files(dir: &std::path::Path, ext: &str) -> (usize, u64) {
    let mut n = 0;
    let mut bytes = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == ext) {
            n += 1;
            bytes += std::fs::metadata(&p).unwrap().len();
        }
    }
    (n, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_entries_are_kept_once_and_a_killed_follower_restarts_from_its_summaries() {
    let mut c = Cluster::start_with(3, &["--log-segment-bytes", "8388608"]).await;
    let t0 = Instant::now();
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    // A million 64-byte entries, 100 to a request.
    let bench = Command::new(bench_binary())
        .args([
            "--target",
            &c.url(leader, ""),
            "--op",
            "append",
            "--leader-only",
        ])
        .args(["--batch", "100", "--clients", "16", "--requests", "10000"])
        .args(["--value-size", "64", "--timeout", "60", "--quiet"])
        .output()
        .unwrap();
    assert!(
        bench.status.success(),
        "{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    let last = c.status(leader).await["commit_index"].as_u64().unwrap();
    assert!(last >= 1_000_000, "{last}");
    eprintln!("{:?}: {last} entries committed", t0.elapsed());
    let start = Instant::now();
    while c.status(follower).await["applied_index"].as_u64().unwrap() < last {
        assert!(start.elapsed() < DEADLINE, "the follower never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Stored once: the Raft log's segments hold the entries, the application store stays
    // small (it keeps only the map), and every closed segment has its summary.
    let data = c.data_dir(follower);
    let (segments, wal_bytes) = files(&data.join("wal"), "wal");
    let (summaries, _) = files(&data.join("wal"), "idx");
    let store = std::fs::metadata(data.join("app.redb")).unwrap().len();
    eprintln!(
        "{segments} segments of {wal_bytes} bytes, {summaries} summaries; app.redb {store} bytes"
    );
    assert!(
        wal_bytes / last < 200,
        "{} bytes per entry",
        wal_bytes / last
    );
    assert!(store < 8 << 20, "the application store holds {store} bytes");
    assert!(segments > 5);
    assert_eq!(
        summaries,
        segments - 1,
        "every closed segment is summarised"
    );

    // Killed and restarted, it serves the same log.
    c.kill(follower);
    c.spawn(follower);
    c.wait_ready().await;
    eprintln!("{:?}: the follower is back", t0.elapsed());
    let start = Instant::now();
    while c.status(follower).await["applied_index"].as_u64().unwrap() < last {
        assert!(
            start.elapsed() < DEADLINE,
            "the follower never caught up again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for from in [1, 2, 123_457, 500_000, 999_901, last - 3] {
        let path = format!("/v1/log?from={from}&limit=100");
        let (mine, theirs): (Value, Value) = (
            c.get_json(follower, &path).await,
            c.get_json(leader, &path).await,
        );
        assert_eq!(mine["entries"], theirs["entries"], "from {from}");
        assert_eq!(mine["entries"][0]["index"], from, "from {from}");
        assert_eq!(mine["first"], 1);
    }
}
