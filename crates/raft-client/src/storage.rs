//! The durable log shared between the core (which reads it), the persistence step (which
//! writes it off the async threads) and log readers (which read committed entries without
//! going through the runtime).

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use raft_core::{Entry, HardState, LogIndex, LogStore, SnapshotMeta, StorageError, Term};
use raft_storage::LogStorage;

/// A [`LogStorage`] behind a read-write lock. Writes (persisting a `Ready`) take it
/// exclusively; the core's reads and the planning of log reads share it.
#[derive(Clone)]
pub(crate) struct SharedStorage(pub(crate) Arc<RwLock<LogStorage>>);

fn poisoned<T>(_: T) -> StorageError {
    StorageError::Io("storage lock poisoned by a panic".into())
}

impl SharedStorage {
    pub(crate) fn new(log: LogStorage) -> Self {
        SharedStorage(Arc::new(RwLock::new(log)))
    }

    pub(crate) fn read(&self) -> Result<RwLockReadGuard<'_, LogStorage>, StorageError> {
        self.0.read().map_err(poisoned)
    }

    pub(crate) fn write(&self) -> Result<RwLockWriteGuard<'_, LogStorage>, StorageError> {
        self.0.write().map_err(poisoned)
    }

    /// A reference that does not keep the store open: the store (and the lock on its
    /// directory) goes away with the runtime, whoever else still reads.
    pub(crate) fn downgrade(&self) -> Weak<RwLock<LogStorage>> {
        Arc::downgrade(&self.0)
    }
}

impl LogStore for SharedStorage {
    fn hard_state(&self) -> Result<HardState, StorageError> {
        self.read()?.hard_state()
    }
    fn first_index(&self) -> LogIndex {
        self.read().map(|s| s.first_index()).unwrap_or(1)
    }
    fn last_index(&self) -> LogIndex {
        self.read().map(|s| LogStore::last_index(&*s)).unwrap_or(0)
    }
    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.read()?.term(index)
    }
    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read()?.entries(lo, hi, max_bytes)
    }
    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        self.read()?.snapshot_meta()
    }
}
