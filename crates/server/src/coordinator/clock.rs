//! The time a leader stamps on the commands it proposes (`at_ms`, ms since the Unix epoch),
//! which drives the expiry of results. It reads the wall clock once, when the replica starts
//! to lead — taking the log's own time instead if the wall clock is behind it — and from then
//! on advances with the monotonic clock only: a jump of the wall clock during a leader's
//! term, forward or back, changes nothing, and time in the log never goes back (the table
//! also keeps the latest time it has seen). Owned by the actor.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The system's wall clock, in ms since the Unix epoch.
pub(super) fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A leader's clock for the commands it proposes.
#[derive(Clone, Copy, Debug)]
pub(super) struct LeaderClock {
    base_ms: u64,
    base: Instant,
}

impl LeaderClock {
    /// A clock that reads `wall_ms` at `now`, or `log_ms` if the log's time is later.
    pub(super) fn start(wall_ms: u64, log_ms: u64, now: Instant) -> Self {
        Self {
            base_ms: wall_ms.max(log_ms),
            base: now,
        }
    }

    /// The time to stamp at `now`.
    pub(super) fn at(&self, now: Instant) -> u64 {
        let elapsed =
            u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX);
        self.base_ms.saturating_add(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn it_follows_the_monotonic_clock_from_the_later_of_wall_and_log_time() {
        let t0 = Instant::now();
        let clock = LeaderClock::start(1_000, 5_000, t0);
        assert_eq!(clock.at(t0), 5_000, "never behind the log");
        assert_eq!(clock.at(t0 + Duration::from_millis(250)), 5_250);
        let clock = LeaderClock::start(9_000, 5_000, t0);
        assert_eq!(clock.at(t0 + Duration::from_secs(2)), 11_000);
        // An instant from before the start reads as the start.
        let later = LeaderClock::start(9_000, 5_000, t0 + Duration::from_secs(1));
        assert_eq!(later.at(t0), 9_000);
    }
}
