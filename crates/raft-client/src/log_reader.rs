//! Reading the committed log without the runtime: `retrieve` plans the read under a shared
//! lock on the store (copying entry locations, never touching the disk), then reads the
//! entries on the blocking pool with its own file handles. A bounded number of reads run at
//! once; past it, `retrieve` answers [`Error::TooManyReads`] at once. No amount of read load can
//! delay the runtime's ticks, heartbeats or elections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};

use raft_core::{Entry, LogIndex, LogStore, StorageError};
use raft_storage::{LogStorage, SegmentReader};
use tokio::sync::Semaphore;

use crate::error::Error;
use crate::storage::SharedStorage;

#[derive(Clone)]
pub(crate) struct LogReader {
    /// Weak: a reader never keeps the store (and its directory lock) alive after the node
    /// stopped.
    storage: Weak<RwLock<LogStorage>>,
    segments: SegmentReader,
    /// The highest index that is committed, durable and applied on this node: entries up to
    /// it are final and can be read without the runtime. Published by the runtime.
    readable: Arc<AtomicU64>,
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    max_bytes: u64,
    exec: crate::exec::Exec,
}

impl LogReader {
    pub(crate) fn new(
        storage: SharedStorage,
        segments: SegmentReader,
        readable: Arc<AtomicU64>,
        max_concurrent: usize,
        max_bytes: u64,
        exec: crate::exec::Exec,
    ) -> Self {
        LogReader {
            storage: storage.downgrade(),
            segments,
            readable,
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            max_concurrent,
            max_bytes,
            exec,
        }
    }

    /// Committed entries from `from` on, at most `limit` (and `max_bytes`; at least one),
    /// passed through `f` on the same blocking thread and under the same read slot.
    pub(crate) async fn retrieve<T: Send + 'static>(
        &self,
        from: LogIndex,
        limit: usize,
        f: impl FnOnce(Vec<Entry>) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::TooManyReads {
                limit: self.max_concurrent,
            })?;
        let this = self.clone();
        self.exec
            .blocking(move || {
                let _permit = permit;
                this.read_blocking(from, limit as u64).map(f)
            })
            .await
            .map_err(|e| Error::Storage(format!("log read task failed: {e}")))?
    }

    fn read_blocking(&self, from: LogIndex, limit: u64) -> Result<Vec<Entry>, Error> {
        let last = self.readable.load(Ordering::Acquire);
        self.read_upto(from, last, limit, self.max_bytes)
    }

    /// The first entry the log holds (the next to come when it is empty).
    pub(crate) fn first_index(&self) -> Result<LogIndex, Error> {
        let shared = self.storage.upgrade().ok_or(Error::Shutdown)?;
        let store = shared
            .read()
            .map_err(|_| Error::Storage("storage lock poisoned by a panic".into()))?;
        Ok(store.first_index())
    }

    /// Entries from `from` (or the first one held, if later) up to `last`, at most `limit`
    /// and `max_bytes` (at least one), on the caller's thread. The caller vouches that
    /// entries up to `last` are committed (the state machine applied them, say): they are
    /// final, and read without the runtime.
    pub(crate) fn read_upto(
        &self,
        from: LogIndex,
        last: LogIndex,
        limit: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, Error> {
        // A purge between planning and reading removes what the plan points at: plan again
        // from the new first index.
        for _ in 0..3 {
            let plan = {
                let shared = self.storage.upgrade().ok_or(Error::Shutdown)?;
                let store = shared
                    .read()
                    .map_err(|_| Error::Storage("storage lock poisoned by a panic".into()))?;
                let from = from.max(store.first_index());
                if from > last {
                    return Ok(Vec::new());
                }
                let hi = last.saturating_add(1).min(from.saturating_add(limit));
                store
                    .plan_read(from, hi, max_bytes)
                    .map_err(|e| Error::Storage(e.to_string()))?
            };
            match self.segments.read(plan) {
                Ok(entries) => return Ok(entries),
                Err(StorageError::Compacted(_)) => continue,
                Err(e) => return Err(Error::Storage(e.to_string())),
            }
        }
        Err(Error::Busy)
    }
}
