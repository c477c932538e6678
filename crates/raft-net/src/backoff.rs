//! Reconnect delays: exponential, capped, with jitter so that peers do not retry in step.

use std::time::Duration;

/// Exponential backoff with "equal jitter": each delay is half the current step plus a
/// random part of the other half.
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            initial,
            max,
            step: initial,
            rng: seed | 1,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.step = self.initial;
    }

    /// The next delay, never above the cap.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let step = self.step.min(self.max);
        let half = step / 2;
        let jitter_ns = (half.as_nanos() as u64).max(1);
        let delay = half + Duration::from_nanos(self.rng % jitter_ns);
        self.step = (self.step * 2).min(self.max);
        delay.min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_stay_under_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(1), 42);
        let delays: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(10));
        assert!(delays[0] >= Duration::from_millis(5));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
        assert!(delays[19] >= Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(10));
    }
}
