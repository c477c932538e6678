//! Committed entries per second and submit latency through the API: a 3-node cluster in
//! one process over loopback TCP, sync on, data under the cargo target directory.
//! Run with `cargo bench -p raft-client`. `RAFT_BENCH_SECS` sets each run's length
//! (default 3); `RAFT_BENCH_SIZES` and `RAFT_BENCH_SUBMITTERS` (comma-separated) choose
//! which runs to make (default 16,1024 bytes and 1,16,64,256,1024 submitters);
//! `RAFT_BENCH_PIPELINE=0` waits for each write before stepping on (for comparison).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use raft_client::{Error, NodeConfig, Peer, RaftNode, ReplicatedLog};
use raft_core::{LogIndex, NodeId};

async fn cluster(base: &Path) -> (Vec<RaftNode<LogIndex>>, RaftNode<LogIndex>) {
    let peers: BTreeMap<NodeId, Peer> = (1..=3)
        .map(|id| {
            let raft = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            (id, Peer { raft, api: None })
        })
        .collect();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let dir = base.join(format!("node-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = NodeConfig::new(id, "bench", peers.clone(), dir);
        cfg.pipeline_writes = std::env::var("RAFT_BENCH_PIPELINE").map_or(true, |v| v != "0");
        nodes.push(RaftNode::start(cfg, ReplicatedLog::new()).await.unwrap());
    }
    let leader = loop {
        if let Some(l) = nodes[0].leader().leader {
            if nodes.iter().all(|n| n.leader().leader == Some(l)) {
                break l;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let l = nodes[(leader - 1) as usize].clone();
    (nodes, l)
}

struct Run {
    committed: u64,
    secs: f64,
    latencies_us: Vec<u64>,
    errors: u64,
}

async fn run(leader: &RaftNode<LogIndex>, submitters: usize, size: usize, secs: f64) -> Run {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..submitters {
        let node = leader.clone();
        tasks.push(tokio::spawn(async move {
            let payload = bytes::Bytes::from(vec![t as u8; size]);
            let mut lat = Vec::new();
            let mut errors = 0;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match node.submit(payload.clone()).await {
                    Ok(_) => lat.push(t0.elapsed().as_micros() as u64),
                    Err(Error::Busy) => {
                        errors += 1;
                        tokio::task::yield_now().await;
                    }
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies_us.extend(l);
        errors += e;
    }
    Run {
        committed: latencies_us.len() as u64,
        secs: start.elapsed().as_secs_f64(),
        latencies_us,
        errors,
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// A comma-separated list of numbers from the environment, or `default`.
fn list(var: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(var)
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn main() {
    let secs: f64 = std::env::var("RAFT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("raft-client-bench");
    println!("raft-client: 3 nodes in one process, loopback TCP, fsync on ({secs} s per run)");
    println!(
        "{:>6} {:>11} {:>12} {:>9} {:>9} {:>7}",
        "size", "submitters", "commits/s", "p50 ms", "p99 ms", "errors"
    );
    for &size in &list("RAFT_BENCH_SIZES", &[16, 1024]) {
        for &submitters in &list("RAFT_BENCH_SUBMITTERS", &[1, 16, 64, 256, 1024]) {
            rt.block_on(async {
                let (nodes, leader) = cluster(&base).await;
                let mut r = run(&leader, submitters, size, secs).await;
                r.latencies_us.sort_unstable();
                println!(
                    "{:>5}B {:>11} {:>12.0} {:>9.2} {:>9.2} {:>7}",
                    size,
                    submitters,
                    r.committed as f64 / r.secs,
                    pct(&r.latencies_us, 0.5),
                    pct(&r.latencies_us, 0.99),
                    r.errors
                );
                for n in nodes {
                    n.shutdown().await;
                }
            });
        }
    }
    let _ = std::fs::remove_dir_all(&base);
}
