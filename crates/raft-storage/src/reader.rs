//! Reading committed entries without holding the store: the store plans a read under its
//! lock (where each entry is: in the cache, or at a segment offset), and a
//! [`SegmentReader`] carries the plan out with its own file handles, so that slow or many
//! readers never hold up writes or the node that reads the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use raft_core::{Entry, LogIndex, StorageError};

use crate::index::Region;
use crate::record::{declared_size, decode, Frame, Record};
use crate::segment::segment_path;
use crate::vfs::{Vfs, VfsFile};

/// Segment handles a reader keeps open at most (older ones are closed first).
const MAX_OPEN_SEGMENTS: usize = 16;

/// Bytes read from a segment at once (more when one record is larger).
const READ_CHUNK: usize = 32 << 10;

/// Where some entries of a planned read are.
#[derive(Clone, Debug)]
pub(crate) enum PlanItem {
    /// In the store's cache: no disk read needed.
    Cached(Entry),
    /// In a segment, read forward from a mark.
    Disk(Region),
}

/// A read planned by [`crate::LogStorage::plan_read`], carried out by
/// [`SegmentReader::read`].
#[derive(Clone, Debug, Default)]
pub struct ReadPlan {
    pub(crate) items: Vec<PlanItem>,
    /// The read stops once the entries pass this many bytes (after at least one).
    pub(crate) max_bytes: u64,
}

impl ReadPlan {
    /// The number of entries the plan reads at most (fewer when the byte budget stops it).
    pub fn len(&self) -> usize {
        self.items
            .iter()
            .map(|i| match i {
                PlanItem::Cached(_) => 1,
                PlanItem::Disk(r) => r.to.saturating_sub(r.from) as usize,
            })
            .sum()
    }

    /// Whether the plan reads nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The bytes of entries a read may still return.
struct Budget {
    used: u64,
    max: u64,
}

impl Budget {
    /// Counts an entry of `size` bytes; whether it is to be returned (the first one always
    /// is).
    fn admit(&mut self, size: u64, first: bool) -> bool {
        self.used = self.used.saturating_add(size);
        first || self.used <= self.max
    }
}

/// Carries out `plan`, opening segments with `file`; `max_record` bounds a record's length.
pub(crate) fn carry_out(
    plan: ReadPlan,
    wal_dir: &Path,
    max_record: usize,
    mut file: impl FnMut(u64, LogIndex) -> Result<Arc<dyn VfsFile>, StorageError>,
) -> Result<Vec<Entry>, StorageError> {
    let mut out = Vec::with_capacity(plan.len().min(4096));
    let mut budget = Budget {
        used: 0,
        max: plan.max_bytes,
    };
    for item in plan.items {
        match item {
            PlanItem::Cached(e) => {
                if !budget.admit(e.size(), out.is_empty()) {
                    break;
                }
                out.push(e);
            }
            PlanItem::Disk(region) => {
                let f = file(region.seq, region.from)?;
                if !read_region(&*f, wal_dir, &region, max_record, &mut out, &mut budget)? {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// Reads the entries of `region` from its segment `file` into `out`, reading forward from
/// the region's mark; false when the byte budget stopped it.
fn read_region(
    file: &dyn VfsFile,
    wal_dir: &Path,
    region: &Region,
    max_record: usize,
    out: &mut Vec<Entry>,
    budget: &mut Budget,
) -> Result<bool, StorageError> {
    let damaged = |at: u64, what: &str| {
        StorageError::Io(format!(
            "{} at byte {at}: {what}",
            segment_path(wal_dir, region.seq).display()
        ))
    };
    let size = file
        .size()
        .map_err(|e| damaged(region.offset, &format!("cannot read its size: {e}")))?;
    let mut pos = region.offset;
    let mut next = region.from;
    let mut want = READ_CHUNK;
    let mut buf = Vec::new();
    while next < region.to {
        if pos >= size {
            return Err(damaged(
                pos,
                &format!("the segment ends before entry {next}"),
            ));
        }
        let n = (want as u64).min(size - pos) as usize;
        buf.resize(n, 0);
        file.read_exact_at(&mut buf, pos)
            .map_err(|e| damaged(pos, &format!("read failed: {e}")))?;
        let mut at = 0usize;
        while at < buf.len() && next < region.to {
            match decode(&buf[at..], max_record) {
                Frame::Valid { record, size } => {
                    if let Record::Entry(e) = record {
                        if e.index == next {
                            if !budget.admit(e.size(), out.is_empty()) {
                                return Ok(false);
                            }
                            out.push(e);
                            next += 1;
                        } else if e.index > next || e.index < region.at {
                            return Err(damaged(
                                pos + at as u64,
                                &format!("entry {} where entry {next} was expected", e.index),
                            ));
                        }
                    }
                    at += size;
                }
                Frame::Incomplete => break,
                Frame::Damaged => {
                    return Err(damaged(
                        pos + at as u64,
                        &format!("damaged record looking for entry {next}"),
                    ))
                }
            }
        }
        if at == 0 {
            // A record larger than what was read: read it whole.
            match declared_size(&buf) {
                Some(s) if s > buf.len() && pos.saturating_add(s as u64) <= size => want = s,
                _ => {
                    return Err(damaged(
                        pos,
                        &format!("the segment ends inside a record before entry {next}"),
                    ))
                }
            }
        } else {
            want = READ_CHUNK;
        }
        pos += at as u64;
    }
    Ok(true)
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
        carry_out(
            plan,
            &self.inner.wal_dir,
            self.inner.max_record_bytes,
            |seq, index| self.file(seq, index),
        )
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
