//! Callers waiting for the runtime to answer them later: submits and batches until their
//! entries are applied, reads until leadership is confirmed and the state machine has
//! caught up, membership changes until applied, a leadership transfer until it ends. Each
//! is answered exactly once: with its outcome, or with why it never will be.

use std::collections::BTreeMap;

use raft_core::{Entry, LogIndex, NodeId, ReadOutcome, Term};
use tokio::sync::oneshot;

use crate::batch::{take_through, BatchReply, Batches};
use crate::commands::Committed;
use crate::error::Error;
use crate::limits::Permit;

type SubmitReply<R> = oneshot::Sender<Result<Committed<R>, Error>>;
pub(super) type ReadReply = oneshot::Sender<Result<LogIndex, Error>>;
pub(super) type ChangeReply = oneshot::Sender<Result<LogIndex, Error>>;
pub(super) type TransferReply = oneshot::Sender<Result<NodeId, Error>>;

struct PendingSubmit<R> {
    term: Term,
    reply: SubmitReply<R>,
    _permit: Permit,
}

/// Everyone the runtime owes an answer.
pub(super) struct Waiters<R> {
    /// Submits on this leader awaiting their entry's commit, by index.
    submits: BTreeMap<LogIndex, PendingSubmit<R>>,
    /// Batches on this leader awaiting their entries' commit.
    batches: Batches<R>,
    /// Reads awaiting leadership confirmation, by read id.
    reads: BTreeMap<u64, ReadReply>,
    /// Confirmed reads awaiting the state machine to reach their index.
    parked_reads: Vec<(LogIndex, ReadReply)>,
    last_read_id: u64,
    /// Membership changes on this leader awaiting their entry's commit, by index.
    changes: BTreeMap<LogIndex, (Term, ChangeReply)>,
    /// A leadership transfer awaiting its outcome.
    transfer: Option<(NodeId, TransferReply)>,
}

impl<R> Waiters<R> {
    pub(super) fn new() -> Self {
        Waiters {
            submits: BTreeMap::new(),
            batches: Batches::new(),
            reads: BTreeMap::new(),
            parked_reads: Vec::new(),
            last_read_id: 0,
            changes: BTreeMap::new(),
            transfer: None,
        }
    }

    /// A submit proposed at `index` in `term`, answered once that entry is applied.
    pub(super) fn add_submit(
        &mut self,
        index: LogIndex,
        term: Term,
        reply: SubmitReply<R>,
        permit: Permit,
    ) {
        let p = PendingSubmit {
            term,
            reply,
            _permit: permit,
        };
        self.submits.insert(index, p);
    }

    /// A batch of `count` entries proposed from `first` in `term`.
    pub(super) fn add_batch(
        &mut self,
        first: LogIndex,
        count: usize,
        term: Term,
        reply: BatchReply<R>,
        permit: Permit,
    ) {
        self.batches.insert(first, count, term, reply, permit);
    }

    /// An id for the next read (unique for this runtime).
    pub(super) fn next_read_id(&mut self) -> u64 {
        self.last_read_id += 1;
        self.last_read_id
    }

    /// A read the core is confirming leadership for, under `id`.
    pub(super) fn add_read(&mut self, id: u64, reply: ReadReply) {
        self.reads.insert(id, reply);
    }

    /// The core's verdict on read `id`: it waits for the state machine to reach its index,
    /// or fails.
    pub(super) fn read_confirmed(&mut self, id: u64, outcome: ReadOutcome) {
        let Some(reply) = self.reads.remove(&id) else {
            return;
        };
        match outcome {
            ReadOutcome::Ready { index } => self.parked_reads.push((index, reply)),
            ReadOutcome::Aborted => {
                let _ = reply.send(Err(Error::LeadershipLost));
            }
        }
    }

    /// Answers the confirmed reads whose index the state machine has reached.
    pub(super) fn release_reads(&mut self, applied: LogIndex) {
        let mut i = 0;
        while i < self.parked_reads.len() {
            if self.parked_reads[i].0 <= applied {
                let (index, reply) = self.parked_reads.swap_remove(i);
                let _ = reply.send(Ok(index));
            } else {
                i += 1;
            }
        }
    }

    /// A membership change proposed at `index` in `term`.
    pub(super) fn add_change(&mut self, index: LogIndex, term: Term, reply: ChangeReply) {
        self.changes.insert(index, (term, reply));
    }

    /// Whether a membership change proposed here still waits.
    pub(super) fn changes_pending(&self) -> bool {
        !self.changes.is_empty()
    }

    /// A transfer to `to` started; an earlier one still waiting has failed.
    pub(super) fn set_transfer(&mut self, to: NodeId, reply: TransferReply) {
        if let Some((_, older)) = self.transfer.replace((to, reply)) {
            let _ = older.send(Err(Error::TransferFailed { to }));
        }
    }

    /// Where the transfer waiting, if any, hands leadership.
    pub(super) fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.as_ref().map(|(to, _)| *to)
    }

    /// The transfer waiting ended so.
    pub(super) fn finish_transfer(&mut self, outcome: Result<NodeId, Error>) {
        if let Some((_, reply)) = self.transfer.take() {
            let _ = reply.send(outcome);
        }
    }

    /// Answers the callers waiting for `entries`, just applied with `responses`.
    pub(super) fn answer_applied(&mut self, entries: &[Entry], responses: Vec<R>) {
        let mut responses = responses.into_iter();
        for e in entries {
            let response = responses.next();
            if let Some((term, reply)) = self.changes.remove(&e.index) {
                let outcome = if term == e.term {
                    Ok(e.index)
                } else {
                    Err(Error::Overwritten)
                };
                let _ = reply.send(outcome);
            }
            let Some(p) = self.submits.remove(&e.index) else {
                if !self.batches.is_empty() {
                    self.batches.applied(e, response);
                }
                continue;
            };
            let outcome = match response {
                Some(response) if p.term == e.term => Ok(Committed {
                    index: e.index,
                    term: e.term,
                    response,
                }),
                Some(_) => Err(Error::Overwritten),
                None => Err(Error::Storage(
                    "the state machine returned fewer responses than entries".into(),
                )),
            };
            let _ = p.reply.send(outcome);
        }
    }

    /// Leadership ended: what waits for entries from `after` on may commit under the next
    /// leader, or not; it is told so (see `fail_pending_submits`).
    pub(super) fn fail_from(&mut self, after: LogIndex) {
        for (_, p) in self.submits.split_off(&after) {
            let _ = p.reply.send(Err(Error::LeadershipLost));
        }
        self.batches.fail_from(after, &Error::LeadershipLost);
        for (_, (_, r)) in self.changes.split_off(&after) {
            let _ = r.send(Err(Error::LeadershipLost));
        }
    }

    /// A snapshot up to `index` was installed: what waits for entries it covers will never
    /// see them applied here.
    pub(super) fn fail_through(&mut self, index: LogIndex) {
        for (_, p) in take_through(&mut self.submits, index) {
            let _ = p.reply.send(Err(Error::LeadershipLost));
        }
        self.batches.fail_through(index, &Error::LeadershipLost);
        for (_, (_, r)) in take_through(&mut self.changes, index) {
            let _ = r.send(Err(Error::LeadershipLost));
        }
    }

    /// The node stops: everyone still waiting is told why.
    pub(super) fn fail_all(&mut self, why: &Error) {
        for (_, p) in std::mem::take(&mut self.submits) {
            let _ = p.reply.send(Err(why.clone()));
        }
        self.batches.fail_all(why);
        for (_, r) in std::mem::take(&mut self.reads) {
            let _ = r.send(Err(why.clone()));
        }
        for (_, r) in std::mem::take(&mut self.parked_reads) {
            let _ = r.send(Err(why.clone()));
        }
        for (_, (_, r)) in std::mem::take(&mut self.changes) {
            let _ = r.send(Err(why.clone()));
        }
        if let Some((_, r)) = self.transfer.take() {
            let _ = r.send(Err(why.clone()));
        }
    }
}
