//! The durable log: opening and recovering a data directory, group-committed writes,
//! reads for the core, and prefix purge.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft_core::{
    ClusterVersion, Entry, EntryKind, HardState, LogIndex, LogStore, Ready, SnapshotMeta,
    StorageError, Term,
};

use crate::cache::Cache;
use crate::config::{StorageConfig, SyncPolicy};
use crate::error::{OpenError, WriteError};
use crate::index::SparseIndex;
use crate::meta::{self, DirInfo, DirLock};
use crate::reader::{carry_out, PlanItem, ReadPlan, SegmentReader};
use crate::record::{encode_into, Head, Record, RecordRef, FORMAT_VERSION};
use crate::segment::{parse_segment_seq, scan, segment_path, ScanEnd};
use crate::stats::StorageStats;
use crate::summary::{summary_path, Step, Summarizer, Summary};
use crate::vfs::{StdVfs, Vfs, VfsFile};

/// The name of the directory holding the segments, inside the data directory.
pub const WAL_DIR: &str = "wal";

/// What recovery found.
#[derive(Debug, PartialEq, Eq)]
enum Recovered {
    /// A log to continue.
    Log,
    /// Only a segment whose creation never finished (removed): nothing was ever written.
    NeverUsed,
}

struct Segment {
    path: PathBuf,
    /// Shared with [`PendingSync`]s, which make it durable outside the store's lock.
    file: Arc<dyn VfsFile>,
    size: u64,
}

/// A durable Raft log in a data directory: segmented, checksummed, group-committed.
///
/// Every [`write`](Self::write) is one append to the active segment and, under
/// [`SyncPolicy::Always`], one `fdatasync`; it returns only once the data is durable. After
/// any I/O failure the store refuses all further writes ([`WriteError::Failed`]).
pub struct LogStorage {
    cfg: StorageConfig,
    vfs: Arc<dyn Vfs>,
    _lock: DirLock,
    wal_dir: PathBuf,
    segments: BTreeMap<u64, Segment>,
    active: u64,
    /// Where entries `first..=last` are, and their terms: a few words per segment and per
    /// [`StorageConfig::index_interval_bytes`], nothing per entry.
    index: SparseIndex,
    /// Index and term of the entry just before `first` (purged, or 0/0).
    purged: (LogIndex, Term),
    /// The latest snapshot recorded (index 0: none).
    snapshot: SnapshotMeta,
    hard_state: HardState,
    cache: Cache,
    failed: bool,
    buf: Vec<u8>,
    stats: Arc<StorageStats>,
    reader: SegmentReader,
    /// The active segment holds writes not yet synced (commit-only hard states).
    dirty: bool,
    /// The directory's format and recorded cluster version (`meta.json`).
    info: DirInfo,
    /// The summary of the active segment so far, written beside it when it is closed.
    summarizer: Summarizer,
}

/// The sync a [`LogStorage::write_deferred`] left to its caller.
pub struct PendingSync {
    file: Arc<dyn VfsFile>,
    path: PathBuf,
    stats: Arc<StorageStats>,
}

/// A [`PendingSync`] that failed: hand it to [`LogStorage::sync_failed`].
#[derive(Debug)]
pub struct SyncFailure {
    path: PathBuf,
    source: std::io::Error,
}

impl std::fmt::Display for SyncFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sync {}: {}", self.path.display(), self.source)
    }
}

impl PendingSync {
    /// Makes the deferred write (and everything written to its segment before it) durable.
    pub fn sync(self) -> Result<(), SyncFailure> {
        timed_sync(&*self.file, &self.stats).map_err(|source| SyncFailure {
            path: self.path,
            source,
        })
    }
}

/// The checksum field of the first record of a segment's `bytes` (its header), 0 if
/// there is none.
fn header_crc(bytes: &[u8]) -> u32 {
    bytes
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// Syncs `file`, counting the call and its latency in `stats`.
fn timed_sync(file: &dyn VfsFile, stats: &StorageStats) -> std::io::Result<()> {
    let t0 = std::time::Instant::now();
    let r = file.sync_data();
    stats.synced(t0.elapsed());
    r
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> OpenError + 'a {
    move |source| OpenError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl LogStorage {
    /// Opens (or creates) the data directory on the real file system.
    pub fn open(cfg: StorageConfig) -> Result<Self, OpenError> {
        Self::open_with(cfg, Arc::new(StdVfs))
    }

    /// Opens (or creates) the data directory through `vfs`.
    pub fn open_with(cfg: StorageConfig, vfs: Arc<dyn Vfs>) -> Result<Self, OpenError> {
        let dir = cfg.dir.clone();
        vfs.create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let lock = meta::lock(&dir)?;
        let wal_dir = dir.join(WAL_DIR);
        vfs.create_dir_all(&wal_dir)
            .map_err(io_err("create", &wal_dir))?;
        let mut seqs: Vec<u64> = vfs
            .list(&wal_dir)
            .map_err(io_err("list", &wal_dir))?
            .iter()
            .filter_map(|p| parse_segment_seq(p))
            .collect();
        seqs.sort_unstable();
        let info =
            meta::check_or_create(&*vfs, &dir, &cfg.cluster_id, cfg.node_id, seqs.is_empty())?;
        let vfs_for_reader = vfs.clone();
        let wal_dir_for_reader = wal_dir.clone();
        let max_record_for_reader = cfg.max_record_bytes as usize;
        let cfg_interval = cfg.index_interval_bytes;

        let mut store = LogStorage {
            cache: Cache::new(cfg.cache_bytes),
            cfg,
            vfs,
            _lock: lock,
            wal_dir,
            segments: BTreeMap::new(),
            active: 0,
            index: SparseIndex::new(1, cfg_interval),
            summarizer: Summarizer::new(0, 0, 0, cfg_interval),
            purged: (0, 0),
            snapshot: SnapshotMeta::default(),
            hard_state: HardState::default(),
            failed: false,
            buf: Vec::new(),
            stats: Arc::new(StorageStats::default()),
            dirty: false,
            info,
            reader: SegmentReader::new(vfs_for_reader, wal_dir_for_reader, max_record_for_reader),
        };
        let fresh = seqs.is_empty() || store.recover(&seqs)? == Recovered::NeverUsed;
        if fresh {
            store.start_segment(1).map_err(|e| match e {
                WriteError::Io { op, path, source } => OpenError::Io { op, path, source },
                other => OpenError::BadMetadata {
                    path: store.wal_dir.clone(),
                    reason: other.to_string(),
                },
            })?;
        }
        Ok(store)
    }

    /// Replays every segment in order, rebuilding the index and hard state: a closed
    /// segment from its summary when it has a sound one, any other read whole.
    fn recover(&mut self, seqs: &[u64]) -> Result<Recovered, OpenError> {
        let max_len = self.cfg.max_record_bytes as usize;
        let mut seen_entry = false;
        for (i, &seq) in seqs.iter().enumerate() {
            let path = segment_path(&self.wal_dir, seq);
            if i > 0 && seq != seqs[i - 1] + 1 {
                return Err(OpenError::Corrupt {
                    file: path,
                    offset: 0,
                    reason: format!("segment {} is missing before it", seqs[i - 1] + 1),
                });
            }
            let is_last = i + 1 == seqs.len();
            if !is_last {
                if let Some((summary, file)) = self.read_summary(seq, &path) {
                    self.check_format(summary.format)?;
                    self.replay(&path, seq, &summary.steps, &mut seen_entry)?;
                    if let Some(hs) = summary.hard_state {
                        self.hard_state = hs;
                    }
                    let seg = Segment {
                        path: path.clone(),
                        file,
                        size: summary.size,
                    };
                    self.segments.insert(seq, seg);
                    self.active = seq;
                    continue;
                }
            }
            let bytes = self.vfs.read(&path).map_err(io_err("read", &path))?;
            let result = scan(&bytes, max_len);
            let mut valid_len = bytes.len() as u64;
            match result.end {
                ScanEnd::Clean => {}
                ScanEnd::Corrupt { offset } => {
                    return Err(OpenError::Corrupt {
                        file: path,
                        offset,
                        reason: "damaged record followed by valid records".into(),
                    })
                }
                ScanEnd::DamagedTail { offset } => {
                    return Err(OpenError::Corrupt {
                        file: path,
                        offset,
                        reason: "the last record is complete but fails its checksum; an \
                                 interrupted write cannot explain that (none of its sectors \
                                 is missing), and the record may have been acknowledged"
                            .into(),
                    })
                }
                ScanEnd::Torn { offset } if !is_last => {
                    return Err(OpenError::Corrupt {
                        file: path,
                        offset,
                        reason: "damaged record in a closed segment".into(),
                    })
                }
                ScanEnd::Torn { offset } => {
                    tracing::warn!(
                        file = %path.display(),
                        offset,
                        dropped_bytes = bytes.len() as u64 - offset,
                        "log ends with an unfinished write; cutting it off"
                    );
                    valid_len = offset;
                }
            }
            if result.records.is_empty() && is_last {
                // A segment whose creation did not finish (not even its header is there):
                // nothing in it was ever used. Only segment 1 may be alone like that: a
                // later one always follows its predecessor, which holds the state it
                // carries over (hard state, purge point).
                if i == 0 && seq != 1 {
                    return Err(OpenError::Corrupt {
                        file: path,
                        offset: 0,
                        reason: "the only segment has no header, and earlier segments are \
                                 gone: the hard state cannot be recovered"
                            .into(),
                    });
                }
                tracing::warn!(file = %path.display(), "removing an unfinished new segment");
                self.vfs.remove(&path).map_err(io_err("remove", &path))?;
                self.vfs
                    .sync_dir(&self.wal_dir)
                    .map_err(io_err("sync", &self.wal_dir))?;
                if i == 0 {
                    // The very first start crashed while creating the log: start afresh.
                    return Ok(Recovered::NeverUsed);
                }
                break;
            }
            let sum = self.summarize(seq, &path, header_crc(&bytes), result.records)?;
            self.replay(&path, seq, sum.steps(), &mut seen_entry)?;
            if let Some(hs) = sum.last_hard_state() {
                self.hard_state = hs;
            }
            let file = Arc::from(self.vfs.open(&path).map_err(io_err("open", &path))?);
            let seg = Segment {
                path: path.clone(),
                file,
                size: valid_len,
            };
            if valid_len < bytes.len() as u64 {
                seg.file
                    .set_len(valid_len)
                    .map_err(io_err("truncate", &path))?;
                seg.file.sync_data().map_err(io_err("sync", &path))?;
            }
            self.segments.insert(seq, seg);
            self.active = seq;
            if is_last {
                self.summarizer = sum;
            } else {
                // A closed segment read whole (summarised by an older build, or never):
                // summarised now, so that the next open need not read it.
                self.write_summary(&sum.finish(valid_len));
            }
        }
        if self.summarizer.seq() != self.active && self.segments.contains_key(&self.active) {
            // The last segment was an unfinished new one, removed: the one before it is
            // the active one again, and its summary goes on from what it holds.
            let path = segment_path(&self.wal_dir, self.active);
            let bytes = self.vfs.read(&path).map_err(io_err("read", &path))?;
            let records = scan(&bytes, max_len).records;
            self.summarizer = self.summarize(self.active, &path, header_crc(&bytes), records)?;
            let _ = self.vfs.remove(&summary_path(&self.wal_dir, self.active));
        }
        if self.snapshot.index > self.purged.0 && self.snapshot.index > self.last_index() {
            // An install whose purge did not reach the disk: the snapshot replaces every
            // entry kept, as the install would have.
            let (index, term) = (self.snapshot.index, self.snapshot.term);
            self.index.reset(index + 1);
            self.drop_prefix(index, term);
        }
        if self.index.is_empty() {
            self.index.reset(self.purged.0 + 1);
        } else if self.index.first() != self.purged.0 + 1 {
            return Err(OpenError::Corrupt {
                file: segment_path(&self.wal_dir, seqs[0]),
                offset: 0,
                reason: format!(
                    "the log starts at entry {} but only entries up to {} were purged",
                    self.index.first(),
                    self.purged.0
                ),
            });
        }
        if self.segments.is_empty() {
            return Err(OpenError::Corrupt {
                file: self.wal_dir.clone(),
                offset: 0,
                reason: "no usable segment".into(),
            });
        }
        Ok(Recovered::Log)
    }

    /// The summary of segment `seq` (at `path`, whose header's checksum field is `crc`)
    /// from its records.
    fn summarize(
        &self,
        seq: u64,
        path: &Path,
        crc: u32,
        records: Vec<(u64, Head, usize)>,
    ) -> Result<Summarizer, OpenError> {
        let corrupt = |offset: u64, reason: String| OpenError::Corrupt {
            file: path.to_path_buf(),
            offset,
            reason,
        };
        let mut records = records.into_iter();
        let no_header = "segment does not start with a header";
        let mut sum = match records.next() {
            Some((offset, Head::Other(first), _)) => match *first {
                Record::SegmentHeader { format, seq: s } if s == seq => {
                    self.check_format(format)?;
                    Summarizer::new(seq, format, crc, self.cfg.index_interval_bytes)
                }
                Record::SegmentHeader { seq: s, .. } => {
                    return Err(corrupt(offset, format!("unexpected header of segment {s}")))
                }
                _ => return Err(corrupt(offset, no_header.into())),
            },
            Some((offset, Head::Entry { .. }, _)) => return Err(corrupt(offset, no_header.into())),
            None => return Err(corrupt(0, no_header.into())),
        };
        for (offset, head, _size) in records {
            let record = match head {
                // Recovery needs an entry's place and term only: its payload stays
                // on disk (no copy of the whole log in memory while replaying).
                Head::Entry { index, term } => {
                    sum.entry(index, offset, term);
                    continue;
                }
                Head::Other(record) => *record,
            };
            match record {
                Record::SegmentHeader { seq: s, .. } => {
                    return Err(corrupt(offset, format!("unexpected header of segment {s}")))
                }
                Record::Entry(e) => sum.entry(e.index, offset, e.term),
                Record::HardState(hs) => sum.hard_state(hs),
                Record::Truncate { from } => sum.step(Step::Truncate { from }),
                Record::Purged { index, term } => sum.step(Step::Purged { index, term }),
                Record::Snapshot(meta) => sum.step(Step::Snapshot(meta)),
                Record::SnapshotV2(old) => sum.step(Step::Snapshot(SnapshotMeta::from(old))),
            }
        }
        Ok(sum)
    }

    /// Refuses a segment written in a newer format than this build reads.
    fn check_format(&self, format: u32) -> Result<(), OpenError> {
        if format > FORMAT_VERSION {
            return Err(OpenError::NewerFormat {
                dir: self.cfg.dir.clone(),
                found: format,
                supported: FORMAT_VERSION,
            });
        }
        Ok(())
    }

    /// Replays the steps of segment `seq` (at `path`) into the index and state.
    fn replay(
        &mut self,
        path: &Path,
        seq: u64,
        steps: &[Step],
        seen_entry: &mut bool,
    ) -> Result<(), OpenError> {
        let corrupt = |offset: u64, reason: String| OpenError::Corrupt {
            file: path.to_path_buf(),
            offset,
            reason,
        };
        for step in steps {
            match step {
                Step::Entries(run) => {
                    let expected = self.last_index() + 1;
                    if !*seen_entry && self.index.is_empty() {
                        // The earliest segment may start after purged entries; a later
                        // Purged record must then cover the gap (checked at the end).
                        *seen_entry = true;
                        self.index.reset(run.first);
                    } else if run.first != expected {
                        let at = run.marks.first().map_or(0, |m| m.offset);
                        return Err(corrupt(
                            at,
                            format!("entry {} where entry {expected} was expected", run.first),
                        ));
                    }
                    self.index.push_run(seq, run);
                }
                Step::Truncate { .. } if !*seen_entry => {
                    // Before the first surviving entry: it concerned purged segments.
                }
                &Step::Truncate { from } if from < self.index.first() => {
                    // Rewrites entries whose older copies sat in purged segments; the
                    // final check verifies nothing unpurged is missing.
                    self.index.reset(from);
                }
                &Step::Truncate { from } => {
                    if from > self.last_index() + 1 {
                        return Err(corrupt(0, format!("truncation at {from} outside the log")));
                    }
                    self.index.truncate(from);
                }
                &Step::Purged { index, term } => {
                    if index > self.purged.0 {
                        self.drop_prefix(index, term);
                    }
                }
                Step::Snapshot(meta) => {
                    if meta.index > self.snapshot.index {
                        self.snapshot = meta.clone();
                    }
                }
            }
        }
        Ok(())
    }

    /// Segment `seq`'s summary and open file, if it has a summary that fits it.
    fn read_summary(&self, seq: u64, path: &Path) -> Option<(Summary, Arc<dyn VfsFile>)> {
        let bytes = self.vfs.read(&summary_path(&self.wal_dir, seq)).ok()?;
        let summary = Summary::decode(&bytes).filter(|s| s.seq == seq)?;
        let file: Arc<dyn VfsFile> = Arc::from(self.vfs.open(path).ok()?);
        let mut head = [0u8; 8];
        file.read_exact_at(&mut head, 0).ok()?;
        let fits = file.size().ok()? == summary.size && header_crc(&head) == summary.header_crc;
        if !fits {
            tracing::warn!(file = %path.display(), "the segment's summary does not fit it: reading it whole");
            return None;
        }
        Some((summary, file))
    }

    /// Writes a closed segment's summary beside it. A summary is a shortcut for the next
    /// open: one that cannot be written is logged and left out.
    fn write_summary(&self, summary: &Summary) {
        let path = summary_path(&self.wal_dir, summary.seq);
        let written = summary
            .encode()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|bytes| self.vfs.write_atomic(&path, &bytes));
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = %e, "cannot write a segment's summary; the next start reads the segment whole");
        }
    }

    /// Forgets entries up to `index` in memory (they are purged).
    fn drop_prefix(&mut self, index: LogIndex, term: Term) {
        self.index.drop_through(index);
        self.purged = (index, term);
        self.cache.drop_through(index);
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// The index of the last entry (`first_index() - 1` when empty).
    pub fn last_index(&self) -> LogIndex {
        self.index.last()
    }

    /// The marks and term runs the store keeps in memory to find entries: they grow with
    /// the bytes of the log over [`StorageConfig::index_interval_bytes`] and with the
    /// elections it spans, never with each entry.
    pub fn index_footprint(&self) -> (usize, usize) {
        (self.index.marks(), self.index.term_runs())
    }

    /// Whether an earlier I/O failure stopped the store.
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// The directory's on-disk format: [`crate::BASE_FORMAT_VERSION`] until the store
    /// writes what only [`FORMAT_VERSION`] reads.
    pub fn format(&self) -> u32 {
        self.info.format
    }

    /// The cluster version recorded with
    /// [`record_cluster_version`](Self::record_cluster_version) (the initial one if none).
    pub fn cluster_version(&self) -> ClusterVersion {
        self.info.cluster_version
    }

    /// Records, durably, that this node applied (or installed a snapshot at) cluster
    /// version `version`; the directory is marked [`FORMAT_VERSION`] with it. An older or
    /// equal version changes nothing: the cluster version never goes down.
    pub fn record_cluster_version(&mut self, version: ClusterVersion) -> Result<(), WriteError> {
        if version <= self.info.cluster_version {
            return Ok(());
        }
        self.raise(DirInfo {
            format: FORMAT_VERSION,
            cluster_version: version,
        })
    }

    /// Rewrites `meta.json` with `info`.
    fn raise(&mut self, info: DirInfo) -> Result<(), WriteError> {
        if self.failed {
            return Err(WriteError::Failed);
        }
        let dir = self.cfg.dir.clone();
        match meta::write(
            &*self.vfs,
            &dir,
            &self.cfg.cluster_id,
            self.cfg.node_id,
            info,
        ) {
            Ok(()) => {
                tracing::info!(format = info.format, cluster_version = %info.cluster_version, "data directory marked");
                self.info = info;
                Ok(())
            }
            Err(e) => self.fail("write", dir.join(meta::META_FILE), e),
        }
    }

    /// The number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn fail<T>(
        &mut self,
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    ) -> Result<T, WriteError> {
        self.failed = true;
        tracing::error!(op, path = %path.display(), error = %source, "storage I/O failed; the store is stopped");
        Err(WriteError::Io { op, path, source })
    }

    /// The counters of this store's writes and syncs (shared; read them at any time).
    pub fn stats(&self) -> Arc<StorageStats> {
        self.stats.clone()
    }

    /// Persists a [`Ready`]'s snapshot (installed first, see
    /// [`install_snapshot`](Self::install_snapshot)), entries and hard state with one write,
    /// and one sync when [`Ready::must_sync`] asks for it (a commit index alone is written
    /// without a sync).
    pub fn persist(&mut self, rd: &Ready) -> Result<(), WriteError> {
        if !rd.must_persist() {
            return Ok(());
        }
        if let Some(meta) = &rd.snapshot {
            self.install_snapshot(meta)?;
        }
        self.write_batch(&rd.entries, rd.hard_state, rd.must_sync)
    }

    /// The latest snapshot recorded or installed.
    pub fn snapshot(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    /// Records that the state machine made (and keeps) a snapshot covering the log up to
    /// `meta.index`, durably. The entries stay until [`purge_to`](Self::purge_to) drops
    /// them. An older snapshot than the one recorded is ignored.
    pub fn record_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), WriteError> {
        if meta.index <= self.snapshot.index {
            return Ok(());
        }
        match LogStore::term(self, meta.index) {
            Ok(t) if t == meta.term => {}
            _ => {
                return Err(WriteError::SnapshotMismatch {
                    index: meta.index,
                    term: meta.term,
                })
            }
        }
        self.append_synced(&[RecordRef::Snapshot(meta)])?;
        self.snapshot = meta.clone();
        Ok(())
    }

    /// Installs a snapshot received from the leader: every entry is dropped (those up to its
    /// index are covered by it; any after it may conflict with the leader's log), the log
    /// continues after it, and segments that held only dropped entries are deleted. Durable
    /// when it returns. An older snapshot than the one recorded is ignored.
    pub fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), WriteError> {
        if self.failed {
            return Err(WriteError::Failed);
        }
        if meta.index <= self.snapshot.index || meta.index <= self.purged.0 {
            return Ok(());
        }
        // The snapshot's record goes first: a write torn part way (a crash, a full disk)
        // then keeps the snapshot without the purge, never the purge without the snapshot
        // (a log starting past every state the node could restore). Recovery completes a
        // snapshot that is past the last entry kept.
        let mut records = vec![RecordRef::Snapshot(meta)];
        let from = meta.index + 1;
        if from >= self.index.first() && from <= self.last_index() {
            records.push(RecordRef::Truncate { from });
        }
        records.push(RecordRef::Purged {
            index: meta.index,
            term: meta.term,
        });
        self.append_synced(&records)?;
        if from >= self.index.first() && from <= self.last_index() {
            self.index.truncate(from);
            self.cache.truncate_from(from);
        }
        self.drop_prefix(meta.index, meta.term);
        self.snapshot = meta.clone();
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        let active = self.active;
        self.remove_segments_before(active)
    }

    /// Appends `records` to the active segment and syncs it.
    fn append_synced(&mut self, records: &[RecordRef<'_>]) -> Result<(), WriteError> {
        if self.failed {
            return Err(WriteError::Failed);
        }
        let mut buf = Vec::new();
        for r in records {
            encode_into(&mut buf, r).map_err(|e| WriteError::Encode(e.to_string()))?;
        }
        let Some(seg) = self.segments.get_mut(&self.active) else {
            return Err(WriteError::Failed);
        };
        let path = seg.path.clone();
        if let Err(e) = seg
            .file
            .append(&buf)
            .and_then(|_| timed_sync(&*seg.file, &self.stats))
        {
            return self.fail("append to", path, e);
        }
        self.stats.wrote(buf.len());
        seg.size += buf.len() as u64;
        self.dirty = false;
        for r in records {
            match r {
                RecordRef::Truncate { from } => {
                    self.summarizer.step(Step::Truncate { from: *from })
                }
                RecordRef::Purged { index, term } => self.summarizer.step(Step::Purged {
                    index: *index,
                    term: *term,
                }),
                RecordRef::Snapshot(meta) => self.summarizer.step(Step::Snapshot((*meta).clone())),
                RecordRef::HardState(hs) => self.summarizer.hard_state(**hs),
                RecordRef::SegmentHeader { .. } | RecordRef::Entry(_) | RecordRef::SnapshotV2 => {}
            }
        }
        Ok(())
    }

    /// Deletes the segments before `keep_from` (oldest first) and syncs the directory.
    fn remove_segments_before(&mut self, keep_from: u64) -> Result<(), WriteError> {
        let old: Vec<u64> = self.segments.range(..keep_from).map(|(&s, _)| s).collect();
        self.reader.forget_before(keep_from);
        for seq in old {
            if let Some(seg) = self.segments.remove(&seq) {
                // The summary first: a summary never outlives its segment.
                let summary = summary_path(&self.wal_dir, seq);
                match self.vfs.remove(&summary) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return self.fail("remove", summary, e),
                }
                if let Err(e) = self.vfs.remove(&seg.path) {
                    return self.fail("remove", seg.path, e);
                }
            }
        }
        if let Err(e) = self.vfs.sync_dir(&self.wal_dir) {
            return self.fail("sync", self.wal_dir.clone(), e);
        }
        Ok(())
    }

    /// Appends `entries` (the first one replaces whatever the log holds at its index and
    /// after) and records `hard_state`, durably, as one write and one sync.
    pub fn write(
        &mut self,
        entries: &[Entry],
        hard_state: Option<HardState>,
    ) -> Result<(), WriteError> {
        self.write_batch(entries, hard_state, true)
    }

    /// Like [`write`](Self::write); with `sync` false the data is written but not synced
    /// (it becomes durable with the next sync, or may be lost in a crash before it).
    pub fn write_batch(
        &mut self,
        entries: &[Entry],
        hard_state: Option<HardState>,
        sync: bool,
    ) -> Result<(), WriteError> {
        if self.failed {
            return Err(WriteError::Failed);
        }
        let truncate_from = match entries.first() {
            Some(f) if f.index <= self.purged.0 => return Err(WriteError::Purged(f.index)),
            Some(f) if f.index > self.last_index() + 1 => {
                return Err(WriteError::Gap {
                    expected: self.last_index() + 1,
                    got: f.index,
                })
            }
            Some(f) if f.index <= self.last_index() => Some(f.index),
            _ => None,
        };
        for w in entries.windows(2) {
            if w[1].index != w[0].index + 1 {
                return Err(WriteError::Gap {
                    expected: w[0].index + 1,
                    got: w[1].index,
                });
            }
        }
        if self.info.format < FORMAT_VERSION
            && entries.iter().any(|e| e.kind == EntryKind::ClusterVersion)
        {
            // The first record that an older release cannot read: mark the directory
            // first, so that such a release refuses it instead of misreading it.
            self.raise(DirInfo {
                format: FORMAT_VERSION,
                ..self.info
            })?;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        // (index, offset, term) of each entry written.
        let mut locs = Vec::with_capacity(entries.len());
        let base = self.segments.get(&self.active).map_or(0, |s| s.size);
        let mut too_large = None;
        let encoded = (|| -> Result<(), postcard::Error> {
            if let Some(from) = truncate_from {
                encode_into(&mut buf, &RecordRef::Truncate { from })?;
            }
            for e in entries {
                let at = buf.len();
                encode_into(&mut buf, &RecordRef::Entry(e))?;
                if (buf.len() - at) as u64 > self.cfg.max_record_bytes {
                    too_large = Some((e.index, buf.len() - at));
                    return Ok(());
                }
                locs.push((e.index, base + at as u64, e.term));
            }
            if let Some(hs) = &hard_state {
                encode_into(&mut buf, &RecordRef::HardState(hs))?;
            }
            Ok(())
        })();
        if let Err(e) = encoded {
            self.buf = buf;
            return Err(WriteError::Encode(e.to_string()));
        }
        if let Some((index, size)) = too_large {
            self.buf = buf;
            return Err(WriteError::TooLarge {
                index,
                size,
                max: self.cfg.max_record_bytes,
            });
        }
        let sync = sync && self.cfg.sync == SyncPolicy::Always;
        let Some(seg) = self.segments.get_mut(&self.active) else {
            self.buf = buf;
            return Err(WriteError::Failed);
        };
        let path = seg.path.clone();
        if let Err(e) = seg.file.append(&buf) {
            self.buf = buf;
            return self.fail("append to", path, e);
        }
        self.stats.wrote(buf.len());
        seg.size += buf.len() as u64;
        if sync {
            if let Err(e) = timed_sync(&*seg.file, &self.stats) {
                self.buf = buf;
                return self.fail("sync", path, e);
            }
            self.dirty = false;
        } else {
            self.dirty = true;
        }
        self.buf = buf;
        // Durable: now the in-memory view may change.
        if let Some(from) = truncate_from {
            self.index.truncate(from);
            self.cache.truncate_from(from);
            self.summarizer.step(Step::Truncate { from });
        }
        let seq = self.active;
        for (index, offset, term) in locs {
            self.index.push(seq, index, offset, term);
            self.summarizer.entry(index, offset, term);
        }
        for e in entries {
            self.cache.push(e.clone());
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs;
            self.summarizer.hard_state(hs);
        }
        let size = self.segments.get(&self.active).map_or(0, |s| s.size);
        if size >= self.cfg.segment_bytes {
            // A segment that stops being the last must be wholly durable: recovery cuts an
            // interrupted write only at the very end of the log. Its summary follows it.
            self.sync_if_dirty()?;
            self.write_summary(&self.summarizer.finish(size));
            self.start_segment(self.active + 1)?;
        }
        Ok(())
    }

    /// Like [`write_batch`](Self::write_batch), but the sync, when one is needed, is left
    /// to the caller: the returned [`PendingSync`] makes the write durable without the
    /// store (so without holding whatever lock guards it), while the store goes on serving
    /// reads and further writes. The entries are in the store's view at once, before they
    /// are durable: the caller must not treat them as durable (acknowledge, apply, or
    /// promise them) until the sync succeeded, and must report a failed sync with
    /// [`sync_failed`](Self::sync_failed), which stops the store.
    pub fn write_deferred(
        &mut self,
        entries: &[Entry],
        hard_state: Option<HardState>,
        sync: bool,
    ) -> Result<Option<PendingSync>, WriteError> {
        self.write_batch(entries, hard_state, false)?;
        // A write that filled its segment was synced when the next segment started.
        if !sync || self.cfg.sync != SyncPolicy::Always || !self.dirty {
            return Ok(None);
        }
        let Some(seg) = self.segments.get(&self.active) else {
            return Err(WriteError::Failed);
        };
        Ok(Some(PendingSync {
            file: seg.file.clone(),
            path: seg.path.clone(),
            stats: self.stats.clone(),
        }))
    }

    /// Records that a [`PendingSync`] failed: the store stops (every later write is
    /// refused) and the error to report is returned.
    pub fn sync_failed(&mut self, failure: SyncFailure) -> WriteError {
        match self.fail::<()>("sync", failure.path, failure.source) {
            Err(e) => e,
            Ok(()) => WriteError::Failed,
        }
    }

    /// Syncs the active segment if it holds unsynced writes.
    fn sync_if_dirty(&mut self) -> Result<(), WriteError> {
        if !self.dirty || self.cfg.sync != SyncPolicy::Always {
            return Ok(());
        }
        let Some(seg) = self.segments.get_mut(&self.active) else {
            return Err(WriteError::Failed);
        };
        if let Err(e) = timed_sync(&*seg.file, &self.stats) {
            let path = seg.path.clone();
            return self.fail("sync", path, e);
        }
        self.dirty = false;
        Ok(())
    }

    /// Creates segment `seq` with its header and the state carried over (hard state and
    /// purge point), makes it and its directory entry durable, and makes it active.
    fn start_segment(&mut self, seq: u64) -> Result<(), WriteError> {
        let path = segment_path(&self.wal_dir, seq);
        let mut buf = Vec::new();
        let hs = self.hard_state;
        let enc = (|| -> Result<(), postcard::Error> {
            encode_into(
                &mut buf,
                &RecordRef::SegmentHeader {
                    format: self.info.format,
                    seq,
                },
            )?;
            encode_into(&mut buf, &RecordRef::HardState(&hs))?;
            if self.purged.0 > 0 {
                encode_into(
                    &mut buf,
                    &RecordRef::Purged {
                        index: self.purged.0,
                        term: self.purged.1,
                    },
                )?;
            }
            if self.snapshot.index > 0 {
                encode_into(&mut buf, &RecordRef::Snapshot(&self.snapshot))?;
            }
            Ok(())
        })();
        enc.map_err(|e| WriteError::Encode(e.to_string()))?;
        let file: Arc<dyn VfsFile> = match self.vfs.create(&path) {
            Ok(f) => Arc::from(f),
            Err(e) => return self.fail("create", path, e),
        };
        if let Err(e) = file
            .append(&buf)
            .and_then(|_| timed_sync(&*file, &self.stats))
        {
            return self.fail("write", path, e);
        }
        self.stats.wrote(buf.len());
        if let Err(e) = self.vfs.sync_dir(&self.wal_dir) {
            return self.fail("sync", self.wal_dir.clone(), e);
        }
        let mut summarizer = Summarizer::new(
            seq,
            self.info.format,
            header_crc(&buf),
            self.cfg.index_interval_bytes,
        );
        summarizer.hard_state(hs);
        if self.purged.0 > 0 {
            summarizer.step(Step::Purged {
                index: self.purged.0,
                term: self.purged.1,
            });
        }
        if self.snapshot.index > 0 {
            summarizer.step(Step::Snapshot(self.snapshot.clone()));
        }
        self.summarizer = summarizer;
        self.segments.insert(
            seq,
            Segment {
                path,
                file,
                size: buf.len() as u64,
            },
        );
        self.active = seq;
        Ok(())
    }

    /// Drops entries up to and including `index` (which must be applied and no longer
    /// needed), deleting whole segments that hold nothing later. Crash-safe: the purge point
    /// is made durable before any file is removed, and segments are removed oldest first.
    pub fn purge_to(&mut self, index: LogIndex) -> Result<(), WriteError> {
        if self.failed {
            return Err(WriteError::Failed);
        }
        if index <= self.purged.0 {
            return Ok(());
        }
        let index = index.min(self.last_index());
        let Ok(term) = LogStore::term(self, index) else {
            return Ok(());
        };
        self.append_synced(&[RecordRef::Purged { index, term }])?;
        // The oldest segment still needed holds entry index+1 (or is the active one).
        let keep_from = self.index.segment_of(index + 1).unwrap_or(self.active);
        self.drop_prefix(index, term);
        self.remove_segments_before(keep_from)
    }

    /// The entry up to which a retention policy lets the log go: the last entry of the
    /// newest closed segment whose removal (with every older one) still leaves at least
    /// `entries` entries and `bytes` bytes of segments, and that is at most `at_most`
    /// (what the state machine holds durably). Whole segments only; 0 when none can go,
    /// and always 0 when both limits are `None` (keep everything). Hand it to
    /// [`purge_to`](Self::purge_to).
    pub fn retention_point(
        &self,
        entries: Option<u64>,
        bytes: Option<u64>,
        at_most: LogIndex,
    ) -> LogIndex {
        if entries.is_none() && bytes.is_none() {
            return 0;
        }
        let last = self.last_index();
        let mut bytes_left: u64 = self.segments.values().map(|s| s.size).sum();
        let mut point = 0;
        for (seq, seg_last) in self.index.segment_ends() {
            if seq == self.active || seg_last > at_most {
                break;
            }
            let size = self.segments.get(&seq).map_or(0, |s| s.size);
            let entries_left = last - seg_last;
            let left = bytes_left.saturating_sub(size);
            if entries.is_some_and(|n| entries_left < n) || bytes.is_some_and(|b| left < b) {
                break;
            }
            point = seg_last;
            bytes_left = left;
        }
        point
    }

    /// A reader of this store's segments, to carry out plans made by
    /// [`plan_read`](Self::plan_read) without holding the store.
    pub fn reader(&self) -> SegmentReader {
        self.reader.clone()
    }

    /// Plans a read of the entries in `[lo, hi)`, to stop once they pass `max_bytes` (at
    /// least one entry when the range is not empty). Fast: it copies cached entries and
    /// the segment regions to read, and reads nothing from disk. The caller must only ask
    /// for entries that cannot be overwritten (committed ones).
    pub fn plan_read(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<ReadPlan, StorageError> {
        if lo < self.index.first() {
            return Err(StorageError::Compacted(lo));
        }
        let hi = hi.min(self.last_index().saturating_add(1));
        // The cache holds the newest entries: what it lacks comes from the segments.
        let cached_from = match self.cache.first() {
            Some(first) if hi > lo && self.cache.get(hi - 1).is_some() => first.clamp(lo, hi),
            _ => hi,
        };
        let mut items: Vec<PlanItem> = self
            .index
            .regions(lo, cached_from)
            .into_iter()
            .map(PlanItem::Disk)
            .collect();
        let mut size = 0u64;
        for index in cached_from..hi {
            let Some(e) = self.cache.get(index) else {
                return Err(StorageError::Unavailable(index));
            };
            size = size.saturating_add(e.size());
            items.push(PlanItem::Cached(e.clone()));
            if size > max_bytes {
                break;
            }
        }
        Ok(ReadPlan { items, max_bytes })
    }
}

impl LogStore for LogStorage {
    fn hard_state(&self) -> Result<HardState, StorageError> {
        Ok(self.hard_state)
    }

    fn first_index(&self) -> LogIndex {
        self.index.first()
    }

    fn last_index(&self) -> LogIndex {
        LogStorage::last_index(self)
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        if index == self.purged.0 {
            return Ok(self.purged.1);
        }
        if index < self.index.first() {
            return Err(StorageError::Compacted(index));
        }
        self.index
            .term(index)
            .ok_or(StorageError::Unavailable(index))
    }

    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        Ok(self.snapshot.clone())
    }

    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if lo < self.index.first() {
            return Err(StorageError::Compacted(lo));
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable(hi - 1));
        }
        let plan = self.plan_read(lo, hi, max_bytes)?;
        carry_out(
            plan,
            &self.wal_dir,
            self.cfg.max_record_bytes as usize,
            |seq, index| {
                self.segments
                    .get(&seq)
                    .map(|s| s.file.clone())
                    .ok_or_else(|| {
                        StorageError::Io(format!("segment {seq} of entry {index} is gone"))
                    })
            },
        )
    }
}
