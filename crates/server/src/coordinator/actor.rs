//! The coordinator's actor loop: the single owner of this replica's part in its shard as
//! the scheduler sees it. Connection tasks send it [`Event`]s; it answers through
//! [`Reply`] handles and worker queues, never blocking on them.
//!
//! While this replica leads, the actor holds a [`Leader`] runtime (made at election,
//! dropped at stepping down) whose decisions come back as [`Effects`], and a [`Proposer`]
//! that gathers the commands into Raft entries (group commit). The actor performs both:
//! it proposes the entries without waiting, takes their results in log order and hands
//! each command's follow-up back to the leader once the entry is committed by a majority
//! and applied; it sends the answers and the workers' messages.
//!
//! A new task does not wait for its submit to commit before it runs (see [`super::early`]):
//! its completion is proposed after the submit, so the log always holds the submit first;
//! the submitter is answered only once its entry is committed (and, when it waits, once the
//! completion is). A leader that dies before the submit commits may have run a task nobody
//! was told about: at-least-once, never a lost acknowledgement.
//!
//! A replica that does not lead answers `NotLeader` with the leader's address. Entries
//! proposed before stepping down still come back; their submitters are answered from what
//! was applied, and told to go to the new leader where they would wait.

use super::CoordinatorConfig;
use super::leader::{Effects, Leader, LeaderConfig, NewWorker, Read, Then};
use super::proposer::{Pending, Proposer};
use crate::net::Reply;
use crate::sched::WorkerId;
use crate::shard::{Batch, BatchApplied, NodeId, ShardRaft, SharedTable};
use dtc_proto::WireError;
use dtc_proto::message::{CoordMsg, RequestBody, WorkerMsg};
use dtc_proto::status::{AdminRequest, AdminResponse, LeaderStats, StateCounts, WorkerStatus};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use openraft::ServerState;
use openraft::error::ClientWriteError;
use openraft::metrics::RaftServerMetrics;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// What connection tasks tell the actor.
#[derive(Debug)]
pub(super) enum Event {
    /// A client's request.
    Request { body: RequestBody, reply: Reply },
    /// A worker registered.
    WorkerUp(NewWorker),
    /// A message from a registered worker.
    Worker { worker: WorkerId, msg: WorkerMsg },
    /// A worker's connection closed.
    WorkerDown { worker: WorkerId },
    /// An operator asks what the scheduler holds.
    Status(oneshot::Sender<Runtime>),
    /// An operator's request other than a replica's status, answered by the leader (a
    /// read now, a change once applied) or refused by a follower.
    Admin {
        request: AdminRequest,
        reply: oneshot::Sender<AdminResponse>,
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
    /// Its tasks by state, running ones as it runs them (the leader only).
    pub states: Option<StateCounts>,
}

type WriteResult = Result<
    openraft::raft::ClientWriteResponse<crate::shard::TypeConfig>,
    ClientWriteError<NodeId, crate::shard::Node>,
>;
type InFlight = Pin<Box<dyn Future<Output = Option<WriteResult>> + Send>>;

/// This replica's part in its shard, as the actor sees it.
enum Part {
    /// Follower, candidate or learner; the leader's address when known.
    Follower { leader: Option<String> },
    /// Leader, with the runtime of its term.
    Leading(Box<Leader>),
}

pub(super) struct Actor {
    raft: ShardRaft,
    me: NodeId,
    table: SharedTable,
    /// openraft's view of the server: role, leader, vote, membership. It changes only when
    /// one of those does (unlike its full metrics, sent on every log or apply step).
    metrics: watch::Receiver<RaftServerMetrics<NodeId, crate::shard::Node>>,
    part: Part,
    events: mpsc::Receiver<Event>,
    tick: Duration,
    proposer: Proposer<Then, Read>,
    /// The results of the proposals in flight, in proposal order.
    inflight: FuturesOrdered<InFlight>,
    /// What a new term's leader runtime is made with.
    leader_config: LeaderConfig,
    /// Reads the wall clock when a term starts.
    wall_clock: fn() -> u64,
    /// The term this replica last started to lead in; proposals are made in it.
    term: u64,
    /// The leader openraft last named, to count changes of leader.
    known_leader: Option<NodeId>,
    leader_changes: metrics::Counter,
    /// Set by client sessions when waiting requests were abandoned; cleared by the tick
    /// that drops them.
    abandoned: Arc<AtomicBool>,
}

impl Actor {
    pub(super) fn new(
        config: &CoordinatorConfig,
        replica: &str,
        raft: ShardRaft,
        table: SharedTable,
        events: mpsc::Receiver<Event>,
        abandoned: Arc<AtomicBool>,
    ) -> Self {
        let metrics = raft.server_metrics();
        Self {
            abandoned,
            term: 0,
            known_leader: None,
            leader_changes: metrics::counter!(
                "dtc_raft_leader_changes_total",
                "replica" => replica.to_owned()
            ),
            raft,
            me: config.id,
            table,
            metrics,
            part: Part::Follower { leader: None },
            events,
            tick: config.tick,
            proposer: Proposer::new(config.entries_in_flight, config.commit_linger, now()),
            inflight: FuturesOrdered::new(),
            leader_config: LeaderConfig {
                replica: replica.to_owned(),
                heartbeat_timeout: config.heartbeat_timeout,
                reclaim_grace: config.reclaim_grace,
                max_payload: config.max_payload,
                initial_settings: config.retention,
            },
            wall_clock: config.wall_clock,
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
            let timer = self.next_timer();
            tokio::select! {
                n = self.events.recv_many(&mut events, EVENT_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    let now = now();
                    for event in events.drain(..) {
                        self.on_event(event, now);
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
                _ = tick.tick() => self.on_tick(now()),
                () = sleep_until(self.proposer.linger_until()),
                    if self.proposer.linger_until().is_some() => {}
                () = sleep_until(timer), if timer.is_some() => {
                    self.on_tick(now());
                }
                () = &mut stop => break,
            }
            self.schedule();
            self.propose().await;
        }
        self.step_down(&WireError::ShuttingDown, None);
    }

    fn on_event(&mut self, event: Event, now: Instant) {
        let leader = match &mut self.part {
            Part::Leading(leader) => leader,
            Part::Follower { leader } => {
                refuse(event, leader);
                return;
            }
        };
        let mut out = Effects::default();
        {
            let t = self.table.lock();
            let table = &t.table;
            match event {
                Event::Request { body, reply } => {
                    leader.request(body, reply, table, now, &mut out);
                }
                Event::WorkerUp(w) => leader.worker_up(w, table, now),
                Event::Worker { worker, msg } => leader.worker_msg(worker, msg, now, &mut out),
                Event::WorkerDown { worker } => {
                    leader.drop_worker(worker, leader.at_ms(now), &mut out);
                }
                Event::Status(tx) => {
                    let mut runtime = leader.runtime(now);
                    runtime.states = Some(leader.state_counts(table));
                    tx.send(runtime).ok();
                }
                Event::Admin { request, reply } => {
                    leader.admin(request, reply, table, now, &mut out);
                }
            }
        }
        self.perform(out, now);
    }

    /// Does what the leader decided: queues the commands and lookups for proposal, sends
    /// the answers and the workers' messages. A worker whose queue is closed, or full of
    /// assignments it does not read, is dropped (its tasks re-queued).
    fn perform(&mut self, mut out: Effects, now: Instant) {
        loop {
            for (cmd, then) in out.propose.drain(..) {
                self.proposer.push(cmd, then);
            }
            for read in out.reads.drain(..) {
                self.proposer.read(read);
            }
            for (reply, answer) in out.answers.drain(..) {
                reply.send(answer);
            }
            let Part::Leading(leader) = &mut self.part else {
                return;
            };
            let mut broken: Vec<WorkerId> = Vec::new();
            for (worker, msg) in out.sends.drain(..) {
                let alive = matches!(msg, CoordMsg::Alive);
                let Some(tx) = leader.link(worker) else {
                    continue;
                };
                match tx.try_send(msg) {
                    Ok(()) => {}
                    // A full queue is busy with assignments, which say as much.
                    Err(_) if alive => {}
                    // Its connection has just closed: the task goes back with its others.
                    Err(mpsc::error::TrySendError::Closed(_)) => broken.push(worker),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(
                            worker,
                            "worker is not reading its assignments; dropping it"
                        );
                        broken.push(worker);
                    }
                }
            }
            if broken.is_empty() {
                return;
            }
            let at_ms = leader.at_ms(now);
            broken.sort_unstable();
            broken.dedup();
            for worker in broken {
                leader.drop_worker(worker, at_ms, &mut out);
            }
        }
    }

    /// When the leader's earliest timer is due.
    fn next_timer(&self) -> Option<Instant> {
        match &self.part {
            Part::Leading(leader) => leader.next_timer(now()),
            Part::Follower { .. } => None,
        }
    }

    fn on_tick(&mut self, now: Instant) {
        let Part::Leading(leader) = &mut self.part else {
            return;
        };
        if self.abandoned.swap(false, Ordering::Relaxed) {
            leader.drop_abandoned();
        }
        let mut out = Effects::default();
        leader.tick(now, &self.table.lock().table, &mut out);
        self.perform(out, now);
    }

    /// Hands ready tasks to free worker slots, once the leader is ready.
    fn schedule(&mut self) {
        let Part::Leading(leader) = &mut self.part else {
            return;
        };
        if !leader.is_ready() {
            return;
        }
        let mut out = Effects::default();
        let now = now();
        leader.schedule(&self.table.lock().table, now, &mut out);
        self.perform(out, now);
    }

    /// Proposes the entries that are due (the election barrier first) and attaches this
    /// turn's lookups to the last proposal in flight, or answers them now if none is.
    async fn propose(&mut self) {
        let (barrier, load) = match &mut self.part {
            Part::Leading(leader) => (leader.take_barrier_due(), leader.running()),
            Part::Follower { .. } => (false, 0),
        };
        if barrier {
            // Once the barrier is applied, the table holds every earlier entry.
            self.submit_entry(Batch(Vec::new()), Vec::new(), true).await;
        }
        for batch in self.proposer.due(now(), load) {
            let (cmds, thens): (Vec<_>, Vec<Then>) = batch.into_iter().unzip();
            self.submit_entry(Batch(cmds), thens, false).await;
        }
        let reads = self.proposer.settle_reads();
        self.answer_reads(reads);
    }

    async fn submit_entry(&mut self, batch: Batch, thens: Vec<Then>, barrier: bool) {
        if let Part::Follower { leader } = &self.part {
            let err = WireError::NotLeader {
                leader: leader.clone(),
            };
            for then in thens {
                then.fail(&err);
            }
            return;
        }
        match self.raft.client_write_ff(batch).await {
            Ok(rx) => {
                self.proposer.proposed(thens, barrier, self.term);
                self.inflight
                    .push_back(Box::pin(async move { rx.await.ok() }));
            }
            Err(fatal) => {
                tracing::error!(error = %fatal, "raft has stopped; cannot propose");
                let err = WireError::Unavailable {
                    reason: format!("this replica's raft has stopped: {fatal}"),
                };
                for then in thens {
                    then.fail(&err);
                }
            }
        }
    }

    /// A proposal's result, in proposal order.
    fn on_result(&mut self, result: Option<WriteResult>) {
        let Some(pending) = self.proposer.applied() else {
            return;
        };
        let resp = match result {
            Some(Ok(resp)) => resp,
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
                fail(pending, &err);
                return;
            }
        };
        if resp.log_id.leader_id.term != pending.term {
            // Another leader's entry took this index (this replica stopped leading and
            // installed a snapshot meanwhile, where openraft keeps the waiting proposal):
            // the result is not this proposal's.
            fail(pending, &WireError::NotLeader { leader: None });
            return;
        }
        let index = resp.log_id.index;
        let BatchApplied(applied) = resp.data;
        let mut thens = pending.thens.into_iter();
        let pairs: Vec<_> = applied
            .into_iter()
            .map_while(|applied| thens.next().map(|then| (applied, then)))
            .collect();
        for then in thens {
            then.fail(&WireError::Unavailable {
                reason: "internal error: a command had no result".into(),
            });
        }
        let now = now();
        match &mut self.part {
            Part::Leading(leader) => {
                let mut out = Effects::default();
                {
                    let t = self.table.lock();
                    if pending.barrier {
                        leader.barrier_applied(index, &t.table, now, &mut out);
                    }
                    for (applied, then) in pairs {
                        leader.applied(applied, then, index, &t.table, now, &mut out);
                    }
                    for read in pending.reads {
                        leader.read(read, &t.table, now, &mut out);
                    }
                }
                self.perform(out, now);
            }
            Part::Follower { leader } => {
                for (applied, then) in pairs {
                    then.answer_as_follower(applied, leader.clone());
                }
                self.answer_reads(pending.reads);
            }
        }
    }

    /// Answers lookups: by the leader (which knows what runs, and keeps waiters), or from
    /// the table alone by a replica that no longer leads.
    fn answer_reads(&mut self, reads: Vec<Read>) {
        if reads.is_empty() {
            return;
        }
        match &mut self.part {
            Part::Leading(leader) => {
                let mut out = Effects::default();
                let now = now();
                {
                    let t = self.table.lock();
                    for read in reads {
                        leader.read(read, &t.table, now, &mut out);
                    }
                }
                self.perform(out, now);
            }
            Part::Follower { leader } => {
                let t = self.table.lock();
                for (id, wait, reply) in reads {
                    match t.table.view(id) {
                        None => reply.send(Err(WireError::NotFound)),
                        Some(v) if wait && !v.state.is_finished() => {
                            reply.send(Err(WireError::NotLeader {
                                leader: leader.clone(),
                            }));
                        }
                        Some(v) => reply.send(Ok(v)),
                    }
                }
            }
        }
    }

    /// Follows openraft's view of who leads.
    fn on_metrics(&mut self) {
        let (leads, leader, term) = {
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
            (leads, leader, m.vote.leader_id().term)
        };
        if leads && term != self.term && matches!(self.part, Part::Leading(_)) {
            // It stopped leading and leads again, in a later term, between two looks.
            let err = WireError::NotLeader {
                leader: leader.clone(),
            };
            self.step_down(&err, leader.clone());
        }
        match (&mut self.part, leads) {
            (Part::Leading(_), true) => {}
            (Part::Follower { .. }, true) => {
                tracing::info!(
                    node = self.me,
                    term,
                    "leading the shard; applying the log before scheduling"
                );
                // What it proposed in an earlier term and is still in flight is not waited
                // for: openraft may never answer it (a snapshot installed meanwhile covers
                // its index), and this term's results come after it.
                self.term = term;
                let err = WireError::NotLeader {
                    leader: leader.clone(),
                };
                for pending in self.proposer.take_in_flight() {
                    fail(pending, &err);
                }
                self.inflight = FuturesOrdered::new();
                let config = self.leader_config.clone();
                let t = self.table.lock();
                // The wall clock first, then the instant it stands for: read the other way
                // round, a pause between the two would put the leader's clock ahead.
                let wall_ms = (self.wall_clock)();
                let runtime = Leader::elected(config, &t.table, wall_ms, now());
                drop(t);
                self.part = Part::Leading(Box::new(runtime));
            }
            (Part::Leading(_), false) => {
                tracing::info!(node = self.me, ?leader, "no longer leading the shard");
                let err = WireError::NotLeader {
                    leader: leader.clone(),
                };
                self.step_down(&err, leader);
            }
            (Part::Follower { leader: known }, false) => {
                if *known != leader {
                    *known = leader;
                }
            }
        }
    }

    /// Ends this replica's term as leader, if it leads: the commands and lookups not yet
    /// proposed get `err`, and the leader's runtime goes (its waiters get `err`, its
    /// workers are disconnected and reconnect to whoever leads).
    fn step_down(&mut self, err: &WireError, leader: Option<String>) {
        let (thens, reads) = self.proposer.take_unproposed();
        for then in thens {
            then.fail(err);
        }
        for (_, _, reply) in reads {
            reply.send(Err(err.clone()));
        }
        if let Part::Leading(runtime) = std::mem::replace(&mut self.part, Part::Follower { leader })
        {
            runtime.step_down(err);
        }
    }
}

/// Answers a proposal's commands and the lookups after it with `err`.
fn fail(pending: Pending<Then, Read>, err: &WireError) {
    for then in pending.thens {
        then.fail(err);
    }
    for (_, _, reply) in pending.reads {
        reply.send(Err(err.clone()));
    }
}

/// Answers an event that only a leader can serve with `NotLeader` (and the leader's
/// address, when known).
fn refuse(event: Event, leader: &Option<String>) {
    let err = WireError::NotLeader {
        leader: leader.clone(),
    };
    match event {
        Event::Request { reply, .. } => reply.send(Err(err)),
        Event::WorkerUp(w) => {
            // The worker reads this, closes, and goes to the leader; dropping its queue lets
            // the connection's writer send it and finish.
            w.tx.try_send(CoordMsg::Error(err)).ok();
        }
        Event::Status(tx) => {
            tx.send(Runtime::default()).ok();
        }
        Event::Admin { request, reply } => {
            reply.send(request.failed(err)).ok();
        }
        Event::Worker { .. } | Event::WorkerDown { .. } => {}
    }
}
