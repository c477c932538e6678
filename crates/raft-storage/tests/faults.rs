//! I/O failures (disk full, EIO on write or sync) injected through a faulty file layer:
//! the store reports them, refuses every later write, and never reports a write done that
//! is not durable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use raft_core::{Entry, LogStore};
use raft_storage::{LogStorage, StdVfs, StorageConfig, Vfs, VfsFile, WriteError};

/// Counts down operations of each kind; when a counter reaches zero that operation fails.
#[derive(Default)]
struct Switches {
    appends_left: AtomicI64,
    syncs_left: AtomicI64,
    creates_left: AtomicI64,
    /// Bytes of the failing append that still reach the file (a partial write).
    partial: AtomicI64,
}

impl Switches {
    fn healthy() -> Arc<Self> {
        let s = Switches::default();
        s.appends_left.store(i64::MAX, Ordering::SeqCst);
        s.syncs_left.store(i64::MAX, Ordering::SeqCst);
        s.creates_left.store(i64::MAX, Ordering::SeqCst);
        Arc::new(s)
    }
    fn take(counter: &AtomicI64) -> bool {
        counter.fetch_sub(1, Ordering::SeqCst) > 0
    }
}

struct FaultyVfs {
    inner: StdVfs,
    sw: Arc<Switches>,
}

struct FaultyFile {
    inner: Box<dyn VfsFile>,
    sw: Arc<Switches>,
}

impl VfsFile for FaultyFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        if !Switches::take(&self.sw.appends_left) {
            let n = (self.sw.partial.load(Ordering::SeqCst).max(0) as usize).min(buf.len());
            self.inner.append(&buf[..n])?;
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.inner.append(buf)
    }
    fn sync_data(&self) -> io::Result<()> {
        if !Switches::take(&self.sw.syncs_left) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        self.inner.sync_data()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
}

impl Vfs for FaultyVfs {
    fn open(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        Ok(Box::new(FaultyFile {
            inner: self.inner.open(path)?,
            sw: self.sw.clone(),
        }))
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        if !Switches::take(&self.sw.creates_left) {
            return Err(io::Error::from_raw_os_error(13)); // EACCES: permission lost
        }
        Ok(Box::new(FaultyFile {
            inner: self.inner.create(path)?,
            sw: self.sw.clone(),
        }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.inner.write_atomic(path, data)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
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

fn entry(i: u64) -> Entry {
    Entry::normal(1, i, format!("entry-{i}").into_bytes())
}

/// A store in `dir` on the faulty disk, with entries 1 to 5 written while it was healthy.
fn five_entries(dir: &Path, sw: &Arc<Switches>) -> LogStorage {
    let mut log = open_faulty(dir, sw, 64 << 20);
    for i in 1..=5 {
        log.write(&[entry(i)], None).unwrap();
    }
    log
}

fn open_faulty(dir: &Path, sw: &Arc<Switches>, segment_bytes: u64) -> LogStorage {
    let mut cfg = StorageConfig::new(dir, "faults", 1);
    cfg.segment_bytes = segment_bytes;
    LogStorage::open_with(
        cfg,
        Arc::new(FaultyVfs {
            inner: StdVfs,
            sw: sw.clone(),
        }),
    )
    .unwrap()
}

fn reopen(dir: &Path) -> LogStorage {
    LogStorage::open(StorageConfig::new(dir, "faults", 1)).unwrap()
}

fn assert_stopped(log: &mut LogStorage) {
    assert!(log.has_failed());
    assert!(matches!(log.write(&[], None), Err(WriteError::Failed)));
    let next = log.last_index() + 1;
    assert!(matches!(
        log.write(&[entry(next)], None),
        Err(WriteError::Failed)
    ));
    assert!(matches!(log.purge_to(1), Err(WriteError::Failed)));
}

#[test]
fn a_failed_sync_is_reported_and_stops_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let sw = Switches::healthy();
    let mut log = five_entries(dir.path(), &sw);
    sw.syncs_left.store(0, Ordering::SeqCst);
    match log.write(&[entry(6)], None) {
        Err(WriteError::Io { op: "sync", .. }) => {}
        other => panic!("expected a sync failure, got {other:?}"),
    }
    assert_eq!(
        log.last_index(),
        5,
        "a write that was not made durable is not in the log"
    );
    assert_stopped(&mut log);
    drop(log);
    let log = reopen(dir.path());
    assert_eq!(
        log.entries(1, 6, u64::MAX).unwrap(),
        (1..=5).map(entry).collect::<Vec<_>>()
    );
}

#[test]
fn a_disk_full_partial_append_is_reported_and_cut_off_at_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let sw = Switches::healthy();
    let mut log = five_entries(dir.path(), &sw);
    sw.appends_left.store(0, Ordering::SeqCst);
    sw.partial.store(7, Ordering::SeqCst);
    match log.write(&[entry(6), entry(7)], None) {
        Err(WriteError::Io {
            op: "append to",
            source,
            ..
        }) => {
            assert_eq!(source.raw_os_error(), Some(28));
        }
        other => panic!("expected ENOSPC, got {other:?}"),
    }
    assert_stopped(&mut log);
    drop(log);
    let log = reopen(dir.path());
    assert_eq!(log.last_index(), 5, "the partial record was cut off");
    assert_eq!(
        log.entries(1, 6, u64::MAX).unwrap(),
        (1..=5).map(entry).collect::<Vec<_>>()
    );
}

#[test]
fn losing_permission_to_create_the_next_segment_stops_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let sw = Switches::healthy();
    let mut log = open_faulty(dir.path(), &sw, 120);
    sw.creates_left.store(0, Ordering::SeqCst);
    let mut acked = 0;
    let mut failed = false;
    for i in 1..=20 {
        match log.write(&[entry(i)], None) {
            Ok(()) => acked = i,
            Err(WriteError::Io { op: "create", .. }) => {
                failed = true;
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(failed, "rolling to a new segment must fail");
    assert_stopped(&mut log);
    drop(log);
    let log = reopen(dir.path());
    assert!(log.last_index() >= acked);
    assert_eq!(
        log.entries(1, acked + 1, u64::MAX).unwrap(),
        (1..=acked).map(entry).collect::<Vec<_>>()
    );
}

#[test]
fn a_deferred_write_is_read_at_once_and_durable_once_its_sync_returns() {
    let dir = tempfile::tempdir().unwrap();
    let sw = Switches::healthy();
    let mut log = open_faulty(dir.path(), &sw, 64 << 20);
    let pending = log
        .write_deferred(&[entry(1), entry(2)], None, true)
        .unwrap()
        .expect("a write that must be synced leaves its sync to the caller");
    assert_eq!(
        log.last_index(),
        2,
        "the store's view has the entries at once"
    );
    // Meanwhile the store takes more writes; the one sync covers both.
    let second = log.write_deferred(&[entry(3)], None, true).unwrap();
    let syncs_before = sw.syncs_left.load(Ordering::SeqCst);
    pending.sync().unwrap();
    second.expect("a second pending sync").sync().unwrap();
    assert_eq!(syncs_before - sw.syncs_left.load(Ordering::SeqCst), 2);
    assert!(
        log.write_deferred(&[entry(4)], None, false)
            .unwrap()
            .is_none(),
        "a write that need not be synced leaves no sync"
    );
    drop(log);
    assert_eq!(
        reopen(dir.path()).entries(1, 5, u64::MAX).unwrap(),
        (1..=4).map(entry).collect::<Vec<_>>()
    );
}

#[test]
fn a_failed_deferred_sync_stops_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let sw = Switches::healthy();
    let mut log = open_faulty(dir.path(), &sw, 64 << 20);
    log.write(&[entry(1)], None).unwrap();
    let pending = log
        .write_deferred(&[entry(2)], None, true)
        .unwrap()
        .unwrap();
    sw.syncs_left.store(0, Ordering::SeqCst);
    let failure = pending.sync().expect_err("the sync fails");
    assert!(!log.has_failed(), "the store learns of it from the caller");
    match log.sync_failed(failure) {
        WriteError::Io { op: "sync", .. } => {}
        other => panic!("expected a sync error, got {other:?}"),
    }
    assert_stopped(&mut log);
}

#[test]
fn a_deferred_write_that_starts_a_new_segment_is_synced_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let sw = Switches::healthy();
    // Tiny segments: every write fills one, and the store syncs it before the next.
    let mut log = open_faulty(dir.path(), &sw, 64);
    let big = Entry::normal(1, 1, vec![7u8; 200]);
    assert!(
        log.write_deferred(&[big], None, true).unwrap().is_none(),
        "the write was synced when its segment was closed"
    );
    assert!(log.segment_count() >= 2);
}

/// A snapshot install is one write of several records (the snapshot, a truncation, the
/// purge of everything it covers). Torn at any byte by a full disk, it must never leave
/// a log that starts past the snapshot it keeps: the node could then restore no state
/// that reaches its log, and would refuse to start.
#[test]
fn a_snapshot_install_torn_at_any_byte_leaves_a_log_the_snapshot_reaches() {
    let meta = raft_core::SnapshotMeta {
        index: 20,
        term: 2,
        membership: raft_core::Membership::new([1, 2, 3]),
    };
    let mut whole = false;
    let mut cut = 0i64;
    while !whole {
        let dir = tempfile::tempdir().unwrap();
        let sw = Switches::healthy();
        let mut log = five_entries(dir.path(), &sw);
        sw.appends_left.store(0, Ordering::SeqCst);
        sw.partial.store(cut, Ordering::SeqCst);
        assert!(log.install_snapshot(&meta).is_err(), "cut at {cut}");
        drop(log);
        let log = reopen(dir.path());
        let snap = log.snapshot().index;
        assert!(
            log.first_index() <= snap + 1,
            "cut at {cut}: the log starts at {} but the snapshot kept is at {snap}",
            log.first_index()
        );
        assert!(snap == 0 || snap == 20, "cut at {cut}: snapshot {snap}");
        if snap == 0 {
            assert_eq!(log.last_index(), 5, "cut at {cut}");
        } else {
            assert!(log.last_index() >= 20, "cut at {cut}");
        }
        // Once the purge survives too, every longer cut keeps it all.
        whole = snap == 20 && log.first_index() == 21;
        cut += 1;
        assert!(cut < 10_000, "the install never survived whole");
    }
}
