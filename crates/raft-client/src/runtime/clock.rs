//! The core's clock.

/// The core's clock, driven by the monotonic clock: how many ticks are due since the last
/// time asked, however late the asking (at most `max_catch_up` at once: beyond a few
/// election timeouts, more ticks change nothing but the time spent delivering them).
pub(super) struct TickClock {
    start: std::time::Instant,
    tick: std::time::Duration,
    delivered: u64,
    max_catch_up: u64,
}

impl TickClock {
    pub(super) fn new(tick: std::time::Duration, max_catch_up: u64) -> Self {
        TickClock {
            start: crate::exec::now(),
            tick: tick.max(std::time::Duration::from_micros(1)),
            delivered: 0,
            max_catch_up,
        }
    }

    /// Ticks due now and not delivered yet; they count as delivered.
    pub(super) fn due(&mut self) -> u64 {
        self.due_at(crate::exec::now())
    }

    pub(super) fn due_at(&mut self, now: std::time::Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        let total = u64::try_from(elapsed / self.tick.as_nanos()).unwrap_or(u64::MAX);
        let missed = total.saturating_sub(self.delivered);
        self.delivered = self.delivered.max(total);
        missed.min(self.max_catch_up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_clock_delivers_every_tick_due_however_late_it_is_asked_up_to_a_cap() {
        let ms = std::time::Duration::from_millis;
        let mut c = TickClock::new(ms(10), 40);
        let t0 = c.start;
        assert_eq!(c.due_at(t0 + ms(9)), 0);
        assert_eq!(c.due_at(t0 + ms(35)), 3);
        assert_eq!(c.due_at(t0 + ms(39)), 0, "delivered once");
        assert_eq!(c.due_at(t0 + ms(40)), 1);
        // A pause of a second: the missed ticks come at once, at most 40 of them...
        assert_eq!(c.due_at(t0 + ms(1040)), 40);
        // ...and the clock then goes on from real time, not from the capped count.
        assert_eq!(c.due_at(t0 + ms(1050)), 1);
        assert_eq!(c.due_at(t0), 0, "time never runs backwards");
    }
}
