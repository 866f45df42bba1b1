//! Rate limits per queue: one token bucket per limited queue, in exact integer units.
//! Owned by the [`Scheduler`](super::Scheduler), which refills the buckets when the leader
//! schedules, skips a queue whose bucket holds less than one start, and takes one start
//! per task it assigns from such a queue.
//!
//! A bucket holds at most one second's worth of starts (at least one) and refills
//! continuously at the queue's rate. It starts empty — when the limit is set, and when a
//! leader is elected — so that in any interval of length T a shard's leader starts at most
//! `rate × T + one second's worth` of the queue's tasks, and a failover adds no burst of
//! its own.

use dtc_proto::hash::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One start, in bucket units: a rate of R starts per hour adds R units per millisecond.
const ONE: u64 = 3_600_000;

#[derive(Debug)]
struct Bucket {
    per_hour: u64,
    units: u64,
    at: Instant,
}

impl Bucket {
    /// The most units it holds: one second of its rate, and at least one start.
    fn capacity(&self) -> u64 {
        self.per_hour.saturating_mul(1_000).max(ONE)
    }

    fn refill(&mut self, now: Instant) {
        let ms =
            u64::try_from(now.saturating_duration_since(self.at).as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return;
        }
        self.at += Duration::from_millis(ms);
        self.units = self
            .units
            .saturating_add(ms.saturating_mul(self.per_hour))
            .min(self.capacity());
    }
}

/// The limited queues and their buckets.
#[derive(Debug, Default)]
pub(super) struct RateLimits {
    buckets: HashMap<Arc<str>, Bucket>,
}

impl RateLimits {
    /// Limits exactly the queues in `limits` (name, starts per hour), as of `now`: a bucket
    /// whose rate is unchanged keeps what it holds, any other starts empty.
    pub fn set(&mut self, limits: &[(String, u64)], now: Instant) {
        let mut old = std::mem::take(&mut self.buckets);
        for (queue, per_hour) in limits {
            let bucket = match old.remove(queue.as_str()) {
                Some(b) if b.per_hour == *per_hour => b,
                _ => Bucket {
                    per_hour: *per_hour,
                    units: 0,
                    at: now,
                },
            };
            self.buckets.insert(Arc::from(queue.as_str()), bucket);
        }
    }

    /// Whether no queue is limited (then nothing here needs a lookup).
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Adds what each bucket earned up to `now`.
    pub fn refill(&mut self, now: Instant) {
        for b in self.buckets.values_mut() {
            b.refill(now);
        }
    }

    /// Whether a task of `queue` may start now.
    pub fn allows(&self, queue: &str) -> bool {
        self.buckets.get(queue).is_none_or(|b| b.units >= ONE)
    }

    /// A task of `queue` started.
    pub fn take(&mut self, queue: &str) {
        if let Some(b) = self.buckets.get_mut(queue) {
            b.units = b.units.saturating_sub(ONE);
        }
    }

    /// When the first of `queues` that is held by its bucket may start its next task.
    pub fn next_start<'q>(&self, queues: impl IntoIterator<Item = &'q str>) -> Option<Instant> {
        queues
            .into_iter()
            .filter_map(|q| self.buckets.get(q))
            .filter(|b| b.units < ONE && b.per_hour > 0)
            .map(|b| b.at + Duration::from_millis((ONE - b.units).div_ceil(b.per_hour)))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts(r: &mut RateLimits, queue: &str) -> u32 {
        let mut n = 0;
        while r.allows(queue) {
            r.take(queue);
            n += 1;
        }
        n
    }

    #[test]
    fn a_bucket_starts_empty_refills_at_its_rate_and_holds_one_second() {
        let t0 = Instant::now();
        let mut r = RateLimits::default();
        r.set(&[("slow".into(), 10 * 3600)], t0);
        assert!(!r.allows("slow"), "empty when set");
        assert!(r.allows("other"), "other queues are not limited");
        assert_eq!(
            r.next_start(["slow"]),
            Some(t0 + Duration::from_millis(100))
        );
        r.refill(t0 + Duration::from_millis(250));
        assert_eq!(starts(&mut r, "slow"), 2, "10/s: two in 250 ms");
        // Idle for a minute: it holds one second's worth, no more.
        r.refill(t0 + Duration::from_secs(60));
        assert_eq!(starts(&mut r, "slow"), 10);
        // Setting the same rate keeps the bucket; a new rate starts it empty.
        r.refill(t0 + Duration::from_secs(61));
        r.set(&[("slow".into(), 10 * 3600)], t0 + Duration::from_secs(61));
        assert!(r.allows("slow"));
        r.set(&[("slow".into(), 20 * 3600)], t0 + Duration::from_secs(61));
        assert!(!r.allows("slow"));
        r.set(&[], t0 + Duration::from_secs(61));
        assert!(r.allows("slow") && r.is_empty());
    }

    #[test]
    fn slow_rates_are_exact_and_never_below_one_start() {
        let t0 = Instant::now();
        let mut r = RateLimits::default();
        r.set(&[("hourly".into(), 1)], t0);
        r.refill(t0 + Duration::from_secs(3599));
        assert!(!r.allows("hourly"));
        r.refill(t0 + Duration::from_secs(3600));
        assert_eq!(starts(&mut r, "hourly"), 1);
        r.refill(t0 + Duration::from_secs(5 * 3600));
        assert_eq!(
            starts(&mut r, "hourly"),
            1,
            "it holds at least one start, no more"
        );
    }
}
