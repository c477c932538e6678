//! Lease reads (opt-in, [`Config::lease_reads`](crate::Config::lease_reads)): a leader
//! that a majority acknowledged recently serves a linearizable read at once, without a
//! heartbeat round of its own.
//!
//! Why it is safe. With check-quorum, a voter that heard from its leader within the last
//! `election_ticks` ignores every candidate (`in_lease`), so no other leader can be elected
//! before `election_ticks` of that voter's clock have passed since it last heard from this
//! one. The leader counts its lease from when it *sent* a heartbeat round that a majority
//! acknowledged (before any of them received it), for `election_ticks - lease_margin_ticks`
//! of its own ticks, less one (a tick under way is not counted). The margin is the clock
//! bound: it holds while no voter's clock runs faster than the leader's by more than
//! `election_ticks / (election_ticks - lease_margin_ticks)`. Two things could elect a
//! leader sooner, and both end the lease:
//!
//! - a leadership transfer: `TimeoutNow` makes its target campaign with votes that ignore
//!   the lease, so a leader that sent one serves no lease read for the rest of its term;
//! - a restart: a voter forgets whom it heard from, so with lease reads on, a node ignores
//!   candidates for its first `election_ticks` after starting, as if it had just heard from
//!   a leader.
//!
//! A voter's own campaign is held to the same rule: `Node::campaign` (an operator asking a
//! node to stand) is refused while the node backs a leader (`in_lease`), or it would vote
//! for itself and, with one other voter cut from the leader, win while the leader still
//! serves reads from its lease. A follower's own timeout comes only after an election
//! timeout without its leader.
//!
//! Ticks must track real time: a caller that stalls (a paused process) must deliver the
//! ticks it missed before anything else (the runtime does), or the lease outlives itself.

use std::collections::VecDeque;

/// Heartbeat rounds awaiting a majority's acknowledgement, at most (older ones are dropped:
/// a later round confirms a later start anyway).
const MAX_ROUNDS: usize = 256;

/// The leader's lease, counted in ticks.
#[derive(Debug, Default)]
pub(crate) struct Lease {
    /// Ticks since the node started.
    pub(crate) now: u64,
    /// Heartbeat rounds sent in this term and not yet known to be acknowledged by a
    /// majority: (the round's read sequence number, the tick it was sent at).
    rounds: VecDeque<(u64, u64)>,
    /// When the latest round a majority acknowledged was sent (this term).
    confirmed_from: Option<u64>,
    /// This leader sent `TimeoutNow` in its term: its lease no longer holds.
    given_up: bool,
    /// Reads served from the lease since start.
    pub(crate) served: u64,
}

impl Lease {
    /// A new term or role: nothing of the old lease holds.
    pub(crate) fn reset(&mut self) {
        self.rounds.clear();
        self.confirmed_from = None;
        self.given_up = false;
    }

    /// A heartbeat round numbered `seq` leaves now.
    pub(crate) fn round_sent(&mut self, seq: u64) {
        if self.rounds.len() == MAX_ROUNDS {
            self.rounds.pop_front();
        }
        self.rounds.push_back((seq, self.now));
    }

    /// A majority acknowledged every round up to `seq`.
    pub(crate) fn acknowledged(&mut self, seq: u64) {
        while let Some(&(s, sent)) = self.rounds.front() {
            if s > seq {
                break;
            }
            self.rounds.pop_front();
            self.confirmed_from = Some(self.confirmed_from.map_or(sent, |t| t.max(sent)));
        }
    }

    /// Leadership is being handed over: the lease ends.
    pub(crate) fn give_up(&mut self) {
        self.given_up = true;
    }

    /// Whether the lease, lasting `duration` ticks from a confirmed round, holds now.
    pub(crate) fn holds(&self, duration: u64) -> bool {
        !self.given_up
            && self
                .confirmed_from
                .is_some_and(|from| self.now.saturating_add(1) < from.saturating_add(duration))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_from_the_send_of_the_latest_acknowledged_round() {
        let mut l = Lease::default();
        assert!(!l.holds(10), "nothing acknowledged yet");
        l.now = 5;
        l.round_sent(1);
        l.now = 8;
        l.round_sent(2);
        l.acknowledged(1);
        assert!(l.holds(10), "5 + 10 > 8 + 1");
        l.now = 13;
        assert!(l.holds(10));
        l.now = 14;
        assert!(!l.holds(10), "the tick under way is not counted");
        l.acknowledged(2);
        assert!(l.holds(10), "renewed from tick 8");
        l.now = 17;
        assert!(!l.holds(10));
    }

    #[test]
    fn acknowledging_an_older_round_does_not_move_the_lease_back() {
        let mut l = Lease::default();
        l.round_sent(1);
        l.now = 6;
        l.round_sent(2);
        l.acknowledged(2);
        l.acknowledged(1);
        l.now = 14;
        assert!(l.holds(10));
    }

    #[test]
    fn giving_up_or_a_reset_ends_the_lease() {
        let mut l = Lease::default();
        l.round_sent(1);
        l.acknowledged(1);
        assert!(l.holds(10));
        l.give_up();
        assert!(!l.holds(10));
        l.reset();
        assert!(!l.holds(10), "a reset confirms nothing");
        l.round_sent(2);
        l.acknowledged(2);
        assert!(l.holds(10), "a new round after the reset does");
    }

    #[test]
    fn at_most_max_rounds_wait_and_the_oldest_go_first() {
        let mut l = Lease::default();
        for seq in 1..=(MAX_ROUNDS as u64 + 10) {
            l.now = seq;
            l.round_sent(seq);
        }
        assert_eq!(l.rounds.len(), MAX_ROUNDS);
        assert_eq!(l.rounds.front().map(|r| r.0), Some(11));
        l.acknowledged(20);
        assert_eq!(l.confirmed_from, Some(20));
    }
}
