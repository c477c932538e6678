//! The durable log shared between the core (which reads it) and the persistence step
//! (which writes it off the async threads).

use std::sync::{Arc, Mutex, MutexGuard};

use raft_core::{Entry, HardState, LogIndex, LogStore, StorageError, Term};
use raft_storage::LogStorage;

/// A [`LogStorage`] behind a mutex. The runtime never reads through the core while a
/// write is in progress, so the lock is uncontended.
#[derive(Clone)]
pub(crate) struct SharedStorage(pub(crate) Arc<Mutex<LogStorage>>);

impl SharedStorage {
    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, LogStorage>, StorageError> {
        self.0
            .lock()
            .map_err(|_| StorageError::Io("storage lock poisoned by a panic".into()))
    }
}

impl LogStore for SharedStorage {
    fn hard_state(&self) -> Result<HardState, StorageError> {
        self.lock()?.hard_state()
    }
    fn first_index(&self) -> LogIndex {
        self.lock().map(|s| s.first_index()).unwrap_or(1)
    }
    fn last_index(&self) -> LogIndex {
        self.lock().map(|s| LogStore::last_index(&*s)).unwrap_or(0)
    }
    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.lock()?.term(index)
    }
    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.lock()?.entries(lo, hi, max_bytes)
    }
}
