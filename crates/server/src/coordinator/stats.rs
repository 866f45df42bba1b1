//! The leader's counters, owned by the actor: tasks submitted, completed, failed and
//! retried, and how long tasks took from their arrival at this leader to their end. They go
//! two ways: into [`LeaderStats`] for `dtc status` and `dtc top` (latency percentiles over
//! the last full second), and into the process's metrics recorder (`/metrics`), where one is
//! installed.

use dtc_proto::hash::HashMap;
use dtc_proto::status::LeaderStats;
use dtc_proto::{TaskId, TaskState};
use hdrhistogram::Histogram;
use metrics::{Counter, Histogram as MetricHistogram, counter, histogram};
use std::time::{Duration, Instant};

/// The latency window `dtc top` shows.
const WINDOW: Duration = Duration::from_secs(1);

/// Counters of one term as leader (made at election, dropped with the leader's runtime).
pub(super) struct Stats {
    now: LeaderStats,
    /// When each task still to finish arrived.
    arrived: HashMap<TaskId, Instant>,
    /// Latencies (µs) of the tasks finished in the current window, and in the last full one.
    current: Option<Histogram<u64>>,
    last: (Option<u64>, Option<u64>),
    window_start: Instant,
    exported: Exported,
}

/// The same events, as Prometheus series labelled with this replica's address.
struct Exported {
    submitted: Counter,
    completed: Counter,
    failed: Counter,
    cancelled: Counter,
    retried: Counter,
    latency: MetricHistogram,
}

impl Stats {
    pub(super) fn new(replica: &str, now: Instant) -> Self {
        let label = [("replica", replica.to_owned())];
        Self {
            now: LeaderStats::default(),
            arrived: HashMap::default(),
            // 1 µs to 1 hour at 2 significant digits: a few kilobytes.
            current: Histogram::new_with_bounds(1, 3_600_000_000, 2).ok(),
            last: (None, None),
            window_start: now,
            exported: Exported {
                submitted: counter!("dtc_tasks_submitted_total", &label),
                completed: counter!("dtc_tasks_completed_total", &label),
                failed: counter!("dtc_tasks_failed_total", &label),
                cancelled: counter!("dtc_tasks_cancelled_total", &label),
                retried: counter!("dtc_tasks_retried_total", &label),
                latency: histogram!("dtc_task_duration_seconds", &label),
            },
        }
    }

    /// A new task reached this leader.
    pub(super) fn arrived(&mut self, id: TaskId, now: Instant) {
        self.arrived.entry(id).or_insert(now);
    }

    /// A task that arrived will not be tracked to its end here (its submit was refused).
    pub(super) fn forget(&mut self, id: TaskId) {
        self.arrived.remove(&id);
    }

    /// A new task entered the table.
    pub(super) fn submitted(&mut self) {
        self.now.submitted += 1;
        self.exported.submitted.increment(1);
    }

    /// An attempt went back to the queue.
    pub(super) fn retried(&mut self) {
        self.now.retried += 1;
        self.exported.retried.increment(1);
    }

    /// A task finished in `state`.
    pub(super) fn finished(&mut self, id: TaskId, state: TaskState, now: Instant) {
        match state {
            TaskState::Succeeded => {
                self.now.completed += 1;
                self.exported.completed.increment(1);
            }
            TaskState::Failed => {
                self.now.failed += 1;
                self.exported.failed.increment(1);
            }
            TaskState::Cancelled => self.exported.cancelled.increment(1),
            TaskState::Scheduled | TaskState::Queued | TaskState::Running | TaskState::Retrying => {
            }
        }
        if let Some(at) = self.arrived.remove(&id) {
            let took = now.saturating_duration_since(at);
            self.exported.latency.record(took.as_secs_f64());
            if let Some(h) = &mut self.current {
                let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                h.saturating_record(us.max(1));
            }
        }
    }

    /// Closes the latency window once a second (called on the actor's tick).
    pub(super) fn tick(&mut self, now: Instant) {
        if now.saturating_duration_since(self.window_start) < WINDOW {
            return;
        }
        self.window_start = now;
        if let Some(h) = &mut self.current {
            self.last = if h.is_empty() {
                (None, None)
            } else {
                (
                    Some(h.value_at_quantile(0.5)),
                    Some(h.value_at_quantile(0.95)),
                )
            };
            h.reset();
        }
    }

    /// The counters as `dtc status` reports them.
    pub(super) fn report(&self) -> LeaderStats {
        LeaderStats {
            p50_us: self.last.0,
            p95_us: self.last.1,
            ..self.now.clone()
        }
    }
}
