//! Membership as the runtime follows it: the transport and the address book track the
//! configuration, changes and leadership transfers are proposed and answered, and the
//! autopilot's decisions are carried out on the leader.

use std::collections::BTreeMap;

use raft_core::{ConfChange, ConfChangeError, Membership, NodeId, Role, TransferError};
use tokio::sync::oneshot;

use super::waiters::{ChangeReply, TransferReply};
use super::Runtime;
use crate::error::Error;
use crate::membership::{encode_context, member_addresses, MemberInfo, MemberRole};
use crate::state_machine::StateMachine;

impl<SM: StateMachine> Runtime<SM> {
    /// At most every 100 ms on the leader, with no change under way: the autopilot's
    /// decision, if any, is proposed.
    pub(super) fn run_autopilot(&mut self) {
        let now = crate::exec::now();
        if now.duration_since(self.autopilot_ran) < std::time::Duration::from_millis(100) {
            return;
        }
        self.autopilot_ran = now;
        if self.node.role() != Role::Leader
            || self.node.conf_change_in_progress()
            || self.node.transfer_target().is_some()
            || self.waiters.changes_pending()
        {
            return;
        }
        let members = self.members();
        if let Some(change) = self.autopilot.decide(self.cfg.id, &members, now) {
            let (reply, _) = oneshot::channel();
            self.change_membership(vec![change], reply);
        }
    }

    /// Proposes a membership change, first recording the addresses of members the
    /// configuration names without them (the bootstrap members), so that the cluster's
    /// configuration holds every member's addresses from then on.
    pub(super) fn change_membership(&mut self, changes: Vec<ConfChange>, reply: ChangeReply) {
        let current = self.node.membership();
        let mut all: Vec<ConfChange> = current
            .members()
            .into_iter()
            .filter(|id| !current.context.contains_key(id))
            .filter_map(|id| {
                let peer = self.book.get(id)?;
                Some(ConfChange::SetContext {
                    id,
                    context: encode_context(&peer),
                })
            })
            .collect();
        all.extend(changes);
        match self.node.propose_conf_change(&all) {
            Ok((index, term)) => {
                tracing::info!(id = self.cfg.id, index, changes = ?all, "membership change proposed");
                self.waiters.add_change(index, term, reply);
            }
            Err(ConfChangeError::NotLeader { leader }) => {
                let _ = reply.send(Err(self.not_leader(leader)));
            }
            Err(ConfChangeError::TransferInProgress { to }) => {
                let _ = reply.send(Err(Error::TransferInProgress { to }));
            }
            Err(ConfChangeError::Stopped(e)) => {
                let _ = reply.send(Err(Error::Storage(e.to_string())));
            }
            Err(e) => {
                let _ = reply.send(Err(Error::Membership(e)));
            }
        }
    }

    /// Starts handing leadership to `to`, or to the most caught-up voter.
    pub(super) fn transfer_leadership(&mut self, to: Option<NodeId>, reply: TransferReply) {
        let Some(to) = to.or_else(|| self.node.transfer_candidate()) else {
            let e = match self.node.role() {
                Role::Leader => Error::Transfer(TransferError::NoCandidate),
                _ => self.not_leader(self.node.leader()),
            };
            let _ = reply.send(Err(e));
            return;
        };
        match self.node.transfer_leadership(to) {
            Ok(()) if to == self.cfg.id => {
                let _ = reply.send(Ok(to));
            }
            Ok(()) => {
                tracing::info!(id = self.cfg.id, to, "transferring leadership");
                self.waiters.set_transfer(to, reply);
            }
            Err(TransferError::NotLeader { leader }) => {
                let _ = reply.send(Err(self.not_leader(leader)));
            }
            Err(TransferError::Stopped(e)) => {
                let _ = reply.send(Err(Error::Storage(e.to_string())));
            }
            Err(e) => {
                let _ = reply.send(Err(Error::Transfer(e)));
            }
        }
    }

    /// Answers a transfer once leadership has moved (to whichever node now leads), or once
    /// the leader has abandoned it.
    pub(super) fn check_transfer(&mut self) {
        let Some(to) = self.waiters.transfer_target() else {
            return;
        };
        let outcome = match (self.node.role(), self.node.leader()) {
            (Role::Leader, _) if self.node.transfer_target() == Some(to) => return,
            (Role::Leader, _) => Err(Error::TransferFailed { to }),
            (_, Some(leader)) => Ok(leader),
            (_, None) => return,
        };
        self.waiters.finish_transfer(outcome);
    }

    /// Points the transport and the address book at the members of the configuration in
    /// effect and of the latest committed one, when either changed: a member being removed
    /// stays reachable until its removal commits (it may be the leader that must commit
    /// it).
    ///
    /// A node that leaves both stays reachable for two more election timeouts: a removed
    /// leader's last messages (the `TimeoutNow` that hands leadership over) may arrive just
    /// after the commit that removed it.
    pub(super) fn follow_membership(&mut self) {
        let now = crate::exec::now();
        let current = (
            self.node.membership(),
            self.node.membership_at(self.node.commit_index()),
        );
        let same = current.0 == &self.membership.0 && current.1 == self.membership.1.as_ref();
        let expired = self.departed.values().any(|(_, until)| *until <= now);
        if same && !expired {
            return;
        }
        let changed = current.0 != &self.membership.0;
        if !same {
            self.membership = (current.0.clone(), current.1.cloned());
            let addresses = peer_addresses(&self.membership, &self.cfg.peers);
            let grace = self
                .cfg
                .tick
                .saturating_mul(self.cfg.raft.election_ticks)
                .saturating_mul(2);
            for (id, peer) in self.book.all() {
                if !addresses.contains_key(&id) {
                    self.departed.entry(id).or_insert((peer, now + grace));
                }
            }
            self.departed.retain(|id, _| !addresses.contains_key(id));
            self.book.set(addresses);
            self.book.set_members(self.membership.0.members());
        }
        self.departed.retain(|_, (_, until)| *until > now);
        let peers = transport_peers(self.cfg.id, &self.book.all(), &self.departed);
        self.transport.set_peers(&peers);
        if !changed {
            return;
        }
        let m = &self.membership.0;
        tracing::info!(
            id = self.cfg.id,
            voters = ?m.voters,
            outgoing = ?m.outgoing,
            learners = ?m.learners,
            "membership changed"
        );
        if m.contains(self.cfg.id) {
            self.seen_as_member = true;
        } else if self.seen_as_member {
            tracing::warn!(
                id = self.cfg.id,
                "this node is no longer a member of the cluster; it will not campaign and can be shut down"
            );
        }
    }

    /// Every member, with the leader's view of its progress when this node leads.
    pub(super) fn members(&self) -> Vec<MemberInfo> {
        let status = self.node.status();
        let leading = status.role == Role::Leader;
        let last = status.last_index;
        let timeout = self.cfg.tick.saturating_mul(self.cfg.raft.election_ticks);
        let m = &status.membership;
        m.members()
            .into_iter()
            .map(|id| {
                let peer = self.book.get(id);
                let progress = status.progress.iter().find(|p| p.id == id);
                let match_index = match (leading, id == self.cfg.id) {
                    (false, _) => None,
                    (true, true) => Some(last),
                    (true, false) => Some(progress.map_or(0, |p| p.match_index)),
                };
                let reachable = leading.then(|| {
                    id == self.cfg.id
                        || self.last_heard.get(&id).is_some_and(|t| {
                            crate::exec::now().saturating_duration_since(*t) < timeout
                        })
                });
                MemberInfo {
                    id,
                    raft: peer.as_ref().map(|p| p.raft),
                    api: peer.and_then(|p| p.api),
                    role: if m.is_voter(id) {
                        MemberRole::Voter
                    } else {
                        MemberRole::Learner
                    },
                    match_index,
                    lag: match_index.map(|i| last.saturating_sub(i)),
                    reachable,
                }
            })
            .collect()
    }
}

/// The Raft addresses the transport connects to: the members' and the departed nodes',
/// this node's left out.
pub(super) fn transport_peers(
    me: NodeId,
    members: &BTreeMap<NodeId, crate::config::Peer>,
    departed: &BTreeMap<NodeId, (crate::config::Peer, std::time::Instant)>,
) -> BTreeMap<NodeId, std::net::SocketAddr> {
    members
        .iter()
        .chain(departed.iter().map(|(id, (p, _))| (id, p)))
        .filter(|(&id, _)| id != me)
        .map(|(&id, p)| (id, p.raft))
        .collect()
}

/// The addresses of every member of the configuration in effect and of the latest
/// committed one.
pub(super) fn peer_addresses(
    (current, committed): &(Membership, Option<Membership>),
    bootstrap: &BTreeMap<NodeId, crate::config::Peer>,
) -> BTreeMap<NodeId, crate::config::Peer> {
    let mut all = committed
        .as_ref()
        .map(|m| member_addresses(m, bootstrap))
        .unwrap_or_default();
    all.extend(member_addresses(current, bootstrap));
    all
}
