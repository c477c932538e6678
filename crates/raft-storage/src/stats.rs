//! Counters of the store's disk work, readable without locking the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of the sync latency histogram's buckets.
pub const SYNC_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// What the store has written and synced since it was opened. Shared: take it with
/// [`crate::LogStorage::stats`] and read it at any time.
#[derive(Debug, Default)]
pub struct StorageStats {
    writes: AtomicU64,
    bytes_written: AtomicU64,
    syncs: AtomicU64,
    sync_nanos: AtomicU64,
    /// Cumulative: `buckets[i]` counts syncs that took at most `SYNC_BUCKETS[i]`.
    buckets: [AtomicU64; SYNC_BUCKETS.len()],
}

/// A copy of [`StorageStats`] at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatsSnapshot {
    /// Writes (appends to a segment).
    pub writes: u64,
    /// Bytes appended to segments.
    pub bytes_written: u64,
    /// `fdatasync` calls on segments (new segments and purges included).
    pub syncs: u64,
    /// Time spent in those calls, in seconds.
    pub sync_seconds: f64,
    /// Cumulative histogram of sync latency: for each bound of [`SYNC_BUCKETS`], the syncs
    /// that took at most that long.
    pub sync_buckets: [u64; SYNC_BUCKETS.len()],
}

impl StorageStats {
    pub(crate) fn wrote(&self, bytes: usize) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.bytes_written
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn synced(&self, took: Duration) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_nanos.fetch_add(
            took.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
        let secs = took.as_secs_f64();
        for (bound, count) in SYNC_BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut sync_buckets = [0; SYNC_BUCKETS.len()];
        for (out, b) in sync_buckets.iter_mut().zip(&self.buckets) {
            *out = b.load(Ordering::Relaxed);
        }
        StatsSnapshot {
            writes: self.writes.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            sync_seconds: self.sync_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            sync_buckets,
        }
    }
}
