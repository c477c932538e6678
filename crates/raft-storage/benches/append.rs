//! Durable append throughput with sync on: the store's group commit against raw
//! `write` + `fdatasync` of the same bytes on the same disk.
//! Run with `cargo bench -p raft-storage`. `RAFT_BENCH_SECS` sets each trial's length
//! (default 1); each figure is the median of 3 trials.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use raft_core::Entry;
use raft_storage::{LogStorage, StorageConfig};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Raw baseline: appends `bytes` per batch and `fdatasync`s; returns batches/s.
fn raw(dir: &Path, bytes: usize, secs: f64) -> f64 {
    let path = dir.join("raw.bin");
    let _ = std::fs::remove_file(&path);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let buf = vec![0x5A; bytes];
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut n = 0u64;
    while Instant::now() < deadline {
        f.write_all(&buf).unwrap();
        f.sync_data().unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The store: writes batches of `batch` entries of `size` bytes; returns entries/s.
fn store(dir: &Path, batch: usize, size: usize, secs: f64) -> f64 {
    let d = dir.join(format!("store-{batch}-{size}"));
    let _ = std::fs::remove_dir_all(&d);
    let mut log = LogStorage::open(StorageConfig::new(&d, "bench", 1)).unwrap();
    let payload = bytes::Bytes::from(vec![0xA5; size]);
    let mut next = 1u64;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut entries = Vec::with_capacity(batch);
    while Instant::now() < deadline {
        entries.clear();
        entries.extend((next..next + batch as u64).map(|i| Entry::normal(1, i, payload.clone())));
        log.write(&entries, None).unwrap();
        let before = next;
        next += batch as u64;
        // Keep the disk footprint bounded: purge old segments now and then.
        if next / 500_000 != before / 500_000 {
            log.purge_to(next - 100_000).unwrap();
        }
    }
    (next - 1) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::var("RAFT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("raft-storage-bench");
    std::fs::create_dir_all(&base).unwrap();
    let fsyncs = median((0..3).map(|_| raw(&base, 64, secs)).collect());
    println!("raft-storage append benchmark, sync on (median of 3 trials of {secs} s)");
    println!("baseline: {fsyncs:.0} write+fdatasync per second (64-byte writes)");
    println!(
        "{:>6} {:>6} {:>12} {:>9} {:>14} {:>9}",
        "batch", "size", "entries/s", "MB/s", "raw batches/s", "vs raw"
    );
    let mut batch1 = std::collections::BTreeMap::new();
    for size in [16usize, 1024] {
        for batch in [1usize, 64, 1024] {
            let eps = median((0..3).map(|_| store(&base, batch, size, secs)).collect());
            // Raw write of the same payload bytes per batch, plus fdatasync.
            let raw_bps = median((0..3).map(|_| raw(&base, batch * size, secs)).collect());
            let store_bps = eps / batch as f64;
            let mbs = eps * size as f64 / 1e6;
            println!(
                "{:>6} {:>5}B {:>12.0} {:>9.1} {:>14.0} {:>8.2}x",
                batch,
                size,
                eps,
                mbs,
                raw_bps,
                raw_bps / store_bps
            );
            if batch == 1 {
                batch1.insert(size, eps);
            } else if batch == 64 {
                println!(
                    "       batch 64 / batch 1 ({size}B): {:.1}x",
                    eps / batch1[&size]
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&base);
}
