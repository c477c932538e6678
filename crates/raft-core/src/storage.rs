//! The read interface the core needs from durable storage, and an in-memory implementation
//! for tests and simulations.
//!
//! The core never writes to storage: it hands the caller what to persist in a
//! [`crate::Ready`], and the caller writes it (see [`MemStorage::apply_ready`] for the
//! reference behaviour) before calling [`crate::Node::advance`].

use crate::entry::Entry;
use crate::error::StorageError;
use crate::snapshot::SnapshotMeta;
use crate::types::{HardState, LogIndex, Term};

/// What the core reads from durable storage: the persisted log, the hard state and the
/// latest snapshot's metadata.
///
/// The log holds the contiguous entries `first_index()..=last_index()`; the entry just
/// before `first_index()` is known only by its term (it was compacted or snapshotted), so
/// `term(first_index() - 1)` must succeed. An empty, fresh log has `first_index() == 1`,
/// `last_index() == 0` and `term(0) == 0`. The latest snapshot covers the log up to its
/// index: `first_index() - 1 <= snapshot_meta().index`, and entries may be kept before it (a
/// tail for followers that are only slightly behind).
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
    /// The latest snapshot's metadata (index 0 when there is none). A leader sends a
    /// follower that needs compacted entries this snapshot.
    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError>;
}

/// A log kept in memory: what "persisted" means in tests and the simulator.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    /// Index and term of the entry just before `entries[0]` (compacted, or 0/0).
    offset_index: LogIndex,
    offset_term: Term,
    snapshot: SnapshotMeta,
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
        if first.index <= self.offset_index {
            return Err(StorageError::Compacted(first.index));
        }
        if first.index > self.last_index() + 1 {
            return Err(StorageError::Unavailable(first.index));
        }
        let keep = (first.index - self.offset_index - 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Drops entries up to and including `index`, remembering its term.
    pub fn compact(&mut self, index: LogIndex) -> Result<(), StorageError> {
        if index <= self.offset_index {
            return Ok(());
        }
        let term = self.term(index)?;
        let drop = (index - self.offset_index) as usize;
        self.entries.drain(..drop);
        self.offset_index = index;
        self.offset_term = term;
        Ok(())
    }

    /// Records a snapshot of the state machine at `index` (which the log must hold, or
    /// have just compacted), with the configuration in effect at `index`
    /// ([`crate::Node::membership_at`]).
    pub fn create_snapshot(
        &mut self,
        index: LogIndex,
        membership: crate::Membership,
    ) -> Result<SnapshotMeta, StorageError> {
        let term = self.term(index)?;
        if index > self.snapshot.index {
            self.snapshot = SnapshotMeta {
                index,
                term,
                membership,
            };
        }
        Ok(self.snapshot.clone())
    }

    /// Installs a snapshot received from the leader: the log becomes empty after it, and
    /// the commit index reaches it. An older snapshot than the one held is ignored.
    pub fn apply_snapshot(&mut self, meta: &SnapshotMeta) {
        if meta.index <= self.snapshot.index {
            return;
        }
        self.entries.clear();
        self.offset_index = meta.index;
        self.offset_term = meta.term;
        self.snapshot = meta.clone();
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
    }

    /// Persists what a [`crate::Ready`] asks for: its snapshot, its entries and its hard
    /// state, in that order.
    pub fn apply_ready(&mut self, ready: &crate::Ready) -> Result<(), StorageError> {
        if let Some(meta) = &ready.snapshot {
            self.apply_snapshot(meta);
        }
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
        self.offset_index + 1
    }

    fn last_index(&self) -> LogIndex {
        self.offset_index + self.entries.len() as u64
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        if index == self.offset_index {
            return Ok(self.offset_term);
        }
        if index < self.offset_index {
            return Err(StorageError::Compacted(index));
        }
        self.entries
            .get((index - self.offset_index - 1) as usize)
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable(index))
    }

    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if lo <= self.offset_index {
            return Err(StorageError::Compacted(lo));
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable(hi - 1));
        }
        let start = (lo - self.offset_index - 1) as usize;
        let end = (hi.max(lo) - self.offset_index - 1) as usize;
        Ok(take_within(&self.entries[start..end], max_bytes).to_vec())
    }

    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        Ok(self.snapshot.clone())
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
    fn an_applied_snapshot_replaces_the_log_and_an_older_one_is_ignored() {
        let mut s = MemStorage::new();
        s.append(&[e(1, 1), e(1, 2), e(1, 3)]).unwrap();
        let meta = SnapshotMeta {
            index: 5,
            term: 2,
            membership: crate::Membership::new([1, 2, 3]),
        };
        s.apply_snapshot(&meta);
        assert_eq!((s.first_index(), s.last_index()), (6, 5));
        assert_eq!(s.term(5), Ok(2));
        assert_eq!(s.snapshot_meta().unwrap(), meta);
        assert_eq!(s.hard_state().unwrap().commit, 5);
        s.append(&[e(2, 6)]).unwrap();
        s.apply_snapshot(&SnapshotMeta {
            index: 4,
            term: 2,
            membership: crate::Membership::default(),
        });
        assert_eq!(s.last_index(), 6, "an older snapshot changes nothing");
        let made = s.create_snapshot(6, crate::Membership::new([1])).unwrap();
        assert_eq!((made.index, made.term), (6, 2));
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
