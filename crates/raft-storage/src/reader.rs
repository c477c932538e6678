//! Reading committed entries without holding the store: the store plans a read under its
//! lock (where each entry is: in the cache, or at a segment offset), and a
//! [`SegmentReader`] carries the plan out with its own file handles, so that slow or many
//! readers never hold up writes or the node that reads the store.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use raft_core::{Entry, LogIndex, StorageError};

use crate::record::{decode, Frame, Record};
use crate::segment::segment_path;
use crate::vfs::{Vfs, VfsFile};

/// Segment handles a reader keeps open at most (older ones are closed first).
const MAX_OPEN_SEGMENTS: usize = 16;

/// Where one entry of a planned read is.
#[derive(Clone, Debug)]
pub(crate) enum PlanItem {
    /// In the store's cache: no disk read needed.
    Cached(Entry),
    /// In segment `seq`, `len` bytes at `offset`.
    Disk {
        index: LogIndex,
        seq: u64,
        offset: u64,
        len: u32,
    },
}

/// A read planned by [`crate::LogStorage::plan_read`], carried out by
/// [`SegmentReader::read`].
#[derive(Clone, Debug, Default)]
pub struct ReadPlan {
    pub(crate) items: Vec<PlanItem>,
}

impl ReadPlan {
    /// The number of entries the plan reads.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the plan reads nothing.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Reads entries from segment files with its own handles. Cheap to clone; safe to use from
/// many threads at once.
#[derive(Clone)]
pub struct SegmentReader {
    inner: Arc<ReaderInner>,
}

struct ReaderInner {
    vfs: Arc<dyn Vfs>,
    wal_dir: PathBuf,
    max_record_bytes: usize,
    files: Mutex<BTreeMap<u64, Arc<dyn VfsFile>>>,
}

impl SegmentReader {
    pub(crate) fn new(vfs: Arc<dyn Vfs>, wal_dir: PathBuf, max_record_bytes: usize) -> Self {
        SegmentReader {
            inner: Arc::new(ReaderInner {
                vfs,
                wal_dir,
                max_record_bytes,
                files: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Carries out `plan`. A segment purged since the plan was made gives
    /// [`StorageError::Compacted`]; a damaged record gives [`StorageError::Io`].
    pub fn read(&self, plan: ReadPlan) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::with_capacity(plan.items.len());
        let mut buf = Vec::new();
        for item in plan.items {
            match item {
                PlanItem::Cached(e) => out.push(e),
                PlanItem::Disk {
                    index,
                    seq,
                    offset,
                    len,
                } => {
                    let file = self.file(seq, index)?;
                    buf.resize(len as usize, 0);
                    file.read_exact_at(&mut buf, offset).map_err(|e| {
                        StorageError::Io(format!("read entry {index} of segment {seq}: {e}"))
                    })?;
                    match decode(&buf, self.inner.max_record_bytes) {
                        Frame::Valid {
                            record: Record::Entry(e),
                            ..
                        } if e.index == index => out.push(e),
                        _ => {
                            return Err(StorageError::Io(format!(
                                "entry {index} in {} at byte {offset} is damaged",
                                segment_path(&self.inner.wal_dir, seq).display()
                            )))
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn file(&self, seq: u64, index: LogIndex) -> Result<Arc<dyn VfsFile>, StorageError> {
        let lock_err = |_| StorageError::Io("segment reader lock poisoned by a panic".into());
        if let Some(f) = self.inner.files.lock().map_err(lock_err)?.get(&seq) {
            return Ok(f.clone());
        }
        let path = segment_path(&self.inner.wal_dir, seq);
        let file: Arc<dyn VfsFile> = match self.inner.vfs.open(&path) {
            Ok(f) => Arc::from(f),
            // Purged after the read was planned: the entry is no longer held.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::Compacted(index))
            }
            Err(e) => return Err(StorageError::Io(format!("open {}: {e}", path.display()))),
        };
        let mut files = self.inner.files.lock().map_err(lock_err)?;
        files.insert(seq, file.clone());
        while files.len() > MAX_OPEN_SEGMENTS {
            files.pop_first();
        }
        Ok(file)
    }

    /// Closes the handles of segments before `seq` (purged ones).
    pub(crate) fn forget_before(&self, seq: u64) {
        if let Ok(mut files) = self.inner.files.lock() {
            files.retain(|&s, _| s >= seq);
        }
    }
}

impl std::fmt::Debug for SegmentReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentReader")
            .field("wal_dir", &self.inner.wal_dir)
            .finish_non_exhaustive()
    }
}
