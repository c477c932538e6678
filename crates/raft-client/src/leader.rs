//! Who leads, as this node knows it, and when it last heard from that leader.
//!
//! The runtime publishes leader changes on a watch channel and stamps a clock on every
//! message from the current leader; handles read both without a round trip to the runtime.
//! A follower whose leader went silent still names it until its own election timer fires;
//! the clock lets a front end stop sending clients to a leader that is probably gone.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use raft_core::{NodeId, Term};
use tokio::sync::watch;

/// Who leads, as this node knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaderInfo {
    /// The leader, if known.
    pub leader: Option<NodeId>,
    /// The term this node is in.
    pub term: Term,
}

/// A leader this node learned of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderChange {
    /// When this node learned of it.
    pub at: SystemTime,
    /// The leader.
    pub leader: NodeId,
    /// Its term.
    pub term: Term,
}

/// Leader changes kept by [`LeaderHistory`].
pub const LEADER_HISTORY: usize = 64;

/// The leaders this node learned of: how many in all, and the latest
/// [`LEADER_HISTORY`].
#[derive(Debug, Default)]
struct LeaderHistory {
    seen: AtomicU64,
    recent: Mutex<VecDeque<LeaderChange>>,
}

impl LeaderHistory {
    fn recent(&self) -> std::sync::MutexGuard<'_, VecDeque<LeaderChange>> {
        match self.recent.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Records `leader` in `term` unless it is the leader recorded last.
    fn record(&self, leader: NodeId, term: Term) {
        let mut recent = self.recent();
        if recent
            .back()
            .is_some_and(|c| c.leader == leader && c.term == term)
        {
            return;
        }
        self.seen.fetch_add(1, Ordering::Relaxed);
        recent.push_back(LeaderChange {
            at: SystemTime::now(),
            leader,
            term,
        });
        while recent.len() > LEADER_HISTORY {
            recent.pop_front();
        }
    }
}

/// When the leader was last heard from: milliseconds since `base`, plus one (0: never).
#[derive(Debug)]
struct ContactClock {
    base: Instant,
    last: AtomicU64,
}

impl ContactClock {
    fn touch(&self) {
        let elapsed = crate::exec::now().saturating_duration_since(self.base);
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX - 1);
        self.last.store(ms.saturating_add(1), Ordering::Relaxed);
    }

    fn age(&self) -> Option<Duration> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            at => Some(
                crate::exec::now()
                    .saturating_duration_since(self.base)
                    .saturating_sub(Duration::from_millis(at - 1)),
            ),
        }
    }
}

/// The runtime's side: publishes leader changes and contacts.
#[derive(Debug)]
pub(crate) struct LeaderSender {
    tx: watch::Sender<LeaderInfo>,
    clock: Arc<ContactClock>,
    history: Arc<LeaderHistory>,
}

/// The handles' side.
#[derive(Clone, Debug)]
pub(crate) struct LeaderView {
    rx: watch::Receiver<LeaderInfo>,
    clock: Arc<ContactClock>,
    history: Arc<LeaderHistory>,
}

/// A connected sender and view, with no leader known.
pub(crate) fn channel() -> (LeaderSender, LeaderView) {
    let (tx, rx) = watch::channel(LeaderInfo::default());
    let clock = Arc::new(ContactClock {
        base: crate::exec::now(),
        last: AtomicU64::new(0),
    });
    let history = Arc::new(LeaderHistory::default());
    (
        LeaderSender {
            tx,
            clock: clock.clone(),
            history: history.clone(),
        },
        LeaderView { rx, clock, history },
    )
}

impl LeaderSender {
    /// A new leader (or none) in `term`. Learning of a leader counts as hearing from it.
    pub(crate) fn set(&self, leader: Option<NodeId>, term: Term) {
        if let Some(l) = leader {
            self.clock.touch();
            self.history.record(l, term);
        }
        self.tx.send_replace(LeaderInfo { leader, term });
    }

    /// A message from `from` in `term` arrived: if that is the current leader, it is alive.
    pub(crate) fn heard(&self, from: NodeId, term: Term) {
        let now = *self.tx.borrow();
        if now.leader == Some(from) && now.term == term {
            self.clock.touch();
        }
    }
}

impl LeaderView {
    /// The current leader and term.
    pub(crate) fn get(&self) -> LeaderInfo {
        *self.rx.borrow()
    }

    /// A receiver that sees every change.
    pub(crate) fn watch(&self) -> watch::Receiver<LeaderInfo> {
        self.rx.clone()
    }

    /// Leaders learned of since the node started (a new leader, or the same one in a new
    /// term, each count once).
    pub(crate) fn changes(&self) -> u64 {
        self.history.seen.load(Ordering::Relaxed)
    }

    /// The latest leaders learned of, oldest first.
    pub(crate) fn history(&self) -> Vec<LeaderChange> {
        self.history.recent().iter().copied().collect()
    }

    /// Time since a message from the current leader arrived (None before any leader).
    pub(crate) fn since_contact(&self) -> Option<Duration> {
        self.clock.age()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A channel whose leader (node 2, term 5) was last heard from a minute ago.
    fn heard_a_minute_ago() -> (LeaderSender, LeaderView) {
        let (tx, rx) = watch::channel(LeaderInfo {
            leader: Some(2),
            term: 5,
        });
        let base = Instant::now()
            .checked_sub(Duration::from_secs(60))
            .expect("the clock is more than a minute past its epoch");
        let clock = Arc::new(ContactClock {
            base,
            last: AtomicU64::new(1),
        });
        let history = Arc::new(LeaderHistory::default());
        (
            LeaderSender {
                tx,
                clock: clock.clone(),
                history: history.clone(),
            },
            LeaderView { rx, clock, history },
        )
    }

    fn stale(view: &LeaderView) -> bool {
        view.since_contact().unwrap() >= Duration::from_secs(60)
    }

    #[test]
    fn a_message_from_the_leader_in_its_term_is_contact() {
        let (tx, view) = heard_a_minute_ago();
        assert!(stale(&view));
        tx.heard(2, 5);
        assert!(view.since_contact().unwrap() < Duration::from_secs(30));
    }

    #[test]
    fn messages_from_other_nodes_or_other_terms_are_not_contact() {
        let (tx, view) = heard_a_minute_ago();
        tx.heard(3, 5);
        tx.heard(2, 4);
        tx.heard(2, 6);
        assert!(stale(&view));
    }

    #[test]
    fn learning_of_a_new_leader_is_contact_and_losing_it_is_not() {
        let (tx, view) = heard_a_minute_ago();
        tx.set(None, 6);
        assert!(stale(&view), "no leader: nothing was heard");
        tx.set(Some(3), 6);
        assert!(view.since_contact().unwrap() < Duration::from_secs(30));
        assert_eq!(
            view.get(),
            LeaderInfo {
                leader: Some(3),
                term: 6
            }
        );
    }

    #[test]
    fn before_any_leader_there_is_no_contact() {
        let (tx, view) = channel();
        assert_eq!(view.since_contact(), None);
        tx.heard(1, 0);
        assert_eq!(view.since_contact(), None);
    }

    #[test]
    fn each_new_leader_or_new_term_is_one_change_and_repeats_are_not() {
        let (tx, view) = channel();
        tx.set(None, 1);
        tx.set(Some(1), 1);
        tx.set(Some(1), 1);
        tx.set(None, 2);
        tx.set(Some(1), 2);
        tx.set(Some(2), 3);
        assert_eq!(view.changes(), 3);
        let h: Vec<(NodeId, Term)> = view.history().iter().map(|c| (c.leader, c.term)).collect();
        assert_eq!(h, vec![(1, 1), (1, 2), (2, 3)]);
    }

    #[test]
    fn the_history_keeps_the_latest_changes_only() {
        let (tx, view) = channel();
        let n = LEADER_HISTORY as u64 + 5;
        for term in 1..=n {
            tx.set(Some(1), term);
        }
        assert_eq!(view.changes(), n);
        let h = view.history();
        assert_eq!(h.len(), LEADER_HISTORY);
        assert_eq!(h.first().map(|c| c.term), Some(6));
        assert_eq!(h.last().map(|c| c.term), Some(n));
    }
}
