//! Linearizable reads by ReadIndex (§6.4 of the Raft thesis): the leader records its
//! commit index, confirms with a majority that it is still the leader, and hands the index
//! back; the read is served once the state machine has applied up to it.
//!
//! A follower serves linearizable reads too: it asks the leader for the index
//! ([`MessageBody::ReadIndex`]), the leader confirms its leadership as for its own reads
//! and answers with the index, and the follower serves the read once *it* has applied up to
//! that index. A forwarded read that gets no answer within an election timeout, or whose
//! term ends, is aborted (the caller retries).

use std::collections::{BTreeMap, VecDeque};

use crate::error::ReadError;
use crate::message::MessageBody;
use crate::node::Node;
use crate::ready::{ReadOutcome, ReadState};
use crate::storage::LogStore;
use crate::types::{LogIndex, NodeId, Role};

#[derive(Debug)]
struct PendingRead {
    seq: u64,
    id: u64,
    index: LogIndex,
    /// The follower that asked for it (`None`: this node's own read).
    from: Option<NodeId>,
}

/// The leader's reads in progress.
#[derive(Debug, Default)]
pub(crate) struct ReadQueue {
    next_seq: u64,
    /// Reads waiting for a heartbeat round to confirm leadership, in `seq` order.
    pending: VecDeque<PendingRead>,
    /// Reads that arrived before the leader committed an entry of its term (with the
    /// follower that asked, if one did).
    waiting_for_commit: Vec<(u64, Option<NodeId>)>,
    /// A follower's reads sent to the leader, by id: ticks waited for the answer.
    forwarded: BTreeMap<u64, u32>,
    /// Completed or aborted reads, for the next `Ready`.
    output: Vec<ReadState>,
    /// A heartbeat round must go out at the next `ready`.
    pub(crate) broadcast_needed: bool,
}

impl ReadQueue {
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq
    }

    /// Numbers a new heartbeat round (reads started before it are confirmed by it).
    pub(crate) fn new_round(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    pub(crate) fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    pub(crate) fn take_output(&mut self) -> Vec<ReadState> {
        std::mem::take(&mut self.output)
    }

    /// The term or the role changed: every read in progress fails. This node's own reads
    /// (led here or forwarded) are reported aborted; followers' reads are dropped (their
    /// own term change, or their timeout, aborts them there).
    pub(crate) fn abort_all(&mut self) {
        let own = self
            .pending
            .drain(..)
            .filter(|r| r.from.is_none())
            .map(|r| r.id)
            .chain(
                self.waiting_for_commit
                    .drain(..)
                    .filter(|(_, from)| from.is_none())
                    .map(|(id, _)| id),
            )
            .chain(std::mem::take(&mut self.forwarded).into_keys());
        self.output.extend(own.map(|id| ReadState {
            id,
            outcome: ReadOutcome::Aborted,
        }));
        self.broadcast_needed = false;
    }
}

impl<S: LogStore> Node<S> {
    /// Starts a linearizable read identified by `id` (the caller's choice). Its outcome
    /// arrives in [`crate::Ready::read_states`].
    ///
    /// On a follower (or learner) that knows its leader, the read is forwarded to the
    /// leader; the outcome's index is then the leader's, and the read is safe once this
    /// node has applied up to it. Without a known leader: [`ReadError::NotLeader`].
    /// Identifiers must be unique among this node's reads in progress.
    pub fn read_index(&mut self, id: u64) -> Result<(), ReadError> {
        if let Some(e) = self.failure() {
            return Err(ReadError::Stopped(e.clone()));
        }
        if self.role != Role::Leader {
            return match (self.role, self.leader) {
                (Role::Follower, Some(leader)) => {
                    self.reads.forwarded.insert(id, 0);
                    self.send(leader, MessageBody::ReadIndex { id });
                    Ok(())
                }
                _ => Err(ReadError::NotLeader {
                    leader: self.leader,
                }),
            };
        }
        self.begin_read(id, None);
        Ok(())
    }

    /// Leader: a read for this node (`from` = `None`) or asked for by a follower.
    fn begin_read(&mut self, id: u64, from: Option<NodeId>) {
        if !self.committed_in_current_term() {
            // Until an entry of its term commits, the leader may not know the commit index.
            self.reads.waiting_for_commit.push((id, from));
            return;
        }
        self.start_read(id, from);
    }

    fn start_read(&mut self, id: u64, from: Option<NodeId>) {
        let index = self.log.committed;
        let me = self.id;
        if self.configs.latest().has_quorum(|id| id == me) {
            self.read_done(id, from, index);
            return;
        }
        if self.lease_holds() {
            self.lease.served += 1;
            self.read_done(id, from, index);
            return;
        }
        self.reads.next_seq += 1;
        let seq = self.reads.next_seq;
        self.reads.pending.push_back(PendingRead {
            seq,
            id,
            index,
            from,
        });
        self.reads.broadcast_needed = true;
    }

    /// A confirmed read: reported here, or answered to the follower that asked.
    fn read_done(&mut self, id: u64, from: Option<NodeId>, index: LogIndex) {
        match from {
            None => self.reads.output.push(ReadState {
                id,
                outcome: ReadOutcome::Ready { index },
            }),
            Some(f) => self.send(
                f,
                MessageBody::ReadIndexResponse {
                    id,
                    index: Some(index),
                },
            ),
        }
    }

    /// A follower's request for a read index.
    pub(crate) fn handle_forwarded_read(&mut self, from: NodeId, id: u64) {
        if self.role == Role::Leader {
            self.begin_read(id, Some(from));
        } else {
            self.send(from, MessageBody::ReadIndexResponse { id, index: None });
        }
    }

    /// The leader's answer to a read this node forwarded.
    pub(crate) fn handle_read_answer(&mut self, id: u64, index: Option<LogIndex>) {
        if self.reads.forwarded.remove(&id).is_none() {
            return; // aborted already, or a duplicate
        }
        self.reads.output.push(ReadState {
            id,
            outcome: match index {
                Some(index) => ReadOutcome::Ready { index },
                None => ReadOutcome::Aborted,
            },
        });
    }

    /// Forwarded reads unanswered for an election timeout are aborted (the request or its
    /// answer was lost).
    pub(crate) fn expire_forwarded_reads(&mut self) {
        if self.reads.forwarded.is_empty() {
            return;
        }
        let limit = self.cfg.election_ticks;
        let mut expired = Vec::new();
        for (&id, waited) in self.reads.forwarded.iter_mut() {
            *waited = waited.saturating_add(1);
            if *waited >= limit {
                expired.push(id);
            }
        }
        for id in expired {
            self.reads.forwarded.remove(&id);
            self.reads.output.push(ReadState {
                id,
                outcome: ReadOutcome::Aborted,
            });
        }
    }

    /// The leader's first entry of its term committed: queued reads may start.
    pub(crate) fn on_first_commit_in_term(&mut self) {
        let waiting = std::mem::take(&mut self.reads.waiting_for_commit);
        for (id, from) in waiting {
            self.start_read(id, from);
        }
    }

    /// Leader: whether lease reads are on and the lease holds now (see `lease.rs`).
    fn lease_holds(&self) -> bool {
        let duration = self
            .cfg
            .election_ticks
            .saturating_sub(self.cfg.lease_margin_ticks);
        self.cfg.lease_reads && self.role == Role::Leader && self.lease.holds(u64::from(duration))
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
        self.lease.acknowledged(confirmed);
        while let Some(front) = self.reads.pending.front() {
            if front.seq > confirmed {
                break;
            }
            if let Some(r) = self.reads.pending.pop_front() {
                self.read_done(r.id, r.from, r.index);
            }
        }
    }
}
