//! Adaptive flow control: the leader sizes each follower's in-flight window from what it
//! measures of that follower, instead of sending up to the static limits
//! (`raft.max_inflight_bytes`, which stay the upper bound).
//!
//! A follower acknowledges an append once the entries are durable on its disk, so the time
//! from sending an append to its acknowledgement is a round trip plus the follower's sync,
//! and the rate at which acknowledged bytes arrive is what the follower can take: its
//! network path and its disk together. From every acknowledgement the leader takes two
//! samples, as TCP's BBR does for packets:
//!
//! - **round-trip time**: from sending the newest append it covers to now; the estimate is
//!   the smallest sample seen (the path without queueing). Once it is [`RTT_MEMORY`] old it
//!   is measured again, on an empty path: the window drops to one append until everything
//!   in flight is acknowledged, and the next append's round trip becomes the estimate (as
//!   BBR's ProbeRTT does). Taking just any newer sample instead would take one inflated by
//!   the window's own queue, and a follower that stays behind would see its window double
//!   at every renewal;
//! - **delivery rate**: the bytes acknowledged since that append was sent, over the time
//!   since then; the estimate is the largest sample of the last [`RATE_MEMORY`].
//!
//! The window is `rate × (2 × rtt + queue_delay)`, at least `min_window_bytes`. Twice the
//! round trip leaves room for the rate to double each round trip when the follower can
//! take more (a window that binds caps the rate samples, so it must exceed the
//! bandwidth-delay product to find a faster path); `queue_delay` is the queueing the
//! operator accepts on top. Without it, a slow follower (a thin link, a slow disk) gets the
//! static window of 32 MiB queued in front of it: its heartbeats and acknowledgements wait
//! behind seconds of appends, the leader's memory holds them, and if it is needed for a
//! quorum (another follower fails), commits wait until that backlog drains.
//!
//! This changes only how fast entries flow (the core checks nothing here for safety: a
//! window of any size, even one byte, is correct and live; the simulator sets random
//! ones). Measurements use the runtime's monotonic clock, taken once per batch of input.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use raft_core::{LogIndex, NodeId};

/// How long the smallest round-trip sample stands before it is measured again on an empty
/// path (BBR's `min_rtt` filter: long enough to span bursts of queueing, short enough to
/// follow a path that became slower).
pub const RTT_MEMORY: Duration = Duration::from_secs(10);
/// How long the largest delivery-rate sample is kept before a newer one replaces it.
pub const RATE_MEMORY: Duration = Duration::from_secs(1);
/// Sends remembered per follower at most (beyond, the oldest are forgotten: they only
/// served as samples).
const MAX_TRACKED_SENDS: usize = 4096;

/// Settings of the adaptive flow control.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    /// Size each follower's in-flight window from its measured round-trip time and
    /// acknowledgement rate. `false`: every follower gets the static
    /// `raft.max_inflight_bytes`. Default `true`.
    pub adaptive: bool,
    /// Queueing delay accepted in front of a follower, on top of twice its round-trip
    /// time. Default 10 ms.
    pub queue_delay: Duration,
    /// The smallest window (one append always goes, whatever its size). Default 64 KiB.
    pub min_window_bytes: u64,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            adaptive: true,
            queue_delay: Duration::from_millis(10),
            min_window_bytes: 64 << 10,
        }
    }
}

/// One append with entries, as sent.
#[derive(Clone, Copy, Debug)]
struct Sent {
    last: LogIndex,
    bytes: u64,
    at: Instant,
    /// The follower's delivered bytes when this was sent, and when they last grew.
    delivered: u64,
    delivered_at: Instant,
}

/// A sample kept by a windowed filter, with when it was taken.
#[derive(Clone, Copy, Debug)]
struct Kept<T> {
    value: T,
    at: Instant,
}

/// Where a follower is in renewing its round-trip estimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    /// The estimate is current.
    Off,
    /// The estimate expired: one append at a time until nothing is in flight.
    Draining,
    /// Nothing was in flight when appends from `from` on were sent: the first of them
    /// acknowledged gives the new estimate.
    Measuring { from: LogIndex },
}

/// The window while the round trip is measured again: one append in flight.
pub const PROBE_WINDOW: u64 = 1;

/// What the leader measured of one follower.
#[derive(Debug)]
struct Follower {
    sent: VecDeque<Sent>,
    /// Entry bytes acknowledged in all, and when that last grew.
    delivered: u64,
    delivered_at: Option<Instant>,
    acked: LogIndex,
    min_rtt: Option<Kept<Duration>>,
    max_rate: Option<Kept<f64>>,
    probe: Probe,
    /// The last index sent so far.
    last_sent: LogIndex,
}

impl Follower {
    fn new() -> Self {
        Follower {
            sent: VecDeque::new(),
            delivered: 0,
            delivered_at: None,
            acked: 0,
            min_rtt: None,
            max_rate: None,
            probe: Probe::Off,
            last_sent: 0,
        }
    }
}

/// The estimates for one follower, for status and tests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// The smallest recent round trip (send to durable acknowledgement).
    pub rtt: Duration,
    /// The largest recent acknowledgement rate, bytes per second.
    pub rate: f64,
    /// The window these give.
    pub window: u64,
}

/// The leader's flow control over all its followers.
#[derive(Debug)]
pub struct FlowControl {
    cfg: FlowConfig,
    followers: BTreeMap<NodeId, Follower>,
}

impl FlowControl {
    /// Flow control with these settings and nothing measured.
    pub fn new(cfg: FlowConfig) -> Self {
        FlowControl {
            cfg,
            followers: BTreeMap::new(),
        }
    }

    /// Whether windows are sized from measurements at all.
    pub fn adaptive(&self) -> bool {
        self.cfg.adaptive
    }

    /// Forgets everything measured: leadership changed hands (a new term starts with the
    /// static limits; the first acknowledgements size the windows again).
    pub fn reset(&mut self) {
        self.followers.clear();
    }

    /// Forgets what was sent to `to` and not acknowledged: the leader went back to probing
    /// it (a rejection or a stall), and what it sends next starts over.
    pub fn rewind(&mut self, to: NodeId) {
        if let Some(f) = self.followers.get_mut(&to) {
            f.sent.clear();
        }
    }

    /// An append carrying the entries `first..=last` (`bytes` of them, as the core counts
    /// entry sizes) was sent to `to` at `now`.
    pub fn on_send(
        &mut self,
        to: NodeId,
        first: LogIndex,
        last: LogIndex,
        bytes: u64,
        now: Instant,
    ) {
        if !self.cfg.adaptive || last < first {
            return;
        }
        let f = self.followers.entry(to).or_insert_with(Follower::new);
        // Sent again from an earlier index (the leader rewound): what it replaces will
        // never be acknowledged as sent.
        while f.sent.back().is_some_and(|s| s.last >= first) {
            f.sent.pop_back();
        }
        if f.sent.len() >= MAX_TRACKED_SENDS {
            f.sent.pop_front();
        }
        if f.sent.is_empty() {
            // Nothing in flight: the follower was idle (or the leader had nothing to send),
            // and that time is no measure of its rate.
            f.delivered_at = Some(now);
        }
        f.last_sent = last;
        f.sent.push_back(Sent {
            last,
            bytes,
            at: now,
            delivered: f.delivered,
            delivered_at: f.delivered_at.unwrap_or(now),
        });
    }

    /// `from` acknowledged holding the leader's entries up to `index` at `now`. Returns
    /// the window to set for it when this acknowledgement gave new samples.
    pub fn on_ack(&mut self, from: NodeId, index: LogIndex, now: Instant) -> Option<u64> {
        if !self.cfg.adaptive {
            return None;
        }
        let f = self.followers.get_mut(&from)?;
        if index <= f.acked {
            return None;
        }
        f.acked = index;
        let mut newest: Option<Sent> = None;
        let mut bytes = 0u64;
        while let Some(s) = f.sent.front().copied() {
            if s.last > index {
                break;
            }
            f.sent.pop_front();
            bytes = bytes.saturating_add(s.bytes);
            newest = Some(s);
        }
        // Entries of a message only partly acknowledged stay counted in it.
        let newest = newest?;
        f.delivered = f.delivered.saturating_add(bytes);
        f.delivered_at = Some(now);
        let rtt = now.saturating_duration_since(newest.at);
        let interval = now.saturating_duration_since(newest.delivered_at);
        if !interval.is_zero() {
            let rate = f.delivered.saturating_sub(newest.delivered) as f64 / interval.as_secs_f64();
            keep_max(&mut f.max_rate, rate, now, RATE_MEMORY);
        }
        match f.probe {
            Probe::Measuring { from: first } if newest.last >= first => {
                // Sent with nothing ahead of it: the path's round trip as it is now.
                f.min_rtt = Some(Kept {
                    value: rtt,
                    at: now,
                });
                f.probe = Probe::Off;
            }
            Probe::Off => match f.min_rtt {
                Some(k) if now.saturating_duration_since(k.at) >= RTT_MEMORY => {
                    f.probe = Probe::Draining;
                }
                Some(k) if k.value <= rtt => {}
                _ => {
                    f.min_rtt = Some(Kept {
                        value: rtt,
                        at: now,
                    })
                }
            },
            Probe::Draining | Probe::Measuring { .. } => {}
        }
        if f.probe == Probe::Draining && f.sent.is_empty() {
            f.probe = Probe::Measuring {
                from: f.last_sent.saturating_add(1),
            };
        }
        if f.probe != Probe::Off {
            return Some(PROBE_WINDOW);
        }
        self.estimate(from).map(|e| e.window)
    }

    /// The current estimates for `to`, once it acknowledged something.
    pub fn estimate(&self, to: NodeId) -> Option<Estimate> {
        let f = self.followers.get(&to)?;
        let rtt = f.min_rtt?.value;
        let rate = f.max_rate?.value;
        let horizon = rtt.saturating_mul(2).saturating_add(self.cfg.queue_delay);
        // `as` saturates a float at u64::MAX (and NaN at 0, which the floor lifts).
        let window = ((rate * horizon.as_secs_f64()).ceil() as u64).max(self.cfg.min_window_bytes);
        Some(Estimate { rtt, rate, window })
    }
}

/// Keeps `sample` if it is larger than the kept one, or the kept one is older than `memory`.
fn keep_max(kept: &mut Option<Kept<f64>>, sample: f64, now: Instant, memory: Duration) {
    match kept {
        Some(k) if k.value >= sample && now.saturating_duration_since(k.at) < memory => {}
        _ => {
            *kept = Some(Kept {
                value: sample,
                at: now,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn flow() -> FlowControl {
        FlowControl::new(FlowConfig {
            adaptive: true,
            queue_delay: 10 * MS,
            min_window_bytes: 1_000,
        })
    }

    /// Sends `count` appends of `bytes` each to follower 2, one every `gap`, each
    /// acknowledged `rtt` after it was sent; returns the last window.
    fn steady(
        f: &mut FlowControl,
        t0: Instant,
        count: u64,
        bytes: u64,
        gap: Duration,
        rtt: Duration,
    ) -> Option<u64> {
        let mut window = None;
        let mut acks: VecDeque<(Instant, LogIndex)> = VecDeque::new();
        for k in 0..count {
            let at = t0 + gap * k as u32;
            while acks.front().is_some_and(|&(t, _)| t <= at) {
                let (t, i) = acks.pop_front().unwrap_or((at, 0));
                window = f.on_ack(2, i, t).or(window);
            }
            f.on_send(2, k + 1, k + 1, bytes, at);
            acks.push_back((at + rtt, k + 1));
        }
        for (t, i) in acks {
            window = f.on_ack(2, i, t).or(window);
        }
        window
    }

    #[test]
    fn the_window_is_the_acknowledgement_rate_over_twice_the_round_trip_and_the_queue_delay() {
        let mut f = flow();
        let t0 = Instant::now();
        // 10,000 bytes every millisecond (10 MB/s), acknowledged 5 ms later.
        let window = steady(&mut f, t0, 200, 10_000, MS, 5 * MS).unwrap_or(0);
        let e = f.estimate(2).unwrap_or(Estimate {
            rtt: Duration::ZERO,
            rate: 0.0,
            window: 0,
        });
        assert_eq!(e.rtt, 5 * MS);
        assert!((9.0e6..=11.0e6).contains(&e.rate), "rate {}", e.rate);
        // 10 MB/s × (2 × 5 ms + 10 ms) = 200 kB.
        assert!((180_000..=220_000).contains(&window), "window {window}");
    }

    #[test]
    fn a_slow_follower_gets_a_small_window_and_a_fast_one_a_large_one() {
        let t0 = Instant::now();
        let mut slow = flow();
        let mut fast = flow();
        let w_slow = steady(&mut slow, t0, 100, 1_000, 10 * MS, 20 * MS).unwrap_or(0);
        let w_fast = steady(&mut fast, t0, 100, 100_000, MS, 2 * MS).unwrap_or(0);
        assert!(w_slow < 10_000, "100 kB/s over 50 ms: {w_slow}");
        assert!(w_fast > 1_000_000, "100 MB/s over 14 ms: {w_fast}");
    }

    #[test]
    fn time_with_nothing_in_flight_does_not_count_against_the_rate() {
        let mut f = flow();
        let t0 = Instant::now();
        steady(&mut f, t0, 50, 10_000, MS, 2 * MS);
        // Two idle seconds (past the rate's memory), then one append, answered in 2 ms.
        let t1 = t0 + 2 * RATE_MEMORY;
        f.on_send(2, 51, 51, 10_000, t1);
        f.on_ack(2, 51, t1 + 2 * MS);
        let rate = f.estimate(2).map_or(0.0, |e| e.rate);
        assert!(
            rate > 1.0e6,
            "10 kB in 2 ms, not over the idle time: {rate}"
        );
    }

    #[test]
    fn the_window_never_falls_below_the_minimum() {
        let mut f = flow();
        let t0 = Instant::now();
        let w = steady(&mut f, t0, 10, 10, 100 * MS, MS).unwrap_or(0);
        assert_eq!(w, 1_000);
    }

    #[test]
    fn an_expired_round_trip_is_measured_again_on_an_empty_path_not_from_a_queued_sample() {
        let mut f = flow();
        let t0 = Instant::now();
        f.on_send(2, 1, 1, 100, t0);
        f.on_ack(2, 1, t0 + MS);
        // Later, a backlog: appends queue behind each other, each acknowledged 50 ms on.
        let later = t0 + RTT_MEMORY + MS;
        f.on_send(2, 2, 2, 100, later);
        f.on_send(2, 3, 3, 100, later);
        assert_eq!(
            f.on_ack(2, 2, later + 50 * MS),
            Some(PROBE_WINDOW),
            "the estimate expired: one append at a time until nothing is in flight"
        );
        assert_eq!(
            f.estimate(2).map(|e| e.rtt),
            Some(MS),
            "not from a queued sample"
        );
        assert_eq!(f.on_ack(2, 3, later + 60 * MS), Some(PROBE_WINDOW));
        // The path is empty: the next append alone measures it, 30 ms.
        let t = later + 70 * MS;
        f.on_send(2, 4, 4, 100, t);
        let w = f.on_ack(2, 4, t + 30 * MS);
        assert_eq!(f.estimate(2).map(|e| e.rtt), Some(30 * MS));
        assert!(w.is_some_and(|w| w > PROBE_WINDOW), "{w:?}");
    }

    #[test]
    fn a_follower_that_stays_behind_keeps_its_window_across_renewals() {
        // A 1 MB/s follower 20 ms away, always behind: the leader keeps its window full.
        // Model: the link carries what is in flight in order at its rate; each append is
        // acknowledged 20 ms after the link delivered it.
        let mut f = flow();
        let t0 = Instant::now();
        let rate = 1_000_000.0_f64;
        let bytes = 4_000u64;
        let mut window = 64_000u64;
        // (index, when the link delivered it)
        let mut in_flight: VecDeque<(LogIndex, Instant)> = VecDeque::new();
        let mut link_free = t0;
        let mut next = 1;
        let mut t = t0;
        let mut windows = Vec::new();
        while t < t0 + 6 * RTT_MEMORY {
            if (in_flight.len() as u64) * bytes < window.max(1) || in_flight.is_empty() {
                f.on_send(2, next, next, bytes, t);
                link_free = link_free.max(t) + Duration::from_secs_f64(bytes as f64 / rate);
                in_flight.push_back((next, link_free));
                next += 1;
                continue;
            }
            let Some((index, delivered)) = in_flight.pop_front() else {
                break;
            };
            t = t.max(delivered + 20 * MS);
            if let Some(w) = f.on_ack(2, index, t) {
                window = w;
                windows.push(w);
            }
        }
        // Steady: rate × (2 × 20 ms + 10 ms) = 50 kB. Renewing the round trip from any
        // newer sample let it double every 10 s.
        let late: Vec<u64> = windows.iter().rev().take(50).copied().collect();
        assert!(late.iter().all(|&w| w < 200_000), "{late:?}");
        assert!(windows.len() > 1000, "the model ran: {}", windows.len());
    }

    #[test]
    fn stale_and_partial_acknowledgements_give_no_sample() {
        let mut f = flow();
        let t0 = Instant::now();
        f.on_send(2, 1, 10, 100, t0);
        assert_eq!(
            f.on_ack(2, 5, t0 + MS),
            None,
            "the append is acknowledged only in part"
        );
        assert!(f.on_ack(2, 10, t0 + 2 * MS).is_some());
        assert_eq!(f.on_ack(2, 10, t0 + 3 * MS), None, "a duplicate");
        assert_eq!(f.on_ack(2, 9, t0 + 4 * MS), None, "an older one");
        assert_eq!(f.on_ack(3, 1, t0 + 4 * MS), None, "nothing was sent to 3");
    }

    #[test]
    fn a_resend_from_an_earlier_index_replaces_what_it_covers() {
        let mut f = flow();
        let t0 = Instant::now();
        f.on_send(2, 1, 5, 100, t0);
        f.on_send(2, 6, 10, 100, t0);
        // The leader rewound to 6 and sends it again, 100 ms later.
        f.on_send(2, 6, 10, 100, t0 + 100 * MS);
        f.on_ack(2, 10, t0 + 101 * MS);
        assert_eq!(
            f.estimate(2).map(|e| e.rtt),
            Some(MS),
            "timed from the resend"
        );
    }

    #[test]
    fn after_a_rewind_or_a_reset_nothing_old_is_sampled() {
        let mut f = flow();
        let t0 = Instant::now();
        f.on_send(2, 1, 1, 100, t0);
        f.rewind(2);
        assert_eq!(f.on_ack(2, 1, t0 + MS), None);
        f.on_send(2, 2, 2, 100, t0);
        f.reset();
        assert_eq!(f.on_ack(2, 2, t0 + MS), None);
        assert_eq!(f.estimate(2), None);
    }

    #[test]
    fn without_adaptive_flow_control_nothing_is_measured() {
        let mut f = FlowControl::new(FlowConfig {
            adaptive: false,
            ..FlowConfig::default()
        });
        let t0 = Instant::now();
        f.on_send(2, 1, 1, 100, t0);
        assert_eq!(f.on_ack(2, 1, t0 + MS), None);
        assert!(!f.adaptive());
    }
}
