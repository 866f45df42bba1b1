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
//! One file per concern: clients' requests and lookups (`intake`), workers, their claims
//! and assignment (`workers`), time — ticks, timers and the election barrier (`timing`),
//! what follows an applied command (`applied`), and one file per operator family in `ops`,
//! each deciding its requests and answering them once applied.
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

mod applied;
mod intake;
mod ops;
mod timing;
mod workers;

pub(in crate::coordinator) use ops::{AdminReply, shown_settings};

use super::clock::LeaderClock;
use super::early::EarlyTasks;
use super::queue_rates::QueueRates;
use super::stats::Stats;
use super::timers::Timers;
use crate::net::Reply;
use crate::sched::{Firings, Scheduler, WorkerId};
use crate::shard::{Command, Retention, TaskTable};
use dtc_proto::hash::{HashMap, HashSet};
use dtc_proto::message::{Completion, CoordMsg};
use dtc_proto::{TaskId, TaskProgress, TaskView, WireError};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What to do once a command has been applied.
pub(in crate::coordinator) enum Then {
    /// Answer the submitter (now, or when the task finishes if `wait`).
    Submitted {
        id: TaskId,
        reply: Reply,
        wait: bool,
    },
    /// Answer a cancel or a retry with the task as it then stands.
    Answer(Reply),
    /// Answer an operator's request (its family's file in `ops` says how).
    Admin(AdminReply),
    /// An attempt of this task ended (a completion or a lost worker): if the attempt was
    /// stale and the task is still queued but runs nowhere, it must be made ready again.
    Ended(TaskId),
    /// Nobody to answer (expiry).
    Nothing,
}

/// A lookup: the task, whether to wait for its end, who asked.
pub(in crate::coordinator) type Read = (TaskId, bool, Reply);

/// What the leader's decisions ask the actor to do, in order within each kind.
#[derive(Default)]
pub(in crate::coordinator) struct Effects {
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
pub(in crate::coordinator) struct LeaderConfig {
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
pub(in crate::coordinator) struct NewWorker {
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

/// The runtime of this replica's term as leader.
pub(in crate::coordinator) struct Leader {
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
    /// The runtime of a term that starts `now`, over `table` as this replica has applied
    /// it; `wall_ms` is the wall clock read just before `now` (so that the leader's clock
    /// is never ahead of the wall clock: a delayed task never starts before its time).
    pub(in crate::coordinator) fn elected(
        config: LeaderConfig,
        table: &TaskTable,
        wall_ms: u64,
        now: Instant,
    ) -> Self {
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
            clock: LeaderClock::start(wall_ms, table.clock_ms(), now),
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
    pub(in crate::coordinator) fn at_ms(&self, now: Instant) -> u64 {
        self.clock.at(now)
    }

    /// Whether the barrier entry is still to be proposed (true once, then false).
    pub(in crate::coordinator) fn take_barrier_due(&mut self) -> bool {
        std::mem::take(&mut self.barrier_due)
    }

    /// Whether the election barrier is applied and the leader schedules.
    pub(in crate::coordinator) fn is_ready(&self) -> bool {
        self.ready
    }

    /// How many attempts run on the workers.
    pub(in crate::coordinator) fn running(&self) -> usize {
        self.sched.running_len()
    }

    /// When the earliest timer is due, or a rate-limited queue may start its next task,
    /// for the actor to wake then.
    pub(in crate::coordinator) fn next_timer(&self, now: Instant) -> Option<Instant> {
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
    pub(in crate::coordinator) fn link(&self, worker: WorkerId) -> Option<&mpsc::Sender<CoordMsg>> {
        self.workers.get(&worker).map(|w| &w.tx)
    }

    /// The term ends: every waiting client is answered `err`, and every worker is told
    /// (dropping its queue lets its writer send that and close; it reconnects to whoever
    /// leads).
    pub(in crate::coordinator) fn step_down(mut self, err: &WireError) {
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

#[cfg(test)]
mod tests;
