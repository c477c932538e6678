//! Leader election (§5.2), with pre-vote and check-quorum (§9.6 of the Raft thesis).

use crate::membership::VoteOutcome;
use crate::message::MessageBody;
use crate::node::Node;
use crate::storage::LogStore;
use crate::types::{LogIndex, NodeId, Role, Term};

impl<S: LogStore> Node<S> {
    /// Followers and candidates: count down to an election. A node that may not campaign
    /// keeps counting, so that its leader lease expires (and it answers pre-votes again)
    /// once it has not heard from the leader for an election timeout.
    pub(crate) fn tick_election(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.election_elapsed >= self.randomized_election_timeout && self.may_campaign() {
            self.election_elapsed = 0;
            self.start_election();
        }
    }

    /// Leaders: send heartbeats, and step down without a live majority (check-quorum).
    pub(crate) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_ticks {
            self.election_elapsed = 0;
            if self.cfg.check_quorum {
                let me = self.id;
                let progress = &self.progress;
                let active = self.configs.latest().has_quorum(|id| {
                    id == me || progress.get(&id).is_some_and(|p| p.recent_active)
                });
                if !active {
                    self.become_follower(self.term, None);
                    return;
                }
                for p in self.progress.values_mut() {
                    p.recent_active = false;
                }
            }
        }
        let limit = self.cfg.election_ticks;
        let stalled: Vec<_> = self
            .progress
            .iter_mut()
            .filter_map(|(&id, p)| p.tick_stalled(limit).then_some(id))
            .collect();
        for id in stalled {
            if let Some(p) = self.progress.get_mut(&id) {
                p.become_probe();
            }
            self.send_appends(id, false);
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
        self.tick_transfer();
    }

    /// Whether this node heard from a live leader within the election timeout, in which
    /// case it refuses to vote for anyone else (check-quorum's leader lease). With lease
    /// reads, a node that started less than an election timeout ago counts as having
    /// heard from one: it may have, before it restarted, and a leader may be serving reads
    /// on that lease.
    pub(crate) fn in_lease(&self) -> bool {
        let heard = self.leader.is_some() && self.election_elapsed < self.cfg.election_ticks;
        let starting = self.cfg.lease_reads && self.lease.now < u64::from(self.cfg.election_ticks);
        self.cfg.check_quorum && (heard || starting)
    }

    /// Whether this node may campaign: it votes in the configuration in effect, or it
    /// voted in the one before and the change that took its vote is not known to be
    /// committed. (The last leader of a cluster may have appended its own removal and lost
    /// leadership before committing it; its log then outranks the others', and only its
    /// own election, in the new configuration it is not part of, lets that change commit.
    /// It steps down again once it has.)
    pub(crate) fn may_campaign(&self) -> bool {
        let me = self.id;
        self.configs.latest().is_voter(me)
            || (self.configs.latest_index() > self.log.committed
                && self.configs.previous().is_some_and(|m| m.is_voter(me)))
    }

    /// Starts an election on request (an operator's `campaign`): a pre-vote round first
    /// when enabled. Refused, besides where [`Node::start_election`] refuses, with
    /// check-quorum on a node that heard from its leader within an election timeout
    /// (`in_lease`): it would vote for itself while it still backs that leader, and a
    /// leader serving lease reads counts on its voters backing no one else for that long.
    /// Returns whether an election started.
    pub fn campaign(&mut self) -> bool {
        if self.in_lease() {
            return false;
        }
        self.start_election()
    }

    /// Starts an election: a pre-vote round first when enabled. A node that may not
    /// campaign (see `may_campaign`), or at term `u64::MAX`, does not. (A follower's own
    /// timeout comes here after an election timeout without its leader.)
    fn start_election(&mut self) -> bool {
        if self.role == Role::Leader
            || !self.may_campaign()
            || self.next_term().is_none()
            || self.failure().is_some()
        {
            return false;
        }
        if self.cfg.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate(false);
        }
        true
    }

    fn become_pre_candidate(&mut self) {
        // The term and vote stay as they are: a pre-vote changes nothing durable.
        let term = self.term;
        self.reset(term);
        self.role = crate::types::Role::PreCandidate;
        self.votes.insert(self.id, true);
        if self.votes_won() {
            self.become_candidate(false);
            return;
        }
        self.request_votes(true, false);
    }

    /// Campaigns in a new term; `transfer` when the leader handed leadership over, so that
    /// voters answer even though they hear from that leader.
    pub(crate) fn become_candidate(&mut self, transfer: bool) {
        let Some(term) = self.next_term() else {
            return;
        };
        self.reset(term);
        self.role = Role::Candidate;
        self.vote = Some(self.id);
        self.votes.insert(self.id, true);
        if self.votes_won() {
            // Won on its own vote: no vote request made the term durable first.
            self.become_leader();
            self.hold_until_durable = Some(self.log.last_index());
            return;
        }
        self.request_votes(false, transfer);
    }

    fn request_votes(&mut self, pre: bool, transfer: bool) {
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term();
        let term = if pre {
            match self.next_term() {
                Some(t) => t,
                None => return,
            }
        } else {
            self.term
        };
        let peers: Vec<NodeId> = self
            .configs
            .latest()
            .all_voters()
            .into_iter()
            .filter(|&p| p != self.id)
            .collect();
        for to in peers {
            let body = if pre {
                MessageBody::PreVote {
                    last_log_index,
                    last_log_term,
                }
            } else {
                MessageBody::RequestVote {
                    last_log_index,
                    last_log_term,
                    transfer,
                }
            };
            self.push_message(crate::message::Message {
                from: self.id,
                to,
                term,
                body,
            });
        }
    }

    /// The term a new election would use; none at `u64::MAX`.
    fn next_term(&self) -> Option<Term> {
        self.term.checked_add(1)
    }

    fn votes_won(&self) -> bool {
        self.configs.latest().vote_outcome(&self.votes) == VoteOutcome::Won
    }

    fn votes_lost(&self) -> bool {
        self.configs.latest().vote_outcome(&self.votes) == VoteOutcome::Lost
    }

    /// §5.2 and §5.4.1: grant a vote at most once per term, and only to a candidate whose
    /// log is at least as up-to-date as ours. A pre-vote is answered the same way but
    /// records nothing.
    pub(crate) fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        last_log_index: LogIndex,
        last_log_term: Term,
        pre: bool,
    ) {
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre && term > self.term);
        let granted = can_vote && self.log.is_up_to_date(last_log_index, last_log_term);
        if pre {
            // A granted pre-vote carries the asked term; a refusal carries ours.
            let reply_term = if granted { term } else { self.term };
            self.push_message(crate::message::Message {
                from: self.id,
                to: from,
                term: reply_term,
                body: MessageBody::PreVoteResponse { granted },
            });
            return;
        }
        if granted {
            self.election_elapsed = 0;
            self.vote = Some(from);
        }
        self.send(from, MessageBody::RequestVoteResponse { granted });
    }

    /// Counts an answer. Answers that arrive when this node is no longer campaigning in
    /// that term are ignored (seed defect 7).
    pub(crate) fn handle_vote_response(
        &mut self,
        from: NodeId,
        term: Term,
        granted: bool,
        pre: bool,
    ) {
        match (self.role, pre) {
            (Role::PreCandidate, true) => {
                if granted && Some(term) != self.next_term() {
                    return;
                }
            }
            (Role::Candidate, false) => {
                if term != self.term {
                    return;
                }
            }
            _ => return,
        }
        self.votes.entry(from).or_insert(granted);
        if self.votes_won() {
            if pre {
                self.become_candidate(false);
            } else {
                self.become_leader();
            }
        } else if self.votes_lost() {
            self.become_follower(self.term, None);
        }
    }
}
