//! Recovery: torn tails are cut, damage in the middle stops the open, directories are
//! checked for their owner.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use raft_core::{Entry, HardState, LogStore};
use raft_storage::{LogStorage, OpenError, StorageConfig, SyncPolicy, WAL_DIR};

fn cfg(dir: &Path) -> StorageConfig {
    let mut c = StorageConfig::new(dir, "test-cluster", 1);
    c.sync = SyncPolicy::Never; // these tests never crash the machine
    c
}

fn entry(term: u64, index: u64) -> Entry {
    Entry::normal(
        term,
        index,
        format!("entry-{index}-{}", "x".repeat(index as usize % 7)).into_bytes(),
    )
}

fn only_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = fs::read_dir(dir.join(WAL_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 1, "these tests use one segment");
    segs.pop().unwrap()
}

/// Writes entries 1..=n one write each; returns the byte range of the last write.
fn write_log(dir: &Path, n: u64) -> (u64, u64) {
    let mut log = LogStorage::open(cfg(dir)).unwrap();
    for i in 1..n {
        log.write(&[entry(1, i)], None).unwrap();
    }
    let seg = only_segment(dir);
    let before = fs::metadata(&seg).unwrap().len();
    log.write(&[entry(1, n)], None).unwrap();
    let after = fs::metadata(&seg).unwrap().len();
    (before, after)
}

fn assert_entries(log: &LogStorage, n: u64) {
    assert_eq!(log.last_index(), n);
    let got = log.entries(1, n + 1, u64::MAX).unwrap();
    let want: Vec<Entry> = (1..=n).map(|i| entry(1, i)).collect();
    assert_eq!(got, want);
}

#[test]
fn a_torn_last_record_is_cut_at_every_byte_offset_and_earlier_records_survive() {
    let master = tempfile::tempdir().unwrap();
    let (start, end) = write_log(master.path(), 5);
    let seg_name = only_segment(master.path()).file_name().unwrap().to_owned();
    let full = fs::read(only_segment(master.path())).unwrap();
    for cut in start..end {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(WAL_DIR)).unwrap();
        fs::copy(
            master.path().join("meta.json"),
            dir.path().join("meta.json"),
        )
        .unwrap();
        fs::write(
            dir.path().join(WAL_DIR).join(&seg_name),
            &full[..cut as usize],
        )
        .unwrap();
        let mut log =
            LogStorage::open(cfg(dir.path())).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_entries(&log, 4);
        // The log keeps working after the cut.
        log.write(&[entry(2, 5)], None).unwrap();
        drop(log);
        let log = LogStorage::open(cfg(dir.path())).unwrap();
        assert_eq!(log.term(5), Ok(2), "cut at {cut}");
    }
}

#[test]
fn a_damaged_record_followed_by_valid_ones_stops_the_open_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _) = write_log(dir.path(), 5);
    let seg = only_segment(dir.path());
    let mut bytes = fs::read(&seg).unwrap();
    // Damage a byte in the middle of the file (inside an early entry record).
    let at = bytes.len() / 3;
    bytes[at] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();
    match LogStorage::open(cfg(dir.path())) {
        Err(OpenError::Corrupt { file, offset, .. }) => {
            assert_eq!(file, seg);
            assert!(
                offset <= at as u64,
                "record offset {offset} must precede the damaged byte {at}"
            );
            let msg = OpenError::Corrupt {
                file,
                offset,
                reason: String::new(),
            }
            .to_string();
            assert!(msg.contains(&seg.display().to_string()) && msg.contains(&offset.to_string()));
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("a corrupt log must not open"),
    }
}

#[test]
fn a_complete_last_record_with_a_flipped_bit_refuses_to_open() {
    // A crash cannot flip a bit in a record it wrote whole: the record may have been
    // acknowledged, so cutting it would silently lose it.
    let dir = tempfile::tempdir().unwrap();
    let (start, end) = write_log(dir.path(), 5);
    let seg = only_segment(dir.path());
    let mut bytes = fs::read(&seg).unwrap();
    let at = (start + (end - start) / 2) as usize;
    bytes[at] ^= 0x01;
    fs::write(&seg, &bytes).unwrap();
    match LogStorage::open(cfg(dir.path())) {
        Err(OpenError::Corrupt {
            file,
            offset,
            reason,
        }) => {
            assert_eq!(file, seg);
            assert_eq!(offset, start);
            assert!(reason.contains("may have been acknowledged"), "{reason}");
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("a damaged complete record must not be cut silently"),
    }
    assert_eq!(fs::read(&seg).unwrap(), bytes, "nothing was cut");
}

#[test]
fn a_last_record_with_a_sector_that_never_reached_the_disk_is_cut_as_torn() {
    // The file grew, but a sector of the last write still reads as zeros: a crash
    // interrupted the write before its sync, so it was never acknowledged.
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogStorage::open(cfg(dir.path())).unwrap();
    for i in 1..=3 {
        log.write(&[entry(1, i)], None).unwrap();
    }
    let seg = only_segment(dir.path());
    let start = fs::metadata(&seg).unwrap().len();
    log.write(&[Entry::normal(1, 4, vec![0x5a; 1500])], None)
        .unwrap();
    drop(log);
    let mut bytes = fs::read(&seg).unwrap();
    let sector = (start as usize / 512 + 1) * 512; // the first sector boundary inside it
    bytes[sector..sector + 512].fill(0);
    fs::write(&seg, &bytes).unwrap();
    let log = LogStorage::open(cfg(dir.path())).unwrap();
    assert_entries(&log, 3);
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        start,
        "the torn write was cut"
    );
}

#[test]
fn a_crash_while_creating_the_first_segment_is_recovered_by_starting_afresh() {
    for kept in [0usize, 5, 12] {
        let dir = tempfile::tempdir().unwrap();
        drop(LogStorage::open(cfg(dir.path())).unwrap());
        // The header (and the initial hard state) only partly reached the disk.
        let seg = only_segment(dir.path());
        let bytes = fs::read(&seg).unwrap();
        fs::write(&seg, &bytes[..kept]).unwrap();
        let mut log = LogStorage::open(cfg(dir.path())).unwrap();
        log.write(&[entry(1, 1)], None).unwrap();
        drop(log);
        // The next start finds a proper log: header first, then the entry.
        let log = LogStorage::open(cfg(dir.path()))
            .unwrap_or_else(|e| panic!("after keeping {kept} bytes: {e}"));
        assert_entries(&log, 1);
    }
}

#[test]
fn a_lone_later_segment_without_a_header_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.segment_bytes = 200;
    {
        let mut log = LogStorage::open(c.clone()).unwrap();
        for i in 1..=20 {
            log.write(&[entry(1, i)], None).unwrap();
        }
        log.purge_to(20).unwrap();
    }
    let seg = only_segment(dir.path());
    fs::write(&seg, b"").unwrap();
    match LogStorage::open(c) {
        Err(OpenError::Corrupt { reason, .. }) => {
            assert!(reason.contains("hard state"), "{reason}")
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("a log that lost its hard state must not open as new"),
    }
}

#[test]
fn hard_state_and_truncations_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let hs = HardState {
        term: 3,
        vote: Some(2),
        commit: 2,
    };
    {
        let mut log = LogStorage::open(cfg(dir.path())).unwrap();
        log.write(&[entry(1, 1), entry(1, 2), entry(1, 3)], None)
            .unwrap();
        log.write(&[entry(3, 2)], Some(hs)).unwrap();
    }
    let log = LogStorage::open(cfg(dir.path())).unwrap();
    assert_eq!(log.hard_state().unwrap(), hs);
    assert_eq!(log.last_index(), 2);
    assert_eq!(log.term(2), Ok(3));
    assert_eq!(
        log.entries(1, 3, u64::MAX).unwrap(),
        vec![entry(1, 1), entry(3, 2)]
    );
}

#[test]
fn purge_drops_whole_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.segment_bytes = 200;
    {
        let mut log = LogStorage::open(c.clone()).unwrap();
        for i in 1..=60 {
            log.write(&[entry(1, i)], None).unwrap();
        }
        let before = log.segment_count();
        assert!(before > 5, "small segments roll often ({before})");
        log.purge_to(40).unwrap();
        assert!(log.segment_count() < before);
        assert_eq!(log.first_index(), 41);
        assert_eq!(log.term(40), Ok(1));
    }
    let log = LogStorage::open(c).unwrap();
    assert_eq!(log.first_index(), 41);
    assert_eq!(log.last_index(), 60);
    assert_eq!(
        log.entries(41, 61, u64::MAX).unwrap(),
        (41..=60).map(|i| entry(1, i)).collect::<Vec<_>>()
    );
}

#[test]
fn a_directory_of_another_node_or_cluster_or_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(LogStorage::open(cfg(dir.path())).unwrap());

    let mut other_node = cfg(dir.path());
    other_node.node_id = 2;
    match LogStorage::open(other_node) {
        Err(OpenError::WrongNode {
            found: 1,
            expected: 2,
            ..
        }) => {}
        other => panic!("expected WrongNode, got {:?}", other.err()),
    }
    let mut other_cluster = cfg(dir.path());
    other_cluster.cluster_id = "elsewhere".into();
    match LogStorage::open(other_cluster) {
        Err(OpenError::WrongCluster {
            found, expected, ..
        }) => {
            assert_eq!(
                (found.as_str(), expected.as_str()),
                ("test-cluster", "elsewhere")
            );
        }
        other => panic!("expected WrongCluster, got {:?}", other.err()),
    }
    let meta = dir.path().join("meta.json");
    let original = fs::read_to_string(&meta).unwrap();
    let current = format!("\"format_version\": {}", raft_storage::BASE_FORMAT_VERSION);
    assert!(original.contains(&current), "{original}");
    fs::write(&meta, original.replace(&current, "\"format_version\": 99")).unwrap();
    match LogStorage::open(cfg(dir.path())) {
        Err(OpenError::NewerFormat { found: 99, .. }) => {}
        other => panic!("expected NewerFormat, got {:?}", other.err()),
    }
    // Format 1 held key-value commands as plain entries: refused with what to do.
    fs::write(&meta, original.replace(&current, "\"format_version\": 1")).unwrap();
    match LogStorage::open(cfg(dir.path())) {
        Err(e @ OpenError::OldFormat { found: 1, .. }) => {
            assert!(e.to_string().contains("export the data"), "{e}")
        }
        other => panic!("expected OldFormat, got {:?}", other.err()),
    }
    // Format 2 is read, and marked as the base format so older builds refuse it.
    fs::write(&meta, original.replace(&current, "\"format_version\": 2")).unwrap();
    drop(LogStorage::open(cfg(dir.path())).unwrap());
    assert!(fs::read_to_string(&meta).unwrap().contains(&current));
}

#[test]
fn a_directory_stays_readable_by_the_previous_release_until_it_holds_what_that_cannot_read() {
    use raft_core::{ClusterVersion, EntryKind};
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta.json");
    let format_of = || {
        let v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&meta).unwrap()).unwrap();
        (
            v["format_version"].as_u64().unwrap(),
            v["cluster_version"].clone(),
        )
    };
    let mut log = LogStorage::open(cfg(dir.path())).unwrap();
    log.write(&[entry(1, 1), entry(1, 2)], None).unwrap();
    assert_eq!(
        format_of(),
        (3, serde_json::Value::Null),
        "release 0.1.0 reads format 3"
    );
    assert_eq!(log.cluster_version(), ClusterVersion::INITIAL);

    // The first entry of a kind release 0.1.0 cannot decode marks the directory first.
    let raise = Entry {
        term: 1,
        index: 3,
        kind: EntryKind::ClusterVersion,
        data: ClusterVersion::CURRENT.encode().into(),
    };
    log.write(&[raise], None).unwrap();
    assert_eq!(format_of().0, u64::from(raft_storage::FORMAT_VERSION));
    assert_eq!(log.format(), raft_storage::FORMAT_VERSION);

    // The cluster version is recorded with it, and never goes down.
    let next = ClusterVersion { major: 0, minor: 9 };
    log.record_cluster_version(next).unwrap();
    log.record_cluster_version(ClusterVersion::INITIAL).unwrap();
    assert_eq!(format_of().1, serde_json::json!("0.9"));
    drop(log);
    let log = LogStorage::open(cfg(dir.path())).unwrap();
    assert_eq!(log.cluster_version(), next);
    assert_eq!(log.format(), raft_storage::FORMAT_VERSION);
    assert_eq!(
        LogStore::entries(&log, 3, 4, u64::MAX).unwrap()[0].kind,
        EntryKind::ClusterVersion
    );
}

#[test]
fn a_directory_in_use_is_refused_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let first = LogStorage::open(cfg(dir.path())).unwrap();
    match LogStorage::open(cfg(dir.path())) {
        Err(OpenError::Locked(d)) => assert_eq!(d, dir.path()),
        other => panic!("expected Locked, got {:?}", other.err()),
    }
    drop(first);
    LogStorage::open(cfg(dir.path())).unwrap();
}

#[test]
fn an_entry_over_the_record_limit_is_refused_without_stopping_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_record_bytes = 1024;
    let mut log = LogStorage::open(c.clone()).unwrap();
    log.write(&[entry(1, 1)], None).unwrap();
    let big = Entry::normal(1, 2, vec![0u8; 4096]);
    match log.write(&[big], None) {
        Err(raft_storage::WriteError::TooLarge {
            index: 2,
            max: 1024,
            ..
        }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(!log.has_failed());
    log.write(&[entry(1, 2)], None).unwrap();
    drop(log);
    let log = LogStorage::open(c).unwrap();
    assert_entries(&log, 2);
}
