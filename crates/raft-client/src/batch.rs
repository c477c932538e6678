//! Batches of entries submitted together ([`crate::RaftNode::submit_batch`]): proposed in
//! one go (consecutive indexes, one term, all or none), answered once, when the last one
//! is applied, with a response per entry.

use std::collections::BTreeMap;

use raft_core::{Entry, LogIndex, Term};
use tokio::sync::oneshot;

use crate::error::Error;
use crate::limits::Permit;

/// Takes the entries of `map` at or below `index` out of it (what `split_off` leaves
/// behind, where it takes the rest).
pub(crate) fn take_through<V>(
    map: &mut BTreeMap<LogIndex, V>,
    index: LogIndex,
) -> BTreeMap<LogIndex, V> {
    let later = map.split_off(&index.saturating_add(1));
    std::mem::replace(map, later)
}

/// Entries submitted together and committed: at consecutive indexes from `first`, in
/// `term`, with what the state machine returned for each, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedBatch<R> {
    /// The first entry's index; entry `i` of the batch is at `first + i`.
    pub first: LogIndex,
    /// The term they were created in.
    pub term: Term,
    /// What the state machine returned for each entry, in order.
    pub responses: Vec<R>,
}

pub(crate) type BatchReply<R> = oneshot::Sender<Result<CommittedBatch<R>, Error>>;

struct Pending<R> {
    last: LogIndex,
    term: Term,
    responses: Vec<R>,
    reply: BatchReply<R>,
    /// Set when leadership ended with only the entries up to `last` handed over for
    /// applying: the answer once they are applied.
    cut: Option<Error>,
    _permit: Permit,
}

/// The batches on this leader awaiting their entries' commit, by first index.
pub(crate) struct Batches<R> {
    pending: BTreeMap<LogIndex, Pending<R>>,
}

impl<R> Batches<R> {
    pub(crate) fn new() -> Self {
        Batches {
            pending: BTreeMap::new(),
        }
    }

    /// Waits for `count` (at least one) entries from `first` on, proposed in `term`.
    pub(crate) fn insert(
        &mut self,
        first: LogIndex,
        count: usize,
        term: Term,
        reply: BatchReply<R>,
        permit: Permit,
    ) {
        let last = first.saturating_add(count.saturating_sub(1) as u64);
        self.pending.insert(
            first,
            Pending {
                last,
                term,
                responses: Vec::with_capacity(count),
                reply,
                cut: None,
                _permit: permit,
            },
        );
    }

    /// An entry was applied with `response` (`None`: the state machine gave none). Answers
    /// its batch when it was the last one, or when the entry is not the batch's (another
    /// leader's entry took its place).
    pub(crate) fn applied(&mut self, e: &Entry, response: Option<R>) {
        let Some((&first, b)) = self.pending.range_mut(..=e.index).next_back() else {
            return;
        };
        if e.index > b.last {
            return;
        }
        let outcome: Option<Result<(), Error>> = match response {
            _ if e.term != b.term => Some(Err(if b.responses.is_empty() {
                Error::Overwritten
            } else {
                Error::PartlyCommitted {
                    first,
                    committed: b.responses.len(),
                }
            })),
            None => Some(Err(Error::Storage(
                "the state machine returned fewer responses than entries".into(),
            ))),
            Some(r) => {
                b.responses.push(r);
                (e.index == b.last).then(|| b.cut.take().map_or(Ok(()), Err))
            }
        };
        let Some(outcome) = outcome else {
            return;
        };
        if let Some(b) = self.pending.remove(&first) {
            let _ = b.reply.send(outcome.map(|_| CommittedBatch {
                first,
                term: b.term,
                responses: b.responses,
            }));
        }
    }

    /// Answers with `why` every batch that starts at or before `index` (a snapshot up to
    /// `index` replaced its entries: their responses will never be known here).
    pub(crate) fn fail_through(&mut self, index: LogIndex, why: &Error) {
        for (_, b) in take_through(&mut self.pending, index) {
            let _ = b.reply.send(Err(why.clone()));
        }
    }

    /// Answers every batch with `why` (the node is stopping).
    pub(crate) fn fail_all(&mut self, why: &Error) {
        for (_, b) in std::mem::take(&mut self.pending) {
            let _ = b.reply.send(Err(why.clone()));
        }
    }

    /// Answers with `why` every batch whose entries from `index` on will not be applied
    /// here (leadership ended; the entries before `index` were handed over for applying):
    /// a batch wholly from `index` at once, one that straddles it once its entries before
    /// `index` are applied.
    pub(crate) fn fail_from(&mut self, index: LogIndex, why: &Error) {
        for (_, b) in self.pending.split_off(&index) {
            let _ = b.reply.send(Err(why.clone()));
        }
        let Some((&first, b)) = self.pending.iter_mut().next_back() else {
            return;
        };
        if b.last < index {
            return; // wholly handed over: answered when applied
        }
        let applied_to = first.saturating_add(b.responses.len() as u64);
        if applied_to >= index {
            // Everything handed over is already applied.
            if let Some(b) = self.pending.remove(&first) {
                let _ = b.reply.send(Err(why.clone()));
            }
        } else {
            b.last = index - 1;
            b.cut = Some(why.clone());
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;

    fn entry(index: LogIndex, term: Term) -> Entry {
        Entry::normal(term, index, b"x".to_vec())
    }

    fn one_batch(
        first: LogIndex,
        count: usize,
        term: Term,
    ) -> (
        Batches<u64>,
        oneshot::Receiver<Result<CommittedBatch<u64>, Error>>,
    ) {
        let limits = Limits::new(10, 1 << 20);
        let mut b = Batches::new();
        let (tx, rx) = oneshot::channel();
        b.insert(first, count, term, tx, limits.try_acquire(1).unwrap());
        (b, rx)
    }

    #[test]
    fn a_batch_is_answered_once_its_last_entry_is_applied() {
        let (mut b, mut rx) = one_batch(5, 3, 2);
        b.applied(&entry(4, 2), Some(4)); // before it: not its own
        b.applied(&entry(5, 2), Some(50));
        b.applied(&entry(6, 2), Some(60));
        assert!(rx.try_recv().is_err(), "answered before its last entry");
        b.applied(&entry(7, 2), Some(70));
        let done = rx.try_recv().unwrap().unwrap();
        assert_eq!(
            done,
            CommittedBatch {
                first: 5,
                term: 2,
                responses: vec![50, 60, 70]
            }
        );
        assert!(b.is_empty());
    }

    #[test]
    fn a_batch_replaced_from_its_first_entry_is_overwritten() {
        let (mut b, mut rx) = one_batch(5, 3, 2);
        b.applied(&entry(5, 3), Some(50));
        assert!(matches!(rx.try_recv().unwrap(), Err(Error::Overwritten)));
        assert!(b.is_empty());
    }

    #[test]
    fn a_batch_replaced_after_some_entries_committed_says_how_many() {
        let (mut b, mut rx) = one_batch(5, 3, 2);
        b.applied(&entry(5, 2), Some(50));
        b.applied(&entry(6, 2), Some(60));
        b.applied(&entry(7, 3), Some(70));
        assert!(matches!(
            rx.try_recv().unwrap(),
            Err(Error::PartlyCommitted {
                first: 5,
                committed: 2
            })
        ));
    }

    #[test]
    fn entries_after_a_batch_and_missing_responses_are_handled() {
        let (mut b, mut rx) = one_batch(5, 1, 2);
        b.applied(&entry(6, 2), Some(60)); // after it: not its own
        assert!(rx.try_recv().is_err());
        b.applied(&entry(5, 2), None);
        assert!(matches!(rx.try_recv().unwrap(), Err(Error::Storage(_))));
    }

    type Answer = oneshot::Receiver<Result<CommittedBatch<u64>, Error>>;

    /// Batches of `count` entries from `first`, all in term 2.
    fn batches(specs: &[(LogIndex, usize)]) -> (Batches<u64>, Vec<Answer>) {
        let limits = Limits::new(10, 1 << 20);
        let mut b = Batches::new();
        let mut rxs = Vec::new();
        for &(first, count) in specs {
            let (tx, rx) = oneshot::channel();
            b.insert(first, count, 2, tx, limits.try_acquire(1).unwrap());
            rxs.push(rx);
        }
        (b, rxs)
    }

    #[test]
    fn after_a_step_down_batches_not_handed_over_fail_at_once() {
        // Entries up to 6 were handed over for applying: [3, 4] and [5, 6] will be
        // answered when applied, [7, 8] will not be applied here.
        let (mut b, mut rx) = batches(&[(3, 2), (5, 2), (7, 2)]);
        b.fail_from(7, &Error::LeadershipLost);
        assert!(matches!(rx[2].try_recv(), Ok(Err(Error::LeadershipLost))));
        assert!(rx[0].try_recv().is_err() && rx[1].try_recv().is_err());
        for i in 3..=6 {
            b.applied(&entry(i, 2), Some(i * 10));
        }
        assert_eq!(rx[0].try_recv().unwrap().unwrap().responses, vec![30, 40]);
        assert_eq!(rx[1].try_recv().unwrap().unwrap().responses, vec![50, 60]);
        assert!(b.is_empty());
    }

    #[test]
    fn batches_a_snapshot_covers_are_answered_and_later_ones_wait() {
        // A snapshot up to 6: [3, 4] and [5, 6] lie under it; [8, 9] is still to be
        // applied.
        let (mut b, mut rx) = batches(&[(3, 2), (5, 2), (8, 2)]);
        b.fail_through(6, &Error::LeadershipLost);
        assert!(matches!(rx[0].try_recv(), Ok(Err(Error::LeadershipLost))));
        assert!(matches!(rx[1].try_recv(), Ok(Err(Error::LeadershipLost))));
        assert!(rx[2].try_recv().is_err());
        b.applied(&entry(8, 2), Some(80));
        b.applied(&entry(9, 2), Some(90));
        assert_eq!(rx[2].try_recv().unwrap().unwrap().responses, vec![80, 90]);
    }

    #[test]
    fn a_batch_straddling_a_step_down_is_answered_once_its_handed_part_is_applied() {
        let (mut b, mut rx) = batches(&[(5, 4)]);
        b.applied(&entry(5, 2), Some(50));
        b.fail_from(7, &Error::LeadershipLost); // 5 and 6 were handed over
        assert!(
            rx[0].try_recv().is_err(),
            "answered before entry 6 is applied"
        );
        b.applied(&entry(6, 2), Some(60));
        assert!(matches!(rx[0].try_recv(), Ok(Err(Error::LeadershipLost))));
        assert!(b.is_empty());
    }

    #[test]
    fn a_straddling_batch_whose_handed_part_is_applied_fails_at_once() {
        let (mut b, mut rx) = batches(&[(5, 4)]);
        b.applied(&entry(5, 2), Some(50));
        b.applied(&entry(6, 2), Some(60));
        b.fail_from(7, &Error::LeadershipLost);
        assert!(matches!(rx[0].try_recv(), Ok(Err(Error::LeadershipLost))));
        assert!(b.is_empty());
    }

    #[test]
    fn failing_all_answers_every_batch() {
        let (mut b, mut rx) = one_batch(5, 2, 2);
        b.fail_all(&Error::LeadershipLost);
        assert!(matches!(rx.try_recv().unwrap(), Err(Error::LeadershipLost)));
        assert!(b.is_empty());
    }
}
