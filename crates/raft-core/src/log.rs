//! The node's view of its log: the persisted part read through [`LogStore`], plus the
//! unstable tail of entries not yet made durable.

use std::collections::VecDeque;

use crate::entry::Entry;
use crate::error::StorageError;
use crate::snapshot::SnapshotMeta;
use crate::storage::LogStore;
use crate::types::{LogIndex, Term};

/// What a follower's log did with the entries of an AppendEntries.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AppendOutcome {
    /// The entries now match the leader's up to this index.
    Matched(LogIndex),
    /// `prev_index`/`prev_term` did not match the log.
    Mismatch,
    /// The entries would overwrite a committed entry: the sender is not a legitimate leader
    /// of this log, and the message is ignored.
    WouldOverwriteCommitted,
    /// The entries are not numbered `prev_index + 1, prev_index + 2, ...`: a malformed
    /// message, ignored.
    Malformed,
}

/// The log of one node.
pub(crate) struct RaftLog<S> {
    pub(crate) store: S,
    /// Entries not yet durable; `unstable[0].index == offset`. Entries here override any
    /// entries at the same indexes still in `store` (a pending truncation).
    unstable: Vec<Entry>,
    offset: LogIndex,
    /// The first unstable index not yet handed to the caller for persistence.
    unsent: LogIndex,
    /// The highest index known to be committed.
    pub(crate) committed: LogIndex,
    /// The highest index the caller acknowledged applying.
    pub(crate) applied: LogIndex,
    /// The highest index handed to the caller for applying.
    applying: LogIndex,
    /// The batches of committed entries handed out and not yet acknowledged applied: each
    /// one's last index and its bytes, oldest first.
    unapplied: VecDeque<(LogIndex, u64)>,
    /// The bytes in `unapplied`.
    unapplied_bytes: u64,
    /// A snapshot accepted from the leader and not yet installed by the caller: until it is,
    /// the log is this snapshot plus the unstable entries after it, whatever `store` holds.
    snapshot: Option<SnapshotMeta>,
    /// Whether `snapshot` was handed out in a `Ready` (installed at the next `advance`).
    snapshot_handed: bool,
}

impl<S: LogStore> RaftLog<S> {
    pub(crate) fn new(store: S, committed: LogIndex, applied: LogIndex) -> Self {
        let last = store.last_index();
        let first = store.first_index();
        let committed = committed.min(last).max(first - 1);
        let applied = applied.min(committed).max(first - 1);
        RaftLog {
            store,
            unstable: Vec::new(),
            offset: last + 1,
            unsent: last + 1,
            committed,
            applied,
            applying: applied,
            unapplied: VecDeque::new(),
            unapplied_bytes: 0,
            snapshot: None,
            snapshot_handed: false,
        }
    }

    pub(crate) fn first_index(&self) -> LogIndex {
        match &self.snapshot {
            Some(s) => s.index + 1,
            None => self.store.first_index(),
        }
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        match (self.unstable.last(), &self.snapshot) {
            (Some(e), _) => e.index,
            (None, Some(s)) => s.index,
            (None, None) => self.store.last_index(),
        }
    }

    pub(crate) fn last_term(&self) -> Term {
        self.term(self.last_index()).unwrap_or(0)
    }

    /// The last index that is durable and agrees with this log.
    pub(crate) fn persisted_index(&self) -> LogIndex {
        match (self.unstable.is_empty(), &self.snapshot) {
            (false, _) => self.offset - 1,
            // Nothing past the snapshot is durable (what `store` holds there is replaced).
            (true, Some(s)) => s.index,
            (true, None) => self.store.last_index(),
        }
    }

    pub(crate) fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        if index >= self.offset && !self.unstable.is_empty() {
            return self
                .unstable
                .get((index - self.offset) as usize)
                .map(|e| e.term)
                .ok_or(StorageError::Unavailable(index));
        }
        if let Some(s) = &self.snapshot {
            return match index.cmp(&s.index) {
                std::cmp::Ordering::Equal => Ok(s.term),
                std::cmp::Ordering::Less => Err(StorageError::Compacted(index)),
                std::cmp::Ordering::Greater => Err(StorageError::Unavailable(index)),
            };
        }
        if index == 0 {
            return Ok(0);
        }
        if index > self.store.last_index() {
            return Err(StorageError::Unavailable(index));
        }
        self.store.term(index)
    }

    pub(crate) fn match_term(&self, index: LogIndex, term: Term) -> bool {
        self.term(index) == Ok(term)
    }

    /// §5.4.1: a candidate's log is at least as up-to-date as this one.
    pub(crate) fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index >= self.last_index())
    }

    /// Whether a log ending at `last_index` with `last_term` is strictly ahead of this one.
    pub(crate) fn is_behind(&self, last_index: LogIndex, last_term: Term) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index > self.last_index())
    }

    /// The entries in `[lo, hi)`, within `max_bytes` (at least one).
    pub(crate) fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let hi = hi.min(self.last_index() + 1);
        if lo >= hi {
            return Ok(Vec::new());
        }
        if lo < self.first_index() {
            return Err(StorageError::Compacted(lo));
        }
        let stable_end = if self.unstable.is_empty() {
            hi
        } else {
            hi.min(self.offset)
        };
        let mut out = if lo < stable_end {
            self.store.entries(lo, stable_end, max_bytes)?
        } else {
            Vec::new()
        };
        let mut next = out.last().map_or(lo, |e| e.index + 1);
        if next < stable_end || next >= hi {
            return Ok(out);
        }
        let mut used: u64 = out.iter().map(Entry::size).sum();
        while next < hi {
            let Some(e) = self.unstable.get((next - self.offset) as usize) else {
                break;
            };
            used += e.size();
            if used > max_bytes && !out.is_empty() {
                break;
            }
            out.push(e.clone());
            next += 1;
        }
        Ok(out)
    }

    /// Appends entries created by this node as leader.
    pub(crate) fn append(&mut self, entry: Entry) {
        if self.unstable.is_empty() {
            self.offset = entry.index;
        }
        self.unstable.push(entry);
    }

    /// Stores `entries` from the leader, replacing any suffix that conflicts.
    pub(crate) fn truncate_and_append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        let at = first.index;
        if self.unstable.is_empty() || at <= self.offset {
            self.unstable.clear();
            self.offset = at;
        } else {
            self.unstable.truncate((at - self.offset) as usize);
        }
        self.unstable.extend_from_slice(entries);
        self.unsent = self.unsent.min(at);
    }

    /// Replaces the log with a snapshot from the leader: everything up to its index is
    /// committed and covered by it, nothing after it is kept.
    pub(crate) fn restore(&mut self, meta: SnapshotMeta) {
        self.unstable.clear();
        self.offset = meta.index + 1;
        self.unsent = self.offset;
        self.committed = meta.index;
        self.applying = meta.index;
        self.snapshot = Some(meta);
        self.snapshot_handed = false;
    }

    pub(crate) fn has_snapshot_to_hand_out(&self) -> bool {
        self.snapshot.is_some() && !self.snapshot_handed
    }

    /// The accepted snapshot, if not handed out yet; marks it handed out.
    pub(crate) fn take_snapshot(&mut self) -> Option<SnapshotMeta> {
        if self.snapshot_handed {
            return None;
        }
        let s = self.snapshot.clone()?;
        self.snapshot_handed = true;
        Some(s)
    }

    /// The caller installed the snapshot it was handed: `store` now holds it.
    pub(crate) fn snapshot_installed(&mut self) {
        if self.snapshot_handed {
            if let Some(s) = self.snapshot.take() {
                self.applied = self.applied.max(s.index);
                self.forget_applied();
            }
            self.snapshot_handed = false;
        }
    }

    /// The index of the first entry that is new or conflicts with the log (0 if none).
    fn find_conflict(&self, entries: &[Entry]) -> LogIndex {
        entries
            .iter()
            .find(|e| !self.match_term(e.index, e.term))
            .map_or(0, |e| e.index)
    }

    /// The largest index `<= index` whose term is `<= term`, with its term: where two logs
    /// may agree, given that the other log has term `term` at `index`.
    pub(crate) fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> (LogIndex, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Ok(t) if t <= term => return (i, t),
                Ok(_) if i > 0 => i -= 1,
                _ => return (i, 0),
            }
        }
    }

    /// A follower's handling of AppendEntries (Figure 2, receiver rules 2–5).
    pub(crate) fn maybe_append(
        &mut self,
        prev_index: LogIndex,
        prev_term: Term,
        leader_commit: LogIndex,
        entries: &[Entry],
    ) -> AppendOutcome {
        let numbered = entries
            .iter()
            .enumerate()
            .all(|(k, e)| prev_index.checked_add(k as u64 + 1) == Some(e.index));
        let Some(last_new) = prev_index.checked_add(entries.len() as u64) else {
            return AppendOutcome::Malformed;
        };
        if !numbered {
            return AppendOutcome::Malformed;
        }
        if !self.match_term(prev_index, prev_term) {
            return AppendOutcome::Mismatch;
        }
        let conflict = self.find_conflict(entries);
        if conflict != 0 {
            if conflict <= self.committed {
                return AppendOutcome::WouldOverwriteCommitted;
            }
            // Truncate only at a real conflict, never because entries were re-sent.
            let skip = (conflict - prev_index - 1) as usize;
            self.truncate_and_append(&entries[skip..]);
        }
        self.commit_to(leader_commit.min(last_new));
        AppendOutcome::Matched(last_new)
    }

    pub(crate) fn commit_to(&mut self, index: LogIndex) -> bool {
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// Unstable entries not yet handed out for persistence; marks them handed out.
    pub(crate) fn take_unsent(&mut self) -> Vec<Entry> {
        if self.unstable.is_empty() || self.unsent > self.last_index() {
            return Vec::new();
        }
        let from = (self.unsent.max(self.offset) - self.offset) as usize;
        let out = self.unstable[from..].to_vec();
        self.unsent = self.last_index() + 1;
        out
    }

    pub(crate) fn has_unsent(&self) -> bool {
        !self.unstable.is_empty() && self.unsent <= self.last_index()
    }

    /// Everything handed out up to `index` with `term` is now durable.
    pub(crate) fn stable_to(&mut self, index: LogIndex, term: Term) {
        if self.unstable.is_empty() || index < self.offset {
            return;
        }
        if !self.match_term(index, term) {
            return; // replaced since it was handed out; a later Ready persists the new ones
        }
        let n = ((index - self.offset + 1) as usize).min(self.unstable.len());
        self.unstable.drain(..n);
        self.offset = index + 1;
    }

    /// The index up to which committed entries may be handed out: committed and durable.
    fn applicable_to(&self) -> LogIndex {
        self.committed.min(self.persisted_index())
    }

    /// Whether committed entries may be handed out now: there are some, and fewer than
    /// `max_unapplied` bytes of those handed out earlier wait to be acknowledged applied
    /// (when none wait, one batch always may go, however large).
    pub(crate) fn has_committed_to_apply(&self, max_unapplied: u64) -> bool {
        self.applicable_to() > self.applying
            && (self.unapplied.is_empty() || self.unapplied_bytes < max_unapplied)
    }

    /// Committed, durable entries not yet handed out for applying (at most `max_bytes` of
    /// them, and none while `max_unapplied` bytes wait to be acknowledged applied); marks
    /// them handed out.
    pub(crate) fn take_committed(
        &mut self,
        max_bytes: u64,
        max_unapplied: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if !self.has_committed_to_apply(max_unapplied) {
            return Ok(Vec::new());
        }
        let hi = self.applicable_to() + 1;
        let lo = self.applying + 1;
        let out = self.entries(lo, hi, max_bytes)?;
        if let Some(e) = out.last() {
            self.applying = e.index;
            let bytes: u64 = out.iter().map(Entry::size).sum();
            self.unapplied.push_back((e.index, bytes));
            self.unapplied_bytes = self.unapplied_bytes.saturating_add(bytes);
        }
        Ok(out)
    }

    pub(crate) fn applying(&self) -> LogIndex {
        self.applying
    }

    pub(crate) fn applied_to(&mut self, index: LogIndex) {
        self.applied = self.applied.max(index.min(self.applying));
        self.forget_applied();
    }

    /// Drops the handed-out batches that are wholly applied from the unapplied count.
    fn forget_applied(&mut self) {
        while let Some(&(last, bytes)) = self.unapplied.front() {
            if last > self.applied {
                break;
            }
            self.unapplied.pop_front();
            self.unapplied_bytes = self.unapplied_bytes.saturating_sub(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn ents(terms: &[Term]) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(i, &t)| Entry::normal(t, i as u64 + 1, vec![i as u8]))
            .collect()
    }

    #[test]
    fn find_conflict_by_term_skips_whole_terms() {
        let mut s = MemStorage::new();
        s.append(&ents(&[1, 1, 2, 2, 4, 4, 4])).unwrap();
        let log = RaftLog::new(s, 0, 0);
        assert_eq!(log.find_conflict_by_term(7, 3), (4, 2));
        assert_eq!(log.find_conflict_by_term(7, 4), (7, 4));
        assert_eq!(log.find_conflict_by_term(9, 1), (2, 1));
        assert_eq!(log.find_conflict_by_term(3, 0), (0, 0));
    }

    #[test]
    fn entries_span_storage_and_unstable() {
        let mut s = MemStorage::new();
        s.append(&ents(&[1, 1, 1])).unwrap();
        let mut log = RaftLog::new(s, 0, 0);
        log.append(Entry::normal(2, 4, vec![4]));
        log.append(Entry::normal(2, 5, vec![5]));
        let got: Vec<_> = log
            .entries(2, 6, u64::MAX)
            .unwrap()
            .iter()
            .map(|e| (e.index, e.term))
            .collect();
        assert_eq!(got, vec![(2, 1), (3, 1), (4, 2), (5, 2)]);
        assert_eq!(log.persisted_index(), 3);
        assert_eq!(log.take_unsent().len(), 2);
        log.stable_to(5, 2);
        assert_eq!(
            log.persisted_index(),
            3,
            "store was not written in this test"
        );
    }

    fn persist(log: &mut RaftLog<MemStorage>) -> Vec<Entry> {
        let unsent = log.take_unsent();
        log.store.append(&unsent).unwrap();
        if let Some(last) = unsent.last() {
            log.stable_to(last.index, last.term);
        }
        unsent
    }

    #[test]
    fn stable_to_a_middle_index_keeps_the_rest_unstable() {
        let mut log = RaftLog::new(MemStorage::new(), 0, 0);
        for i in 1..=5 {
            log.append(Entry::normal(1, i, vec![i as u8]));
        }
        let handed = log.take_unsent();
        assert_eq!(handed.len(), 5);
        // The caller made only the first three durable.
        log.store.append(&handed[..3]).unwrap();
        log.stable_to(3, 1);
        assert_eq!(log.persisted_index(), 3);
        assert_eq!(log.last_index(), 5);
        assert_eq!(log.term(4), Ok(1));
        let all = log.entries(1, 6, u64::MAX).unwrap();
        assert_eq!(
            all.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert!(!log.has_unsent(), "4 and 5 were handed out already");
        log.store.append(&handed[3..]).unwrap();
        log.stable_to(5, 1);
        assert_eq!(log.persisted_index(), 5);
    }

    #[test]
    fn stable_to_an_index_already_stable_changes_nothing() {
        let mut log = RaftLog::new(MemStorage::new(), 0, 0);
        log.append(Entry::normal(1, 1, vec![1]));
        persist(&mut log);
        log.append(Entry::normal(1, 2, vec![2]));
        log.take_unsent();
        log.stable_to(1, 1);
        assert_eq!(log.persisted_index(), 1, "entry 2 is still unstable");
        assert_eq!(log.term(2), Ok(1));
    }

    #[test]
    fn entries_replaced_between_hand_out_and_persist_are_not_marked_stable() {
        let mut log = RaftLog::new(MemStorage::new(), 0, 0);
        log.append(Entry::normal(1, 1, vec![1]));
        persist(&mut log);
        // Entries 2..=3 of term 1 are handed out for persistence...
        for i in 2..=3 {
            log.append(Entry::normal(1, i, vec![i as u8]));
        }
        let handed = log.take_unsent();
        // ...and before they are durable, a new leader replaces them from index 2.
        assert_eq!(
            log.maybe_append(1, 1, 0, &[Entry::normal(2, 2, vec![9])]),
            AppendOutcome::Matched(2)
        );
        log.store.append(&handed).unwrap();
        log.stable_to(3, 1); // the old batch is durable, but no longer the log
        assert_eq!(log.last_index(), 2);
        assert_eq!(log.term(2), Ok(2), "the replacement stays");
        assert!(
            log.persisted_index() < 2,
            "the replacement is not durable yet"
        );
        assert!(log.has_unsent());
        let again = persist(&mut log);
        assert_eq!(
            again.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
            vec![(2, 2)]
        );
        assert_eq!(log.persisted_index(), 2);
        assert_eq!(
            log.store.last_index(),
            2,
            "the storage truncated the old entry 3"
        );
    }

    #[test]
    fn an_entry_larger_than_the_byte_limit_travels_alone() {
        let mut log = RaftLog::new(MemStorage::new(), 0, 0);
        log.append(Entry::normal(1, 1, vec![0; 100]));
        log.append(Entry::normal(1, 2, vec![0; 10]));
        log.append(Entry::normal(1, 3, vec![0; 10]));
        // Unstable entries.
        let first = log.entries(1, 4, 50).unwrap();
        assert_eq!(first.iter().map(|e| e.index).collect::<Vec<_>>(), vec![1]);
        let rest = log.entries(2, 4, 50).unwrap();
        assert_eq!(rest.iter().map(|e| e.index).collect::<Vec<_>>(), vec![2]);
        let both = log.entries(2, 4, 68).unwrap();
        assert_eq!(both.iter().map(|e| e.index).collect::<Vec<_>>(), vec![2, 3]);
        // The same from storage, and across the boundary.
        persist(&mut log);
        log.append(Entry::normal(1, 4, vec![0; 10]));
        assert_eq!(log.entries(1, 5, 50).unwrap().len(), 1);
        let span = log.entries(3, 5, 68).unwrap();
        assert_eq!(span.iter().map(|e| e.index).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(log.entries(3, 5, 67).unwrap().len(), 1);
    }

    #[test]
    fn unsent_and_applicable_entries_are_reported_until_taken() {
        let mut log = RaftLog::new(MemStorage::new(), 0, 0);
        assert!(!log.has_unsent());
        assert!(!log.has_committed_to_apply(u64::MAX));
        log.append(Entry::normal(1, 1, vec![1]));
        log.append(Entry::normal(1, 2, vec![2]));
        assert!(log.has_unsent());
        assert!(log.commit_to(2));
        assert!(
            !log.has_committed_to_apply(u64::MAX),
            "committed but not durable: not yet applicable"
        );
        assert_eq!(log.take_unsent().len(), 2);
        assert!(!log.has_unsent());
        assert!(log.take_unsent().is_empty());
        log.store.append(&log.unstable.clone()).unwrap();
        log.stable_to(2, 1);
        assert!(log.has_committed_to_apply(u64::MAX));
        let c = log.take_committed(u64::MAX, u64::MAX).unwrap();
        assert_eq!(c.len(), 2);
        assert!(!log.has_committed_to_apply(u64::MAX), "handed out once");
        assert_eq!(log.applying(), 2);
        assert_eq!(log.applied, 0, "not acknowledged yet");
        log.applied_to(2);
        assert_eq!(log.applied, 2);
    }

    #[test]
    fn commit_only_moves_forward_and_never_past_the_last_entry() {
        let mut log = RaftLog::new(MemStorage::new(), 0, 0);
        log.append(Entry::normal(1, 1, vec![1]));
        log.append(Entry::normal(1, 2, vec![2]));
        assert!(log.commit_to(5));
        assert_eq!(log.committed, 2);
        assert!(!log.commit_to(1));
        assert_eq!(log.committed, 2);
        assert!(!log.commit_to(2));
    }

    #[test]
    fn entries_never_go_past_the_upper_bound() {
        let mut s = MemStorage::new();
        s.append(&ents(&[1, 1])).unwrap();
        let mut log = RaftLog::new(s, 0, 0);
        for i in 3..=6 {
            log.append(Entry::normal(1, i, vec![i as u8]));
        }
        for (lo, hi) in [(1, 2), (1, 4), (3, 5), (4, 5), (2, 7)] {
            let got: Vec<u64> = log
                .entries(lo, hi, u64::MAX)
                .unwrap()
                .iter()
                .map(|e| e.index)
                .collect();
            assert_eq!(got, (lo..hi).collect::<Vec<_>>(), "[{lo}, {hi})");
        }
    }

    #[test]
    fn entries_below_a_compacted_prefix_are_reported_compacted() {
        let mut s = MemStorage::new();
        s.append(&ents(&[1, 1, 2, 2])).unwrap();
        s.compact(2).unwrap();
        let log = RaftLog::new(s, 4, 0);
        assert_eq!(log.first_index(), 3);
        assert_eq!(log.entries(2, 5, u64::MAX), Err(StorageError::Compacted(2)));
        assert_eq!(log.entries(3, 5, u64::MAX).unwrap().len(), 2);
        assert_eq!(
            log.term(2),
            Ok(1),
            "the term before the first entry is known"
        );
    }

    #[test]
    fn committed_entries_are_handed_out_within_the_byte_budget() {
        let mut log = RaftLog::new(MemStorage::new(), 0, 0);
        for i in 1..=3 {
            log.append(Entry::normal(1, i, vec![0; 10]));
        }
        persist(&mut log);
        log.commit_to(3);
        let first = log.take_committed(40, u64::MAX).unwrap();
        assert_eq!(first.len(), 1);
        let rest = log.take_committed(u64::MAX, u64::MAX).unwrap();
        assert_eq!(rest.iter().map(|e| e.index).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn a_restarted_log_resumes_after_the_applied_index() {
        let mut s = MemStorage::new();
        s.append(&ents(&[1, 1, 1, 1])).unwrap();
        let mut log = RaftLog::new(s, 3, 2);
        assert_eq!(log.committed, 3);
        let c = log.take_committed(u64::MAX, u64::MAX).unwrap();
        assert_eq!(c.iter().map(|e| e.index).collect::<Vec<_>>(), vec![3]);
        let capped = RaftLog::new(MemStorage::new(), 7, 5);
        assert_eq!((capped.committed, capped.applied), (0, 0));
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            /// A leader appends `n` entries of term `t` (terms never decrease at the tail).
            LeaderAppend { bump: u64, n: u64 },
            /// The leader's entries arrive at a follower: `back` entries behind the end,
            /// matching the entry there, followed by entries with the given term bumps.
            FollowerAppend {
                back: u64,
                bumps: Vec<u64>,
                wrong_prev: bool,
            },
            /// The caller persists what is unstable and acknowledges it.
            Persist,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0u64..2, 1u64..4).prop_map(|(bump, n)| Op::LeaderAppend { bump, n }),
                (
                    0u64..6,
                    proptest::collection::vec(0u64..2, 0..5),
                    proptest::bool::weighted(0.2)
                )
                    .prop_map(|(back, bumps, wrong_prev)| Op::FollowerAppend {
                        back,
                        bumps,
                        wrong_prev
                    }),
                Just(Op::Persist),
            ]
        }

        proptest! {
            #[test]
            fn log_matches_a_model_of_terms(ops in proptest::collection::vec(op(), 1..40)) {
                let mut log = RaftLog::new(MemStorage::new(), 0, 0);
                let mut model: Vec<Term> = Vec::new(); // model[i - 1] = term of index i
                for op in ops {
                    match op {
                        Op::LeaderAppend { bump, n } => {
                            let t = model.last().copied().unwrap_or(1) + bump;
                            for _ in 0..n {
                                let index = model.len() as u64 + 1;
                                log.append(Entry::normal(t, index, vec![]));
                                model.push(t);
                            }
                        }
                        Op::FollowerAppend { back, bumps, wrong_prev } => {
                            let prev = (model.len() as u64).saturating_sub(back);
                            let prev_term = if prev == 0 { 0 } else { model[prev as usize - 1] };
                            let mut t = prev_term.max(1);
                            let entries: Vec<Entry> = bumps.iter().enumerate().map(|(k, b)| {
                                t += b;
                                Entry::normal(t, prev + 1 + k as u64, vec![])
                            }).collect();
                            let asked_term = if wrong_prev { prev_term + 7 } else { prev_term };
                            let before = model.clone();
                            let persisted_before = log.persisted_index();
                            let out = log.maybe_append(prev, asked_term, 0, &entries);
                            if wrong_prev {
                                prop_assert_eq!(out, AppendOutcome::Mismatch);
                                prop_assert_eq!(&model, &before);
                            } else {
                                prop_assert_eq!(out, AppendOutcome::Matched(prev + entries.len() as u64));
                                for e in &entries {
                                    let i = e.index as usize;
                                    if i <= model.len() && model[i - 1] == e.term {
                                        continue; // identical entry: kept, never truncated
                                    }
                                    model.truncate(i - 1);
                                    model.push(e.term);
                                }
                                if model == before {
                                    // Nothing conflicted: nothing durable was thrown away.
                                    prop_assert_eq!(log.persisted_index(), persisted_before);
                                }
                            }
                        }
                        Op::Persist => {
                            let unsent = log.take_unsent();
                            log.store.append(&unsent).unwrap();
                            if let Some(last) = unsent.last() {
                                log.stable_to(last.index, last.term);
                            }
                            prop_assert_eq!(log.persisted_index(), model.len() as u64);
                        }
                    }
                    prop_assert_eq!(log.last_index(), model.len() as u64);
                    for (k, t) in model.iter().enumerate() {
                        prop_assert_eq!(log.term(k as u64 + 1), Ok(*t));
                    }
                    let all = log.entries(1, model.len() as u64 + 1, u64::MAX).unwrap();
                    prop_assert_eq!(all.iter().map(|e| e.term).collect::<Vec<_>>(), model.clone());
                    prop_assert!(log.persisted_index() <= log.last_index());
                }
            }
        }
    }
}
