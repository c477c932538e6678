//! Segment summaries: a closed segment is summarised beside it, and opening the store reads
//! the summaries instead of the closed segments; a summary that is missing, damaged or does
//! not fit its segment is ignored, and the store opens to the same state either way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use raft_core::{Entry, HardState, LogStore};
use raft_storage::{LogStorage, StdVfs, StorageConfig, SyncPolicy, Vfs, VfsFile, WAL_DIR};

/// The real file system, noting every whole-file read.
#[derive(Default)]
struct CountingVfs {
    inner: StdVfs,
    reads: Mutex<Vec<PathBuf>>,
}

impl Vfs for CountingVfs {
    fn open(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.inner.open(path)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.inner.create(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.reads.lock().unwrap().push(path.to_path_buf());
        self.inner.read(path)
    }
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.inner.write_atomic(path, data)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.list(dir)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
}

fn cfg(dir: &Path) -> StorageConfig {
    let mut c = StorageConfig::new(dir, "summaries", 1);
    c.sync = SyncPolicy::Never;
    c.segment_bytes = 4_096;
    c.index_interval_bytes = 512;
    c
}

fn entry(term: u64, i: u64) -> Entry {
    Entry::normal(term, i, format!("term {term} entry {i}").into_bytes())
}

/// A log over many segments with truncations (into the active segment and into a closed
/// one), a purge, a recorded snapshot and hard states.
fn write_history(log: &mut LogStorage) {
    for i in 1..=600 {
        let hs = HardState {
            term: 1,
            vote: Some(1),
            commit: i - 1,
        };
        log.write(&[entry(1, i)], Some(hs)).unwrap();
    }
    log.write(&(590..=640).map(|i| entry(2, i)).collect::<Vec<_>>(), None)
        .unwrap();
    log.write(&(400..=700).map(|i| entry(3, i)).collect::<Vec<_>>(), None)
        .unwrap();
    log.purge_to(150).unwrap();
    let meta = raft_core::SnapshotMeta {
        index: 300,
        term: 1,
        membership: raft_core::Membership::new(vec![1]),
    };
    log.record_snapshot(&meta).unwrap();
    log.write(
        &[entry(3, 701)],
        Some(HardState {
            term: 3,
            vote: Some(2),
            commit: 650,
        }),
    )
    .unwrap();
}

/// Everything a store shows of its state.
fn state(
    log: &LogStorage,
) -> (
    u64,
    u64,
    HardState,
    raft_core::SnapshotMeta,
    Vec<Entry>,
    Vec<u64>,
) {
    let (first, last) = (log.first_index(), LogStore::last_index(log));
    let entries = log.entries(first, last + 1, u64::MAX).unwrap();
    let terms = (first - 1..=last).map(|i| log.term(i).unwrap()).collect();
    (
        first,
        last,
        log.hard_state().unwrap(),
        log.snapshot().clone(),
        entries,
        terms,
    )
}

fn summaries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(WAL_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "idx"))
        .collect();
    v.sort();
    v
}

#[test]
fn opening_reads_closed_segments_through_their_summaries_and_finds_the_same_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogStorage::open(cfg(dir.path())).unwrap();
    write_history(&mut log);
    let want = state(&log);
    let segments = log.segment_count();
    assert!(segments > 5, "{segments} segments");
    drop(log);
    assert_eq!(
        summaries(dir.path()).len(),
        segments - 1,
        "every closed segment"
    );

    let vfs = Arc::new(CountingVfs::default());
    let log = LogStorage::open_with(cfg(dir.path()), vfs.clone()).unwrap();
    assert_eq!(state(&log), want);
    let whole: Vec<PathBuf> = vfs
        .reads
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .cloned()
        .collect();
    assert_eq!(
        whole.len(),
        1,
        "only the active segment is read whole: {whole:?}"
    );
}

#[test]
fn without_summaries_or_with_damaged_ones_the_store_opens_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogStorage::open(cfg(dir.path())).unwrap();
    write_history(&mut log);
    let want = state(&log);
    drop(log);
    let files = summaries(dir.path());
    // Damage one, cut another, remove a third.
    let mut bytes = std::fs::read(&files[1]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&files[1], bytes).unwrap();
    let bytes = std::fs::read(&files[2]).unwrap();
    std::fs::write(&files[2], &bytes[..bytes.len() - 1]).unwrap();
    std::fs::remove_file(&files[3]).unwrap();
    let log = LogStorage::open(cfg(dir.path())).unwrap();
    assert_eq!(state(&log), want);
    drop(log);
    assert_eq!(summaries(dir.path()).len(), files.len(), "written again");
    // None at all.
    for f in summaries(dir.path()) {
        std::fs::remove_file(f).unwrap();
    }
    let log = LogStorage::open(cfg(dir.path())).unwrap();
    assert_eq!(state(&log), want);
}

#[test]
fn a_summary_of_another_segment_or_length_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogStorage::open(cfg(dir.path())).unwrap();
    write_history(&mut log);
    let want = state(&log);
    drop(log);
    let files = summaries(dir.path());
    // Segment 3's summary in segment 2's place: the wrong number inside.
    std::fs::copy(&files[2], &files[1]).unwrap();
    let log = LogStorage::open(cfg(dir.path())).unwrap();
    assert_eq!(state(&log), want);
}

#[test]
fn purged_segments_take_their_summaries_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogStorage::open(cfg(dir.path())).unwrap();
    write_history(&mut log);
    let last = LogStore::last_index(&log);
    log.purge_to(last - 10).unwrap();
    let segments = log.segment_count();
    drop(log);
    let segment_files: Vec<PathBuf> = summaries(dir.path())
        .iter()
        .map(|p| p.with_extension("wal"))
        .collect();
    assert_eq!(segment_files.len(), segments - 1, "one per closed segment");
    assert!(
        segment_files.iter().all(|p| p.exists()),
        "no summary without its segment"
    );
    let log = LogStorage::open(cfg(dir.path())).unwrap();
    assert_eq!(log.first_index(), last - 9);
}
