//! Linearizable reads by ReadIndex (§6.4 of the Raft thesis): the leader records its
//! commit index, confirms with a majority that it is still the leader, and hands the index
//! back; the read is served once the state machine has applied up to it.

use std::collections::VecDeque;

use crate::error::ReadError;
use crate::node::Node;
use crate::ready::{ReadOutcome, ReadState};
use crate::storage::LogStore;
use crate::types::{LogIndex, Role};

#[derive(Debug)]
struct PendingRead {
    seq: u64,
    id: u64,
    index: LogIndex,
}

/// The leader's reads in progress.
#[derive(Debug, Default)]
pub(crate) struct ReadQueue {
    next_seq: u64,
    /// Reads waiting for a heartbeat round to confirm leadership, in `seq` order.
    pending: VecDeque<PendingRead>,
    /// Reads that arrived before the leader committed an entry of its term.
    waiting_for_commit: Vec<u64>,
    /// Completed or aborted reads, for the next `Ready`.
    output: Vec<ReadState>,
    /// A heartbeat round must go out at the next `ready`.
    pub(crate) broadcast_needed: bool,
}

impl ReadQueue {
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq
    }

    pub(crate) fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    pub(crate) fn take_output(&mut self) -> Vec<ReadState> {
        std::mem::take(&mut self.output)
    }

    /// Leadership ended: every read in progress fails.
    pub(crate) fn abort_all(&mut self) {
        let aborted = self
            .pending
            .drain(..)
            .map(|r| r.id)
            .chain(self.waiting_for_commit.drain(..));
        self.output.extend(aborted.map(|id| ReadState {
            id,
            outcome: ReadOutcome::Aborted,
        }));
        self.broadcast_needed = false;
    }
}

impl<S: LogStore> Node<S> {
    /// Starts a linearizable read identified by `id` (the caller's choice). Its outcome
    /// arrives in [`crate::Ready::read_states`].
    pub fn read_index(&mut self, id: u64) -> Result<(), ReadError> {
        if let Some(e) = self.failure() {
            return Err(ReadError::Stopped(e.clone()));
        }
        if self.role != Role::Leader {
            return Err(ReadError::NotLeader {
                leader: self.leader,
            });
        }
        if !self.committed_in_current_term() {
            // Until an entry of its term commits, the leader may not know the commit index.
            self.reads.waiting_for_commit.push(id);
            return Ok(());
        }
        self.start_read(id);
        Ok(())
    }

    fn start_read(&mut self, id: u64) {
        let index = self.log.committed;
        let me = self.id;
        if self.configs.latest().has_quorum(|id| id == me) {
            self.reads.output.push(ReadState {
                id,
                outcome: ReadOutcome::Ready { index },
            });
            return;
        }
        self.reads.next_seq += 1;
        let seq = self.reads.next_seq;
        self.reads.pending.push_back(PendingRead { seq, id, index });
        self.reads.broadcast_needed = true;
    }

    /// The leader's first entry of its term committed: queued reads may start.
    pub(crate) fn on_first_commit_in_term(&mut self) {
        let waiting = std::mem::take(&mut self.reads.waiting_for_commit);
        for id in waiting {
            self.start_read(id);
        }
    }

    /// Releases every read whose heartbeat round a majority has answered.
    pub(crate) fn confirm_reads(&mut self) {
        let me = self.id;
        let progress = &self.progress;
        let confirmed = self.configs.latest().committed(|id| {
            if id == me {
                u64::MAX
            } else {
                progress.get(&id).map_or(0, |p| p.read_seq_acked)
            }
        });
        while let Some(front) = self.reads.pending.front() {
            if front.seq > confirmed {
                break;
            }
            if let Some(r) = self.reads.pending.pop_front() {
                self.reads.output.push(ReadState {
                    id: r.id,
                    outcome: ReadOutcome::Ready { index: r.index },
                });
            }
        }
    }
}
