//! What is synced: entries, term and vote before a write returns; a commit index alone is
//! written without a sync. Counted in the store's stats.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use raft_core::{Entry, HardState, LogStore, Ready};
use raft_storage::{LogStorage, StorageConfig, SyncPolicy};

fn open(dir: &std::path::Path, sync: SyncPolicy) -> LogStorage {
    let mut c = StorageConfig::new(dir, "test-cluster", 1);
    c.sync = sync;
    LogStorage::open(c).unwrap()
}

fn hs(term: u64, vote: Option<u64>, commit: u64) -> HardState {
    HardState { term, vote, commit }
}

#[test]
fn a_ready_is_synced_only_when_it_must_be() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), SyncPolicy::Always);
    let stats = log.stats();
    let base = stats.snapshot();
    let entries = Ready {
        entries: vec![Entry::normal(1, 1, &b"a"[..])],
        hard_state: Some(hs(1, Some(1), 0)),
        must_sync: true,
        ..Ready::default()
    };
    log.persist(&entries).unwrap();
    let after_entries = stats.snapshot();
    assert_eq!(after_entries.syncs, base.syncs + 1);
    assert_eq!(after_entries.writes, base.writes + 1);
    let commit_only = Ready {
        hard_state: Some(hs(1, Some(1), 1)),
        must_sync: false,
        ..Ready::default()
    };
    log.persist(&commit_only).unwrap();
    let after_commit = stats.snapshot();
    assert_eq!(
        after_commit.syncs, after_entries.syncs,
        "no sync for a commit index"
    );
    assert_eq!(
        after_commit.writes,
        after_entries.writes + 1,
        "but it is written"
    );
    assert_eq!(log.hard_state().unwrap().commit, 1);
    log.persist(&Ready::default()).unwrap();
    assert_eq!(
        stats.snapshot().writes,
        after_commit.writes,
        "nothing to write"
    );
    drop(log);
    // The unsynced commit index was written: a reopen (no crash) sees it.
    let log = open(dir.path(), SyncPolicy::Always);
    assert_eq!(log.hard_state().unwrap(), hs(1, Some(1), 1));
}

#[test]
fn sync_latency_is_counted_in_cumulative_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), SyncPolicy::Always);
    let before = log.stats().snapshot();
    for i in 1..=5 {
        log.write(&[Entry::normal(1, i, &b"x"[..])], None).unwrap();
    }
    let s = log.stats().snapshot();
    assert_eq!(s.syncs, before.syncs + 5);
    assert!(s.sync_seconds > before.sync_seconds);
    assert!(
        s.sync_buckets.windows(2).all(|w| w[0] <= w[1]),
        "cumulative"
    );
    assert!(*s.sync_buckets.last().unwrap() <= s.syncs);
}

#[test]
fn with_sync_never_nothing_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), SyncPolicy::Never);
    let before = log.stats().snapshot().syncs;
    log.write(&[Entry::normal(1, 1, &b"x"[..])], Some(hs(1, None, 0)))
        .unwrap();
    assert_eq!(log.stats().snapshot().syncs, before);
}

#[test]
fn an_unsynced_write_is_synced_before_its_segment_stops_being_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = StorageConfig::new(dir.path(), "test-cluster", 1);
    c.segment_bytes = 300;
    let mut log = LogStorage::open(c).unwrap();
    log.write(&[Entry::normal(1, 1, vec![7u8; 200])], Some(hs(1, None, 0)))
        .unwrap();
    let before = log.stats().snapshot().syncs;
    // A commit-only hard state, unsynced, that fills the segment: the segment rolls.
    let mut n = 0;
    while log.segment_count() == 1 {
        log.write_batch(&[], Some(hs(1, None, 1 + n)), false)
            .unwrap();
        n += 1;
        assert!(n < 100, "the segment never rolled");
    }
    let syncs = log.stats().snapshot().syncs - before;
    // One for the old segment's unsynced tail, one for the new segment.
    assert_eq!(
        syncs, 2,
        "the old segment's unsynced writes were not synced first"
    );
}
