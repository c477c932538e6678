//! The autopilot: on the leader, promotes a learner once it has stayed close to the
//! leader's log for a while, and demotes or removes a voter that has been unreachable for
//! long — only while enough voters remain and never in a way that loses quorum. Every
//! decision is logged and kept for status.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use raft_core::{ConfChange, NodeId};

use crate::membership::{MemberInfo, MemberRole};

/// What the autopilot does with a voter that has been unreachable for too long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnreachableAction {
    /// Leave it alone.
    Nothing,
    /// Make it a learner (it is promoted again once it has caught up).
    Demote,
    /// Remove it from the cluster.
    Remove,
}

/// The autopilot's settings.
#[derive(Clone, Debug)]
pub struct AutopilotConfig {
    /// Whether it runs. Default off in the library (on in `httpraft`).
    pub enabled: bool,
    /// A learner is caught up while it is at most this many entries behind the leader.
    /// Default 1,000.
    pub promote_max_lag: u64,
    /// ... and is promoted once it has stayed caught up (and reachable) this long.
    /// Default 3 s.
    pub promote_after: Duration,
    /// What to do with a voter unreachable for `unreachable_after`. Default nothing.
    pub unreachable_action: UnreachableAction,
    /// How long a voter must be unreachable before `unreachable_action`. Default 60 s.
    pub unreachable_after: Duration,
    /// The autopilot never leaves fewer voters than this. Default 3.
    pub min_voters: usize,
}

impl Default for AutopilotConfig {
    fn default() -> Self {
        AutopilotConfig {
            enabled: false,
            promote_max_lag: 1_000,
            promote_after: Duration::from_secs(3),
            unreachable_action: UnreachableAction::Nothing,
            unreachable_after: Duration::from_secs(60),
            min_voters: 3,
        }
    }
}

/// One decision, as status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutopilotDecision {
    /// When it was taken.
    pub at: SystemTime,
    /// The member it concerns.
    pub member: NodeId,
    /// `promote`, `demote` or `remove`.
    pub action: &'static str,
    /// Why, in words.
    pub reason: String,
}

/// Decisions kept for status.
const KEPT_DECISIONS: usize = 32;

pub(crate) struct Autopilot {
    cfg: AutopilotConfig,
    caught_up_since: BTreeMap<NodeId, Instant>,
    unreachable_since: BTreeMap<NodeId, Instant>,
    pub(crate) decisions: VecDeque<AutopilotDecision>,
}

impl Autopilot {
    pub(crate) fn new(cfg: AutopilotConfig) -> Self {
        Autopilot {
            cfg,
            caught_up_since: BTreeMap::new(),
            unreachable_since: BTreeMap::new(),
            decisions: VecDeque::new(),
        }
    }

    /// Leadership ended (or began): what was observed no longer counts.
    pub(crate) fn reset(&mut self) {
        self.caught_up_since.clear();
        self.unreachable_since.clear();
    }

    /// On the leader, with no membership change in progress: the change to make now, if
    /// any, given every member's state (`members` as the leader reports them).
    pub(crate) fn decide(
        &mut self,
        me: NodeId,
        members: &[MemberInfo],
        now: Instant,
    ) -> Option<ConfChange> {
        if !self.cfg.enabled {
            return None;
        }
        let reachable = |m: &MemberInfo| m.id == me || m.reachable == Some(true);
        // Observe.
        for m in members {
            let close = m.lag.is_some_and(|l| l <= self.cfg.promote_max_lag) && reachable(m);
            if m.role == MemberRole::Learner && close {
                self.caught_up_since.entry(m.id).or_insert(now);
            } else {
                self.caught_up_since.remove(&m.id);
            }
            if m.role == MemberRole::Voter && !reachable(m) {
                self.unreachable_since.entry(m.id).or_insert(now);
            } else {
                self.unreachable_since.remove(&m.id);
            }
        }
        self.caught_up_since
            .retain(|id, _| members.iter().any(|m| m.id == *id));
        self.unreachable_since
            .retain(|id, _| members.iter().any(|m| m.id == *id));
        // Promote the learner caught up longest, if long enough.
        let ready = self
            .caught_up_since
            .iter()
            .filter(|(_, &since)| now.duration_since(since) >= self.cfg.promote_after)
            .min_by_key(|(_, &since)| since)
            .map(|(&id, _)| id);
        if let Some(id) = ready {
            self.record(
                id,
                "promote",
                format!(
                    "within {} entries of the leader for {} ms",
                    self.cfg.promote_max_lag,
                    self.cfg.promote_after.as_millis()
                ),
            );
            self.caught_up_since.remove(&id);
            return Some(ConfChange::Promote { id });
        }
        // Demote or remove a voter unreachable for long, if the cluster can afford it.
        if self.cfg.unreachable_action == UnreachableAction::Nothing {
            return None;
        }
        let voters: Vec<&MemberInfo> = members
            .iter()
            .filter(|m| m.role == MemberRole::Voter)
            .collect();
        let gone = self
            .unreachable_since
            .iter()
            .filter(|(&id, &since)| {
                id != me && now.duration_since(since) >= self.cfg.unreachable_after
            })
            .min_by_key(|(_, &since)| since)
            .map(|(&id, _)| id)?;
        let remaining = voters.len().saturating_sub(1);
        let reachable_remaining = voters
            .iter()
            .filter(|m| m.id != gone && reachable(m))
            .count();
        if remaining < self.cfg.min_voters || reachable_remaining < remaining / 2 + 1 {
            return None;
        }
        let (action, change) = match self.cfg.unreachable_action {
            UnreachableAction::Demote => ("demote", ConfChange::Demote { id: gone }),
            _ => ("remove", ConfChange::Remove { id: gone }),
        };
        self.record(
            gone,
            action,
            format!(
                "unreachable for over {} ms; {remaining} voters remain",
                self.cfg.unreachable_after.as_millis()
            ),
        );
        self.unreachable_since.remove(&gone);
        Some(change)
    }

    fn record(&mut self, member: NodeId, action: &'static str, reason: String) {
        tracing::info!(member, action, %reason, "autopilot decision");
        if self.decisions.len() == KEPT_DECISIONS {
            self.decisions.pop_front();
        }
        self.decisions.push_back(AutopilotDecision {
            at: SystemTime::now(),
            member,
            action,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn member(id: NodeId, role: MemberRole, lag: u64, reachable: bool) -> MemberInfo {
        MemberInfo {
            id,
            raft: None,
            api: None,
            role,
            match_index: Some(100 - lag),
            lag: Some(lag),
            reachable: Some(reachable),
        }
    }

    fn pilot(action: UnreachableAction) -> Autopilot {
        Autopilot::new(AutopilotConfig {
            enabled: true,
            promote_max_lag: 10,
            promote_after: Duration::from_secs(3),
            unreachable_action: action,
            unreachable_after: Duration::from_secs(60),
            min_voters: 3,
        })
    }

    #[test]
    fn a_learner_is_promoted_only_after_staying_caught_up_long_enough() {
        let mut p = pilot(UnreachableAction::Nothing);
        let t0 = Instant::now();
        let v = |id| member(id, MemberRole::Voter, 0, true);
        let behind = [v(1), v(2), v(3), member(4, MemberRole::Learner, 50, true)];
        assert_eq!(p.decide(1, &behind, t0), None);
        let close = [v(1), v(2), v(3), member(4, MemberRole::Learner, 5, true)];
        assert_eq!(p.decide(1, &close, t0 + Duration::from_secs(1)), None);
        assert_eq!(
            p.decide(1, &close, t0 + Duration::from_secs(3)),
            None,
            "2 s only"
        );
        // Falling behind again restarts the clock.
        assert_eq!(p.decide(1, &behind, t0 + Duration::from_secs(4)), None);
        assert_eq!(p.decide(1, &close, t0 + Duration::from_secs(5)), None);
        assert_eq!(
            p.decide(1, &close, t0 + Duration::from_secs(8)),
            Some(ConfChange::Promote { id: 4 })
        );
        assert_eq!(p.decisions.len(), 1);
        assert_eq!(p.decisions[0].action, "promote");
    }

    #[test]
    fn an_unreachable_voter_goes_only_if_enough_voters_and_a_quorum_remain() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(61);
        let v = |id, up| member(id, MemberRole::Voter, 0, up);
        // Five voters, 5 unreachable: removed once past the limit.
        let mut p = pilot(UnreachableAction::Remove);
        let five = [v(1, true), v(2, true), v(3, true), v(4, true), v(5, false)];
        assert_eq!(p.decide(1, &five, t0), None);
        assert_eq!(
            p.decide(1, &five, later),
            Some(ConfChange::Remove { id: 5 })
        );
        // Three voters: never below the minimum.
        let mut p = pilot(UnreachableAction::Remove);
        let three = [v(1, true), v(2, true), v(3, false)];
        assert_eq!(p.decide(1, &three, t0), None);
        assert_eq!(p.decide(1, &three, later), None);
        // Five voters, two unreachable: removing one would leave 4 of which only 3
        // reachable, a quorum of 4: allowed; with three unreachable it would not be.
        let mut p = pilot(UnreachableAction::Demote);
        let two_down = [v(1, true), v(2, true), v(3, true), v(4, false), v(5, false)];
        assert_eq!(p.decide(1, &two_down, t0), None);
        assert_eq!(
            p.decide(1, &two_down, later),
            Some(ConfChange::Demote { id: 4 })
        );
        let mut p = pilot(UnreachableAction::Demote);
        let three_down = [
            v(1, true),
            v(2, true),
            v(3, false),
            v(4, false),
            v(5, false),
        ];
        assert_eq!(p.decide(1, &three_down, t0), None);
        assert_eq!(p.decide(1, &three_down, later), None);
        // Off: nothing, ever.
        let mut p = pilot(UnreachableAction::Nothing);
        assert_eq!(p.decide(1, &five, t0), None);
        assert_eq!(p.decide(1, &five, later), None);
    }
}
