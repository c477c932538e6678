//! Cluster membership (chapter 4 of the Raft thesis): who votes, who only receives the log,
//! joint consensus, and the configurations the log holds.
//!
//! A configuration takes effect on a node as soon as its entry is in the node's log,
//! committed or not; if the entry is removed by a leader's overwrite, the previous one takes
//! effect again. A change that adds or removes at most one voter is applied directly
//! (single-server change); a larger one goes through a joint configuration in which every
//! decision needs a majority of the old voters and a majority of the new, and the leader
//! leaves it on its own once it is committed.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::ConfChangeError;
use crate::quorum::committed_value;
use crate::types::{LogIndex, NodeId, Term};

/// A cluster configuration: the voters (and, while joint, the outgoing voters), the
/// learners, and what the application attached to each member.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    /// The voters; in a joint configuration, the incoming ones.
    pub voters: BTreeSet<NodeId>,
    /// In a joint configuration, the outgoing voters; empty otherwise.
    pub outgoing: BTreeSet<NodeId>,
    /// Members that receive the log but neither vote nor count towards any majority.
    pub learners: BTreeSet<NodeId>,
    /// Opaque data the application attached to each member (the runtime keeps a member's
    /// addresses here). The core only carries it.
    pub context: BTreeMap<NodeId, Bytes>,
}

/// One step of a membership change, proposed with [`crate::Node::propose_conf_change`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConfChange {
    /// Adds a learner: it receives the log and can be promoted later.
    AddLearner {
        /// The new member.
        id: NodeId,
        /// The application's data for it.
        context: Bytes,
    },
    /// Adds a voter directly (prefer a learner first, promoted once it has caught up).
    AddVoter {
        /// The new member.
        id: NodeId,
        /// The application's data for it.
        context: Bytes,
    },
    /// Makes a learner a voter.
    Promote {
        /// The learner.
        id: NodeId,
    },
    /// Makes a voter a learner.
    Demote {
        /// The voter.
        id: NodeId,
    },
    /// Removes a member, voter or learner.
    Remove {
        /// The member.
        id: NodeId,
    },
    /// Replaces the application's data for a member (its addresses, say). Changes no role.
    SetContext {
        /// The member.
        id: NodeId,
        /// Its new data.
        context: Bytes,
    },
}

/// How an election stands under a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteOutcome {
    Won,
    Lost,
    Pending,
}

fn majority_of(set: &BTreeSet<NodeId>) -> usize {
    set.len() / 2 + 1
}

impl Membership {
    /// A configuration of voters only.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Membership {
            voters: voters.into_iter().collect(),
            ..Membership::default()
        }
    }

    /// Whether this is a joint configuration (old and new voters both decide).
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Whether `id` votes: an incoming or an outgoing voter.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing.contains(&id)
    }

    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    /// Whether `id` is a member in any role.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every member, voters and learners.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.all_voters();
        all.extend(self.learners.iter().copied());
        all
    }

    /// Every voter, incoming and outgoing.
    pub fn all_voters(&self) -> BTreeSet<NodeId> {
        self.voters.union(&self.outgoing).copied().collect()
    }

    /// The voter sets whose majorities every decision needs: one, or two while joint.
    fn sets(&self) -> impl Iterator<Item = &BTreeSet<NodeId>> {
        std::iter::once(&self.voters).chain(self.is_joint().then_some(&self.outgoing))
    }

    /// Whether the members for which `yes` holds form a majority of every voter set.
    pub(crate) fn has_quorum(&self, yes: impl Fn(NodeId) -> bool) -> bool {
        self.sets()
            .all(|set| set.iter().filter(|&&id| yes(id)).count() >= majority_of(set))
    }

    /// The largest value a majority of every voter set has reached, given each voter's.
    pub(crate) fn committed(&self, value: impl Fn(NodeId) -> u64) -> u64 {
        self.sets()
            .map(|set| committed_value(set.iter().map(|&id| value(id)).collect(), majority_of(set)))
            .min()
            .unwrap_or(0)
    }

    /// Where an election stands given the answers so far.
    pub(crate) fn vote_outcome(&self, votes: &BTreeMap<NodeId, bool>) -> VoteOutcome {
        let mut won = true;
        for set in self.sets() {
            let granted = set.iter().filter(|id| votes.get(id) == Some(&true)).count();
            let refused = set
                .iter()
                .filter(|id| votes.get(id) == Some(&false))
                .count();
            if set.len() - refused < majority_of(set) {
                return VoteOutcome::Lost;
            }
            won &= granted >= majority_of(set);
        }
        if won {
            VoteOutcome::Won
        } else {
            VoteOutcome::Pending
        }
    }

    /// The configuration `changes` lead to from this one: a simple configuration when the
    /// voters differ by at most one member, a joint one otherwise.
    pub fn apply_changes(&self, changes: &[ConfChange]) -> Result<Membership, ConfChangeError> {
        if self.is_joint() {
            return Err(ConfChangeError::InProgress);
        }
        if changes.is_empty() {
            return Err(ConfChangeError::Empty);
        }
        let mut next = self.clone();
        for change in changes {
            match change {
                ConfChange::AddLearner { id, context } => {
                    if next.contains(*id) {
                        return Err(ConfChangeError::AlreadyMember(*id));
                    }
                    next.learners.insert(*id);
                    next.context.insert(*id, context.clone());
                }
                ConfChange::AddVoter { id, context } => {
                    if next.contains(*id) {
                        return Err(ConfChangeError::AlreadyMember(*id));
                    }
                    next.voters.insert(*id);
                    next.context.insert(*id, context.clone());
                }
                ConfChange::Promote { id } => {
                    if !next.learners.remove(id) {
                        return Err(ConfChangeError::NotALearner(*id));
                    }
                    next.voters.insert(*id);
                }
                ConfChange::Demote { id } => {
                    if !next.voters.remove(id) {
                        return Err(ConfChangeError::NotAVoter(*id));
                    }
                    next.learners.insert(*id);
                }
                ConfChange::Remove { id } => {
                    if !next.contains(*id) {
                        return Err(ConfChangeError::UnknownMember(*id));
                    }
                    next.voters.remove(id);
                    next.learners.remove(id);
                    next.context.remove(id);
                }
                ConfChange::SetContext { id, context } => {
                    if !next.contains(*id) {
                        return Err(ConfChangeError::UnknownMember(*id));
                    }
                    next.context.insert(*id, context.clone());
                }
            }
        }
        if next.voters.is_empty() {
            return Err(ConfChangeError::NoVoters);
        }
        if self.voters.symmetric_difference(&next.voters).count() > 1 {
            next.outgoing = self.voters.clone();
            // Outgoing voters keep their data until the joint configuration is left.
            for id in &next.outgoing {
                if let (false, Some(c)) = (next.context.contains_key(id), self.context.get(id)) {
                    next.context.insert(*id, c.clone());
                }
            }
        }
        Ok(next)
    }

    /// The configuration that ends a joint one: the incoming voters and the learners.
    pub fn leave_joint(&self) -> Membership {
        let mut next = self.clone();
        next.outgoing.clear();
        next.context
            .retain(|id, _| next.voters.contains(id) || next.learners.contains(id));
        next
    }

    /// Checks a configuration received from elsewhere: at least one voter, and no member
    /// both an incoming voter and a learner.
    pub(crate) fn is_valid(&self) -> bool {
        !self.voters.is_empty() && self.voters.is_disjoint(&self.learners)
    }

    /// The payload of a configuration entry holding this configuration.
    pub fn encode(&self) -> Bytes {
        // Encoding sets, maps and byte strings into a vector cannot fail.
        Bytes::from(postcard::to_allocvec(self).unwrap_or_default())
    }

    /// The configuration a configuration entry's payload holds, if it is well formed.
    pub fn decode(data: &[u8]) -> Option<Membership> {
        postcard::from_bytes::<Membership>(data)
            .ok()
            .filter(Membership::is_valid)
    }
}

/// The configurations a node's log holds: the latest one at or below the applied index (or
/// the snapshot's, or the initial one), then every later one in log order. The last is in
/// effect.
#[derive(Clone, Debug)]
pub(crate) struct ConfigLog {
    configs: Vec<(LogIndex, Term, Membership)>,
}

impl ConfigLog {
    pub(crate) fn new(index: LogIndex, term: Term, membership: Membership) -> Self {
        ConfigLog {
            configs: vec![(index, term, membership)],
        }
    }

    /// The configuration in effect.
    pub(crate) fn latest(&self) -> &Membership {
        &self.last().2
    }

    fn last(&self) -> &(LogIndex, Term, Membership) {
        // `configs` is never empty: every operation keeps its first element or replaces it.
        &self.configs[self.configs.len() - 1]
    }

    /// The configuration before the one in effect, if this log still knows it.
    pub(crate) fn previous(&self) -> Option<&Membership> {
        let n = self.configs.len();
        (n >= 2).then(|| &self.configs[n - 2].2)
    }

    /// The index of the entry holding the configuration in effect (0: the initial one).
    pub(crate) fn latest_index(&self) -> LogIndex {
        self.last().0
    }

    /// A configuration entry appended at `index`.
    pub(crate) fn push(&mut self, index: LogIndex, term: Term, membership: Membership) {
        self.configs.push((index, term, membership));
    }

    /// Forgets configurations whose entries the log no longer holds (`holds(index, term)`
    /// says whether it holds that entry). The first is at or below the applied index and is
    /// never forgotten.
    pub(crate) fn forget_overwritten(&mut self, holds: impl Fn(LogIndex, Term) -> bool) {
        let mut keep = 1;
        while keep < self.configs.len() {
            let (index, term, _) = &self.configs[keep];
            if !holds(*index, *term) {
                break;
            }
            keep += 1;
        }
        self.configs.truncate(keep);
    }

    /// Drops configurations older than the latest at or below `applied`.
    pub(crate) fn compact(&mut self, applied: LogIndex) {
        let newer = self.configs.iter().filter(|c| c.0 <= applied).count();
        if newer > 1 {
            self.configs.drain(..newer - 1);
        }
    }

    /// A snapshot replaced the log: its configuration is the only one.
    pub(crate) fn reset(&mut self, index: LogIndex, term: Term, membership: Membership) {
        self.configs = vec![(index, term, membership)];
    }

    /// The configuration in effect at `index`, if this log still knows it.
    pub(crate) fn at(&self, index: LogIndex) -> Option<&Membership> {
        if index < self.configs[0].0 {
            return None;
        }
        self.configs
            .iter()
            .rev()
            .find(|c| c.0 <= index)
            .map(|c| &c.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn joint(incoming: &[NodeId], outgoing: &[NodeId]) -> Membership {
        Membership {
            voters: set(incoming),
            outgoing: set(outgoing),
            ..Membership::default()
        }
    }

    #[test]
    fn a_joint_quorum_needs_a_majority_of_both_sets() {
        let m = joint(&[1, 2, 3], &[3, 4, 5]);
        assert!(
            !m.has_quorum(|id| [1, 2].contains(&id)),
            "no majority of 3,4,5"
        );
        assert!(
            !m.has_quorum(|id| [4, 5].contains(&id)),
            "no majority of 1,2,3"
        );
        assert!(m.has_quorum(|id| [1, 3, 4].contains(&id)));
        let simple = Membership::new([1, 2, 3]);
        assert!(simple.has_quorum(|id| [1, 2].contains(&id)));
        assert!(!simple.has_quorum(|id| id == 1));
    }

    #[test]
    fn a_joint_commit_index_is_the_lower_of_both_majorities() {
        let m = joint(&[1, 2, 3], &[3, 4, 5]);
        let matched = |id: NodeId| [0, 9, 9, 5, 1, 1][id as usize];
        assert_eq!(m.committed(matched), 1, "3,4,5 agree only up to 1");
        let simple = Membership::new([1, 2, 3]);
        assert_eq!(simple.committed(matched), 9);
    }

    #[test]
    fn learners_never_count() {
        let mut m = Membership::new([1, 2, 3]);
        m.learners.insert(4);
        m.learners.insert(5);
        assert!(!m.has_quorum(|id| [1, 4, 5].contains(&id)));
        let votes: BTreeMap<NodeId, bool> = [(1, true), (4, true), (5, true)].into();
        assert_eq!(m.vote_outcome(&votes), VoteOutcome::Pending);
    }

    #[test]
    fn an_election_is_lost_once_either_set_cannot_reach_a_majority() {
        let m = joint(&[1, 2, 3], &[3, 4, 5]);
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true), (4, false), (5, false)].into();
        assert_eq!(m.vote_outcome(&votes), VoteOutcome::Lost);
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true), (4, true)].into();
        assert_eq!(m.vote_outcome(&votes), VoteOutcome::Pending);
        let votes: BTreeMap<NodeId, bool> = [(1, true), (3, true), (4, true)].into();
        assert_eq!(m.vote_outcome(&votes), VoteOutcome::Won);
    }

    #[test]
    fn one_voter_more_or_less_is_a_simple_change_and_more_is_joint() {
        let m = Membership::new([1, 2, 3]);
        let add = |id| ConfChange::AddVoter {
            id,
            context: Bytes::new(),
        };
        let one = m.apply_changes(&[add(4)]).unwrap();
        assert!(!one.is_joint());
        assert_eq!(one.voters, set(&[1, 2, 3, 4]));
        let two = m.apply_changes(&[add(4), add(5)]).unwrap();
        assert_eq!(two.voters, set(&[1, 2, 3, 4, 5]));
        assert_eq!(two.outgoing, set(&[1, 2, 3]));
        assert_eq!(two.leave_joint().voters, set(&[1, 2, 3, 4, 5]));
        assert!(!two.leave_joint().is_joint());
        // Replacing a voter changes two members: joint.
        let replace = m
            .apply_changes(&[add(4), ConfChange::Remove { id: 1 }])
            .unwrap();
        assert!(replace.is_joint());
        assert_eq!(
            replace.apply_changes(&[add(6)]),
            Err(ConfChangeError::InProgress)
        );
    }

    #[test]
    fn invalid_changes_are_refused_with_the_member_named() {
        let mut m = Membership::new([1, 2]);
        m.learners.insert(3);
        let add = |id| ConfChange::AddLearner {
            id,
            context: Bytes::new(),
        };
        assert_eq!(
            m.apply_changes(&[add(2)]),
            Err(ConfChangeError::AlreadyMember(2))
        );
        assert_eq!(
            m.apply_changes(&[add(3)]),
            Err(ConfChangeError::AlreadyMember(3))
        );
        assert_eq!(
            m.apply_changes(&[ConfChange::Promote { id: 1 }]),
            Err(ConfChangeError::NotALearner(1))
        );
        assert_eq!(
            m.apply_changes(&[ConfChange::Demote { id: 3 }]),
            Err(ConfChangeError::NotAVoter(3))
        );
        assert_eq!(
            m.apply_changes(&[ConfChange::Remove { id: 9 }]),
            Err(ConfChangeError::UnknownMember(9))
        );
        assert_eq!(
            m.apply_changes(&[ConfChange::Remove { id: 1 }, ConfChange::Remove { id: 2 }]),
            Err(ConfChangeError::NoVoters)
        );
        assert_eq!(m.apply_changes(&[]), Err(ConfChangeError::Empty));
        let set_context = |id| ConfChange::SetContext {
            id,
            context: Bytes::from_static(b"here"),
        };
        assert_eq!(
            m.apply_changes(&[set_context(9)]),
            Err(ConfChangeError::UnknownMember(9))
        );
        let moved = m.apply_changes(&[set_context(3)]).unwrap();
        assert_eq!(moved.context.get(&3), Some(&Bytes::from_static(b"here")));
        assert_eq!(
            (moved.voters.clone(), moved.is_joint()),
            (m.voters.clone(), false)
        );
        let promoted = m.apply_changes(&[ConfChange::Promote { id: 3 }]).unwrap();
        assert_eq!(promoted.voters, set(&[1, 2, 3]));
        assert!(promoted.learners.is_empty());
    }

    #[test]
    fn outgoing_voters_keep_their_data_until_the_joint_configuration_is_left() {
        let mut m = Membership::new([1, 2, 3]);
        m.context.insert(1, Bytes::from_static(b"one"));
        let next = m
            .apply_changes(&[
                ConfChange::Remove { id: 1 },
                ConfChange::Remove { id: 2 },
                ConfChange::AddLearner {
                    id: 5,
                    context: Bytes::from_static(b"five"),
                },
            ])
            .unwrap();
        assert_eq!(next.context.get(&1), Some(&Bytes::from_static(b"one")));
        let left = next.leave_joint();
        assert_eq!(left.context.get(&1), None);
        assert_eq!(
            left.context.get(&5),
            Some(&Bytes::from_static(b"five")),
            "a learner keeps its data"
        );
    }

    #[test]
    fn entries_round_trip_and_invalid_ones_are_refused() {
        let mut m = Membership::new([1, 2]);
        m.learners.insert(3);
        assert_eq!(Membership::decode(&m.encode()), Some(m.clone()));
        assert_eq!(Membership::decode(b"\xff\xff"), None);
        assert_eq!(Membership::decode(&Membership::default().encode()), None);
        m.learners.insert(1);
        assert_eq!(
            Membership::decode(&m.encode()),
            None,
            "1 is voter and learner"
        );
    }

    #[test]
    fn overwritten_configurations_are_forgotten_and_the_previous_takes_effect() {
        let mut log = ConfigLog::new(0, 0, Membership::new([1]));
        log.push(3, 1, Membership::new([1, 2]));
        log.push(5, 1, Membership::new([1, 2, 3]));
        log.forget_overwritten(|i, t| t == if i < 5 { 1 } else { 2 });
        assert_eq!(log.latest(), &Membership::new([1, 2]));
        assert_eq!(log.latest_index(), 3);
        log.forget_overwritten(|_, _| false);
        assert_eq!(log.latest(), &Membership::new([1]), "the first is kept");
    }

    #[test]
    fn compaction_keeps_the_configuration_in_effect_at_the_applied_index() {
        let mut log = ConfigLog::new(0, 0, Membership::new([1]));
        log.push(3, 1, Membership::new([1, 2]));
        log.push(5, 1, Membership::new([1, 2, 3]));
        log.compact(4);
        assert_eq!(log.at(4), Some(&Membership::new([1, 2])));
        assert_eq!(log.at(2), None, "forgotten");
        assert_eq!(log.at(7), Some(&Membership::new([1, 2, 3])));
        log.compact(9);
        assert_eq!(log.latest_index(), 5);
        assert_eq!(log.at(5), Some(&Membership::new([1, 2, 3])));
    }
}
