//! Who leads, as this node knows it, and when it last heard from that leader.
//!
//! The runtime publishes leader changes on a watch channel and stamps a clock on every
//! message from the current leader; handles read both without a round trip to the runtime.
//! A follower whose leader went silent still names it until its own election timer fires;
//! the clock lets a front end stop sending clients to a leader that is probably gone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// When the leader was last heard from: milliseconds since `base`, plus one (0: never).
#[derive(Debug)]
struct ContactClock {
    base: Instant,
    last: AtomicU64,
}

impl ContactClock {
    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last.store(ms.saturating_add(1), Ordering::Relaxed);
    }

    fn age(&self) -> Option<Duration> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            at => Some(
                self.base
                    .elapsed()
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
}

/// The handles' side.
#[derive(Clone, Debug)]
pub(crate) struct LeaderView {
    rx: watch::Receiver<LeaderInfo>,
    clock: Arc<ContactClock>,
}

/// A connected sender and view, with no leader known.
pub(crate) fn channel() -> (LeaderSender, LeaderView) {
    let (tx, rx) = watch::channel(LeaderInfo::default());
    let clock = Arc::new(ContactClock {
        base: Instant::now(),
        last: AtomicU64::new(0),
    });
    (
        LeaderSender {
            tx,
            clock: clock.clone(),
        },
        LeaderView { rx, clock },
    )
}

impl LeaderSender {
    /// A new leader (or none) in `term`. Learning of a leader counts as hearing from it.
    pub(crate) fn set(&self, leader: Option<NodeId>, term: Term) {
        if leader.is_some() {
            self.clock.touch();
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
        (
            LeaderSender {
                tx,
                clock: clock.clone(),
            },
            LeaderView { rx, clock },
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
}
