//! Time as the leader sees it: each tick (heartbeats missed, the reclaim grace ended,
//! schedules due, old results expired), the timers of start times, expiries and attempt
//! deadlines, the ready queue fed from the table, and the election barrier after which the
//! queue is rebuilt.

use super::{Effects, Leader, Then};
use crate::sched::Ready;
use crate::shard::{Command, Input, TaskTable};
use dtc_proto::hash::HashSet;
use dtc_proto::message::CoordMsg;
use dtc_proto::message::WorkerMsg;
use dtc_proto::{Outcome, Retry, TaskId};
use std::time::{Duration, Instant};

/// At most this many tasks whose start time came enter the ready queue per turn of the
/// actor's loop (the rest in the next turns, at once), so that the first of a large burst
/// start without waiting for the whole burst to be queued.
const STARTS_PER_TURN: usize = 1024;

/// How often the leader proposes the expiry of old results.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// Where and how urgently the scheduler queues a task the table says is runnable.
fn ready_of<'a>(input: &Input<'a>) -> Ready<'a> {
    Ready {
        queue: input.queue,
        priority: input.priority,
        key: input.key,
        since_ms: input.since_ms,
    }
}

impl Leader {
    /// Time passed: workers past their heartbeat deadline are dropped, the reclaim grace
    /// ends, due timers fire, old results expire.
    pub(in crate::coordinator) fn tick(
        &mut self,
        now: Instant,
        table: &TaskTable,
        out: &mut Effects,
    ) {
        self.stats.tick(now);
        let at_ms = self.clock.at(now);
        self.fire_timers(at_ms, table, out);
        for worker in self.sched.expired(now) {
            tracing::warn!(
                worker,
                "worker missed its heartbeats; re-queueing its tasks"
            );
            self.drop_worker(worker, at_ms, out);
        }
        if self.ready {
            for f in self.firings.due(at_ms) {
                let cmd = Command::Fire {
                    name: f.name.to_string(),
                    tick_ms: f.tick_ms,
                    run: f.run,
                    missed: f.missed,
                    at_ms,
                };
                out.propose.push((cmd, Then::Nothing));
            }
        }
        if self.reclaim_at.is_some_and(|at| now >= at) {
            self.reclaim_at = None;
            for id in std::mem::take(&mut self.reclaim) {
                if self.sched.running_on(id).is_none() {
                    self.enqueue(id, table, now);
                }
            }
            self.sched.end_reservations();
        }
        if now.saturating_duration_since(self.last_expire) >= EXPIRE_EVERY {
            self.last_expire = now;
            out.propose.push((Command::Expire { at_ms }, Then::Nothing));
        }
    }

    /// Acts on the timers due at `at_ms`: tasks whose time came enter the ready queue (in
    /// due-time order); tasks not started by their expiry, and attempts past their
    /// deadline, are failed through the log (the overrunning attempt's worker is told to
    /// stop it). Timers that no longer apply are dropped.
    pub(super) fn fire_timers(&mut self, at_ms: u64, table: &TaskTable, out: &mut Effects) {
        if !self.ready {
            return;
        }
        // Timers of tasks finished since (cancelled before their time) are dropped once
        // they outnumber the unfinished tasks, which the queue bound limits.
        if self.timers.len() > 2 * table.unfinished_len() + STARTS_PER_TURN {
            self.timers.retain(|id| table.timing(id).is_some());
        }
        let due = self.timers.take_due(at_ms, STARTS_PER_TURN);
        for id in due.starts {
            if self.sched.running_on(id).is_none()
                && let Some(input) = table.runnable(id, at_ms)
            {
                self.sched.enqueue(id, input.kind, ready_of(&input));
            }
        }
        for id in due.expiries {
            let lapsed = self.sched.running_on(id).is_none()
                && table
                    .timing(id)
                    .and_then(|t| t.expires_at_ms)
                    .is_some_and(|t| t <= at_ms);
            if lapsed {
                out.propose
                    .push((Command::Lapse { id, at_ms }, Then::Ended(id)));
            }
        }
        for (id, attempt) in due.deadlines {
            let Some((worker, running)) = self.sched.running_on(id) else {
                continue;
            };
            if running != attempt {
                continue;
            }
            let limit = table.timing(id).and_then(|t| t.timeout_ms).unwrap_or(0);
            let outcome = Outcome::Failed(format!(
                "timed out: attempt {attempt} ran longer than its timeout of {limit} ms"
            ));
            out.sends.push((worker, CoordMsg::Cancel { id, attempt }));
            // The attempt no longer runs as far as scheduling goes; its worker keeps the
            // slot until it reports that it stopped.
            self.sched.forget(id);
            let cmd = Command::Complete {
                id,
                attempt,
                outcome,
                retry: Retry::Policy,
                at_ms,
            };
            out.propose.push((cmd, Then::Ended(id)));
        }
    }

    /// Puts an unfinished task in the scheduler's ready queue for its type, or, if it waits
    /// for a time, sets its timer; a task that may expire gets that timer too.
    pub(super) fn enqueue(&mut self, id: TaskId, table: &TaskTable, now: Instant) {
        let Some(timing) = table.timing(id) else {
            return;
        };
        let now_ms = self.clock.at(now);
        if let Some(at) = timing.expires_at_ms {
            self.timers.expire_at(at, id);
        }
        if timing.due_ms > now_ms {
            self.timers.start_at(timing.due_ms, id);
        } else if let Some(input) = table.runnable(id, now_ms) {
            self.sched.enqueue(id, input.kind, ready_of(&input));
        }
    }

    /// The election barrier is applied at `barrier_index`: every unfinished task goes back
    /// to the ready queue, the ones not reported by a reconnected worker after the grace.
    /// (The table may already hold entries after the barrier too; their tasks are enqueued
    /// by their own results as well, and the scheduler skips a second entry of a task that
    /// runs or has finished.)
    pub(in crate::coordinator) fn barrier_applied(
        &mut self,
        barrier_index: u64,
        table: &TaskTable,
        now: Instant,
        out: &mut Effects,
    ) {
        let queued: HashSet<TaskId> = table.unfinished_tasks().collect();
        tracing::info!(
            unfinished = queued.len(),
            "election barrier applied; re-queueing unfinished tasks after the grace"
        );
        self.rebuilt_upto = barrier_index;
        // A pause or limit committed under the last leader may have been applied since
        // election.
        self.sched.set_all_paused(table.paused_queues());
        self.sched.set_rates(table.queue_rates(), now);
        if !table.configured() {
            // The shard's first leader: its flags become the shard's settings.
            let retention = self.config.initial_settings;
            out.propose
                .push((Command::Configure { retention }, Then::Nothing));
        }
        // Which keyed tasks run is not in the table: any that may have started under the
        // last leader counts under its key until its worker claims it or the grace ends.
        let now_ms = self.clock.at(now);
        for id in &queued {
            if let Some((key, _)) = table.key_of(*id)
                && table.runnable(*id, now_ms).is_some()
            {
                self.sched.reserve(key);
            }
        }
        for (_, s) in table.schedules().iter() {
            self.firings.load(&s.spec, s.paused, s.last_tick_ms);
        }
        self.reclaim = queued;
        self.reclaim_at = Some(now + self.config.reclaim_grace);
        self.ready = true;
        for (worker, running) in std::mem::take(&mut self.early_claims) {
            if self.workers.contains_key(&worker) {
                self.claim(worker, running, table, now);
            }
        }
        for (worker, c) in std::mem::take(&mut self.early_completions) {
            self.worker_msg(worker, WorkerMsg::Completed(c), now, out);
        }
    }
}
