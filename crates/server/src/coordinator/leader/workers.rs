//! The leader's workers: registration (with the attempts a reconnecting worker claims),
//! their messages (heartbeats, progress, completions), their loss, the assignment of ready
//! tasks to free slots, and what `dtc status` shows of them.

use super::{Effects, Leader, NewWorker, Then, WorkerConn};
use crate::coordinator::actor::Runtime;
use crate::sched::WorkerId;
use crate::shard::{Command, TaskTable};
use dtc_proto::TaskId;
use dtc_proto::message::{Assignment, Completion, CoordMsg, WorkerMsg};
use dtc_proto::status::WorkerStatus;
use std::time::Instant;

impl Leader {
    /// A worker registered.
    pub(in crate::coordinator) fn worker_up(
        &mut self,
        w: NewWorker,
        table: &TaskTable,
        now: Instant,
    ) {
        self.sched
            .add_worker(w.worker, w.capacity, w.kinds, &w.queues, now);
        if w.weights.iter().any(|weight| *weight != 1) {
            let weights: Vec<(String, u32)> = w
                .queues
                .iter()
                .cloned()
                .zip(w.weights.iter().copied())
                .collect();
            self.sched.set_weights(w.worker, &weights);
        }
        self.claim(w.worker, w.running, table, now);
        self.workers.insert(
            w.worker,
            WorkerConn {
                name: w.name,
                peer: w.peer,
                tx: w.tx,
                cancel: w.cancel,
                done: 0,
                slots: w.slots,
            },
        );
    }

    /// A message from a registered worker.
    pub(in crate::coordinator) fn worker_msg(
        &mut self,
        worker: WorkerId,
        msg: WorkerMsg,
        now: Instant,
        out: &mut Effects,
    ) {
        self.sched.seen(worker, now);
        match msg {
            // A full queue is busy with assignments, which say as much.
            WorkerMsg::Heartbeat => out.sends.push((worker, CoordMsg::Alive)),
            WorkerMsg::Register { .. } => {}
            WorkerMsg::Draining => self.sched.drain(worker),
            WorkerMsg::Progress {
                id,
                attempt,
                progress,
            } => {
                // Only the session holding the attempt reports for it; kept while it runs.
                if self.sched.running_on(id) == Some((worker, attempt)) && progress.is_valid() {
                    self.progress.insert(id, progress);
                }
            }
            WorkerMsg::Completed(c) => {
                if !self.ready && self.claimed_early(worker, &c) {
                    // Whether the worker holds it is judged at the barrier; ignoring the
                    // completion now would leave the attempt held by it for good.
                    self.early_completions.push((worker, c));
                    return;
                }
                // Only the session holding the task's current attempt completes it.
                let holds = self.sched.running_on(c.id) == Some((worker, c.attempt));
                self.sched.completed(worker, c.id, c.attempt);
                if !holds {
                    self.ignored_completions.increment(1);
                    return;
                }
                // A report lives while a worker runs the task: at most one per busy slot.
                if !self.progress.is_empty() {
                    self.progress.remove(&c.id);
                }
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.done += 1;
                }
                let at_ms = self.clock.at(now);
                // An unlogged task's submit and completion share one entry.
                self.log_unlogged(c.id, at_ms, out);
                let cmd = Command::Complete {
                    id: c.id,
                    attempt: c.attempt,
                    outcome: c.outcome,
                    retry: c.retry,
                    at_ms,
                };
                out.propose.push((cmd, Then::Ended(c.id)));
            }
        }
    }

    /// A worker is gone (its connection closed, it missed its heartbeats, or its queue
    /// broke): its attempts are re-queued.
    pub(in crate::coordinator) fn drop_worker(
        &mut self,
        worker: WorkerId,
        at_ms: u64,
        out: &mut Effects,
    ) {
        if let Some(conn) = self.workers.remove(&worker) {
            conn.cancel.cancel();
        }
        for (id, attempt) in self.sched.remove_worker(worker) {
            self.progress.remove(&id);
            self.log_unlogged(id, at_ms, out);
            out.propose
                .push((Command::Requeue { id, attempt, at_ms }, Then::Ended(id)));
        }
    }

    /// Whether `worker` claimed `c`'s attempt before the barrier, and no completion of it
    /// is kept yet.
    pub(super) fn claimed_early(&self, worker: WorkerId, c: &Completion) -> bool {
        let attempt = (c.id, c.attempt);
        self.early_claims
            .iter()
            .any(|(w, held)| *w == worker && held.contains(&attempt))
            && !self
                .early_completions
                .iter()
                .any(|(w, kept)| *w == worker && (kept.id, kept.attempt) == attempt)
    }

    /// A registering worker says it holds these attempts. Its word is taken only where this
    /// leader cannot know better: for a task unfinished at its election and not yet
    /// re-queued (within the grace), and only for the task's current attempt. Anything else
    /// is ignored (and counted), and runs as usual. Claims made before the election barrier
    /// is applied are judged once it is.
    pub(super) fn claim(
        &mut self,
        worker: WorkerId,
        running: Vec<(TaskId, u32)>,
        table: &TaskTable,
        now: Instant,
    ) {
        if running.is_empty() {
            return;
        }
        if !self.ready {
            self.early_claims.push((worker, running));
            return;
        }
        let reported = running.len();
        let held: Vec<(TaskId, u32)> = if self.reclaim_at.is_some() {
            running
                .into_iter()
                .filter(|(id, _)| self.reclaim.contains(id))
                .filter(|(id, _)| self.sched.running_on(*id).is_none())
                .filter(|(id, attempt)| table.next_attempt(*id) == Some(*attempt))
                .collect()
        } else {
            Vec::new()
        };
        if held.len() < reported {
            self.ignored_reports
                .increment((reported - held.len()) as u64);
        }
        // A claimed attempt's deadline counts from now: when it started is not known here.
        let now_ms = self.clock.at(now);
        for (id, attempt) in &held {
            if let Some(timeout) = table.timing(*id).and_then(|t| t.timeout_ms) {
                self.timers
                    .deadline(now_ms.saturating_add(timeout), *id, *attempt);
            }
        }
        let with_keys = held
            .into_iter()
            .map(|(id, attempt)| (id, attempt, table.key_of(id).map(|(key, _)| key)));
        self.sched.hold(worker, with_keys);
    }

    /// Hands ready tasks to free worker slots; a timed attempt's deadline is set.
    pub(in crate::coordinator) fn schedule(
        &mut self,
        table: &TaskTable,
        now: Instant,
        out: &mut Effects,
    ) {
        let now_ms = self.clock.at(now);
        let early = &self.early;
        let input = |id: TaskId| table.runnable(id, now_ms).or_else(|| early.input(id));
        for a in self.sched.assign(now, |id| input(id).map(|i| i.attempt)) {
            let Some(i) = input(a.id) else {
                continue;
            };
            if let Some(timeout) = i.timeout_ms {
                self.timers
                    .deadline(now_ms.saturating_add(timeout), a.id, a.attempt);
            }
            let msg = CoordMsg::Assign(Assignment {
                id: a.id,
                attempt: a.attempt,
                kind: i.kind.to_owned(),
                payload: i.payload.clone(),
            });
            out.sends.push((a.worker, msg));
        }
    }

    /// What `dtc status` shows of this runtime.
    pub(in crate::coordinator) fn runtime(&self, now: Instant) -> Runtime {
        let mut workers: Vec<WorkerStatus> = self
            .workers
            .iter()
            .map(|(id, w)| {
                let (capacity, busy) = self.sched.load(*id).unwrap_or_default();
                WorkerStatus {
                    name: w.name.clone(),
                    addr: w.peer.to_string(),
                    slots: w.slots,
                    capacity,
                    busy,
                    done: w.done,
                    heartbeat_age_ms: self.sched.last_seen(*id).map_or(0, |seen| {
                        u64::try_from(now.saturating_duration_since(seen).as_millis())
                            .unwrap_or(u64::MAX)
                    }),
                }
            })
            .collect();
        workers.sort_by(|a, b| (&a.name, &a.addr).cmp(&(&b.name, &b.addr)));
        Runtime {
            running: self.sched.running_len() as u64,
            workers,
            stats: self.stats.report(),
            states: None,
        }
    }
}
