//! The leader's runtime: everything a replica holds only while it leads its shard — the
//! scheduler, the connected workers, the clients waiting for results, the tasks it knows
//! before the table does, the claims of reconnecting workers, its clock and its counters.
//! The actor makes one when this replica is elected and drops it when it steps down, so
//! nothing of one term's runtime survives into the next.
//!
//! It decides and does no I/O: each method reads the task table it is given, changes the
//! runtime, and writes what must happen into an [`Effects`] outbox — commands to propose
//! (each with its follow-up, a [`Then`]), answers, messages to workers, lookups to answer
//! after the proposals before them. The actor performs them.
//!
//! Only the leader schedules. On election it proposes an empty barrier entry; once that is
//! applied, everything before it is in the table, and the ready queue is rebuilt from the
//! table's unfinished tasks — after a short grace, so that workers reconnecting from the old
//! leader can first report what they still run.

use super::actor::Runtime;
use super::clock::LeaderClock;
use super::early::EarlyTasks;
use super::stats::Stats;
use crate::net::Reply;
use crate::sched::{Scheduler, WorkerId};
use crate::shard::{Applied, Command, Retention, SubmitOutcome, TaskTable};
use dtc_proto::message::{Assignment, CoordMsg, RequestBody, WorkerMsg};
use dtc_proto::status::{SettingsChange, WorkerStatus};
use dtc_proto::{TaskId, TaskState, TaskView, WireError};
use foldhash::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How often the leader proposes the expiry of old results.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// What to do once a command has been applied.
pub(super) enum Then {
    /// Answer the submitter (now, or when the task finishes if `wait`).
    Submitted {
        id: TaskId,
        reply: Reply,
        wait: bool,
    },
    /// Answer a cancel.
    Cancelled(Reply),
    /// Answer an operator's change of settings.
    Configured(oneshot::Sender<Result<Retention, WireError>>),
    /// An attempt of this task ended (a completion or a lost worker): if the attempt was
    /// stale and the task is still queued but runs nowhere, it must be made ready again.
    Ended(TaskId),
    /// Nobody to answer (expiry).
    Nothing,
}

impl Then {
    /// Answers whoever waits on this with `err`.
    pub(super) fn fail(self, err: &WireError) {
        match self {
            Self::Submitted { reply, .. } | Self::Cancelled(reply) => {
                reply.send(Err(err.clone()));
            }
            Self::Configured(tx) => {
                tx.send(Err(err.clone())).ok();
            }
            Self::Ended(_) | Self::Nothing => {}
        }
    }

    /// Answers from what was applied, with no leader runtime left to schedule or to hold
    /// waiters (this replica stepped down meanwhile): a submitter that waits for an
    /// unfinished task is told to go to the new leader.
    pub(super) fn answer_as_follower(self, applied: Applied, leader: Option<String>) {
        match (applied, self) {
            (
                Applied::Submitted(Ok(SubmitOutcome { view, .. })),
                Self::Submitted { reply, wait, .. },
            ) => {
                if wait && !view.state.is_finished() {
                    reply.send(Err(WireError::NotLeader { leader }));
                } else {
                    reply.send(Ok(view));
                }
            }
            (Applied::Submitted(Err(e)) | Applied::CancelRefused(_, e), then) => {
                then.fail(&e);
            }
            (Applied::Finished(view), Self::Cancelled(reply)) => reply.send(Ok(view)),
            (Applied::Configured(retention), Self::Configured(tx)) => {
                tx.send(Ok(retention)).ok();
            }
            (_, then) => then.fail(&WireError::NotLeader { leader }),
        }
    }
}

/// A lookup: the task, whether to wait for its end, who asked.
pub(super) type Read = (TaskId, bool, Reply);

/// What the leader's decisions ask the actor to do, in order within each kind.
#[derive(Default)]
pub(super) struct Effects {
    /// Commands to propose, each with what to do once it is applied.
    pub propose: Vec<(Command, Then)>,
    /// Lookups, to answer once the proposals before them are applied.
    pub reads: Vec<Read>,
    /// Answers to send now.
    pub answers: Vec<(Reply, Result<TaskView, WireError>)>,
    /// Messages to workers; a worker whose queue is closed or full is then dropped.
    pub sends: Vec<(WorkerId, CoordMsg)>,
}

/// What a leader is made with: this replica's flags.
#[derive(Clone, Debug)]
pub(super) struct LeaderConfig {
    /// This replica's address, for its counters' labels.
    pub replica: String,
    pub heartbeat_timeout: Duration,
    /// How long reconnecting workers have to report what they run after an election.
    pub reclaim_grace: Duration,
    /// The largest payload accepted.
    pub max_payload: usize,
    /// The settings a new shard takes from its first leader.
    pub initial_settings: Retention,
}

/// A connected worker.
struct WorkerConn {
    name: String,
    peer: SocketAddr,
    tx: mpsc::Sender<CoordMsg>,
    cancel: CancellationToken,
    /// Attempts it has completed for this leader.
    done: u64,
    /// The tasks it runs at once (the scheduler counts its capacity, taking ahead included).
    slots: u32,
}

/// A worker that registered, as its session reports it.
#[derive(Debug)]
pub(super) struct NewWorker {
    pub worker: WorkerId,
    pub name: String,
    pub peer: SocketAddr,
    pub tx: mpsc::Sender<CoordMsg>,
    pub slots: u32,
    pub capacity: u32,
    pub kinds: Vec<String>,
    pub running: Vec<(TaskId, u32)>,
    pub cancel: CancellationToken,
}

/// The runtime of this replica's term as leader.
pub(super) struct Leader {
    config: LeaderConfig,
    /// The election barrier is applied and the ready queue rebuilt.
    ready: bool,
    /// The barrier entry is still to be proposed.
    barrier_due: bool,
    sched: Scheduler,
    workers: HashMap<WorkerId, WorkerConn>,
    /// Clients waiting for a task to finish.
    waiters: HashMap<TaskId, Vec<Reply>>,
    early: EarlyTasks,
    /// Unfinished tasks found at election, enqueued once the grace has passed.
    reclaim: HashSet<TaskId>,
    reclaim_at: Option<Instant>,
    /// Attempts workers said they hold before the election barrier was applied.
    early_claims: Vec<(WorkerId, Vec<(TaskId, u32)>)>,
    /// The election barrier's index: tasks created or re-queued by entries up to it are in
    /// the rebuilt queue already.
    rebuilt_upto: u64,
    last_expire: Instant,
    /// The time stamped on the commands this leader proposes.
    clock: LeaderClock,
    stats: Stats,
    /// Completions from a worker session that does not hold the attempt: ignored.
    ignored_completions: metrics::Counter,
    /// Attempts a registering worker said it holds that it does not: ignored.
    ignored_reports: metrics::Counter,
}

impl Leader {
    /// The runtime of a term that starts now, over `table` as this replica has applied it.
    pub(super) fn elected(config: LeaderConfig, table: &TaskTable, now: Instant) -> Self {
        let label = config.replica.clone();
        Self {
            sched: Scheduler::new(config.heartbeat_timeout),
            stats: Stats::new(&label, now),
            clock: LeaderClock::start_now(table.clock_ms()),
            ignored_completions: metrics::counter!(
                "dtc_worker_completions_ignored_total",
                "replica" => label.clone()
            ),
            ignored_reports: metrics::counter!(
                "dtc_worker_reports_ignored_total",
                "replica" => label
            ),
            config,
            ready: false,
            barrier_due: true,
            workers: HashMap::default(),
            waiters: HashMap::default(),
            early: EarlyTasks::default(),
            reclaim: HashSet::default(),
            reclaim_at: None,
            early_claims: Vec::new(),
            rebuilt_upto: 0,
            last_expire: now,
        }
    }

    /// The time to stamp on a command proposed `now`.
    pub(super) fn at_ms(&self, now: Instant) -> u64 {
        self.clock.at(now)
    }

    /// Whether the barrier entry is still to be proposed (true once, then false).
    pub(super) fn take_barrier_due(&mut self) -> bool {
        std::mem::take(&mut self.barrier_due)
    }

    /// Whether the election barrier is applied and the leader schedules.
    pub(super) fn is_ready(&self) -> bool {
        self.ready
    }

    /// How many attempts run on the workers.
    pub(super) fn running(&self) -> usize {
        self.sched.running_len()
    }

    /// A worker's queue, to send it what [`Effects::sends`] holds.
    pub(super) fn link(&self, worker: WorkerId) -> Option<&mpsc::Sender<CoordMsg>> {
        self.workers.get(&worker).map(|w| &w.tx)
    }

    /// A client's request.
    pub(super) fn request(
        &mut self,
        body: RequestBody,
        reply: Reply,
        table: &TaskTable,
        now: Instant,
        out: &mut Effects,
    ) {
        let at_ms = self.clock.at(now);
        match body {
            RequestBody::Submit { task, wait } => {
                if let Err(e) = task.check(self.config.max_payload) {
                    out.answers.push((reply, Err(e)));
                    return;
                }
                let reply = if wait {
                    // Another submitter waiting for a task that runs unlogged joins it.
                    match self.early.wait_unlogged(task.id, reply) {
                        Ok(()) => return,
                        Err(reply) => reply,
                    }
                } else {
                    // This submitter wants an acknowledgement now: log the task (if it
                    // runs unlogged).
                    self.log_unlogged(task.id, at_ms, out);
                    reply
                };
                let id = task.id;
                let new = self.ready
                    && !self.early.submitting(id)
                    && table.admits(&task, self.early.ahead()).is_ok_and(|new| new);
                if new {
                    self.stats.arrived(id, now);
                    self.sched.enqueue(id, &task.kind);
                    if wait {
                        self.early.run_unlogged(task, reply);
                        return;
                    }
                    self.early.run_ahead(task.clone());
                } else {
                    self.early.proposing(id);
                }
                out.propose.push((
                    Command::Submit { spec: task, at_ms },
                    Then::Submitted { id, reply, wait },
                ));
            }
            // Answered once the proposals before it are applied, so that a lookup sees the
            // submits that came before it.
            RequestBody::Get { id, wait } => out.reads.push((id, wait, reply)),
            RequestBody::Cancel { id } => {
                if self.sched.running_on(id).is_some() {
                    let reason = "the task is running; only queued tasks can be cancelled".into();
                    out.answers
                        .push((reply, Err(WireError::BadRequest { reason })));
                } else {
                    self.log_unlogged(id, at_ms, out);
                    out.propose
                        .push((Command::Cancel { id, at_ms }, Then::Cancelled(reply)));
                }
            }
        }
    }

    /// Logs the submit of a task that has so far run unlogged (if it is one). Its waiting
    /// submitters are answered when it finishes.
    fn log_unlogged(&mut self, id: TaskId, at_ms: u64, out: &mut Effects) {
        let Some((spec, replies)) = self.early.log(id) else {
            return;
        };
        let mut replies = replies.into_iter();
        let then = match replies.next() {
            Some(reply) => Then::Submitted {
                id,
                reply,
                wait: true,
            },
            None => Then::Nothing,
        };
        for reply in replies {
            self.wait_for(id, reply);
        }
        out.propose.push((Command::Submit { spec, at_ms }, then));
    }

    /// A worker registered.
    pub(super) fn worker_up(&mut self, w: NewWorker, table: &TaskTable, now: Instant) {
        self.sched.add_worker(w.worker, w.capacity, w.kinds, now);
        self.claim(w.worker, w.running, table);
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
    pub(super) fn worker_msg(
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
            WorkerMsg::Completed(c) => {
                // Only the session holding the task's current attempt completes it.
                let holds = self.sched.running_on(c.id) == Some((worker, c.attempt));
                self.sched.completed(worker, c.id);
                if !holds {
                    self.ignored_completions.increment(1);
                    return;
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
                    at_ms,
                };
                out.propose.push((cmd, Then::Ended(c.id)));
            }
        }
    }

    /// An operator's change of the shard's settings.
    pub(super) fn configure(
        change: SettingsChange,
        reply: oneshot::Sender<Result<Retention, WireError>>,
        table: &TaskTable,
        out: &mut Effects,
    ) {
        match changed(table.retention(), change) {
            Ok(retention) => out
                .propose
                .push((Command::Configure { retention }, Then::Configured(reply))),
            Err(e) => {
                reply.send(Err(e)).ok();
            }
        }
    }

    /// Time passed: workers past their heartbeat deadline are dropped, the reclaim grace
    /// ends, old results expire.
    pub(super) fn tick(&mut self, now: Instant, table: &TaskTable, out: &mut Effects) {
        self.stats.tick(now);
        let at_ms = self.clock.at(now);
        for worker in self.sched.expired(now) {
            tracing::warn!(
                worker,
                "worker missed its heartbeats; re-queueing its tasks"
            );
            self.drop_worker(worker, at_ms, out);
        }
        if self.reclaim_at.is_some_and(|at| now >= at) {
            self.reclaim_at = None;
            for id in std::mem::take(&mut self.reclaim) {
                if self.sched.running_on(id).is_none() {
                    self.enqueue(id, table);
                }
            }
        }
        if now.saturating_duration_since(self.last_expire) >= EXPIRE_EVERY {
            self.last_expire = now;
            out.propose.push((Command::Expire { at_ms }, Then::Nothing));
        }
    }

    /// A worker is gone (its connection closed, it missed its heartbeats, or its queue
    /// broke): its attempts are re-queued.
    pub(super) fn drop_worker(&mut self, worker: WorkerId, at_ms: u64, out: &mut Effects) {
        if let Some(conn) = self.workers.remove(&worker) {
            conn.cancel.cancel();
        }
        for (id, attempt) in self.sched.remove_worker(worker) {
            self.log_unlogged(id, at_ms, out);
            out.propose
                .push((Command::Requeue { id, attempt, at_ms }, Then::Ended(id)));
        }
    }

    /// A command proposed by this leader was applied at log `index`, with `applied`.
    pub(super) fn applied(
        &mut self,
        applied: Applied,
        then: Then,
        index: u64,
        table: &TaskTable,
        now: Instant,
        out: &mut Effects,
    ) {
        let fresh = index > self.rebuilt_upto;
        match (applied, then) {
            (
                Applied::Submitted(Ok(SubmitOutcome { view, created })),
                Then::Submitted { reply, wait, .. },
            ) => {
                let ran_ahead = self.early.applied(view.id);
                if created {
                    self.stats.submitted();
                } else {
                    // An existing task's id: whatever arrived under it was not new.
                    self.stats.forget(view.id);
                }
                if created && fresh && !ran_ahead {
                    self.enqueue(view.id, table);
                }
                let view = self.overlay(view);
                if wait && !view.state.is_finished() {
                    self.wait_for(view.id, reply);
                } else {
                    out.answers.push((reply, Ok(view)));
                }
            }
            (Applied::Submitted(Err(e)), Then::Submitted { id, reply, .. }) => {
                // A task scheduled ahead whose submit the table refused: an entry still in
                // the ready queue is dropped when its turn comes (it has no input), and a
                // run completes into nothing.
                self.stats.forget(id);
                if self.early.applied(id) {
                    self.sched.forget(id);
                }
                // Submitters of a task that ran unlogged wait for its end: tell them too.
                for waiting in self.waiters.remove(&id).unwrap_or_default() {
                    out.answers.push((waiting, Err(e.clone())));
                }
                out.answers.push((reply, Err(e)));
            }
            (Applied::Requeued(id), _) => {
                self.stats.retried();
                if fresh {
                    self.enqueue(id, table);
                }
            }
            (Applied::Finished(view), then) => {
                self.sched.forget(view.id);
                self.stats.finished(view.id, view.state, now);
                for reply in self.waiters.remove(&view.id).unwrap_or_default() {
                    out.answers.push((reply, Ok(view.clone())));
                }
                if let Then::Cancelled(reply) = then {
                    out.answers.push((reply, Ok(view)));
                }
            }
            (Applied::CancelRefused(_, e), Then::Cancelled(reply)) => {
                out.answers.push((reply, Err(e)));
            }
            (Applied::Configured(retention), then) => {
                tracing::info!(?retention, "the shard's settings are set");
                if let Then::Configured(tx) = then {
                    tx.send(Ok(retention)).ok();
                }
            }
            (Applied::Nothing, Then::Ended(id)) => {
                // A stale attempt ended; the current one may have been lost with an earlier
                // connection of the same worker. Make sure the task can still run.
                if self.ready && self.sched.running_on(id).is_none() {
                    self.enqueue(id, table);
                }
            }
            (
                applied,
                then @ (Then::Submitted { .. } | Then::Cancelled(_) | Then::Configured(_)),
            ) => {
                tracing::error!(?applied, "a command yielded an unexpected result");
                then.fail(&WireError::Unavailable {
                    reason: "internal error".into(),
                });
            }
            (
                Applied::Submitted(_) | Applied::CancelRefused(..) | Applied::Nothing,
                Then::Nothing | Then::Ended(_),
            ) => {}
        }
    }

    /// The election barrier is applied at `barrier_index`: every unfinished task goes back
    /// to the ready queue, the ones not reported by a reconnected worker after the grace.
    /// (The table may already hold entries after the barrier too; their tasks are enqueued
    /// by their own results as well, and the scheduler skips a second entry of a task that
    /// runs or has finished.)
    pub(super) fn barrier_applied(
        &mut self,
        barrier_index: u64,
        table: &TaskTable,
        now: Instant,
        out: &mut Effects,
    ) {
        let queued: HashSet<TaskId> = table.queued_tasks().map(|(id, _)| id).collect();
        tracing::info!(
            unfinished = queued.len(),
            "election barrier applied; re-queueing unfinished tasks after the grace"
        );
        self.rebuilt_upto = barrier_index;
        if !table.configured() {
            // The shard's first leader: its flags become the shard's settings.
            let retention = self.config.initial_settings;
            out.propose
                .push((Command::Configure { retention }, Then::Nothing));
        }
        self.reclaim = queued;
        self.reclaim_at = Some(now + self.config.reclaim_grace);
        self.ready = true;
        for (worker, running) in std::mem::take(&mut self.early_claims) {
            if self.workers.contains_key(&worker) {
                self.claim(worker, running, table);
            }
        }
    }

    /// A registering worker says it holds these attempts. Its word is taken only where this
    /// leader cannot know better: for a task unfinished at its election and not yet
    /// re-queued (within the grace), and only for the task's current attempt. Anything else
    /// is ignored (and counted), and runs as usual. Claims made before the election barrier
    /// is applied are judged once it is.
    fn claim(&mut self, worker: WorkerId, running: Vec<(TaskId, u32)>, table: &TaskTable) {
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
                .filter(|(id, attempt)| {
                    table
                        .queued_input(*id)
                        .is_some_and(|(current, ..)| current == *attempt)
                })
                .collect()
        } else {
            Vec::new()
        };
        if held.len() < reported {
            self.ignored_reports
                .increment((reported - held.len()) as u64);
        }
        self.sched.hold(worker, held);
    }

    /// Answers `reply` when the task finishes. Waiters whose client has gone are dropped
    /// here, so clients that wait and disconnect over and over cannot grow the list.
    fn wait_for(&mut self, id: TaskId, reply: Reply) {
        let waiting = self.waiters.entry(id).or_default();
        waiting.retain(|r| !r.is_closed());
        waiting.push(reply);
    }

    /// Puts a queued task in the scheduler's ready queue for its type.
    fn enqueue(&mut self, id: TaskId, table: &TaskTable) {
        if let Some((_, kind, _)) = table.queued_input(id) {
            self.sched.enqueue(id, kind);
        }
    }

    /// Hands ready tasks to free worker slots.
    pub(super) fn schedule(&mut self, table: &TaskTable, out: &mut Effects) {
        let early = &self.early;
        let input = |id: TaskId| table.queued_input(id).or_else(|| early.input(id));
        for a in self
            .sched
            .assign(|id| input(id).map(|(attempt, ..)| attempt))
        {
            let Some((_, kind, payload)) = input(a.id) else {
                continue;
            };
            let msg = CoordMsg::Assign(Assignment {
                id: a.id,
                attempt: a.attempt,
                kind: kind.to_owned(),
                payload: payload.clone(),
            });
            out.sends.push((a.worker, msg));
        }
    }

    /// A lookup, answered from the table with what this leader knows of running tasks.
    pub(super) fn read(&mut self, read: Read, table: &TaskTable, out: &mut Effects) {
        let (id, wait, reply) = read;
        match self.view(id, table) {
            None => out.answers.push((reply, Err(WireError::NotFound))),
            Some(v) if wait && !v.state.is_finished() => self.wait_for(id, reply),
            Some(v) => out.answers.push((reply, Ok(v))),
        }
    }

    /// The task as a client sees it: the table's view, with `Running` where it runs.
    fn view(&self, id: TaskId, table: &TaskTable) -> Option<TaskView> {
        let v = table.view(id).or_else(|| {
            self.early.is_unlogged(id).then_some(TaskView {
                id,
                state: TaskState::Queued,
                attempts: 0,
                outcome: None,
            })
        });
        v.map(|v| self.overlay(v))
    }

    fn overlay(&self, mut view: TaskView) -> TaskView {
        if view.state == TaskState::Queued && self.sched.running_on(view.id).is_some() {
            view.state = TaskState::Running;
            view.attempts += 1;
        }
        view
    }

    /// What `dtc status` shows of this runtime.
    pub(super) fn runtime(&self, now: Instant) -> Runtime {
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
        }
    }

    /// The term ends: every waiting client is answered `err`, and every worker is told
    /// (dropping its queue lets its writer send that and close; it reconnects to whoever
    /// leads).
    pub(super) fn step_down(mut self, err: &WireError) {
        for reply in self.waiters.drain().flat_map(|(_, r)| r) {
            reply.send(Err(err.clone()));
        }
        for reply in self.early.drain_waiting() {
            reply.send(Err(err.clone()));
        }
        for (_, w) in self.workers.drain() {
            w.tx.try_send(CoordMsg::Error(err.clone())).ok();
        }
    }
}

/// The settings `current` with `change` made, or why the change is refused.
fn changed(current: Retention, change: SettingsChange) -> Result<Retention, WireError> {
    let count = |n: u64, what: &str| {
        usize::try_from(n)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| WireError::BadRequest {
                reason: format!("{what} must be at least 1, not {n}"),
            })
    };
    Ok(Retention {
        result_ttl_ms: change.result_ttl_ms.unwrap_or(current.result_ttl_ms),
        max_results: match change.max_results {
            Some(n) => count(n, "max_results")?,
            None => current.max_results,
        },
        max_queued: match change.max_queued {
            Some(n) => count(n, "max_queued")?,
            None => current.max_queued,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use dtc_proto::message::Completion;
    use dtc_proto::{Outcome, TaskSpec};

    const GRACE: Duration = Duration::from_millis(500);

    fn config() -> LeaderConfig {
        LeaderConfig {
            replica: "test".into(),
            heartbeat_timeout: Duration::from_secs(1),
            reclaim_grace: GRACE,
            max_payload: 1024,
            initial_settings: Retention::default(),
        }
    }

    fn spec(n: u128) -> TaskSpec {
        TaskSpec {
            id: TaskId(n),
            kind: "noop".into(),
            payload: Bytes::from_static(b"in"),
            max_attempts: 3,
        }
    }

    fn submit(n: u128, wait: bool) -> RequestBody {
        RequestBody::Submit {
            task: spec(n),
            wait,
        }
    }

    fn done(n: u128, attempt: u32) -> WorkerMsg {
        WorkerMsg::Completed(Completion {
            id: TaskId(n),
            attempt,
            outcome: Outcome::Succeeded(Bytes::from_static(b"out")),
        })
    }

    /// A leader, its table, the log index it has reached, and the time.
    struct Shard {
        leader: Leader,
        table: TaskTable,
        index: u64,
        now: Instant,
        /// Worker queues, kept open.
        queues: Vec<mpsc::Receiver<CoordMsg>>,
    }

    impl Shard {
        /// A leader elected over `table`, its barrier applied.
        fn ready(table: TaskTable) -> Self {
            let now = Instant::now();
            let mut leader = Leader::elected(config(), &table, now);
            assert!(leader.take_barrier_due());
            assert!(!leader.take_barrier_due(), "the barrier is proposed once");
            let mut shard = Self {
                leader,
                table,
                index: 1,
                now,
                queues: Vec::new(),
            };
            let mut out = Effects::default();
            shard
                .leader
                .barrier_applied(1, &shard.table, shard.now, &mut out);
            shard.commit(out);
            assert!(shard.leader.is_ready());
            shard
        }

        fn worker(&mut self, worker: WorkerId, slots: u32, running: Vec<(TaskId, u32)>) {
            let (tx, rx) = mpsc::channel(64);
            self.queues.push(rx);
            let w = NewWorker {
                worker,
                name: format!("w{worker}"),
                peer: SocketAddr::from(([127, 0, 0, 1], 9000)),
                tx,
                slots,
                capacity: slots,
                kinds: vec!["noop".into()],
                running,
                cancel: CancellationToken::new(),
            };
            self.leader.worker_up(w, &self.table, self.now);
        }

        fn request(&mut self, body: RequestBody, req: u64) -> Effects {
            let (reply, _rx) = Reply::for_test(req);
            let mut out = Effects::default();
            self.leader
                .request(body, reply, &self.table, self.now, &mut out);
            out
        }

        fn worker_says(&mut self, worker: WorkerId, msg: WorkerMsg) -> Effects {
            let mut out = Effects::default();
            self.leader.worker_msg(worker, msg, self.now, &mut out);
            out
        }

        /// Commits and applies every proposed command in one entry, the leader told of
        /// each result; what that made it do next (answers, more proposals).
        fn commit(&mut self, mut out: Effects) -> Effects {
            self.index += 1;
            let mut next = Effects::default();
            for (cmd, then) in std::mem::take(&mut out.propose) {
                let applied = self.table.apply(cmd);
                self.leader
                    .applied(applied, then, self.index, &self.table, self.now, &mut next);
            }
            next.answers.extend(out.answers);
            next
        }

        /// The assignments the leader hands out now, as (worker, task, attempt).
        fn schedule(&mut self) -> Vec<(WorkerId, u128, u32)> {
            let mut out = Effects::default();
            self.leader.schedule(&self.table, &mut out);
            out.sends
                .into_iter()
                .filter_map(|(w, msg)| match msg {
                    CoordMsg::Assign(a) => Some((w, a.id.0, a.attempt)),
                    _ => None,
                })
                .collect()
        }
    }

    /// The request numbers answered, with whether each answer is a finished task.
    fn answered(out: &Effects) -> Vec<(u64, Result<TaskState, WireError>)> {
        out.answers
            .iter()
            .map(|(r, a)| (r.req(), a.as_ref().map(|v| v.state).map_err(Clone::clone)))
            .collect()
    }

    fn proposed(out: &Effects) -> Vec<&'static str> {
        out.propose
            .iter()
            .map(|(cmd, _)| match cmd {
                Command::Submit { .. } => "submit",
                Command::Complete { .. } => "complete",
                Command::Requeue { .. } => "requeue",
                Command::Cancel { .. } => "cancel",
                Command::Expire { .. } => "expire",
                Command::Configure { .. } => "configure",
            })
            .collect()
    }

    #[test]
    fn a_new_shards_first_leader_proposes_its_settings_at_the_barrier() {
        let table = TaskTable::new(Retention::default());
        let mut leader = Leader::elected(config(), &table, Instant::now());
        let mut out = Effects::default();
        leader.barrier_applied(1, &table, Instant::now(), &mut out);
        assert_eq!(proposed(&out), ["configure"]);
    }

    #[test]
    fn a_waiting_submit_runs_unlogged_and_is_logged_with_its_completion() {
        let mut s = Shard::ready(TaskTable::new(Retention::default()));
        s.worker(1, 2, Vec::new());
        let out = s.request(submit(1, true), 10);
        assert!(proposed(&out).is_empty(), "nothing logged on arrival");
        assert!(out.answers.is_empty());
        assert_eq!(s.schedule(), [(1, 1, 1)], "it runs at once");
        let out = s.worker_says(1, done(1, 1));
        assert_eq!(proposed(&out), ["submit", "complete"], "one entry for both");
        let out = s.commit(out);
        assert_eq!(answered(&out), [(10, Ok(TaskState::Succeeded))]);
        assert_eq!(s.leader.early.ahead(), 0);
    }

    #[test]
    fn a_submit_without_wait_is_proposed_at_once_and_runs_ahead_of_its_commit() {
        let mut s = Shard::ready(TaskTable::new(Retention::default()));
        s.worker(1, 2, Vec::new());
        let out = s.request(submit(1, false), 10);
        assert_eq!(proposed(&out), ["submit"]);
        assert_eq!(
            s.schedule(),
            [(1, 1, 1)],
            "it runs before its submit commits"
        );
        let out = s.commit(out);
        assert_eq!(answered(&out), [(10, Ok(TaskState::Running))]);
        assert!(s.schedule().is_empty(), "committing does not run it twice");
        let out = s.worker_says(1, done(1, 1));
        assert_eq!(proposed(&out), ["complete"]);
    }

    #[test]
    fn a_completion_from_a_session_that_does_not_hold_the_attempt_changes_nothing() {
        let mut s = Shard::ready(TaskTable::new(Retention::default()));
        s.worker(1, 1, Vec::new());
        s.worker(2, 1, Vec::new());
        let out = s.request(submit(1, false), 10);
        let running = s.schedule();
        s.commit(out);
        let (holder, _, _) = running[0];
        let other = if holder == 1 { 2 } else { 1 };
        assert!(proposed(&s.worker_says(other, done(1, 1))).is_empty());
        assert_eq!(s.leader.sched.running_on(TaskId(1)), Some((holder, 1)));
        assert_eq!(proposed(&s.worker_says(holder, done(1, 1))), ["complete"]);
    }

    #[test]
    fn a_lost_worker_has_its_attempts_requeued_and_run_again() {
        let mut s = Shard::ready(TaskTable::new(Retention::default()));
        s.worker(1, 1, Vec::new());
        let out = s.request(submit(1, true), 10);
        assert!(proposed(&out).is_empty());
        assert_eq!(s.schedule(), [(1, 1, 1)]);
        let mut out = Effects::default();
        s.leader.drop_worker(1, 0, &mut out);
        // The unlogged task is logged first, then its lost attempt.
        assert_eq!(proposed(&out), ["submit", "requeue"]);
        s.commit(out);
        s.worker(2, 1, Vec::new());
        assert_eq!(s.schedule(), [(2, 1, 2)], "the second attempt");
    }

    #[test]
    fn a_reconnecting_workers_claim_is_taken_only_for_its_tasks_current_attempt() {
        // Tasks 1 and 2 queued by an earlier leader; task 2 already lost one attempt.
        let mut table = TaskTable::new(Retention::default());
        for n in [1, 2] {
            table.apply(Command::Submit {
                spec: spec(n),
                at_ms: 0,
            });
        }
        table.apply(Command::Requeue {
            id: TaskId(2),
            attempt: 1,
            at_ms: 0,
        });
        let mut s = Shard::ready(table);
        // It says it runs attempt 1 of both, and of a task the table does not hold.
        s.worker(1, 4, vec![(TaskId(1), 1), (TaskId(2), 1), (TaskId(9), 1)]);
        s.worker(2, 4, Vec::new());
        assert!(
            s.schedule().is_empty(),
            "within the grace, nothing is re-queued"
        );
        s.now += GRACE;
        let mut out = Effects::default();
        s.leader.tick(s.now, &s.table, &mut out);
        // Task 1 is left with the worker that claimed it; task 2 runs again, attempt 2.
        let mut runs = s.schedule();
        runs.sort_unstable();
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!((runs[0].1, runs[0].2), (2, 2));
        assert_eq!(proposed(&s.worker_says(1, done(1, 1))), ["complete"]);
    }

    #[test]
    fn tasks_run_ahead_count_against_the_queue_bound() {
        let retention = Retention {
            max_queued: 2,
            ..Retention::default()
        };
        let mut table = TaskTable::new(retention);
        table.apply(Command::Configure { retention });
        let mut s = Shard::ready(table);
        // Task 1 runs unlogged; task 2 is in the table: the bound of 2 is reached.
        s.request(submit(1, true), 10);
        let out = s.request(submit(2, false), 11);
        s.commit(out);
        // Task 3 is not run ahead; its submit goes to the table, which has room for it
        // (task 1 is not in it), and it runs once applied.
        let out = s.request(submit(3, false), 12);
        assert_eq!(proposed(&out), ["submit"]);
        s.worker(1, 8, Vec::new());
        let mut runs = s.schedule();
        runs.sort_unstable();
        assert_eq!(runs, [(1, 1, 1), (1, 2, 1)]);
        let out = s.commit(out);
        assert_eq!(answered(&out), [(12, Ok(TaskState::Queued))]);
        assert_eq!(s.schedule(), [(1, 3, 1)]);
        // With tasks 2 and 3 in the table, it refuses a fourth.
        let out = s.request(submit(4, false), 13);
        let out = s.commit(out);
        assert_eq!(answered(&out), [(13, Err(WireError::Overloaded))]);
    }

    #[test]
    fn a_running_task_cannot_be_cancelled_and_a_queued_one_can() {
        let mut s = Shard::ready(TaskTable::new(Retention::default()));
        s.worker(1, 1, Vec::new());
        let first = s.request(submit(1, false), 10);
        let second = s.request(submit(2, false), 11);
        s.commit(first);
        s.commit(second);
        assert_eq!(s.schedule().len(), 1, "one slot");
        let running = if s.leader.sched.running_on(TaskId(1)).is_some() {
            1
        } else {
            2
        };
        let queued = 3 - running;
        let out = s.request(
            RequestBody::Cancel {
                id: TaskId(running),
            },
            20,
        );
        assert!(proposed(&out).is_empty());
        assert!(matches!(
            answered(&out)[..],
            [(20, Err(WireError::BadRequest { .. }))]
        ));
        let out = s.request(RequestBody::Cancel { id: TaskId(queued) }, 21);
        assert_eq!(proposed(&out), ["cancel"]);
        let out = s.commit(out);
        assert_eq!(answered(&out), [(21, Ok(TaskState::Cancelled))]);
    }

    #[test]
    fn before_its_barrier_a_leader_runs_nothing_ahead() {
        let table = TaskTable::new(Retention::default());
        let mut leader = Leader::elected(config(), &table, Instant::now());
        let (reply, _rx) = Reply::for_test(1);
        let mut out = Effects::default();
        leader.request(submit(1, true), reply, &table, Instant::now(), &mut out);
        assert_eq!(proposed(&out), ["submit"], "logged like any other");
        assert_eq!(leader.early.ahead(), 0);
    }
}
