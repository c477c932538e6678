//! Opening a data directory that holds a long log: how long recovery takes, and how many
//! segments and index marks it ends with.
//! Run with `cargo bench -p raft-storage --bench recovery`. `RAFT_BENCH_ENTRIES` sets the
//! log's length (default 5,000,000 entries of 64 bytes, in 64 MiB segments, as httpraft
//! writes them); the figure is the median of 5 opens.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use raft_core::{Entry, HardState};
use raft_storage::{LogStorage, StorageConfig, SyncPolicy};

fn main() {
    let n: u64 = std::env::var("RAFT_BENCH_ENTRIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000_000);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StorageConfig::new(dir.path(), "bench", 1);
    cfg.sync = SyncPolicy::Never;
    {
        let mut log = LogStorage::open(cfg.clone()).unwrap();
        let mut i = 1;
        while i <= n {
            let batch: Vec<Entry> = (i..(i + 1_000).min(n + 1))
                .map(|j| Entry::normal(1, j, vec![b'x'; 64]))
                .collect();
            i += batch.len() as u64;
            let hs = HardState {
                term: 1,
                vote: Some(1),
                commit: i - 1,
            };
            log.write(&batch, Some(hs)).unwrap();
        }
    }
    let mut times = Vec::new();
    let mut footprint = (0, 0);
    let mut segments = 0;
    for _ in 0..5 {
        let t0 = Instant::now();
        let log = LogStorage::open(cfg.clone()).unwrap();
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        assert_eq!(raft_core::LogStore::last_index(&log), n);
        footprint = log.index_footprint();
        segments = log.segment_count();
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "open with {n} entries in {segments} segments: median {:.0} ms (min {:.0}, max {:.0}); {} marks, {} term runs",
        times[2], times[0], times[4], footprint.0, footprint.1
    );
}
