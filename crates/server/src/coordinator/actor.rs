//! The coordinator's actor loop: the single owner of the leader's runtime state — the
//! scheduler, the waiting clients, the connected workers' queues — and the proposer of the
//! shard's commands. Connection tasks send it [`Event`]s; it answers through [`Reply`]
//! handles and worker queues, never blocking on them.
//!
//! Each turn drains a batch of events and turns them into table commands; at the end of the
//! turn the commands become one Raft entry (a [`Batch`], split only past a size bound),
//! proposed without waiting — unless an entry is already on its way, in which case they
//! gather, with the turns that follow, into the next entry (group commit). Under load —
//! many tasks running on the shard's workers — an entry also waits until the commit linger
//! has passed since the previous one was proposed, so that one round carries the
//! completions about to arrive: rounds, not tasks, are what cost the CPU. Results come
//! back in log order, and each command's follow-up (answer the submitter, enqueue a new
//! task, wake the waiters of a finished one) runs then, once the entry is committed by a
//! majority and applied. Lookups are answered after the
//! proposals that came before them.
//!
//! A new task does not wait for its submit to commit before it runs: the ready leader
//! hands it to a worker at once (the task's input comes with the request), so the submit's
//! commit overlaps the run. Its completion is proposed after the submit, so the log always
//! holds the submit first; the submitter is answered only once its entry is committed (and,
//! when it waits, once the completion is). A leader that dies before the submit commits may
//! have run a task nobody was told about: at-least-once, never a lost acknowledgement.
//!
//! A submitter that waits for the result is acknowledged by the result itself, so its task
//! is not logged on arrival at all: it runs at once, and its submit and completion go into
//! the log together, one entry instead of two. Until then it lives only on the leader; if
//! the leader dies, the router (or the client) resubmits it with the same id to the next
//! one. Anything that needs it durable earlier — a submit without wait, a cancel, a lost
//! worker — logs its submit at once.
//!
//! Only the leader schedules. On election it proposes an empty barrier entry; once that is
//! applied, everything before it is in the table, and the ready queue is rebuilt from the
//! table's unfinished tasks — after a short grace, so that workers reconnecting from the old
//! leader can first report what they still run. On losing leadership it fails its waiters
//! and drops its workers with `NotLeader`, and they follow the new leader.

use super::CoordinatorConfig;
use super::clock::LeaderClock;
use super::stats::Stats;
use crate::net::Reply;
use crate::sched::{Scheduler, WorkerId};
use crate::shard::Retention;
use crate::shard::{
    Applied, Batch, BatchApplied, Command, NodeId, ShardRaft, SharedTable, SubmitOutcome,
};
use dtc_proto::message::{Assignment, CoordMsg, RequestBody, WorkerMsg};
use dtc_proto::status::SettingsChange;
use dtc_proto::status::{LeaderStats, WorkerStatus};
use dtc_proto::{TaskId, TaskState, TaskView, WireError};
use foldhash::{HashMap, HashSet};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use openraft::ServerState;
use openraft::error::ClientWriteError;
use openraft::metrics::RaftServerMetrics;
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Now, on tokio's clock (which a simulation drives), as a std `Instant`.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Sleeps until `deadline` (forever without one).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

const EVENT_BATCH: usize = 1024;

/// A proposal is sealed once its commands carry this many payload bytes.
const MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;

/// How many tasks must be running on the shard's workers for an entry to linger (see
/// [`CoordinatorConfig::commit_linger`]): with fewer, their completions are too few to wait
/// for, and an entry goes at once.
const LINGER_LOAD: usize = 8;

/// How often the leader proposes the expiry of old results.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// What connection tasks tell the actor.
#[derive(Debug)]
pub(super) enum Event {
    /// A client's request.
    Request { body: RequestBody, reply: Reply },
    /// A worker registered.
    WorkerUp {
        worker: WorkerId,
        name: String,
        peer: SocketAddr,
        tx: mpsc::Sender<CoordMsg>,
        /// The tasks it runs at once.
        slots: u32,
        /// The tasks it takes at once: its slots and those it takes ahead.
        capacity: u32,
        kinds: Vec<String>,
        running: Vec<(TaskId, u32)>,
        cancel: CancellationToken,
    },
    /// A message from a registered worker.
    Worker { worker: WorkerId, msg: WorkerMsg },
    /// A worker's connection closed.
    WorkerDown { worker: WorkerId },
    /// An operator asks what the scheduler holds.
    Status(oneshot::Sender<Runtime>),
    /// An operator changes the shard's settings (answered once the change is applied).
    Configure {
        change: SettingsChange,
        reply: oneshot::Sender<Result<Retention, WireError>>,
    },
}

/// The leader's runtime state, for `dtc status`.
#[derive(Debug, Default)]
pub(super) struct Runtime {
    /// Attempts running on workers.
    pub running: u64,
    /// The workers attached.
    pub workers: Vec<WorkerStatus>,
    /// Its counters as leader.
    pub stats: LeaderStats,
}

/// What to do once a command has been applied.
enum Then {
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

/// A lookup: the task, whether to wait for its end, who asked.
type Read = (TaskId, bool, Reply);

/// A task known only to the leader so far: its spec and the submitters waiting for it.
struct Unlogged {
    spec: dtc_proto::TaskSpec,
    replies: Vec<Reply>,
}

/// A proposal in flight: what to do with each command's result, and the lookups that came
/// after it.
struct Pending {
    thens: Vec<Then>,
    reads: Vec<Read>,
    /// The election barrier: once applied, the ready queue is rebuilt.
    barrier: bool,
}

type WriteResult = Result<
    openraft::raft::ClientWriteResponse<crate::shard::TypeConfig>,
    ClientWriteError<NodeId, crate::shard::Node>,
>;
type InFlight = Pin<Box<dyn Future<Output = Option<WriteResult>> + Send>>;

/// This replica's part in its shard, as the actor sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    /// Follower, candidate or learner; the leader's address when known.
    Follower { leader: Option<String> },
    /// Leader; `ready` once the election barrier is applied and the queue rebuilt.
    Leader { ready: bool },
}

pub(super) struct Actor {
    raft: ShardRaft,
    me: NodeId,
    table: SharedTable,
    /// openraft's view of the server: role, leader, vote, membership. It changes only when
    /// one of those does (unlike its full metrics, sent on every log or apply step).
    metrics: watch::Receiver<RaftServerMetrics<NodeId, crate::shard::Node>>,
    part: Part,
    sched: Scheduler,
    heartbeat_timeout: Duration,
    reclaim_grace: Duration,
    workers: HashMap<WorkerId, WorkerConn>,
    /// Clients waiting for a task to finish.
    waiters: HashMap<TaskId, Vec<Reply>>,
    events: mpsc::Receiver<Event>,
    tick: Duration,
    /// Commands of this turn, with what to do after each is applied.
    batch: Vec<(Command, Then)>,
    batch_bytes: usize,
    /// Full proposals of this turn, sealed when `batch` grew past its size bound.
    sealed: Vec<Vec<(Command, Then)>>,
    /// Lookups of this turn, answered after this turn's proposals.
    reads: Vec<Read>,
    /// Proposals in flight, oldest first, and their results in the same order.
    pending: VecDeque<Pending>,
    inflight: FuturesOrdered<InFlight>,
    /// Unfinished tasks found at election, enqueued once the grace has passed.
    reclaim: HashSet<TaskId>,
    reclaim_at: Option<Instant>,
    /// Attempts workers said they hold before the election barrier was applied.
    early_claims: Vec<(WorkerId, Vec<(TaskId, u32)>)>,
    /// The election barrier's index: tasks created or re-queued by entries up to it are in
    /// the rebuilt queue already.
    rebuilt_upto: u64,
    last_expire: Instant,
    /// Just elected: the barrier entry is to be proposed.
    barrier_due: bool,
    /// New tasks scheduled before their submit is applied: their type and input.
    speculative: HashMap<TaskId, (String, bytes::Bytes)>,
    /// New tasks whose submitters wait for the result, running before anything is logged.
    unlogged: HashMap<TaskId, Unlogged>,
    /// Tasks whose submit is proposed and not yet applied.
    submitting: HashMap<TaskId, u32>,
    /// The shard's settings, proposed by its first leader (this replica, if it is).
    initial_settings: Retention,
    /// The time stamped on the commands this replica proposes while it leads.
    clock: LeaderClock,
    /// The largest payload accepted.
    max_payload: usize,
    /// Entries proposed and not yet applied, past which commands gather into the next one.
    max_in_flight: usize,
    /// Under load, the least time between two entries' proposals.
    linger: Duration,
    last_proposed: Instant,
    /// When the lingering commands are due, if they linger.
    linger_until: Option<Instant>,
    /// Counters for `dtc status` and `/metrics`.
    stats: Stats,
    /// The leader openraft last named, to count changes of leader.
    known_leader: Option<NodeId>,
    leader_changes: metrics::Counter,
    /// Completions from a worker session that does not hold the attempt: ignored.
    ignored_completions: metrics::Counter,
    /// Attempts a registering worker said it holds that it does not: ignored.
    ignored_reports: metrics::Counter,
}

impl Actor {
    pub(super) fn new(
        config: &CoordinatorConfig,
        replica: &str,
        raft: ShardRaft,
        table: SharedTable,
        events: mpsc::Receiver<Event>,
    ) -> Self {
        let metrics = raft.server_metrics();
        Self {
            stats: Stats::new(replica, now()),
            known_leader: None,
            leader_changes: metrics::counter!(
                "dtc_raft_leader_changes_total",
                "replica" => replica.to_owned()
            ),
            ignored_completions: metrics::counter!(
                "dtc_worker_completions_ignored_total",
                "replica" => replica.to_owned()
            ),
            ignored_reports: metrics::counter!(
                "dtc_worker_reports_ignored_total",
                "replica" => replica.to_owned()
            ),
            raft,
            me: config.id,
            table,
            metrics,
            part: Part::Follower { leader: None },
            sched: Scheduler::new(config.heartbeat_timeout),
            heartbeat_timeout: config.heartbeat_timeout,
            reclaim_grace: config.reclaim_grace,
            workers: HashMap::default(),
            waiters: HashMap::default(),
            events,
            tick: config.tick,
            batch: Vec::new(),
            batch_bytes: 0,
            sealed: Vec::new(),
            reads: Vec::new(),
            pending: VecDeque::new(),
            inflight: FuturesOrdered::new(),
            reclaim: HashSet::default(),
            reclaim_at: None,
            early_claims: Vec::new(),
            rebuilt_upto: 0,
            last_expire: now(),
            barrier_due: false,
            speculative: HashMap::default(),
            unlogged: HashMap::default(),
            submitting: HashMap::default(),
            initial_settings: config.retention,
            clock: LeaderClock::start_now(0),
            max_payload: config.max_payload,
            max_in_flight: config.entries_in_flight.max(1),
            linger: config.commit_linger,
            last_proposed: now(),
            linger_until: None,
        }
    }

    pub(super) async fn run(mut self, cancel: CancellationToken) {
        let mut events = Vec::with_capacity(EVENT_BATCH);
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = cancel.cancelled();
        tokio::pin!(stop);
        self.on_metrics();
        loop {
            tokio::select! {
                n = self.events.recv_many(&mut events, EVENT_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    let now = now();
                    let at_ms = self.clock.at(now);
                    for event in events.drain(..) {
                        self.on_event(event, now, at_ms);
                    }
                }
                Some(result) = self.inflight.next(), if !self.inflight.is_empty() => {
                    self.on_result(result);
                    // Take every result that is already in, in order, before scheduling.
                    while let Some(Some(result)) = self.inflight.next().now_or_never() {
                        self.on_result(result);
                    }
                }
                changed = self.metrics.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.on_metrics();
                }
                _ = tick.tick() => {
                    let now = now();
                    self.on_tick(now, self.clock.at(now));
                }
                () = sleep_until(self.linger_until), if self.linger_until.is_some() => {}
                () = &mut stop => break,
            }
            if self.part == (Part::Leader { ready: true }) {
                self.schedule();
            }
            self.propose().await;
        }
        self.step_down(WireError::ShuttingDown);
    }

    fn on_event(&mut self, event: Event, now: Instant, at_ms: u64) {
        if let Event::Status(tx) = event {
            tx.send(self.runtime()).ok();
            return;
        }
        if let Part::Follower { leader } = &self.part {
            let err = WireError::NotLeader {
                leader: leader.clone(),
            };
            match event {
                Event::Request { reply, .. } => reply.send(Err(err)),
                Event::WorkerUp { tx, .. } => {
                    // The worker reads this, closes, and goes to the leader; dropping `tx`
                    // lets the connection's writer send it and finish.
                    tx.try_send(CoordMsg::Error(err)).ok();
                }
                Event::Configure { reply, .. } => {
                    reply.send(Err(err)).ok();
                }
                Event::Worker { .. } | Event::WorkerDown { .. } | Event::Status(_) => {}
            }
            return;
        }
        match event {
            Event::Request { body, reply } => self.on_request(body, reply, now, at_ms),
            Event::WorkerUp {
                worker,
                name,
                peer,
                tx,
                slots,
                capacity,
                kinds,
                running,
                cancel,
            } => {
                self.sched.add_worker(worker, capacity, kinds, now);
                self.claim(worker, running);
                self.workers.insert(
                    worker,
                    WorkerConn {
                        name,
                        peer,
                        tx,
                        cancel,
                        done: 0,
                        slots,
                    },
                );
            }
            Event::Worker { worker, msg } => {
                self.sched.seen(worker, now);
                match msg {
                    WorkerMsg::Heartbeat => {
                        if let Some(w) = self.workers.get(&worker) {
                            // A full queue is busy with assignments, which say as much.
                            w.tx.try_send(CoordMsg::Alive).ok();
                        }
                    }
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
                        // An unlogged task's submit and completion share one entry.
                        self.log_unlogged(c.id, at_ms);
                        let cmd = Command::Complete {
                            id: c.id,
                            attempt: c.attempt,
                            outcome: c.outcome,
                            at_ms,
                        };
                        self.push(cmd, Then::Ended(c.id));
                    }
                }
            }
            Event::WorkerDown { worker } => self.drop_worker(worker, at_ms),
            Event::Configure { change, reply } => {
                let current = self.table.lock().table.retention();
                match changed(current, change) {
                    Ok(retention) => {
                        self.push(Command::Configure { retention }, Then::Configured(reply));
                    }
                    Err(e) => {
                        reply.send(Err(e)).ok();
                    }
                }
            }
            Event::Status(_) => {}
        }
    }

    fn runtime(&self) -> Runtime {
        let now = now();
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

    fn on_request(&mut self, body: RequestBody, reply: Reply, now: Instant, at_ms: u64) {
        match body {
            RequestBody::Submit { task, wait } => {
                if let Err(e) = task.check(self.max_payload) {
                    reply.send(Err(e));
                    return;
                }
                if let Some(u) = self.unlogged.get_mut(&task.id) {
                    if wait {
                        u.replies.push(reply);
                        return;
                    }
                    // This submitter wants an acknowledgement now: log the task.
                    self.log_unlogged(task.id, at_ms);
                }
                if self.part == (Part::Leader { ready: true })
                    && !task.kind.is_empty()
                    && !self.submitting.contains_key(&task.id)
                {
                    let t = self.table.lock();
                    let new = t.table.view(task.id).is_none()
                        && t.table.queued_len() + self.speculative.len() + self.unlogged.len()
                            < t.table.retention().max_queued;
                    drop(t);
                    if new {
                        self.stats.arrived(task.id, now);
                    }
                    if new && wait {
                        self.sched.enqueue(task.id, &task.kind);
                        self.unlogged.insert(
                            task.id,
                            Unlogged {
                                spec: task,
                                replies: vec![reply],
                            },
                        );
                        return;
                    }
                    if new {
                        self.sched.enqueue(task.id, &task.kind);
                        self.speculative
                            .insert(task.id, (task.kind.clone(), task.payload.clone()));
                    }
                }
                *self.submitting.entry(task.id).or_default() += 1;
                let id = task.id;
                self.push(
                    Command::Submit { spec: task, at_ms },
                    Then::Submitted { id, reply, wait },
                );
            }
            // Answered once the proposals before it are applied, so that a lookup sees the
            // submits that came before it.
            RequestBody::Get { id, wait } => self.reads.push((id, wait, reply)),
            RequestBody::Cancel { id } => {
                if self.sched.running_on(id).is_some() {
                    let reason = "the task is running; only queued tasks can be cancelled".into();
                    reply.send(Err(WireError::BadRequest { reason }));
                } else {
                    self.log_unlogged(id, at_ms);
                    self.push(Command::Cancel { id, at_ms }, Then::Cancelled(reply));
                }
            }
        }
    }

    /// Logs the submit of a task that has so far run unlogged (if it is one): from now on it
    /// is a task whose submit is proposed and not yet applied. Its waiting submitters are
    /// answered when it finishes.
    fn log_unlogged(&mut self, id: TaskId, at_ms: u64) {
        let Some(u) = self.unlogged.remove(&id) else {
            return;
        };
        self.speculative
            .insert(id, (u.spec.kind.clone(), u.spec.payload.clone()));
        *self.submitting.entry(id).or_default() += 1;
        let mut replies = u.replies.into_iter();
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
        self.push(
            Command::Submit {
                spec: u.spec,
                at_ms,
            },
            then,
        );
    }

    /// Adds a command to this turn's proposal, sealing the proposal when it grows too big.
    fn push(&mut self, cmd: Command, then: Then) {
        self.batch_bytes += cmd.payload_len();
        self.batch.push((cmd, then));
        if self.batch_bytes >= MAX_ENTRY_BYTES {
            self.sealed.push(std::mem::take(&mut self.batch));
            self.batch_bytes = 0;
        }
    }

    fn on_tick(&mut self, now: Instant, at_ms: u64) {
        if !matches!(self.part, Part::Leader { .. }) {
            return;
        }
        self.stats.tick(now);
        for worker in self.sched.expired(now) {
            tracing::warn!(
                worker,
                "worker missed its heartbeats; re-queueing its tasks"
            );
            self.drop_worker(worker, at_ms);
        }
        if self.reclaim_at.is_some_and(|at| now >= at) {
            self.reclaim_at = None;
            let reclaim = std::mem::take(&mut self.reclaim);
            for id in reclaim {
                if self.sched.running_on(id).is_none() {
                    self.enqueue(id);
                }
            }
        }
        if now.saturating_duration_since(self.last_expire) >= EXPIRE_EVERY {
            self.last_expire = now;
            self.push(Command::Expire { at_ms }, Then::Nothing);
        }
    }

    fn drop_worker(&mut self, worker: WorkerId, at_ms: u64) {
        if let Some(conn) = self.workers.remove(&worker) {
            conn.cancel.cancel();
        }
        for (id, attempt) in self.sched.remove_worker(worker) {
            self.log_unlogged(id, at_ms);
            self.push(Command::Requeue { id, attempt, at_ms }, Then::Ended(id));
        }
    }

    /// Proposes this turn's commands (one entry per sealed proposal) and attaches this
    /// turn's lookups to the last proposal in flight, or answers them now if none is.
    async fn propose(&mut self) {
        if std::mem::take(&mut self.barrier_due) {
            // Once the barrier is applied, the table holds every earlier entry.
            self.submit_entry(Batch(Vec::new()), Vec::new(), true).await;
        }
        if self.pending.len() >= self.max_in_flight && self.sealed.is_empty() {
            // Enough entries are on their way: let this turn's commands (and the lookups
            // after them) gather into a bigger entry, proposed when one of those commits.
            return;
        }
        if self.lingers() {
            return;
        }
        if !self.batch.is_empty() {
            self.last_proposed = now();
            self.sealed.push(std::mem::take(&mut self.batch));
            self.batch_bytes = 0;
        }
        for batch in std::mem::take(&mut self.sealed) {
            let (cmds, thens): (Vec<Command>, Vec<Then>) = batch.into_iter().unzip();
            self.submit_entry(Batch(cmds), thens, false).await;
        }
        let reads = std::mem::take(&mut self.reads);
        if reads.is_empty() {
            return;
        }
        match self.pending.back_mut() {
            Some(last) => last.reads.extend(reads),
            None => self.answer_reads(reads),
        }
    }

    /// Whether this turn's commands wait for more to join them: under load, until the
    /// linger has passed since the previous entry was proposed.
    fn lingers(&mut self) -> bool {
        let due = self.last_proposed + self.linger;
        let linger = !self.batch.is_empty()
            && self.sealed.is_empty()
            && self.sched.running_len() >= LINGER_LOAD
            && now() < due;
        self.linger_until = linger.then_some(due);
        linger
    }

    async fn submit_entry(&mut self, batch: Batch, thens: Vec<Then>, barrier: bool) {
        if let Part::Follower { leader } = &self.part {
            let err = WireError::NotLeader {
                leader: leader.clone(),
            };
            for then in thens {
                fail(then, &err);
            }
            return;
        }
        match self.raft.client_write_ff(batch).await {
            Ok(rx) => {
                self.pending.push_back(Pending {
                    thens,
                    reads: Vec::new(),
                    barrier,
                });
                self.inflight
                    .push_back(Box::pin(async move { rx.await.ok() }));
            }
            Err(fatal) => {
                tracing::error!(error = %fatal, "raft has stopped; cannot propose");
                let err = WireError::Unavailable {
                    reason: format!("this replica's raft has stopped: {fatal}"),
                };
                for then in thens {
                    fail(then, &err);
                }
            }
        }
    }

    /// A proposal's result, in proposal order.
    fn on_result(&mut self, result: Option<WriteResult>) {
        let Some(pending) = self.pending.pop_front() else {
            return;
        };
        match result {
            Some(Ok(resp)) => {
                let index = resp.log_id.index;
                if pending.barrier {
                    self.rebuild(index);
                }
                let BatchApplied(applied) = resp.data;
                let mut thens = pending.thens.into_iter();
                for applied in applied {
                    let Some(then) = thens.next() else { break };
                    self.after(applied, then, index);
                }
                for then in thens {
                    fail(
                        then,
                        &WireError::Unavailable {
                            reason: "internal error: a command had no result".into(),
                        },
                    );
                }
                self.answer_reads(pending.reads);
            }
            other => {
                let err = match other {
                    Some(Err(ClientWriteError::ForwardToLeader(f))) => WireError::NotLeader {
                        leader: f.leader_node.map(|n| n.addr),
                    },
                    Some(Err(e)) => WireError::Unavailable {
                        reason: e.to_string(),
                    },
                    _ => WireError::NotLeader { leader: None },
                };
                for then in pending.thens {
                    fail(then, &err);
                }
                for (_, _, reply) in pending.reads {
                    reply.send(Err(err.clone()));
                }
            }
        }
    }

    fn answer_reads(&mut self, reads: Vec<Read>) {
        for (id, wait, reply) in reads {
            match self.view(id) {
                None => reply.send(Err(WireError::NotFound)),
                Some(v) if wait && !v.state.is_finished() => self.wait_for(id, reply),
                Some(v) => reply.send(Ok(v)),
            }
        }
    }

    fn after(&mut self, applied: Applied, then: Then, index: u64) {
        let fresh = index > self.rebuilt_upto;
        match (applied, then) {
            (
                Applied::Submitted(Ok(SubmitOutcome { view, created })),
                Then::Submitted { reply, wait, .. },
            ) => {
                self.submitted(view.id);
                if created {
                    self.stats.submitted();
                } else {
                    // An existing task's id: whatever arrived under it was not new.
                    self.stats.forget(view.id);
                }
                let ran_ahead = self.speculative.remove(&view.id).is_some();
                if created && fresh && !ran_ahead {
                    self.enqueue(view.id);
                }
                let view = self.overlay(view);
                if wait && !view.state.is_finished() {
                    self.wait_for(view.id, reply);
                } else {
                    reply.send(Ok(view));
                }
            }
            (Applied::Submitted(Err(e)), Then::Submitted { id, reply, .. }) => {
                // A task scheduled ahead whose submit the table refused: an entry still in
                // the ready queue is dropped when its turn comes (it has no input), and a
                // run completes into nothing.
                self.submitted(id);
                self.stats.forget(id);
                if self.speculative.remove(&id).is_some() {
                    self.sched.forget(id);
                }
                // Submitters of a task that ran unlogged wait for its end: tell them too.
                for waiting in self.waiters.remove(&id).unwrap_or_default() {
                    waiting.send(Err(e.clone()));
                }
                reply.send(Err(e));
            }
            (Applied::Requeued(id), _) => {
                self.stats.retried();
                if fresh {
                    self.enqueue(id);
                }
            }
            (Applied::Finished(view), then) => {
                self.sched.forget(view.id);
                self.stats.finished(view.id, view.state, now());
                if let Some(waiting) = self.waiters.remove(&view.id) {
                    for reply in waiting {
                        reply.send(Ok(view.clone()));
                    }
                }
                if let Then::Cancelled(reply) = then {
                    reply.send(Ok(view));
                }
            }
            (Applied::CancelRefused(_, e), Then::Cancelled(reply)) => reply.send(Err(e)),
            (Applied::Configured(retention), then) => {
                tracing::info!(?retention, "the shard's settings are set");
                if let Then::Configured(tx) = then {
                    tx.send(Ok(retention)).ok();
                }
            }
            (applied, Then::Submitted { reply, .. } | Then::Cancelled(reply)) => {
                tracing::error!(?applied, "a command yielded an unexpected result");
                reply.send(Err(WireError::Unavailable {
                    reason: "internal error".into(),
                }));
            }
            (Applied::Nothing, Then::Ended(id)) => {
                // A stale attempt ended; the current one may have been lost with an earlier
                // connection of the same worker. Make sure the task can still run.
                if self.part == (Part::Leader { ready: true })
                    && self.sched.running_on(id).is_none()
                {
                    self.enqueue(id);
                }
            }
            (
                Applied::Submitted(_) | Applied::CancelRefused(..) | Applied::Nothing,
                Then::Configured(tx),
            ) => {
                tracing::error!("a change of settings yielded an unexpected result");
                tx.send(Err(WireError::Unavailable {
                    reason: "internal error".into(),
                }))
                .ok();
            }
            (
                Applied::Submitted(_) | Applied::CancelRefused(..) | Applied::Nothing,
                Then::Nothing | Then::Ended(_),
            ) => {}
        }
    }

    /// Follows openraft's view of who leads.
    fn on_metrics(&mut self) {
        let (leads, leader) = {
            let m = self.metrics.borrow_and_update();
            if m.current_leader.is_some() && m.current_leader != self.known_leader {
                self.known_leader = m.current_leader;
                self.leader_changes.increment(1);
            }
            let leads = m.state == ServerState::Leader && m.current_leader == Some(self.me);
            let leader = m
                .current_leader
                .and_then(|id| m.membership_config.membership().get_node(&id))
                .map(|n| n.addr.clone());
            (leads, leader)
        };
        match (&self.part, leads) {
            (Part::Leader { .. }, true) => {}
            (Part::Follower { .. }, true) => {
                tracing::info!(
                    node = self.me,
                    "leading the shard; applying the log before scheduling"
                );
                self.part = Part::Leader { ready: false };
                self.clock = LeaderClock::start_now(self.table.lock().table.clock_ms());
                self.sched = Scheduler::new(self.heartbeat_timeout);
                self.stats.reset(now());
                self.last_expire = now();
                self.barrier_due = true;
            }
            (Part::Leader { .. }, false) => {
                tracing::info!(node = self.me, ?leader, "no longer leading the shard");
                self.part = Part::Follower {
                    leader: leader.clone(),
                };
                self.step_down(WireError::NotLeader { leader });
            }
            (Part::Follower { leader: known }, false) => {
                if *known != leader {
                    self.part = Part::Follower { leader };
                }
            }
        }
    }

    /// Forgets the runtime state: waiters and this turn's requests get `err`, workers are
    /// disconnected (they reconnect to whoever leads).
    fn step_down(&mut self, err: WireError) {
        for (_, reply) in self
            .waiters
            .drain()
            .flat_map(|(id, r)| r.into_iter().map(move |r| (id, r)))
        {
            reply.send(Err(err.clone()));
        }
        for (_, then) in std::mem::take(&mut self.batch) {
            fail(then, &err);
        }
        for (_, then) in std::mem::take(&mut self.sealed).into_iter().flatten() {
            fail(then, &err);
        }
        for (_, _, reply) in std::mem::take(&mut self.reads) {
            reply.send(Err(err.clone()));
        }
        // Each worker is told why; dropping its queue lets its writer send that and close.
        for (_, w) in self.workers.drain() {
            w.tx.try_send(CoordMsg::Error(err.clone())).ok();
        }
        self.sched = Scheduler::new(self.heartbeat_timeout);
        self.stats.reset(now());
        self.reclaim.clear();
        self.reclaim_at = None;
        self.early_claims.clear();
        self.speculative.clear();
        self.submitting.clear();
        for (_, u) in self.unlogged.drain() {
            for reply in u.replies {
                reply.send(Err(err.clone()));
            }
        }
    }

    /// The election barrier is applied: every unfinished task goes back to the ready queue,
    /// the ones not reported by a reconnected worker after the grace. (The table may already
    /// hold entries after the barrier too; their tasks are enqueued by their own results as
    /// well, and the scheduler skips a second entry of a task that runs or has finished.)
    fn rebuild(&mut self, barrier_index: u64) {
        let queued: Vec<TaskId> = self
            .table
            .lock()
            .table
            .queued_tasks()
            .map(|(id, _)| id)
            .collect();
        tracing::info!(
            unfinished = queued.len(),
            "election barrier applied; re-queueing unfinished tasks after the grace"
        );
        self.rebuilt_upto = barrier_index;
        if !self.table.lock().table.configured() {
            // The shard's first leader: its flags become the shard's settings.
            let retention = self.initial_settings;
            self.push(Command::Configure { retention }, Then::Nothing);
        }
        self.reclaim = queued.into_iter().collect();
        self.reclaim_at = Some(now() + self.reclaim_grace);
        self.part = Part::Leader { ready: true };
        for (worker, running) in std::mem::take(&mut self.early_claims) {
            if self.workers.contains_key(&worker) {
                self.claim(worker, running);
            }
        }
    }

    /// A registering worker says it holds these attempts. Its word is taken only where this
    /// leader cannot know better: for a task unfinished at its election and not yet
    /// re-queued (within the grace), and only for the task's current attempt. Anything else
    /// is ignored (and counted), and runs as usual. Claims made before the election barrier
    /// is applied are judged once it is.
    fn claim(&mut self, worker: WorkerId, running: Vec<(TaskId, u32)>) {
        if running.is_empty() {
            return;
        }
        if self.part == (Part::Leader { ready: false }) {
            self.early_claims.push((worker, running));
            return;
        }
        let reported = running.len();
        let held: Vec<(TaskId, u32)> = if self.reclaim_at.is_some() {
            let t = self.table.lock();
            running
                .into_iter()
                .filter(|(id, _)| self.reclaim.contains(id))
                .filter(|(id, _)| self.sched.running_on(*id).is_none())
                .filter(|(id, attempt)| {
                    t.table
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

    /// A submit of `id` has been applied (or has failed).
    fn submitted(&mut self, id: TaskId) {
        if let Some(n) = self.submitting.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.submitting.remove(&id);
            }
        }
    }

    /// Answers `reply` when the task finishes. Waiters whose client has gone are dropped
    /// here, so clients that wait and disconnect over and over cannot grow the list.
    fn wait_for(&mut self, id: TaskId, reply: Reply) {
        let waiting = self.waiters.entry(id).or_default();
        waiting.retain(|r| !r.is_closed());
        waiting.push(reply);
    }

    /// Puts a queued task in the scheduler's ready queue for its type.
    fn enqueue(&mut self, id: TaskId) {
        let t = self.table.lock();
        if let Some((_, kind, _)) = t.table.queued_input(id) {
            self.sched.enqueue(id, kind);
        }
    }

    /// Hands ready tasks to free worker slots.
    fn schedule(&mut self) {
        let mut broken = Vec::new();
        {
            let t = self.table.lock();
            let table = &t.table;
            let speculative = &self.speculative;
            let unlogged = &self.unlogged;
            let input = |id: TaskId| {
                table
                    .queued_input(id)
                    .or_else(|| speculative.get(&id).map(|(k, p)| (1, k.as_str(), p)))
                    .or_else(|| {
                        unlogged
                            .get(&id)
                            .map(|u| (1, u.spec.kind.as_str(), &u.spec.payload))
                    })
            };
            let assigned = self
                .sched
                .assign(|id| input(id).map(|(attempt, ..)| attempt));
            for a in assigned {
                let Some((_, kind, payload)) = input(a.id) else {
                    continue;
                };
                let msg = CoordMsg::Assign(Assignment {
                    id: a.id,
                    attempt: a.attempt,
                    kind: kind.to_owned(),
                    payload: payload.clone(),
                });
                let Some(w) = self.workers.get(&a.worker) else {
                    broken.push(a.worker);
                    continue;
                };
                match w.tx.try_send(msg) {
                    Ok(()) => {}
                    // Its connection has just closed; the task goes back with the worker's others.
                    Err(mpsc::error::TrySendError::Closed(_)) => broken.push(a.worker),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(
                            worker = a.worker,
                            "worker is not reading its assignments; dropping it"
                        );
                        broken.push(a.worker);
                    }
                }
            }
        }
        if !broken.is_empty() {
            let at_ms = self.clock.at(now());
            for worker in broken {
                self.drop_worker(worker, at_ms);
            }
        }
    }

    /// The task as a client sees it: the table's view, with `Running` where it runs.
    fn view(&self, id: TaskId) -> Option<TaskView> {
        let v = self.table.lock().table.view(id).or_else(|| {
            self.unlogged.contains_key(&id).then_some(TaskView {
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

/// Answers whoever waits on `then` with `err`.
fn fail(then: Then, err: &WireError) {
    match then {
        Then::Submitted { reply, .. } | Then::Cancelled(reply) => reply.send(Err(err.clone())),
        Then::Configured(tx) => {
            tx.send(Err(err.clone())).ok();
        }
        Then::Ended(_) | Then::Nothing => {}
    }
}
