//! How many tasks of each named queue finished per second lately, for `dtc queue list`:
//! per queue, counts in one-second buckets over the last [`WINDOW_S`] seconds. Owned by the
//! leader (made at election, dropped with its term); pure, fed the time by its caller.

use dtc_proto::hash::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// The seconds the rate is taken over.
const WINDOW_S: usize = 10;

/// The most queues counted (a queue past this bound shows no rate).
const MAX_QUEUES: usize = 1024;

/// Finished tasks per queue over the last [`WINDOW_S`] seconds.
#[derive(Debug)]
pub(super) struct QueueRates {
    start: Instant,
    by_queue: HashMap<Arc<str>, Ring>,
}

/// One queue's counts: `counts[s % WINDOW_S]` holds second `s` (since `start`) for the
/// last `WINDOW_S` seconds up to `latest`.
#[derive(Debug, Default)]
struct Ring {
    latest: u64,
    counts: [u32; WINDOW_S],
}

impl Ring {
    /// Moves the ring to second `s`, emptying the buckets of the seconds skipped.
    fn advance(&mut self, s: u64) {
        if s <= self.latest {
            return;
        }
        let skipped = (s - self.latest).min(WINDOW_S as u64);
        for k in 1..=skipped {
            self.counts[((self.latest + k) % WINDOW_S as u64) as usize] = 0;
        }
        self.latest = s;
    }
}

impl QueueRates {
    /// No counts, with seconds counted from `now`.
    pub(super) fn new(now: Instant) -> Self {
        Self {
            start: now,
            by_queue: HashMap::default(),
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs()
    }

    /// A task of `queue` finished at `now`.
    pub(super) fn done(&mut self, queue: &str, now: Instant) {
        let s = self.second(now);
        let count = |ring: &mut Ring| {
            ring.advance(s);
            let slot = &mut ring.counts[(s % WINDOW_S as u64) as usize];
            *slot = slot.saturating_add(1);
        };
        if let Some(ring) = self.by_queue.get_mut(queue) {
            count(ring);
        } else if self.by_queue.len() < MAX_QUEUES {
            let mut ring = Ring::default();
            count(&mut ring);
            self.by_queue.insert(Arc::from(queue), ring);
        }
    }

    /// Tasks of `queue` finished per second over the last full [`WINDOW_S`] seconds before
    /// `now` (the current second, still counting, left out).
    pub(super) fn per_s(&self, queue: &str, now: Instant) -> f64 {
        let Some(ring) = self.by_queue.get(queue) else {
            return 0.0;
        };
        let s = self.second(now);
        let total: u64 = (1..=WINDOW_S as u64)
            .filter_map(|back| s.checked_sub(back))
            .filter(|sec| *sec <= ring.latest && ring.latest - sec < WINDOW_S as u64)
            .map(|sec| u64::from(ring.counts[(sec % WINDOW_S as u64) as usize]))
            .sum();
        total as f64 / WINDOW_S as f64
    }

    /// The queues with counts.
    pub(super) fn queues(&self) -> impl Iterator<Item = &Arc<str>> {
        self.by_queue.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_the_last_full_seconds_per_queue() {
        let t0 = Instant::now();
        let mut r = QueueRates::new(t0);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for ms in (0..5_000).step_by(50) {
            r.done("a", at(ms));
        }
        r.done("b", at(4_500));
        // At 5.0 s, seconds 0-4 are full: 100 tasks of a, 1 of b, over 10 s.
        assert_eq!(r.per_s("a", at(5_000)), 10.0);
        assert_eq!(r.per_s("b", at(5_000)), 0.1);
        assert_eq!(r.per_s("c", at(5_000)), 0.0);
        // The current second does not count yet.
        r.done("b", at(5_100));
        assert_eq!(r.per_s("b", at(5_900)), 0.1);
        // Ten seconds later only what came since is left.
        r.done("a", at(14_200));
        assert_eq!(r.per_s("a", at(15_000)), 0.1);
        assert_eq!(r.per_s("a", at(40_000)), 0.0);
        let mut names: Vec<&str> = r.queues().map(|q| &**q).collect();
        names.sort_unstable();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn the_number_of_queues_counted_is_bounded() {
        let t0 = Instant::now();
        let mut r = QueueRates::new(t0);
        for i in 0..MAX_QUEUES + 10 {
            r.done(&format!("q{i}"), t0);
        }
        assert_eq!(r.queues().count(), MAX_QUEUES);
    }
}
