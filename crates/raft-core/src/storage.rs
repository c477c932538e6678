//! The read interface the core needs from durable storage, and an in-memory implementation
//! for tests and simulations.
//!
//! The core never writes to storage: it hands the caller what to persist in a
//! [`crate::Ready`], and the caller writes it (see [`MemStorage::apply_ready`] for the
//! reference behaviour) before calling [`crate::Node::advance`].

use crate::entry::Entry;
use crate::error::StorageError;
use crate::types::{HardState, LogIndex, Term};

/// What the core reads from durable storage: the persisted log and hard state.
///
/// The log holds the contiguous entries `first_index()..=last_index()`; the entry just
/// before `first_index()` is known only by its term (it was compacted or snapshotted), so
/// `term(first_index() - 1)` must succeed. An empty, fresh log has `first_index() == 1`,
/// `last_index() == 0` and `term(0) == 0`.
pub trait LogStore {
    /// The hard state persisted last.
    fn hard_state(&self) -> Result<HardState, StorageError>;
    /// The index of the first entry held.
    fn first_index(&self) -> LogIndex;
    /// The index of the last entry held (`first_index() - 1` when none is held).
    fn last_index(&self) -> LogIndex;
    /// The term of the entry at `index`, for `first_index() - 1 <= index <= last_index()`.
    fn term(&self, index: LogIndex) -> Result<Term, StorageError>;
    /// The entries in `[lo, hi)`, stopping once their sizes pass `max_bytes` (at least one
    /// entry is returned when the range is not empty).
    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError>;
}

/// A log kept in memory: what "persisted" means in tests and the simulator.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    /// Index and term of the entry just before `entries[0]`.
    snapshot_index: LogIndex,
    snapshot_term: Term,
    entries: Vec<Entry>,
}

impl MemStorage {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the hard state.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// Appends `entries`; the first one replaces whatever is held at its index and after.
    /// The entries must be contiguous and start at most one past the last index.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.snapshot_index {
            return Err(StorageError::Compacted(first.index));
        }
        if first.index > self.last_index() + 1 {
            return Err(StorageError::Unavailable(first.index));
        }
        let keep = (first.index - self.snapshot_index - 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Drops entries up to and including `index`, remembering its term.
    pub fn compact(&mut self, index: LogIndex) -> Result<(), StorageError> {
        if index <= self.snapshot_index {
            return Ok(());
        }
        let term = self.term(index)?;
        let drop = (index - self.snapshot_index) as usize;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
        Ok(())
    }

    /// Persists what a [`crate::Ready`] asks for: its hard state and its entries.
    pub fn apply_ready(&mut self, ready: &crate::Ready) -> Result<(), StorageError> {
        self.append(&ready.entries)?;
        if let Some(hs) = ready.hard_state {
            self.hard_state = hs;
        }
        Ok(())
    }

    /// Every entry held, in order.
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }
}

impl LogStore for MemStorage {
    fn hard_state(&self) -> Result<HardState, StorageError> {
        Ok(self.hard_state)
    }

    fn first_index(&self) -> LogIndex {
        self.snapshot_index + 1
    }

    fn last_index(&self) -> LogIndex {
        self.snapshot_index + self.entries.len() as u64
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        if index == self.snapshot_index {
            return Ok(self.snapshot_term);
        }
        if index < self.snapshot_index {
            return Err(StorageError::Compacted(index));
        }
        self.entries
            .get((index - self.snapshot_index - 1) as usize)
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable(index))
    }

    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if lo <= self.snapshot_index {
            return Err(StorageError::Compacted(lo));
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable(hi - 1));
        }
        let start = (lo - self.snapshot_index - 1) as usize;
        let end = (hi.max(lo) - self.snapshot_index - 1) as usize;
        Ok(take_within(&self.entries[start..end], max_bytes).to_vec())
    }
}

/// The longest prefix of `entries` whose sizes stay within `max_bytes`, but at least one.
pub(crate) fn take_within(entries: &[Entry], max_bytes: u64) -> &[Entry] {
    let mut size = 0u64;
    for (i, e) in entries.iter().enumerate() {
        size += e.size();
        if size > max_bytes && i > 0 {
            return &entries[..i];
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(term: Term, index: LogIndex) -> Entry {
        Entry::normal(term, index, vec![index as u8])
    }

    #[test]
    fn append_replaces_the_suffix_from_the_first_new_index() {
        let mut s = MemStorage::new();
        s.append(&[e(1, 1), e(1, 2), e(1, 3)]).unwrap();
        s.append(&[e(2, 2)]).unwrap();
        assert_eq!(s.last_index(), 2);
        assert_eq!(s.term(2), Ok(2));
        assert_eq!(s.append(&[e(2, 5)]), Err(StorageError::Unavailable(5)));
    }

    #[test]
    fn compact_keeps_the_term_of_the_last_dropped_entry() {
        let mut s = MemStorage::new();
        s.append(&[e(1, 1), e(2, 2), e(3, 3)]).unwrap();
        s.compact(2).unwrap();
        assert_eq!(s.first_index(), 3);
        assert_eq!(s.term(2), Ok(2));
        assert_eq!(s.term(1), Err(StorageError::Compacted(1)));
        assert_eq!(s.entries(3, 4, 0).unwrap(), vec![e(3, 3)]);
    }
}
