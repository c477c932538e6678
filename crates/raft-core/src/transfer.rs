//! Leadership transfer (§3.10 of the Raft thesis): the leader brings the chosen voter's
//! log up to its own, stops taking proposals, and tells it to campaign at once
//! ([`MessageBody::TimeoutNow`]); the voters answer that campaign even though they hear
//! from a live leader. If no new leader appears within an election timeout, the leader
//! takes proposals again.

use crate::error::TransferError;
use crate::message::MessageBody;
use crate::node::Node;
use crate::progress::ProgressState;
use crate::storage::LogStore;
use crate::types::{NodeId, Role};

/// A leadership transfer in progress.
#[derive(Clone, Debug)]
pub(crate) struct Transfer {
    /// The voter leadership goes to.
    pub(crate) to: NodeId,
    /// Ticks since it started.
    elapsed: u32,
}

impl<S: LogStore> Node<S> {
    /// Hands leadership to the voter `to`. Until `to` is elected (or an election timeout
    /// passes), proposals and membership changes are refused. Asking for the current
    /// leader cancels a transfer in progress; asking again for the same voter changes
    /// nothing; asking for another voter redirects the transfer.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        if let Some(e) = self.failure() {
            return Err(TransferError::Stopped(e.clone()));
        }
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.id {
            self.transfer = None;
            return Ok(());
        }
        if !self.configs.latest().is_voter(to) {
            return Err(TransferError::NotAVoter(to));
        }
        if self.transfer.as_ref().is_some_and(|t| t.to == to) {
            return Ok(());
        }
        self.transfer = Some(Transfer { to, elapsed: 0 });
        if !self.maybe_send_timeout_now(to) {
            // Appends in flight to it may be lost: probe it again rather than wait for the
            // stream to be seen stalled, which takes as long as the transfer may.
            if let Some(pr) = self.progress.get_mut(&to) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
            }
            self.send_appends(to, false);
        }
        Ok(())
    }

    /// The voter other than this leader whose log is most caught up: the natural target of
    /// a transfer. None on a follower or when no other voter exists.
    pub fn transfer_candidate(&self) -> Option<NodeId> {
        if self.role != Role::Leader {
            return None;
        }
        let config = self.configs.latest();
        self.progress
            .iter()
            .filter(|(id, _)| config.is_voter(**id))
            .max_by_key(|(id, p)| (p.match_index, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
    }

    /// The voter leadership is being transferred to, if a transfer is in progress.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.as_ref().map(|t| t.to)
    }

    /// Leader: `from` answered; if it is the transfer's target and holds the whole log, it
    /// is told to campaign (again, if an earlier message was lost: a second one reaches it
    /// in a newer term, or finds it leader, and changes nothing). Returns whether it was.
    pub(crate) fn maybe_send_timeout_now(&mut self, from: NodeId) -> bool {
        if self.holds_whole_log(from) && self.transfer.as_ref().is_some_and(|t| t.to == from) {
            // Its campaign ignores the lease this leader's reads rely on.
            self.lease.give_up();
            self.send(from, MessageBody::TimeoutNow);
            return true;
        }
        false
    }

    /// Leader: whether `id` is known to hold every entry of this leader's log.
    pub(crate) fn holds_whole_log(&self, id: NodeId) -> bool {
        let last = self.log.last_index();
        self.progress
            .get(&id)
            .is_some_and(|p| p.match_index == last)
    }

    /// Leader tick: a transfer that has not completed within an election timeout is
    /// abandoned, and proposals are taken again; a leader whose removal is committed steps
    /// down instead.
    pub(crate) fn tick_transfer(&mut self) {
        let limit = self.cfg.election_ticks;
        let Some(t) = &mut self.transfer else {
            return;
        };
        t.elapsed += 1;
        if t.elapsed < limit {
            return;
        }
        self.transfer = None;
        let removed = !self.configs.latest().is_voter(self.id)
            && self.configs.latest_index() <= self.log.committed;
        if removed {
            self.become_follower(self.term, None);
        }
    }

    /// Follower: the leader handed leadership over. A voter campaigns at once.
    pub(crate) fn handle_timeout_now(&mut self) {
        if self.may_campaign() {
            self.become_candidate(true);
        }
    }
}
