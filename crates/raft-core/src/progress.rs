//! What a leader knows about each follower's log, and how much it may send it.

use std::collections::VecDeque;

use crate::types::LogIndex;

/// How the leader replicates to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The leader does not know where the follower's log matches; it sends one append at a
    /// time and waits for the answer.
    Probe,
    /// The follower's log matches up to `match_index`; the leader streams appends to it,
    /// up to the in-flight limits.
    Replicate,
    /// The follower needs entries the leader compacted: a snapshot up to `pending` is being
    /// sent, and nothing else until it is installed or its transfer failed.
    Snapshot {
        /// The index the snapshot covers.
        pending: LogIndex,
    },
}

/// The leader's knowledge of one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The highest index known to match the leader's log on the follower.
    pub match_index: LogIndex,
    /// The next index to send. Never below 1, never below `match_index + 1`.
    pub next_index: LogIndex,
    /// Probe or replicate.
    pub state: ProgressState,
    /// In probe state: an append was sent and no answer has come yet.
    pub(crate) probe_sent: bool,
    /// Heard from since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// The newest read sequence number the follower acknowledged in this term.
    pub(crate) read_seq_acked: u64,
    /// Unacknowledged appends: (last index in the message, entry bytes in it).
    inflights: VecDeque<(LogIndex, u64)>,
    inflight_bytes: u64,
    /// The caller's flow-control window for this follower, in entry bytes: in replicate
    /// state, no more appends go out while this much is unacknowledged (never above the
    /// configured limit, which applies alone when this is `None`).
    flow_window: Option<u64>,
    /// Ticks since the last acknowledgement while appends were in flight.
    stall_ticks: u32,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex) -> Self {
        Progress {
            match_index: 0,
            next_index: next_index.max(1),
            state: ProgressState::Probe,
            probe_sent: false,
            recent_active: false,
            read_seq_acked: 0,
            inflights: VecDeque::new(),
            inflight_bytes: 0,
            flow_window: None,
            stall_ticks: 0,
        }
    }

    /// Whether the leader must hold off sending appends with entries.
    pub(crate) fn is_paused(&self, max_msgs: usize, max_bytes: u64) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => {
                let max_bytes = self.flow_window.map_or(max_bytes, |w| w.min(max_bytes));
                self.inflights.len() >= max_msgs || self.inflight_bytes >= max_bytes
            }
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// The index of the snapshot being sent, if any.
    pub fn pending_snapshot(&self) -> Option<LogIndex> {
        match self.state {
            ProgressState::Snapshot { pending } => Some(pending),
            _ => None,
        }
    }

    /// Number of unacknowledged append messages.
    pub fn inflight_msgs(&self) -> usize {
        self.inflights.len()
    }

    /// Entry bytes of the unacknowledged append messages.
    pub fn inflight_bytes(&self) -> u64 {
        self.inflight_bytes
    }

    /// The flow-control window set by [`crate::Node::set_flow_window`], if any.
    pub fn flow_window(&self) -> Option<u64> {
        self.flow_window
    }

    pub(crate) fn set_flow_window(&mut self, window: Option<u64>) {
        self.flow_window = window;
    }

    /// Entry bytes one append to this follower may carry (one entry always goes): the
    /// configured `max`, and under a flow-control window at most a quarter of it, so that
    /// the window holds several appends and a heartbeat queued behind one waits little.
    pub(crate) fn message_bytes(&self, max: u64) -> u64 {
        self.flow_window.map_or(max, |w| max.min(w / 4))
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.clear();
        self.inflight_bytes = 0;
        self.stall_ticks = 0;
    }

    /// A snapshot covering up to `pending` is on its way: send nothing else meanwhile.
    pub(crate) fn become_snapshot(&mut self, pending: LogIndex) {
        self.state = ProgressState::Snapshot { pending };
        self.probe_sent = false;
        self.inflights.clear();
        self.inflight_bytes = 0;
        self.stall_ticks = 0;
    }

    /// The snapshot up to `pending` arrived: probe from after it once the follower
    /// acknowledges it (or a heartbeat answer unpauses the probe).
    pub(crate) fn snapshot_delivered(&mut self, pending: LogIndex) {
        self.become_probe();
        self.next_index = self.match_index.max(pending) + 1;
        self.probe_sent = true;
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.clear();
        self.inflight_bytes = 0;
        self.stall_ticks = 0;
    }

    /// Records that an append carrying entries up to `last` (`bytes` of them) was sent.
    pub(crate) fn sent(&mut self, last: LogIndex, bytes: u64, carried_entries: bool) {
        match self.state {
            ProgressState::Replicate => {
                if carried_entries {
                    self.next_index = last + 1;
                    self.inflights.push_back((last, bytes));
                    self.inflight_bytes += bytes;
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// The follower holds the leader's entries up to `index`. Returns false for a stale answer.
    pub(crate) fn maybe_update(&mut self, index: LogIndex) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
            self.stall_ticks = 0;
        }
        self.next_index = self.next_index.max(index.saturating_add(1));
        updated
    }

    /// Forgets in-flight appends the follower has acknowledged up to `index`.
    pub(crate) fn free_inflights_to(&mut self, index: LogIndex) {
        while let Some(&(last, bytes)) = self.inflights.front() {
            if last > index {
                break;
            }
            self.inflights.pop_front();
            self.inflight_bytes -= bytes;
        }
    }

    /// Leader tick: counts ticks without acknowledgement while appends are in flight.
    /// Returns true when appends have been unanswered for `limit` ticks: they were most
    /// likely lost (a connection dropped), and the follower must be probed again.
    pub(crate) fn tick_stalled(&mut self, limit: u32) -> bool {
        if self.state != ProgressState::Replicate || self.inflights.is_empty() {
            self.stall_ticks = 0;
            return false;
        }
        self.stall_ticks += 1;
        self.stall_ticks >= limit
    }

    /// The follower rejected an append whose `prev_index` was `rejected`; `hint` is where
    /// the logs may agree. Returns false if the rejection is stale. In replicate state the
    /// caller then moves the follower to probe, which restarts from `match_index + 1`.
    pub(crate) fn maybe_decrease_to(&mut self, rejected: LogIndex, hint: LogIndex) -> bool {
        match self.state {
            // Answers to appends sent before the snapshot: stale.
            ProgressState::Snapshot { .. } => false,
            ProgressState::Replicate => rejected > self.match_index,
            ProgressState::Probe => {
                if self.next_index.saturating_sub(1) != rejected {
                    return false;
                }
                self.next_index = rejected
                    .min(hint.saturating_add(1))
                    .max(self.match_index + 1)
                    .max(1);
                self.probe_sent = false;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_index_never_falls_below_one_or_below_match() {
        let mut p = Progress::new(1);
        assert!(p.maybe_decrease_to(0, 0));
        assert_eq!(p.next_index, 1);
        p.maybe_update(5);
        p.become_probe();
        assert!(p.maybe_decrease_to(5, 0));
        assert_eq!(p.next_index, 6);
    }

    #[test]
    fn stale_answers_do_not_move_match_backwards() {
        let mut p = Progress::new(1);
        assert!(p.maybe_update(7));
        assert!(!p.maybe_update(3));
        assert_eq!(p.match_index, 7);
        p.become_replicate();
        assert!(!p.maybe_decrease_to(6, 0), "rejection below match is stale");
        assert_eq!(p.next_index, 8);
    }

    #[test]
    fn inflight_window_pauses_and_frees() {
        let mut p = Progress::new(1);
        p.become_replicate();
        p.sent(3, 40, true);
        p.sent(6, 10, true);
        assert_eq!(p.inflight_msgs(), 2);
        assert!(p.is_paused(2, u64::MAX));
        assert!(p.is_paused(10, 50));
        p.free_inflights_to(3);
        assert_eq!(
            p.inflight_msgs(),
            1,
            "only the append up to 3 is acknowledged"
        );
        assert!(!p.is_paused(2, 11), "10 bytes left in flight");
        assert!(p.is_paused(10, 10), "10 bytes left in flight");
        assert_eq!(p.next_index, 7);
        p.free_inflights_to(6);
        assert_eq!(p.inflight_msgs(), 0);
    }

    #[test]
    fn a_second_acknowledgement_of_the_same_index_is_stale() {
        let mut p = Progress::new(1);
        assert!(p.maybe_update(5));
        assert!(!p.maybe_update(5));
    }

    #[test]
    fn a_follower_is_stalled_only_after_the_limit_with_appends_in_flight() {
        let mut p = Progress::new(1);
        p.become_replicate();
        for _ in 0..10 {
            assert!(!p.tick_stalled(3), "nothing in flight: nothing can stall");
        }
        p.sent(4, 10, true);
        assert!(!p.tick_stalled(3));
        assert!(!p.tick_stalled(3));
        assert!(p.tick_stalled(3), "three ticks without an answer");
        p.become_probe();
        for _ in 0..10 {
            assert!(!p.tick_stalled(3), "a probing follower is never stalled");
        }
    }
}
