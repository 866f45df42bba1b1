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
//!
//! Time drives the lifecycle through [`Timers`] set from the table: a scheduled or retrying
//! task enters the ready queue when its time comes, a task not started by its expiry is
//! failed (a committed `Lapse`), and an attempt that overruns its timeout is failed
//! (a committed completion) and its worker told to stop it. A cancelled running task's
//! worker is told the same once the cancel is committed.

use super::actor::Runtime;
use super::clock::LeaderClock;
use super::early::EarlyTasks;
use super::queue_rates::QueueRates;
use super::stats::Stats;
use super::timers::Timers;
use crate::net::Reply;
use crate::sched::{Firings, Ready, Scheduler, WorkerId};
use crate::shard::{Applied, Command, Input, Listed, Retention, SubmitOutcome, TaskTable};
use dtc_proto::hash::{HashMap, HashSet};
use dtc_proto::message::{Assignment, Completion, CoordMsg, RequestBody, WorkerMsg};
use dtc_proto::schedule::{ScheduleOp, ScheduleSpec, ScheduleStatus};
use dtc_proto::status::{
    Cursor, QueueOp, QueueStatus, SettingsChange, StateCounts, TaskPage, TaskQuery, WorkerStatus,
};
use dtc_proto::{
    Outcome, Retry, TaskId, TaskOptions, TaskProgress, TaskSpec, TaskState, TaskView, WireError,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// At most this many tasks whose start time came enter the ready queue per turn of the
/// actor's loop (the rest in the next turns, at once), so that the first of a large burst
/// start without waiting for the whole burst to be queued.
const STARTS_PER_TURN: usize = 1024;

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
    /// Answer a cancel or a retry with the task as it then stands.
    Answer(Reply),
    /// Answer an operator's change of settings.
    Configured(oneshot::Sender<Result<Retention, WireError>>),
    /// Answer an operator's purge with how many tasks went.
    Purged(oneshot::Sender<Result<u64, WireError>>),
    /// Answer an operator's change of a type's defaults with every type's.
    TypeDefaults(oneshot::Sender<TypeDefaultsAnswer>),
    /// Answer an operator's pause or resume of a queue with every queue.
    Queues(oneshot::Sender<QueuesAnswer>),
    /// Answer an operator's change of a schedule with it as it then stands.
    Schedules(oneshot::Sender<SchedulesAnswer>),
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
            Self::Submitted { reply, .. } | Self::Answer(reply) => {
                reply.send(Err(err.clone()));
            }
            Self::Configured(tx) => {
                tx.send(Err(err.clone())).ok();
            }
            Self::Purged(tx) => {
                tx.send(Err(err.clone())).ok();
            }
            Self::TypeDefaults(tx) => {
                tx.send(Err(err.clone())).ok();
            }
            Self::Queues(tx) => {
                tx.send(Err(err.clone())).ok();
            }
            Self::Schedules(tx) => {
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
            (Applied::Submitted(Err(e)) | Applied::Refused(_, e), then) => {
                then.fail(&e);
            }
            (Applied::Finished(view) | Applied::Retried(view), Self::Answer(reply)) => {
                reply.send(Ok(view));
            }
            (Applied::Configured(retention), Self::Configured(tx)) => {
                tx.send(Ok(retention)).ok();
            }
            (Applied::Purged(n), Self::Purged(tx)) => {
                tx.send(Ok(n)).ok();
            }
            (Applied::TypeDefaults(all), Self::TypeDefaults(tx)) => {
                tx.send(all).ok();
            }
            (Applied::Schedule { result, .. }, Self::Schedules(tx)) => {
                tx.send(result).ok();
            }
            (_, then) => then.fail(&WireError::NotLeader { leader }),
        }
    }
}

/// Every task type's defaults, or why a change of them was refused.
pub(super) type TypeDefaultsAnswer = Result<Vec<(String, TaskOptions)>, WireError>;

/// Every queue, or why a pause or resume was refused.
pub(super) type QueuesAnswer = Result<Vec<QueueStatus>, WireError>;

/// What an operator's question about the schedules is answered with.
pub(super) type SchedulesAnswer = Result<Vec<ScheduleStatus>, WireError>;

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
    /// Reads the wall clock when the term starts.
    pub wall_clock: fn() -> u64,
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
    pub queues: Vec<String>,
    /// Each queue's weight, in the order of `queues`.
    pub weights: Vec<u32>,
    pub running: Vec<(TaskId, u32)>,
    pub cancel: CancellationToken,
}

/// Where and how urgently the scheduler queues a task the table says is runnable.
fn ready_of<'a>(input: &Input<'a>) -> Ready<'a> {
    Ready {
        queue: input.queue,
        priority: input.priority,
        key: input.key,
        since_ms: input.since_ms,
    }
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
    /// Completions of those claimed attempts that came before the barrier too (a worker
    /// sends a finished attempt's completion right after its registration): taken once the
    /// claims are, at most one per claimed attempt.
    early_completions: Vec<(WorkerId, Completion)>,
    /// The election barrier's index: tasks created or re-queued by entries up to it are in
    /// the rebuilt queue already.
    rebuilt_upto: u64,
    last_expire: Instant,
    /// Start times, expiries and attempt deadlines.
    timers: Timers,
    /// The time stamped on the commands this leader proposes.
    clock: LeaderClock,
    stats: Stats,
    /// Finished tasks per queue, for `dtc queue list`.
    rates: QueueRates,
    /// The schedules' next ticks (loaded once the election barrier is applied).
    firings: Firings,
    /// The last progress reported by each running attempt's handler (runtime only: a new
    /// leader knows none until the handler reports again).
    progress: HashMap<TaskId, TaskProgress>,
    /// Completions from a worker session that does not hold the attempt: ignored.
    ignored_completions: metrics::Counter,
    /// Attempts a registering worker said it holds that it does not: ignored.
    ignored_reports: metrics::Counter,
}

impl Leader {
    /// The runtime of a term that starts now, over `table` as this replica has applied it.
    pub(super) fn elected(config: LeaderConfig, table: &TaskTable, now: Instant) -> Self {
        let label = config.replica.clone();
        let mut sched = Scheduler::new(config.heartbeat_timeout);
        sched.set_all_paused(table.paused_queues());
        sched.set_rates(table.queue_rates(), now);
        Self {
            sched,
            rates: QueueRates::new(now),
            firings: Firings::default(),
            progress: HashMap::default(),
            stats: Stats::new(&label, now),
            clock: LeaderClock::start((config.wall_clock)(), table.clock_ms(), now),
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
            early_completions: Vec::new(),
            rebuilt_upto: 0,
            last_expire: now,
            timers: Timers::default(),
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

    /// When the earliest timer is due, or a rate-limited queue may start its next task,
    /// for the actor to wake then.
    pub(super) fn next_timer(&self, now: Instant) -> Option<Instant> {
        let now_ms = self.clock.at(now);
        let timer = self
            .timers
            .next_ms()
            .map(|at| now + Duration::from_millis(at.saturating_sub(now_ms)));
        let tick = self
            .firings
            .next_ms()
            .map(|at| now + Duration::from_millis(at.saturating_sub(now_ms)));
        [timer, self.sched.next_rate_start(), tick]
            .into_iter()
            .flatten()
            .min()
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
                // Some tasks run only once the table holds them (and with it their type's
                // defaults).
                let plain = task.options.as_deref().is_none_or(|o| !o.needs_table())
                    && table.type_defaults(&task.kind).is_none();
                let new = plain
                    && self.ready
                    && !self.early.submitting(id)
                    && table.admits(&task, self.early.ahead()).is_ok_and(|new| new);
                if new {
                    self.stats.arrived(id, now);
                    let ready = Ready {
                        queue: task.queue(),
                        priority: task.priority(),
                        key: None,
                        since_ms: at_ms,
                    };
                    self.sched.enqueue(id, &task.kind, ready);
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
            // A running task's worker is told to stop once the cancel is committed.
            RequestBody::Cancel { id } => {
                self.log_unlogged(id, at_ms, out);
                out.propose
                    .push((Command::Cancel { id, at_ms }, Then::Answer(reply)));
            }
            RequestBody::Retry { id } => {
                out.propose
                    .push((Command::Retry { id, at_ms }, Then::Answer(reply)));
            }
            // Client sessions take waits back themselves; none reaches here.
            RequestBody::Unwait { .. } => out.answers.push((
                reply,
                Err(WireError::BadRequest {
                    reason: "only a router's connection takes waits back".into(),
                }),
            )),
        }
    }

    /// Drops the waiting requests nobody wants an answer for any more (their clients
    /// left), giving back what they hold of their connections' bounds.
    pub(super) fn drop_abandoned(&mut self) {
        self.waiters.retain(|_, waiting| {
            waiting.retain(|r| !r.is_abandoned());
            !waiting.is_empty()
        });
        self.early.drop_abandoned();
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

    /// An operator sets (or with `None` clears) a task type's defaults.
    pub(super) fn set_type_defaults(
        kind: String,
        options: Option<TaskOptions>,
        reply: oneshot::Sender<TypeDefaultsAnswer>,
        out: &mut Effects,
    ) {
        if kind.is_empty() || kind.len() > TaskSpec::MAX_KIND_LEN {
            let reason = format!("a task type is 1 to {} bytes", TaskSpec::MAX_KIND_LEN);
            reply.send(Err(WireError::BadRequest { reason })).ok();
            return;
        }
        // The same bounds as a task's own options.
        if let Some(o) = &options
            && let Err(e) = TaskSpec::new(kind.as_str(), "")
                .with_options(o.clone())
                .check_shape()
        {
            reply.send(Err(e)).ok();
            return;
        }
        let cmd = Command::SetTypeDefaults {
            kind,
            options: options.map(Box::new),
        };
        out.propose.push((cmd, Then::TypeDefaults(reply)));
    }

    /// An operator's question about the queues: a list is answered now, a pause or resume
    /// once committed.
    pub(super) fn queues(
        &self,
        op: QueueOp,
        reply: oneshot::Sender<QueuesAnswer>,
        table: &TaskTable,
        now: Instant,
        out: &mut Effects,
    ) {
        if let QueueOp::Pause(queue) | QueueOp::Resume(queue) | QueueOp::Limit(queue, _) = &op
            && let Err(e) = dtc_proto::check_queue_name(queue)
        {
            reply.send(Err(e)).ok();
            return;
        }
        let cmd = match op {
            QueueOp::List => {
                reply.send(Ok(self.queue_list(table, now))).ok();
                return;
            }
            QueueOp::Pause(queue) => Command::PauseQueue {
                queue,
                paused: true,
            },
            QueueOp::Resume(queue) => Command::PauseQueue {
                queue,
                paused: false,
            },
            QueueOp::Limit(queue, per_hour) => Command::LimitQueue { queue, per_hour },
        };
        out.propose.push((cmd, Then::Queues(reply)));
    }

    /// Every queue this leader knows of: with tasks ready or running, served by a worker,
    /// paused, or with tasks finished lately; by name.
    fn queue_list(&self, table: &TaskTable, now: Instant) -> Vec<QueueStatus> {
        let ready = self.sched.ready_by_queue();
        let workers = self.sched.workers_by_queue();
        let mut running: HashMap<String, u64> = HashMap::default();
        for id in self.sched.running_tasks() {
            let queue = table
                .queue_of(id)
                .or_else(|| self.early.input(id).map(|i| i.queue))
                .unwrap_or(TaskSpec::DEFAULT_QUEUE);
            *running.entry(queue.to_owned()).or_default() += 1;
        }
        let paused = table.paused_queues();
        let limits = table.queue_rates();
        let names: std::collections::BTreeSet<String> = ready
            .keys()
            .chain(workers.keys())
            .chain(self.rates.queues())
            .map(|q| q.to_string())
            .chain(running.keys().cloned())
            .chain(paused.iter().cloned())
            .chain(limits.iter().map(|(q, _)| q.clone()))
            .collect();
        names
            .into_iter()
            .map(|name| QueueStatus {
                queued: ready.get(name.as_str()).map_or(0, |n| *n as u64),
                running: running.get(&name).copied().unwrap_or(0),
                workers: workers.get(name.as_str()).copied().unwrap_or(0),
                paused: paused.binary_search(&name).is_ok(),
                done_per_s: self.rates.per_s(&name, now),
                rate_per_hour: limits
                    .binary_search_by(|(q, _)| q.cmp(&name))
                    .ok()
                    .and_then(|i| limits.get(i))
                    .map(|(_, rate)| *rate),
                name,
            })
            .collect()
    }

    /// An operator's question about the schedules: a list is answered now, a change once
    /// committed.
    pub(super) fn schedules(
        &self,
        op: ScheduleOp,
        reply: oneshot::Sender<SchedulesAnswer>,
        table: &TaskTable,
        now: Instant,
        out: &mut Effects,
    ) {
        let at_ms = self.clock.at(now);
        let cmd = match op {
            ScheduleOp::List { after } => {
                // Next ticks from the firings (no calendar to read per schedule).
                let page = table
                    .schedules()
                    .after(after.as_deref())
                    .take(ScheduleSpec::MAX_LISTED)
                    .map(|s| s.status_with(self.firings.next_of(&s.spec.name)))
                    .collect();
                reply.send(Ok(page)).ok();
                return;
            }
            ScheduleOp::Add(spec) => {
                let checked = crate::shard::check_schedule(&spec).and_then(|()| {
                    let len = spec.payload.len();
                    if len > self.config.max_payload {
                        return Err(WireError::BadRequest {
                            reason: format!(
                                "the payload is {len} bytes; this cluster takes at most {} \
                                 (--max-payload)",
                                self.config.max_payload
                            ),
                        });
                    }
                    Ok(())
                });
                if let Err(e) = checked {
                    reply.send(Err(e)).ok();
                    return;
                }
                Command::AddSchedule {
                    spec: Box::new(spec),
                    at_ms,
                }
            }
            ScheduleOp::Pause(name) => Command::PauseSchedule {
                name,
                paused: true,
                at_ms,
            },
            ScheduleOp::Resume(name) => Command::PauseSchedule {
                name,
                paused: false,
                at_ms,
            },
            ScheduleOp::Trigger(name) => Command::TriggerSchedule { name, at_ms },
            ScheduleOp::Delete(name) => Command::DeleteSchedule { name },
        };
        out.propose.push((cmd, Then::Schedules(reply)));
    }

    /// Tracks a schedule as the table now holds it (or no more, once deleted).
    fn reload_schedule(&mut self, name: &str, table: &TaskTable) {
        match table.schedules().get(name) {
            Some(s) => self.firings.load(&s.spec, s.paused, s.last_tick_ms),
            None => self.firings.remove(name),
        }
    }

    /// An operator's purge of the finished tasks in `state`.
    pub(super) fn purge(
        &self,
        state: TaskState,
        reply: oneshot::Sender<Result<u64, WireError>>,
        now: Instant,
        out: &mut Effects,
    ) {
        if !state.is_finished() {
            let reason = format!(
                "only finished tasks can be purged (failed, succeeded, cancelled), not {}",
                state.name()
            );
            reply.send(Err(WireError::BadRequest { reason })).ok();
            return;
        }
        let at_ms = self.clock.at(now);
        out.propose
            .push((Command::Purge { state, at_ms }, Then::Purged(reply)));
    }

    /// Time passed: workers past their heartbeat deadline are dropped, the reclaim grace
    /// ends, due timers fire, old results expire.
    pub(super) fn tick(&mut self, now: Instant, table: &TaskTable, out: &mut Effects) {
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
    fn fire_timers(&mut self, at_ms: u64, table: &TaskTable, out: &mut Effects) {
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

    /// A worker is gone (its connection closed, it missed its heartbeats, or its queue
    /// broke): its attempts are re-queued.
    pub(super) fn drop_worker(&mut self, worker: WorkerId, at_ms: u64, out: &mut Effects) {
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
                if created && fresh {
                    if ran_ahead {
                        // Already in the ready queue (or running): only its expiry to time.
                        if let Some(at) = table.timing(view.id).and_then(|t| t.expires_at_ms) {
                            self.timers.expire_at(at, view.id);
                        }
                    } else {
                        self.enqueue(view.id, table, now);
                    }
                }
                let view = self.overlay(view, now);
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
            (Applied::Requeued(id) | Applied::Waiting(id), _) => {
                self.stats.retried();
                // The attempt that ended (a timed-out one may still be marked running).
                self.sched.forget(id);
                if fresh {
                    self.enqueue(id, table, now);
                }
            }
            (Applied::Retried(view), then) => {
                if fresh {
                    self.enqueue(view.id, table, now);
                }
                if let Then::Answer(reply) = then {
                    out.answers.push((reply, Ok(view)));
                }
            }
            (Applied::Finished(view), then) => {
                if let Some(queue) = table.queue_of(view.id) {
                    self.rates.done(queue, now);
                }
                if view.state == TaskState::Cancelled
                    && let Some((worker, attempt)) = self.sched.running_on(view.id)
                {
                    // Its worker stops it and keeps the slot until it reports that.
                    out.sends.push((
                        worker,
                        CoordMsg::Cancel {
                            id: view.id,
                            attempt,
                        },
                    ));
                }
                self.sched.forget(view.id);
                self.stats.finished(view.id, view.state, now);
                for reply in self.waiters.remove(&view.id).unwrap_or_default() {
                    out.answers.push((reply, Ok(view.clone())));
                }
                if let Then::Answer(reply) = then {
                    out.answers.push((reply, Ok(view)));
                }
            }
            (Applied::Refused(_, e), Then::Answer(reply)) => {
                out.answers.push((reply, Err(e)));
            }
            (Applied::Configured(retention), then) => {
                tracing::info!(?retention, "the shard's settings are set");
                if let Then::Configured(tx) = then {
                    tx.send(Ok(retention)).ok();
                }
            }
            (Applied::Purged(n), then) => {
                tracing::info!(tasks = n, "purged");
                if let Then::Purged(tx) = then {
                    tx.send(Ok(n)).ok();
                }
            }
            (Applied::TypeDefaults(all), then) => {
                if let Then::TypeDefaults(tx) = then {
                    tx.send(all).ok();
                }
            }
            (Applied::QueueRates(limits), then) => {
                if let Ok(limits) = &limits {
                    tracing::info!(?limits, "the queue rate limits are set");
                    self.sched.set_rates(limits, now);
                }
                if let Then::Queues(tx) = then {
                    tx.send(limits.map(|_| self.queue_list(table, now))).ok();
                }
            }
            (Applied::Fired(created), _) => {
                if let Some(id) = created.filter(|_| fresh && self.ready) {
                    self.enqueue(id, table, now);
                }
            }
            (
                Applied::Schedule {
                    name,
                    result,
                    created,
                },
                then,
            ) => {
                if self.ready {
                    self.reload_schedule(&name, table);
                }
                if let Some(id) = created.filter(|_| fresh && self.ready) {
                    self.enqueue(id, table, now);
                }
                if let Then::Schedules(tx) = then {
                    tx.send(result).ok();
                }
            }
            (Applied::QueuesPaused(paused), then) => {
                if let Ok(paused) = &paused {
                    tracing::info!(?paused, "the paused queues are set");
                    self.sched.set_all_paused(paused);
                }
                if let Then::Queues(tx) = then {
                    tx.send(paused.map(|_| self.queue_list(table, now))).ok();
                }
            }
            (Applied::Nothing, Then::Ended(id)) => {
                // A stale attempt ended; the current one may have been lost with an earlier
                // connection of the same worker. Make sure the task can still run.
                if self.ready && self.sched.running_on(id).is_none() {
                    self.enqueue(id, table, now);
                }
            }
            (
                applied,
                then @ (Then::Submitted { .. }
                | Then::Answer(_)
                | Then::Configured(_)
                | Then::Purged(_)
                | Then::TypeDefaults(_)
                | Then::Queues(_)
                | Then::Schedules(_)),
            ) => {
                tracing::error!(?applied, "a command yielded an unexpected result");
                then.fail(&WireError::Unavailable {
                    reason: "internal error".into(),
                });
            }
            (
                Applied::Submitted(_) | Applied::Refused(..) | Applied::Nothing,
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

    /// Whether `worker` claimed `c`'s attempt before the barrier, and no completion of it
    /// is kept yet.
    fn claimed_early(&self, worker: WorkerId, c: &Completion) -> bool {
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
    fn claim(
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

    /// Answers `reply` when the task finishes, unless nobody wants it any more. Waiters
    /// whose client has gone are dropped here too, besides [`Leader::drop_abandoned`].
    fn wait_for(&mut self, id: TaskId, reply: Reply) {
        if reply.is_abandoned() {
            return;
        }
        let waiting = self.waiters.entry(id).or_default();
        waiting.retain(|r| !r.is_abandoned());
        waiting.push(reply);
    }

    /// Puts an unfinished task in the scheduler's ready queue for its type, or, if it waits
    /// for a time, sets its timer; a task that may expire gets that timer too.
    fn enqueue(&mut self, id: TaskId, table: &TaskTable, now: Instant) {
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

    /// Hands ready tasks to free worker slots; a timed attempt's deadline is set.
    pub(super) fn schedule(&mut self, table: &TaskTable, now: Instant, out: &mut Effects) {
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

    /// A lookup, answered from the table with what this leader knows of running tasks.
    pub(super) fn read(&mut self, read: Read, table: &TaskTable, now: Instant, out: &mut Effects) {
        let (id, wait, reply) = read;
        match self.view(id, table, now) {
            None => out.answers.push((reply, Err(WireError::NotFound))),
            Some(v) if wait && !v.state.is_finished() => self.wait_for(id, reply),
            Some(v) => out.answers.push((reply, Ok(v))),
        }
    }

    /// The task as a client sees it: the table's view, with what only the leader knows.
    fn view(&self, id: TaskId, table: &TaskTable, now: Instant) -> Option<TaskView> {
        let v = table
            .view(id)
            .or_else(|| self.early.view(id, self.clock.at(now)));
        v.map(|v| self.overlay(v, now))
    }

    /// A table's view with `Running` where the task runs, `Queued` where its time has
    /// come and it waits for a slot, and whether any worker can run it.
    fn overlay(&self, mut view: TaskView, now: Instant) -> TaskView {
        if view.state.is_finished() {
            return view;
        }
        if self.sched.running_on(view.id).is_some() {
            view.state = TaskState::Running;
            view.attempts += 1;
            view.due_ms = None;
            view.progress = self.progress.get(&view.id).cloned();
            return view;
        }
        if view.due_ms.is_some_and(|due| due <= self.clock.at(now)) {
            view.state = TaskState::Queued;
            view.due_ms = None;
        }
        view.no_handler = !self.sched.handles(&view.kind);
        view
    }

    /// A page of the shard's tasks, newest first, as clients see them (running where they
    /// run). A scan of the whole table.
    pub(super) fn list(&self, query: &TaskQuery, table: &TaskTable, now: Instant) -> TaskPage {
        let limit = query.limit.clamp(1, TaskQuery::MAX_LIMIT) as usize;
        let now_ms = self.clock.at(now);
        let mut found: Vec<Cursor> = table
            .scan(query.before, query.kind.as_deref())
            .filter(|t| {
                query
                    .state
                    .is_none_or(|want| self.shown_state(t, now_ms) == want)
            })
            .map(|t| t.at)
            .collect();
        let newest_first = |a: &Cursor, b: &Cursor| b.cmp(a);
        if found.len() > limit {
            found.select_nth_unstable_by(limit, newest_first);
            found.truncate(limit + 1);
        }
        found.sort_unstable_by(newest_first);
        let next = (found.len() > limit).then(|| found[limit - 1]);
        found.truncate(limit);
        let tasks = found
            .iter()
            .filter_map(|at| self.view(at.id, table, now))
            .collect();
        TaskPage { tasks, next }
    }

    /// A listed task's state as clients see it (see [`Leader::overlay`]).
    fn shown_state(&self, t: &Listed, now_ms: u64) -> TaskState {
        if t.state.is_finished() {
            t.state
        } else if self.sched.running_on(t.at.id).is_some() {
            TaskState::Running
        } else if t.due_ms.is_some_and(|due| due <= now_ms) {
            TaskState::Queued
        } else {
            t.state
        }
    }

    /// How many tasks are in each state, running ones as this leader runs them.
    pub(super) fn state_counts(&self, table: &TaskTable) -> StateCounts {
        let mut counts = table.state_counts();
        for id in self.sched.running_tasks() {
            if let Some(v) = table.view(id).filter(|v| !v.state.is_finished()) {
                counts.sub(v.state);
            }
            counts.add(TaskState::Running);
        }
        counts
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
            states: None,
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
        failed_ttl_ms: change.failed_ttl_ms.unwrap_or(current.failed_ttl_ms),
        max_failed: match change.max_failed {
            Some(n) => count(n, "max_failed")?,
            None => current.max_failed,
        },
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
    use dtc_proto::{Outcome, TaskSpec};

    const GRACE: Duration = Duration::from_millis(500);

    fn config() -> LeaderConfig {
        LeaderConfig {
            replica: "test".into(),
            heartbeat_timeout: Duration::from_secs(1),
            reclaim_grace: GRACE,
            max_payload: 1024,
            initial_settings: Retention::default(),
            wall_clock: super::super::clock::system_ms,
        }
    }

    fn spec(n: u128) -> TaskSpec {
        TaskSpec {
            id: TaskId(n),
            kind: "noop".into(),
            payload: Bytes::from_static(b"in"),
            max_attempts: 3,
            options: None,
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
            retry: dtc_proto::Retry::Policy,
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
        /// Clients' connections, kept open (a reply whose client has gone is dropped).
        clients:
            Vec<mpsc::Receiver<dtc_proto::connection::WithPermit<dtc_proto::message::Response>>>,
    }

    impl Shard {
        /// A leader elected over `table`, its barrier applied.
        fn ready(table: TaskTable) -> Self {
            let mut shard = Self::elected(table);
            let out = shard.barrier();
            shard.commit(out);
            assert!(shard.leader.is_ready());
            shard
        }

        /// A leader elected over `table`, its barrier proposed but not yet applied.
        fn elected(table: TaskTable) -> Self {
            let now = Instant::now();
            let mut leader = Leader::elected(config(), &table, now);
            assert!(leader.take_barrier_due());
            assert!(!leader.take_barrier_due(), "the barrier is proposed once");
            Self {
                leader,
                table,
                index: 1,
                now,
                queues: Vec::new(),
                clients: Vec::new(),
            }
        }

        /// The barrier is applied; what the leader does then.
        fn barrier(&mut self) -> Effects {
            let mut out = Effects::default();
            self.leader
                .barrier_applied(self.index, &self.table, self.now, &mut out);
            out
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
                queues: Vec::new(),
                weights: Vec::new(),
                running,
                cancel: CancellationToken::new(),
            };
            self.leader.worker_up(w, &self.table, self.now);
        }

        fn request(&mut self, body: RequestBody, req: u64) -> Effects {
            let (reply, rx) = Reply::for_test(req);
            self.clients.push(rx);
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

        /// Time passes by `ms`: the leader's tick, with what it decided.
        fn advance(&mut self, ms: u64) -> Effects {
            self.now += Duration::from_millis(ms);
            let mut out = Effects::default();
            self.leader.tick(self.now, &self.table, &mut out);
            out
        }

        /// The assignments the leader hands out now, as (worker, task, attempt).
        fn schedule(&mut self) -> Vec<(WorkerId, u128, u32)> {
            let mut out = Effects::default();
            self.leader.schedule(&self.table, self.now, &mut out);
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
                Command::Retry { .. } => "retry",
                Command::Lapse { .. } => "lapse",
                Command::PauseQueue { .. } => "pause queue",
                Command::LimitQueue { .. } => "limit queue",
                Command::AddSchedule { .. } => "add schedule",
                Command::PauseSchedule { .. } => "pause schedule",
                Command::DeleteSchedule { .. } => "delete schedule",
                Command::TriggerSchedule { .. } => "trigger schedule",
                Command::Fire { .. } => "fire",
                Command::Purge { .. } => "purge",
                Command::SetTypeDefaults { .. } => "type defaults",
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
    fn a_completion_sent_before_the_barrier_for_a_claimed_attempt_counts_with_the_claim() {
        // Task 1 was assigned under an earlier leader; its worker finished it while no one
        // led, registers with the new leader before its barrier (claiming the attempt, as
        // it holds the completion still to send) and sends the completion at once.
        let mut table = TaskTable::new(Retention::default());
        table.apply(Command::Submit {
            spec: spec(1),
            at_ms: 0,
        });
        let mut s = Shard::elected(table);
        s.worker(1, 4, vec![(TaskId(1), 1)]);
        assert!(proposed(&s.worker_says(1, done(1, 1))).is_empty());
        // The same completion again, or one the worker did not claim, is not kept.
        assert!(proposed(&s.worker_says(1, done(1, 1))).is_empty());
        assert!(proposed(&s.worker_says(1, done(2, 1))).is_empty());
        let out = s.barrier();
        let after = proposed(&out);
        assert_eq!(
            after.iter().filter(|p| **p == "complete").count(),
            1,
            "{after:?}"
        );
        assert_eq!(s.leader.sched.running_on(TaskId(1)), None);
    }

    #[test]
    fn a_new_leader_counts_a_keys_tasks_from_the_table_and_the_claims() {
        // Tasks 1 to 3 of key k (one at a time) were queued under an earlier leader; task 1
        // ran on a worker that comes back.
        let keyed = |n: u128| {
            // The low 32 bits of a routed id are the key's.
            let spec = spec(n << 64).with_concurrency("k", 1);
            let id = spec.id;
            (spec, id)
        };
        let mut table = TaskTable::new(Retention::default());
        let mut ids = Vec::new();
        for n in 1..=3 {
            let (spec, id) = keyed(n);
            // A ms apart: their order is their rank, not the order of their re-queueing.
            table.apply(Command::Submit {
                spec,
                at_ms: u64::try_from(n).unwrap_or(0),
            });
            ids.push(id);
        }
        let mut s = Shard::ready(table);
        s.worker(2, 4, Vec::new());
        // A task of the key submitted now waits: any of the three may run on a worker
        // that is not back yet.
        let (fourth, _) = keyed(4);
        let out = s.request(
            RequestBody::Submit {
                task: fourth,
                wait: false,
            },
            10,
        );
        s.commit(out);
        assert!(s.schedule().is_empty());
        s.worker(1, 4, vec![(ids[0], 1)]);
        s.now += GRACE;
        let mut out = Effects::default();
        s.leader.tick(s.now, &s.table, &mut out);
        assert!(
            s.schedule().is_empty(),
            "past the grace, the claimed attempt still holds the key"
        );
        let out = s.worker_says(
            1,
            WorkerMsg::Completed(Completion {
                id: ids[0],
                attempt: 1,
                outcome: Outcome::Succeeded(Bytes::new()),
                retry: dtc_proto::Retry::Policy,
            }),
        );
        assert_eq!(proposed(&out), ["complete"]);
        s.commit(out);
        let runs = s.schedule();
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(TaskId(runs[0].1), ids[1], "the next of the key, in order");
    }

    #[test]
    fn a_schedule_added_through_the_leader_fires_each_tick_as_a_task() {
        use dtc_proto::schedule::{CatchUp, Overlap, ScheduleSpec, schedule_task_id};
        let mut s = Shard::ready(TaskTable::new(Retention::default()));
        s.worker(1, 4, Vec::new());
        let spec = ScheduleSpec {
            name: "every-second".into(),
            cron: "* * * * * *".into(),
            tz: None,
            overlap: Overlap::Allow,
            catch_up: CatchUp::All,
            kind: "noop".into(),
            payload: Bytes::from_static(b"tick"),
            max_attempts: 3,
            options: None,
        };
        let (tx, mut rx) = oneshot::channel();
        let mut out = Effects::default();
        s.leader
            .schedules(ScheduleOp::Add(spec), tx, &s.table, s.now, &mut out);
        assert_eq!(proposed(&out), ["add schedule"]);
        s.commit(out);
        let added = rx.try_recv().ok().and_then(Result::ok).unwrap_or_default();
        let next = added.first().and_then(|st| st.next_ms).unwrap_or(0);
        let until_tick = next.saturating_sub(s.leader.at_ms(s.now));
        assert!(
            until_tick <= 1_000,
            "the next whole second: {until_tick} ms"
        );
        // The leader wakes for the tick, proposes it, and runs its task.
        let wake = s.leader.next_timer(s.now).map(|at| at - s.now);
        assert!(
            wake.is_some_and(|w| w <= Duration::from_millis(until_tick)),
            "{wake:?}"
        );
        let out = s.advance(until_tick);
        assert_eq!(proposed(&out), ["fire"]);
        s.commit(out);
        let runs = s.schedule();
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(TaskId(runs[0].1), schedule_task_id("every-second", next));
        // Two seconds later (the worker, silent that long, is gone): two more ticks.
        let out = s.advance(2_000);
        let fires = proposed(&out).iter().filter(|p| **p == "fire").count();
        assert_eq!(fires, 2);
        s.commit(out);
        assert_eq!(
            s.leader.sched.ready_len(),
            3,
            "the lost attempt and two new tasks"
        );
    }

    #[test]
    fn a_running_attempts_progress_shows_in_its_view_until_it_ends() {
        let mut s = Shard::ready(TaskTable::new(Retention::default()));
        s.worker(1, 1, Vec::new());
        s.worker(2, 1, Vec::new());
        let out = s.request(submit(1, false), 10);
        s.commit(out);
        let runs = s.schedule();
        let (holder, _, _) = runs[0];
        let other = if holder == 1 { 2 } else { 1 };
        let report = |fraction, message: &str| WorkerMsg::Progress {
            id: TaskId(1),
            attempt: 1,
            progress: TaskProgress::new(fraction, message),
        };
        let shown = |s: &Shard| {
            s.leader
                .view(TaskId(1), &s.table, s.now)
                .and_then(|v| v.progress)
        };
        s.worker_says(other, report(0.9, "not mine"));
        assert_eq!(shown(&s), None, "only the holder reports");
        s.worker_says(holder, report(0.5, "halfway"));
        assert_eq!(shown(&s), Some(TaskProgress::new(0.5, "halfway")));
        assert_eq!(shown(&s).map(|p| p.permille), Some(500));
        // Another worker's forged completion leaves the holder's report alone.
        s.worker_says(other, done(1, 1));
        assert_eq!(shown(&s), Some(TaskProgress::new(0.5, "halfway")));
        let out = s.worker_says(holder, done(1, 1));
        s.commit(out);
        assert_eq!(shown(&s), None, "a finished task has no progress");
        assert!(s.leader.progress.is_empty());
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

    /// The messages sent to workers that tell one to stop an attempt.
    fn stops(out: &Effects) -> Vec<(WorkerId, u128, u32)> {
        out.sends
            .iter()
            .filter_map(|(w, msg)| match msg {
                CoordMsg::Cancel { id, attempt } => Some((*w, id.0, *attempt)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn cancelling_a_running_task_commits_first_then_stops_its_worker() {
        let mut s = Shard::ready(TaskTable::new(Retention::default()));
        s.worker(1, 1, Vec::new());
        let out = s.request(submit(1, false), 10);
        s.commit(out);
        assert_eq!(s.schedule(), [(1, 1, 1)]);
        let out = s.request(RequestBody::Cancel { id: TaskId(1) }, 20);
        assert_eq!(proposed(&out), ["cancel"]);
        assert!(
            stops(&out).is_empty(),
            "nothing is stopped before the commit"
        );
        let out = s.commit(out);
        assert_eq!(answered(&out), [(20, Ok(TaskState::Cancelled))]);
        assert_eq!(stops(&out), [(1, 1, 1)]);
        // The slot is held until the worker reports the attempt stopped.
        s.request(submit(2, false), 11);
        assert!(s.schedule().is_empty());
        let late = s.worker_says(1, done(1, 1));
        assert!(
            proposed(&late).is_empty(),
            "its late result changes nothing"
        );
        assert_eq!(s.schedule(), [(1, 2, 1)]);
    }

    #[test]
    fn an_attempt_past_its_timeout_is_failed_stopped_and_retried_when_due() {
        let mut s = Shard::ready(TaskTable::new(Retention::default()));
        s.worker(1, 1, Vec::new());
        let task = spec(1)
            .with_timeout(Duration::from_millis(200))
            .with_backoff(dtc_proto::Backoff {
                initial_ms: 100,
                multiplier_pct: 200,
                max_ms: 1_000,
                jitter_pct: 0,
            });
        let out = s.request(RequestBody::Submit { task, wait: false }, 10);
        assert!(s.schedule().is_empty(), "a timed task waits for its commit");
        s.commit(out);
        assert_eq!(s.schedule(), [(1, 1, 1)]);
        assert!(proposed(&s.advance(199)).is_empty());
        let out = s.advance(1);
        assert_eq!(proposed(&out), ["complete"], "the overrun is committed");
        assert_eq!(stops(&out), [(1, 1, 1)]);
        s.commit(out);
        let v = s.table.view(TaskId(1)).unwrap_or_else(|| panic!("kept"));
        assert_eq!(v.state, TaskState::Retrying);
        assert!(v.errors[0].contains("timed out"), "{:?}", v.errors);
        // The worker stops the attempt: its slot frees, its result counts for nothing.
        assert!(proposed(&s.worker_says(1, done(1, 1))).is_empty());
        s.advance(99);
        assert!(s.schedule().is_empty(), "not before the backoff");
        s.advance(1);
        assert_eq!(s.schedule(), [(1, 1, 2)], "the second attempt");
    }

    #[test]
    fn a_delayed_task_is_logged_then_started_when_due_in_due_order() {
        let mut s = Shard::ready(TaskTable::new(Retention::default()));
        s.worker(1, 4, Vec::new());
        let later = spec(1).with_delay(Duration::from_millis(300));
        let sooner = spec(2).with_delay(Duration::from_millis(100));
        let out = s.request(
            RequestBody::Submit {
                task: later,
                wait: true,
            },
            10,
        );
        assert_eq!(proposed(&out), ["submit"], "not run ahead: logged at once");
        let out2 = s.request(
            RequestBody::Submit {
                task: sooner,
                wait: false,
            },
            11,
        );
        let answers = s.commit(out);
        assert!(answers.answers.is_empty(), "the waiting submitter waits");
        let answers = s.commit(out2);
        assert_eq!(answered(&answers), [(11, Ok(TaskState::Scheduled))]);
        assert!(s.schedule().is_empty());
        s.advance(100);
        assert_eq!(s.schedule(), [(1, 2, 1)]);
        s.advance(199);
        assert!(s.schedule().is_empty());
        s.advance(1);
        assert_eq!(s.schedule(), [(1, 1, 1)]);
    }

    #[test]
    fn a_task_not_started_by_its_expiry_is_failed_through_the_log() {
        let mut s = Shard::ready(TaskTable::new(Retention::default()));
        let task = spec(1).with_expiry(Duration::from_millis(50));
        let out = s.request(RequestBody::Submit { task, wait: false }, 10);
        s.commit(out);
        assert!(proposed(&s.advance(49)).is_empty());
        let out = s.advance(1);
        assert_eq!(proposed(&out), ["lapse"]);
        s.commit(out);
        assert_eq!(
            s.table.view(TaskId(1)).map(|v| v.state),
            Some(TaskState::Failed)
        );
    }

    #[test]
    fn stepping_down_answers_every_waiting_submitter() {
        let mut s = Shard::ready(TaskTable::new(Retention::default()));
        let (reply, mut rx) = Reply::for_test(1);
        let mut out = Effects::default();
        s.leader
            .request(submit(1, true), reply, &s.table, s.now, &mut out);
        let err = WireError::NotLeader { leader: None };
        s.leader.step_down(&err);
        assert!(rx.try_recv().is_ok(), "the waiting submitter is answered");
    }

    #[test]
    fn waiters_whose_clients_have_left_are_dropped() {
        let mut s = Shard::ready(TaskTable::new(Retention::default()));
        let mut out = Effects::default();
        // One submitter waits for a task that runs unlogged, two clients for another task.
        let (runs_unlogged, gone_1) = Reply::for_test(1);
        s.leader
            .request(submit(1, true), runs_unlogged, &s.table, s.now, &mut out);
        let (stays, _kept) = Reply::for_test(2);
        let (leaves, gone_2) = Reply::for_test(3);
        s.leader.wait_for(TaskId(2), stays);
        s.leader.wait_for(TaskId(2), leaves);
        drop((gone_1, gone_2));
        s.leader.drop_abandoned();
        let waiting: Vec<u64> = s
            .leader
            .waiters
            .values()
            .flatten()
            .map(Reply::req)
            .collect();
        assert_eq!(waiting, [2]);
        assert_eq!(s.leader.early.drain_waiting().count(), 0);
        // A wait already abandoned when it would start is not kept at all.
        let (late, gone_3) = Reply::for_test(4);
        drop(gone_3);
        s.leader.wait_for(TaskId(3), late);
        assert!(!s.leader.waiters.contains_key(&TaskId(3)));
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
