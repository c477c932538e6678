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
    for cache in [0, 1 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), cache, 1 << 20);
        for i in 1..=10 {
            log.write(&[entry(i)], None).unwrap();
        }
        let reader = log.reader();
        let one = reader.read(log.plan_read(1, 11, 1).unwrap()).unwrap();
        assert_eq!(one, vec![entry(1)], "cache {cache}");
        let some = reader.read(log.plan_read(1, 11, 100).unwrap()).unwrap();
        assert!(
            some.len() > 1 && some.len() < 10,
            "{} (cache {cache})",
            some.len()
        );
        assert_eq!(some, (1..=some.len() as u64).map(entry).collect::<Vec<_>>());
        assert!(log.plan_read(11, 20, u64::MAX).unwrap().is_empty());
    }
}

#[test]
fn reads_from_disk_find_every_entry_from_sparse_marks_across_segments_and_truncations() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = StorageConfig::new(dir.path(), "test-cluster", 1);
    c.sync = SyncPolicy::Never;
    c.cache_bytes = 0;
    c.segment_bytes = 2_000;
    c.index_interval_bytes = 100;
    let mut log = LogStorage::open(c.clone()).unwrap();
    let e = |term: u64, i: u64| Entry::normal(term, i, format!("t{term} entry {i}").into_bytes());
    for i in 1..=200 {
        log.write(&[e(1, i)], None).unwrap();
    }
    // Replace 150.. (a truncation in the active segment) and 120.. (into an older one).
    log.write(&(150..=170).map(|i| e(2, i)).collect::<Vec<_>>(), None)
        .unwrap();
    log.write(&(120..=260).map(|i| e(3, i)).collect::<Vec<_>>(), None)
        .unwrap();
    let want: Vec<Entry> = (1..120)
        .map(|i| e(1, i))
        .chain((120..=260).map(|i| e(3, i)))
        .collect();
    let (marks, runs) = log.index_footprint();
    assert!(marks < 260 / 2, "{marks} marks for 260 entries");
    assert_eq!(runs, 2);
    for reopened in [false, true] {
        if reopened {
            drop(log);
            log = LogStorage::open(c.clone()).unwrap();
        }
        let reader = log.reader();
        for lo in 1..=260 {
            for hi in [lo + 1, lo + 7, 261] {
                let hi = hi.min(261);
                let got = reader
                    .read(log.plan_read(lo, hi, u64::MAX).unwrap())
                    .unwrap();
                let want = &want[(lo - 1) as usize..(hi - 1) as usize];
                assert_eq!(got, want, "{lo}..{hi} (reopened: {reopened})");
                assert_eq!(log.entries(lo, hi, u64::MAX).unwrap(), want);
            }
            assert_eq!(log.term(lo), Ok(want[(lo - 1) as usize].term));
        }
    }
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

#[test]
fn the_index_keeps_nothing_per_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = StorageConfig::new(dir.path(), "test-cluster", 1);
    c.sync = SyncPolicy::Never;
    c.segment_bytes = 1 << 20;
    let mut log = LogStorage::open(c.clone()).unwrap();
    let n = 100_000u64;
    for batch in 0..n / 1_000 {
        let entries: Vec<Entry> = (1..=1_000)
            .map(|i| Entry::normal(1 + batch / 40, batch * 1_000 + i, vec![7u8; 64]))
            .collect();
        log.write(&entries, None).unwrap();
    }
    let bytes: u64 = std::fs::read_dir(dir.path().join(raft_storage::WAL_DIR))
        .unwrap()
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum();
    let (marks, runs) = log.index_footprint();
    let segments = log.segment_count() as u64;
    // One mark per interval of bytes (and one where each segment starts), one run per term.
    assert!(
        marks as u64 <= bytes / c.index_interval_bytes + segments,
        "{marks} marks for {bytes} bytes in {segments} segments"
    );
    assert!((marks as u64) < n / 50, "{marks} marks for {n} entries");
    assert_eq!(runs, 3);
    drop(log);
    let log = LogStorage::open(c).unwrap();
    assert_eq!(
        log.index_footprint(),
        (marks, runs),
        "the same after a restart"
    );
    assert_eq!(log.entries(54_321, 54_322, 0).unwrap()[0].index, 54_321);
}

#[test]
fn retention_drops_whole_segments_past_its_limits_and_never_past_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = StorageConfig::new(dir.path(), "test-cluster", 1);
    c.sync = SyncPolicy::Never;
    c.segment_bytes = 1_000;
    let mut log = LogStorage::open(c).unwrap();
    for i in 1..=300 {
        log.write(&[entry(i)], None).unwrap();
    }
    assert!(log.segment_count() > 5);
    assert_eq!(
        log.retention_point(None, None, 300),
        0,
        "no limit: keep all"
    );
    let p = log.retention_point(Some(100), None, 300);
    assert!(p > 150 && p <= 200, "keeps at least 100 entries: {p}");
    assert_eq!(
        log.entries(p, p + 1, 0).unwrap()[0].index,
        p,
        "the point is an entry"
    );
    let bound = log.retention_point(Some(100), None, 120);
    assert!(bound <= 120 && bound > 0, "never past the bound: {bound}");
    assert_eq!(log.retention_point(Some(10_000), None, 300), 0);
    let by_bytes = log.retention_point(None, Some(1_000), 300);
    assert!(
        by_bytes > p,
        "1,000 bytes hold fewer than 100 entries: {by_bytes}"
    );
    let segments = log.segment_count();
    log.purge_to(p).unwrap();
    assert_eq!(log.first_index(), p + 1);
    assert!(log.segment_count() < segments, "whole segments went");
    assert_eq!(
        log.retention_point(Some(100), None, 300),
        0,
        "nothing more to drop"
    );
}
