//! The coordinator's actor loop: the single owner of the shard's task table, its scheduler,
//! the waiting clients and the connected workers' queues. Connection tasks send it
//! [`Event`]s; it answers through [`Reply`] handles and worker queues, never blocking on them.
//!
//! Each turn drains a batch of events, turns them into table commands, applies the batch
//! (with consensus this becomes one log entry per batch), and then hands ready tasks to free
//! slots.

use super::CoordinatorConfig;
use crate::net::Reply;
use crate::sched::{Scheduler, WorkerId};
use crate::shard::{Applied, Command, SubmitOutcome, TaskTable};
use dtc_proto::message::{Assignment, CoordMsg, RequestBody, WorkerMsg};
use dtc_proto::{TaskId, TaskState, TaskView, WireError};
use foldhash::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const EVENT_BATCH: usize = 1024;

/// What connection tasks tell the actor.
#[derive(Debug)]
pub(super) enum Event {
    /// A client's request.
    Request { body: RequestBody, reply: Reply },
    /// A worker registered.
    WorkerUp {
        worker: WorkerId,
        tx: mpsc::Sender<CoordMsg>,
        slots: u32,
        kinds: Vec<String>,
        running: Vec<TaskId>,
        cancel: CancellationToken,
    },
    /// A message from a registered worker.
    Worker { worker: WorkerId, msg: WorkerMsg },
    /// A worker's connection closed.
    WorkerDown { worker: WorkerId },
}

/// What to do once a command has been applied.
enum Then {
    /// Answer the submitter (now, or when the task finishes if `wait`).
    Submitted { reply: Reply, wait: bool },
    /// Answer a cancel.
    Cancelled(Reply),
    /// An attempt of this task ended (a completion or a lost worker): if the attempt was
    /// stale and the task is still queued but runs nowhere, it must be made ready again.
    Ended(TaskId),
    /// Nobody to answer (expiry).
    Nothing,
}

struct WorkerConn {
    tx: mpsc::Sender<CoordMsg>,
    cancel: CancellationToken,
}

pub(super) struct Actor {
    table: TaskTable,
    sched: Scheduler,
    workers: HashMap<WorkerId, WorkerConn>,
    /// Clients waiting for a task to finish.
    waiters: HashMap<TaskId, Vec<Reply>>,
    events: mpsc::Receiver<Event>,
    tick: std::time::Duration,
    /// Commands of this turn, with what to do after each is applied.
    batch: Vec<(Command, Then)>,
    /// Lookups of this turn (task, wait for the end, who asked), answered after the commands.
    reads: Vec<(TaskId, bool, Reply)>,
}

impl Actor {
    pub(super) fn new(config: &CoordinatorConfig, events: mpsc::Receiver<Event>) -> Self {
        Self {
            table: TaskTable::new(config.retention),
            sched: Scheduler::new(config.heartbeat_timeout),
            workers: HashMap::default(),
            waiters: HashMap::default(),
            events,
            tick: config.tick,
            batch: Vec::new(),
            reads: Vec::new(),
        }
    }

    pub(super) async fn run(mut self, cancel: CancellationToken) {
        let mut events = Vec::with_capacity(EVENT_BATCH);
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = cancel.cancelled();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                n = self.events.recv_many(&mut events, EVENT_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    let now = Instant::now();
                    let at_ms = wall_ms();
                    for event in events.drain(..) {
                        self.on_event(event, now, at_ms);
                    }
                }
                _ = tick.tick() => self.on_tick(Instant::now(), wall_ms()),
                () = &mut stop => break,
            }
            self.commit();
            self.schedule();
        }
        for (_, reply) in self
            .waiters
            .drain()
            .flat_map(|(id, r)| r.into_iter().map(move |r| (id, r)))
        {
            reply.send(Err(WireError::ShuttingDown));
        }
        for (_, w) in self.workers.drain() {
            w.cancel.cancel();
        }
    }

    fn on_event(&mut self, event: Event, now: Instant, at_ms: u64) {
        match event {
            Event::Request { body, reply } => self.on_request(body, reply, at_ms),
            Event::WorkerUp {
                worker,
                tx,
                slots,
                kinds,
                running,
                cancel,
            } => {
                let still: Vec<(TaskId, u32)> = running
                    .into_iter()
                    .filter(|id| self.sched.running_on(*id).is_none())
                    .filter_map(|id| {
                        self.table
                            .queued_input(id)
                            .map(|(attempt, ..)| (id, attempt))
                    })
                    .collect();
                self.sched.add_worker(worker, slots, kinds, still, now);
                self.workers.insert(worker, WorkerConn { tx, cancel });
            }
            Event::Worker { worker, msg } => {
                self.sched.seen(worker, now);
                match msg {
                    WorkerMsg::Heartbeat | WorkerMsg::Register { .. } => {}
                    WorkerMsg::Draining => self.sched.drain(worker),
                    WorkerMsg::Completed(c) => {
                        self.sched.completed(worker, c.id);
                        let cmd = Command::Complete {
                            id: c.id,
                            attempt: c.attempt,
                            outcome: c.outcome,
                            at_ms,
                        };
                        self.batch.push((cmd, Then::Ended(c.id)));
                    }
                }
            }
            Event::WorkerDown { worker } => self.drop_worker(worker, at_ms),
        }
    }

    fn on_request(&mut self, body: RequestBody, reply: Reply, at_ms: u64) {
        match body {
            RequestBody::Submit { task, wait } => {
                self.batch.push((
                    Command::Submit { spec: task, at_ms },
                    Then::Submitted { reply, wait },
                ));
            }
            // Answered after this turn's commands are applied, so that a lookup sees the
            // submits that came before it.
            RequestBody::Get { id, wait } => self.reads.push((id, wait, reply)),
            RequestBody::Cancel { id } => {
                if self.sched.running_on(id).is_some() {
                    let reason = "the task is running; only queued tasks can be cancelled".into();
                    reply.send(Err(WireError::BadRequest { reason }));
                } else {
                    self.batch
                        .push((Command::Cancel { id, at_ms }, Then::Cancelled(reply)));
                }
            }
        }
    }

    fn on_tick(&mut self, now: Instant, at_ms: u64) {
        for worker in self.sched.expired(now) {
            tracing::warn!(
                worker,
                "worker missed its heartbeats; re-queueing its tasks"
            );
            self.drop_worker(worker, at_ms);
        }
        self.batch.push((Command::Expire { at_ms }, Then::Nothing));
    }

    fn drop_worker(&mut self, worker: WorkerId, at_ms: u64) {
        if let Some(conn) = self.workers.remove(&worker) {
            conn.cancel.cancel();
        }
        for (id, attempt) in self.sched.remove_worker(worker) {
            self.batch
                .push((Command::Requeue { id, attempt, at_ms }, Then::Ended(id)));
        }
    }

    /// Applies this turn's commands in order and performs what each yields.
    fn commit(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        for (cmd, then) in batch {
            let applied = self.table.apply(cmd);
            self.after(applied, then);
        }
        for (id, wait, reply) in std::mem::take(&mut self.reads) {
            match self.view(id) {
                None => reply.send(Err(WireError::NotFound)),
                Some(v) if wait && !v.state.is_finished() => self.wait_for(id, reply),
                Some(v) => reply.send(Ok(v)),
            }
        }
    }

    fn after(&mut self, applied: Applied, then: Then) {
        match (applied, then) {
            (
                Applied::Submitted(Ok(SubmitOutcome { view, created })),
                Then::Submitted { reply, wait },
            ) => {
                if created {
                    self.enqueue(view.id);
                }
                let view = self.overlay(view);
                if wait && !view.state.is_finished() {
                    self.wait_for(view.id, reply);
                } else {
                    reply.send(Ok(view));
                }
            }
            (Applied::Submitted(Err(e)), Then::Submitted { reply, .. }) => reply.send(Err(e)),
            (Applied::Requeued(id), _) => self.enqueue(id),
            (Applied::Finished(view), then) => {
                self.sched.forget(view.id);
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
            (applied, Then::Submitted { reply, .. } | Then::Cancelled(reply)) => {
                tracing::error!(?applied, "a command yielded an unexpected result");
                reply.send(Err(WireError::Unavailable {
                    reason: "internal error".into(),
                }));
            }
            (Applied::Nothing, Then::Ended(id)) => {
                // A stale attempt ended; the current one may have been lost with an earlier
                // connection of the same worker. Make sure the task can still run.
                if self.sched.running_on(id).is_none() {
                    self.enqueue(id);
                }
            }
            (
                Applied::Submitted(_) | Applied::CancelRefused(..) | Applied::Nothing,
                Then::Nothing | Then::Ended(_),
            ) => {}
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
        if let Some((_, kind, _)) = self.table.queued_input(id) {
            self.sched.enqueue(id, kind);
        }
    }

    /// Hands ready tasks to free worker slots.
    fn schedule(&mut self) {
        let table = &self.table;
        let assigned = self
            .sched
            .assign(|id| table.queued_input(id).map(|(attempt, ..)| attempt));
        let mut broken = Vec::new();
        for a in assigned {
            let Some((_, kind, payload)) = self.table.queued_input(a.id) else {
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
            let sent = w.tx.try_send(msg);
            match sent {
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
        if !broken.is_empty() {
            let at_ms = wall_ms();
            for worker in broken {
                self.drop_worker(worker, at_ms);
            }
            self.commit();
        }
    }

    /// The task as a client sees it: the table's view, with `Running` where it runs.
    fn view(&self, id: TaskId) -> Option<TaskView> {
        self.table.view(id).map(|v| self.overlay(v))
    }

    fn overlay(&self, mut view: TaskView) -> TaskView {
        if view.state == TaskState::Queued && self.sched.running_on(view.id).is_some() {
            view.state = TaskState::Running;
            view.attempts += 1;
        }
        view
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
