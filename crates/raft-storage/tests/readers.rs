//! Reads planned under the store's lock and carried out without it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use raft_core::{Entry, LogStore, StorageError};
use raft_storage::{LogStorage, StorageConfig, SyncPolicy};

fn entry(i: u64) -> Entry {
    Entry::normal(1, i, format!("entry {i}").into_bytes())
}

fn open(dir: &std::path::Path, cache_bytes: u64, segment_bytes: u64) -> LogStorage {
    let mut c = StorageConfig::new(dir, "test-cluster", 1);
    c.sync = SyncPolicy::Never;
    c.cache_bytes = cache_bytes;
    c.segment_bytes = segment_bytes;
    LogStorage::open(c).unwrap()
}

#[test]
fn a_planned_read_returns_the_same_entries_from_the_cache_and_from_disk() {
    for cache in [0, 1 << 20, 300] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), cache, 1 << 20);
        for i in 1..=50 {
            log.write(&[entry(i)], None).unwrap();
        }
        let reader = log.reader();
        let plan = log.plan_read(3, 40, u64::MAX).unwrap();
        assert_eq!(plan.len(), 37);
        let got = reader.read(plan).unwrap();
        assert_eq!(got, (3..40).map(entry).collect::<Vec<_>>(), "cache {cache}");
    }
}

#[test]
fn a_planned_read_stops_at_the_byte_budget_but_returns_at_least_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 0, 1 << 20);
    for i in 1..=10 {
        log.write(&[entry(i)], None).unwrap();
    }
    let one = log.plan_read(1, 11, 1).unwrap();
    assert_eq!(one.len(), 1);
    let some = log.plan_read(1, 11, 100).unwrap();
    assert!(some.len() > 1 && some.len() < 10, "{}", some.len());
    assert!(log.plan_read(11, 20, u64::MAX).unwrap().is_empty());
}

#[test]
fn a_read_of_a_segment_purged_after_planning_reports_it_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 0, 200);
    for i in 1..=40 {
        log.write(&[entry(i)], None).unwrap();
    }
    let reader = log.reader();
    let plan = log.plan_read(1, 3, u64::MAX).unwrap();
    log.purge_to(30).unwrap();
    assert!(matches!(reader.read(plan), Err(StorageError::Compacted(_))));
    assert!(matches!(
        log.plan_read(1, 3, u64::MAX),
        Err(StorageError::Compacted(1))
    ));
    let after = log.plan_read(log.first_index(), 41, u64::MAX).unwrap();
    assert_eq!(reader.read(after).unwrap().last(), Some(&entry(40)));
}

#[test]
fn a_damaged_entry_on_disk_is_an_error_not_a_wrong_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 0, 1 << 20);
    for i in 1..=5 {
        log.write(&[entry(i)], None).unwrap();
    }
    let seg = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let plan = log.plan_read(5, 6, u64::MAX).unwrap();
    match log.reader().read(plan) {
        Err(StorageError::Io(msg)) => assert!(msg.contains("damaged"), "{msg}"),
        other => panic!("expected a damage report, got {other:?}"),
    }
}
