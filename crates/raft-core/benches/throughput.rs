//! Entries committed per second through an in-memory 3-node cluster driven without faults:
//! every node persists into `MemStorage` and messages are handed over directly, so this
//! measures the protocol core alone. Run with `cargo bench -p raft-core`.
//!
//! For each payload size and number of outstanding proposals it runs several trials and
//! prints the median. `RAFT_BENCH_SECS` sets the length of a trial (default 1).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_core::{Config, LogStore, MemStorage, Message, Node, Role};

struct Cluster {
    nodes: Vec<Node<MemStorage>>,
    inbox: Vec<Message>,
}

impl Cluster {
    fn new() -> Cluster {
        let nodes = (1..=3)
            .map(|id| {
                let mut c = Config::new(id, [1, 2, 3]);
                c.max_inflight_msgs = 1024;
                Node::new(c, MemStorage::new()).unwrap()
            })
            .collect();
        let mut c = Cluster {
            nodes,
            inbox: Vec::new(),
        };
        c.nodes[0].campaign();
        for _ in 0..20 {
            c.round();
        }
        assert_eq!(c.nodes[0].role(), Role::Leader);
        c
    }

    /// One turn of every node's loop; returns entries the leader applied.
    fn round(&mut self) -> u64 {
        let mut applied = 0;
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if !node.has_ready() {
                continue;
            }
            let rd = node.ready();
            node.storage_mut().apply_ready(&rd).unwrap();
            if i == 0 {
                applied += rd.committed_entries.len() as u64;
            }
            let mut msgs = rd.messages;
            msgs.extend(rd.persisted_messages);
            self.inbox.extend(msgs);
            node.advance();
            // Keep memory flat: drop applied entries from the in-memory log.
            let keep_from = node.status().applied.saturating_sub(4096);
            if keep_from > node.storage().first_index() + 65_536 {
                node.storage_mut().compact(keep_from).unwrap();
            }
        }
        for m in std::mem::take(&mut self.inbox) {
            let to = (m.to - 1) as usize;
            self.nodes[to].step(m);
        }
        applied
    }
}

/// Runs one trial: keeps `outstanding` proposals in flight; returns committed entries/s.
fn trial(payload: &Bytes, outstanding: u64, secs: f64) -> f64 {
    let mut c = Cluster::new();
    let mut in_flight = 0u64;
    let mut committed = 0u64;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    loop {
        while in_flight < outstanding {
            c.nodes[0].propose(payload.clone()).unwrap();
            in_flight += 1;
        }
        let n = c.round();
        // The leader's no-op entry is applied too; never count below zero outstanding.
        in_flight = in_flight.saturating_sub(n);
        committed += n;
        if Instant::now() >= deadline {
            break;
        }
    }
    committed as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters nothing here.
    let secs: f64 = std::env::var("RAFT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let trials = 5;
    println!("raft-core in-memory 3-node cluster, committed entries/s (median of {trials} trials of {secs} s)");
    println!("{:>8} {:>12} {:>16}", "payload", "outstanding", "entries/s");
    for size in [16usize, 1024] {
        let payload = Bytes::from(vec![0xAB; size]);
        for outstanding in [1u64, 64, 256] {
            let mut results: Vec<f64> = (0..trials)
                .map(|_| trial(&payload, outstanding, secs))
                .collect();
            results.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let median = results[trials / 2];
            println!("{:>7}B {:>12} {:>16.0}", size, outstanding, median);
        }
    }
}
