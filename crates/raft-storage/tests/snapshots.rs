//! Snapshots in the durable log: recording one the state machine made, installing one from
//! the leader, and both surviving restarts, purges and segment rollovers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use raft_core::{Entry, HardState, LogStore, Ready, SnapshotMeta};
use raft_storage::{LogStorage, StorageConfig, SyncPolicy, WriteError};

fn cfg(dir: &std::path::Path, segment_bytes: u64) -> StorageConfig {
    let mut c = StorageConfig::new(dir, "test-cluster", 1);
    c.sync = SyncPolicy::Never;
    c.segment_bytes = segment_bytes;
    c
}

fn entry(term: u64, index: u64) -> Entry {
    Entry::normal(term, index, format!("entry {index}").into_bytes())
}

fn meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term,
        membership: raft_core::Membership::new([1, 2, 3]),
    }
}

#[test]
fn a_recorded_snapshot_survives_reopening_purging_and_rollovers() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStorage::open(cfg(dir.path(), 300)).unwrap();
        for i in 1..=30 {
            log.write(&[entry(1, i)], None).unwrap();
        }
        assert!(matches!(
            log.record_snapshot(&meta(20, 2)),
            Err(WriteError::SnapshotMismatch { index: 20, term: 2 })
        ));
        log.record_snapshot(&meta(20, 1)).unwrap();
        log.record_snapshot(&meta(10, 1)).unwrap(); // older: ignored
        assert_eq!(log.snapshot_meta().unwrap(), meta(20, 1));
        log.purge_to(18).unwrap();
        for i in 31..=60 {
            log.write(&[entry(1, i)], None).unwrap();
        }
        log.purge_to(40).unwrap(); // every segment that recorded the snapshot is gone
    }
    let log = LogStorage::open(cfg(dir.path(), 300)).unwrap();
    assert_eq!(log.snapshot_meta().unwrap(), meta(20, 1));
    assert_eq!(log.first_index(), 41);
    assert_eq!(log.last_index(), 60);
}

#[test]
fn an_installed_snapshot_replaces_the_log_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStorage::open(cfg(dir.path(), 200)).unwrap();
        for i in 1..=30 {
            log.write(&[entry(1, i)], None).unwrap();
        }
        let before = log.segment_count();
        assert!(before > 3);
        // The leader's snapshot covers up to 25 in term 3: our entries 26..30 may conflict.
        let rd = Ready {
            snapshot: Some(meta(25, 3)),
            entries: vec![entry(3, 26), entry(3, 27)],
            hard_state: Some(HardState {
                term: 3,
                vote: None,
                commit: 25,
            }),
            must_sync: true,
            ..Ready::default()
        };
        log.persist(&rd).unwrap();
        assert!(log.segment_count() < before, "old segments were deleted");
        assert_eq!(log.first_index(), 26);
        assert_eq!(log.last_index(), 27);
        assert_eq!(log.term(25), Ok(3));
        assert_eq!(log.term(26), Ok(3));
        assert_eq!(log.snapshot_meta().unwrap(), meta(25, 3));
        // An older snapshot changes nothing.
        log.install_snapshot(&meta(20, 1)).unwrap();
        assert_eq!(log.last_index(), 27);
    }
    let log = LogStorage::open(cfg(dir.path(), 200)).unwrap();
    assert_eq!(log.snapshot_meta().unwrap(), meta(25, 3));
    assert_eq!((log.first_index(), log.last_index()), (26, 27));
    assert_eq!(
        log.entries(26, 28, u64::MAX).unwrap(),
        vec![entry(3, 26), entry(3, 27)]
    );
    assert_eq!(log.hard_state().unwrap().commit, 25);
}

#[test]
fn a_snapshot_beyond_the_whole_log_leaves_it_empty_after_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStorage::open(cfg(dir.path(), 1 << 20)).unwrap();
        for i in 1..=5 {
            log.write(&[entry(1, i)], None).unwrap();
        }
        log.install_snapshot(&meta(100, 4)).unwrap();
        assert_eq!((log.first_index(), log.last_index()), (101, 100));
        log.write(&[entry(4, 101)], None).unwrap();
    }
    let log = LogStorage::open(cfg(dir.path(), 1 << 20)).unwrap();
    assert_eq!((log.first_index(), log.last_index()), (101, 101));
    assert_eq!(log.term(100), Ok(4));
}

/// A snapshot taken of the whole log (at its last entry), with a tail of entries kept
/// before it for followers a little behind: reopened, the tail is still there. Only an
/// install whose purge was lost (a snapshot past every entry kept) replaces the log at
/// recovery.
#[test]
fn a_snapshot_at_the_last_entry_keeps_its_tail_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStorage::open(cfg(dir.path(), 64 << 20)).unwrap();
        for i in 1..=10 {
            log.write(&[entry(1, i)], None).unwrap();
        }
        log.record_snapshot(&meta(10, 1)).unwrap();
        log.purge_to(5).unwrap();
    }
    let log = LogStorage::open(cfg(dir.path(), 64 << 20)).unwrap();
    assert_eq!(log.snapshot().index, 10);
    assert_eq!(
        log.first_index(),
        6,
        "the tail before the snapshot was dropped"
    );
    assert_eq!(log.last_index(), 10);
    assert_eq!(
        log.entries(6, 11, u64::MAX).unwrap(),
        (6..=10).map(|i| entry(1, i)).collect::<Vec<_>>()
    );
}
