//! The worker runtime: registers slots with a coordinator, runs assigned tasks in `slots`
//! long-lived slot tasks that share one inbox (a slot that finishes starts the next
//! prefetched task at once), sends completions back (batched by the connection's writer),
//! heartbeats, reconnects with backoff when the coordinator goes away (reporting the tasks
//! still running so they are not run twice), and drains on shutdown: it stops taking tasks,
//! finishes the running ones, reports them, then returns.
//!
//! Handlers are plain async functions of a [`Task`]. They share the runtime
//! with the heartbeats, so a handler must not block it: run long CPU work or blocking calls
//! with `tokio::task::spawn_blocking` (a worker whose heartbeats stop for the coordinator's
//! timeout is declared dead, and its tasks run elsewhere).
//!
//! When the coordinator says an attempt must stop (it overran its timeout, or the task was
//! cancelled), the attempt's [`Task::cancelled`] fires and the slot stops waiting for the
//! handler at once (its future is dropped), reports the attempt and takes the next task.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dtc_sdk::WorkerError> {
//! use dtc_sdk::{Task, Worker};
//! let worker = Worker::builder()
//!     .slots(4)
//!     .handler("upper", |task: Task| async move {
//!         let text = String::from_utf8(task.payload.to_vec()).map_err(|e| e.to_string())?;
//!         Ok::<_, String>(text.to_uppercase())
//!     })
//!     .build()?;
//! let addr = "127.0.0.1:5000".parse().map_err(|_| dtc_sdk::WorkerError::NoAddress)?;
//! worker.run(vec![addr], tokio_util::sync::CancellationToken::new()).await
//! # }
//! ```

use crate::handlers;
use crate::task::{Report, Task, TaskError};
use crate::timer::PreciseTimer;
use bytes::Bytes;
use dtc_proto::connection::{FrameReader, write_loop};
use dtc_proto::credentials::Credentials;
use dtc_proto::follow::{LeaderTrail, Step};
use dtc_proto::hash::HashMap;
use dtc_proto::message::{Assignment, Completion, CoordMsg, Role, WorkerMsg};
use dtc_proto::mux::dial;
use dtc_proto::transport::{Secure, Tcp, Transport};
use dtc_proto::{DEFAULT_MAX_FRAME, Outcome, ProtoError, Retry, TaskId, WireError};
use futures_util::FutureExt;
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

type BoxFuture = Pin<Box<dyn Future<Output = Result<Bytes, TaskError>> + Send>>;
type Handler = Arc<dyn Fn(Task) -> BoxFuture + Send + Sync>;

const MIN_BACKOFF: Duration = Duration::from_millis(20);

/// A coordinator silent for this many heartbeat intervals (and at least `MIN_SILENCE`) is
/// taken for gone.
const SILENT_HEARTBEATS: u32 = 10;
const MIN_SILENCE: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Why a worker could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The worker has no slot.
    #[error("a worker needs at least one slot")]
    NoSlots,
    /// No coordinator address was given.
    #[error("a worker needs at least one coordinator address")]
    NoAddress,
    /// The worker has no handler.
    #[error("a worker needs at least one handler")]
    NoHandlers,
    /// A queue name is not valid.
    #[error("{0}")]
    BadQueue(String),
}

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    handlers: HashMap<String, Handler>,
    slots: u32,
    prefetch: Option<u32>,
    name: String,
    heartbeat: Duration,
    max_frame: usize,
    builtins: bool,
    queues: Vec<String>,
    credentials: Arc<Credentials>,
}

impl WorkerBuilder {
    /// Registers `f` as the handler of tasks of type `kind`. It gets the task and returns its
    /// result bytes, or an error (a [`TaskError`], or anything that converts into one such as
    /// a `String`) whose text becomes the attempt's error.
    pub fn handler<F, Fut, O, E>(mut self, kind: &str, f: F) -> Self
    where
        F: Fn(Task) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
        O: Into<Bytes>,
        E: Into<TaskError>,
    {
        let f = Arc::new(f);
        let handler: Handler = Arc::new(move |task| {
            let fut = f(task);
            Box::pin(async move { fut.await.map(Into::into).map_err(Into::into) })
        });
        self.handlers.insert(kind.to_string(), handler);
        self
    }

    /// Adds the built-in `noop`, `sleep`, `wordcount` and `fail` handlers (see [`handlers`]).
    pub fn builtins(mut self) -> Self {
        self.builtins = true;
        self
    }

    /// The queues the worker takes tasks from (default: only `default`). A task goes only
    /// to workers that serve its queue; among the queues, higher priority and longer
    /// waiting go first. `name=weight` (`critical=3`, weight 1 to 1000) weighs a queue:
    /// while several of the worker's queues have tasks ready, its slots go to them in
    /// proportion to their weights (`critical=3,default=1`: three of four to `critical`).
    pub fn queues<Q: Into<String>>(mut self, queues: impl IntoIterator<Item = Q>) -> Self {
        self.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// How many tasks run at once (default 4).
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = slots;
        self
    }

    /// How many tasks beyond its slots the worker takes ahead (default: as many as its
    /// slots), so that a freed slot starts the next task without a round trip to the
    /// coordinator. 0 takes only what the slots run.
    pub fn prefetch(mut self, tasks: u32) -> Self {
        self.prefetch = Some(tasks);
        self
    }

    /// The worker's name in the coordinator's logs.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How often a heartbeat is sent (default 200 ms).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// The largest frame sent or accepted.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// What the worker proves itself with (TLS and the worker token, when the cluster has
    /// secrets); plain by default.
    pub fn credentials(mut self, credentials: Arc<Credentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Checks the settings and builds the worker.
    pub fn build(mut self) -> Result<Worker, WorkerError> {
        if self.slots == 0 {
            return Err(WorkerError::NoSlots);
        }
        if self.builtins {
            let timer = PreciseTimer::new();
            self = self
                .handler("noop", |_task| async { Ok::<_, String>(Bytes::new()) })
                .handler("sleep", move |task| {
                    let timer = timer.clone();
                    async move { handlers::sleep(&timer, &task.payload).await }
                })
                .handler("wordcount", |task| handlers::wordcount(task.payload))
                .handler("fail", |task| async move { handlers::fail(&task.payload) });
        }
        if self.handlers.is_empty() {
            return Err(WorkerError::NoHandlers);
        }
        let mut queues = Vec::with_capacity(self.queues.len());
        let mut weights = Vec::with_capacity(self.queues.len());
        for given in &self.queues {
            let (queue, weight) = weighted(given)?;
            queues.push(queue);
            weights.push(weight);
        }
        if weights.iter().all(|w| *w == 1) {
            weights.clear();
        }
        Ok(Worker {
            handlers: Arc::new(self.handlers),
            slots: self.slots,
            prefetch: self.prefetch.unwrap_or(self.slots),
            name: self.name,
            heartbeat: self.heartbeat,
            max_frame: self.max_frame,
            queues,
            weights,
            credentials: self.credentials,
        })
    }
}

/// A queue as given to [`WorkerBuilder::queues`]: `name` or `name=weight`.
fn weighted(given: &str) -> Result<(String, u32), WorkerError> {
    let (name, weight) = match given.split_once('=') {
        None => (given, 1),
        Some((name, weight)) => {
            let weight = weight
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|w| (1..=dtc_proto::message::MAX_QUEUE_WEIGHT).contains(w))
                .ok_or_else(|| {
                    WorkerError::BadQueue(format!(
                        "{given:?}: a queue's weight is a whole number from 1 to {} \
                         (critical=3)",
                        dtc_proto::message::MAX_QUEUE_WEIGHT
                    ))
                })?;
            (name.trim(), weight)
        }
    };
    dtc_proto::check_queue_name(name).map_err(|e| WorkerError::BadQueue(e.to_string()))?;
    Ok((name.to_owned(), weight))
}

/// A worker: slots and handlers, ready to [`run`](Worker::run) against a coordinator.
pub struct Worker {
    handlers: Arc<HashMap<String, Handler>>,
    slots: u32,
    prefetch: u32,
    name: String,
    heartbeat: Duration,
    max_frame: usize,
    queues: Vec<String>,
    /// Each queue's weight (empty: all 1).
    weights: Vec<u32>,
    credentials: Arc<Credentials>,
}

/// What the run loop tracks across connections.
struct State {
    /// Tasks assigned and not yet completed (running or waiting): id → attempt, and the
    /// attempt's cancellation signal.
    running: HashMap<TaskId, (u32, CancellationToken)>,
    /// The slots' shared queue of tasks to run.
    inbox: mpsc::Sender<Task>,
    /// Tasks that did not fit in the inbox (only after a reconnect), in arrival order.
    overflow: VecDeque<Task>,
    /// Completions not yet handed to a connection.
    outbox: Vec<Completion>,
    /// Where the handlers' progress reports go.
    reports: mpsc::Sender<Report>,
    draining: bool,
}

impl State {
    /// Hands a task to the slots (or keeps it until the inbox has room).
    fn give(&mut self, task: Assignment) {
        let task = Task::assigned(task, self.reports.clone());
        self.running
            .insert(task.id, (task.attempt, task.cancel_token()));
        if !self.overflow.is_empty() {
            self.overflow.push_back(task);
        } else if let Err(e) = self.inbox.try_send(task) {
            self.overflow.push_back(e.into_inner());
        }
    }

    /// The coordinator says `attempt` of `id` must stop.
    fn cancel(&mut self, id: TaskId, attempt: u32) {
        if let Some((held, token)) = self.running.get(&id)
            && *held == attempt
        {
            token.cancel();
        }
    }

    /// An attempt ended: queue its completion and refill the inbox.
    fn finished(&mut self, c: Completion) {
        if self
            .running
            .get(&c.id)
            .is_some_and(|(a, _)| *a == c.attempt)
        {
            self.running.remove(&c.id);
        }
        self.outbox.push(c);
        while let Some(task) = self.overflow.pop_front() {
            if let Err(e) = self.inbox.try_send(task) {
                self.overflow.push_front(e.into_inner());
                break;
            }
        }
    }
}

impl Worker {
    /// A builder with 4 slots, a 200 ms heartbeat and no handler.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder {
            handlers: HashMap::default(),
            slots: 4,
            prefetch: None,
            name: format!("worker-{}", std::process::id()),
            heartbeat: Duration::from_millis(200),
            max_frame: DEFAULT_MAX_FRAME,
            builtins: false,
            queues: Vec::new(),
            credentials: Arc::new(Credentials::plain()),
        }
    }

    /// Runs against the coordinator at the first reachable of `addrs`, over TCP (with TLS
    /// when its credentials have it), until
    /// `shutdown` fires and the running tasks have finished and been reported (or, if no
    /// coordinator can be reached, until they have finished).
    pub async fn run(
        self,
        addrs: Vec<SocketAddr>,
        shutdown: CancellationToken,
    ) -> Result<(), WorkerError> {
        let transport = Secure::new(Tcp, Arc::clone(&self.credentials));
        self.run_on(transport, addrs, shutdown).await
    }

    /// [`run`](Self::run) over `transport` (TCP, or a simulated network).
    pub async fn run_on<T: Transport>(
        self,
        transport: T,
        addrs: Vec<SocketAddr>,
        shutdown: CancellationToken,
    ) -> Result<(), WorkerError> {
        if addrs.is_empty() {
            return Err(WorkerError::NoAddress);
        }
        let (done_tx, mut done_rx) = mpsc::channel::<Completion>(self.slots as usize * 2 + 16);
        // Progress reports: a few per slot in flight; more are dropped (best effort).
        let (reports, mut reports_rx) = mpsc::channel::<Report>(self.slots as usize * 4 + 16);
        let (inbox, inbox_rx) = mpsc::channel::<Task>((self.slots + self.prefetch) as usize + 1);
        let inbox_rx = Arc::new(tokio::sync::Mutex::new(inbox_rx));
        let label = [("worker", self.name.clone())];
        metrics::gauge!("dtc_worker_slots", &label).set(f64::from(self.slots));
        let meters = SlotMeters {
            busy: metrics::gauge!("dtc_worker_slots_busy", &label),
            succeeded: metrics::counter!("dtc_worker_tasks_total", "worker" => self.name.clone(), "outcome" => "succeeded"),
            failed: metrics::counter!("dtc_worker_tasks_total", "worker" => self.name.clone(), "outcome" => "failed"),
        };
        for _ in 0..self.slots {
            tokio::spawn(slot(
                Arc::clone(&self.handlers),
                Arc::clone(&inbox_rx),
                done_tx.clone(),
                meters.clone(),
            ));
        }
        drop(done_tx);
        let mut st = State {
            running: HashMap::default(),
            inbox,
            overflow: VecDeque::new(),
            outbox: Vec::new(),
            reports,
            draining: false,
        };
        let mut backoff = MIN_BACKOFF;
        let mut trail = LeaderTrail::default();
        loop {
            if st.draining && st.running.is_empty() && st.outbox.is_empty() {
                return Ok(());
            }
            let mut connected = None;
            let mut unreachable = Vec::new();
            let hello = transport.hello(Role::Worker, &self.name);
            for addr in trail.order(&addrs) {
                match dial(&transport, addr, &hello, self.max_frame).await {
                    Ok((reader, writer, _)) => {
                        connected = Some((reader, writer, addr));
                        break;
                    }
                    Err(ProtoError::Refused(WireError::Auth { reason })) => {
                        tracing::warn!(%addr, %reason, "the coordinator refused this worker");
                        unreachable.push(addr);
                    }
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "cannot reach coordinator");
                        unreachable.push(addr);
                    }
                }
            }
            if let Some((reader, writer, addr)) = connected {
                tracing::info!(%addr, slots = self.slots, "worker connected");
                let refusal = self
                    .session(
                        reader.retype(),
                        writer,
                        &mut st,
                        (&mut done_rx, &mut reports_rx),
                        &shutdown,
                    )
                    .await;
                if st.draining && st.running.is_empty() && st.outbox.is_empty() {
                    return Ok(());
                }
                match refusal {
                    Some(WireError::NotLeader { leader: hint }) => {
                        // Follow the shard's leader; during an election nobody is named yet.
                        let hint = hint.and_then(|a| a.parse().ok());
                        tracing::debug!(%addr, ?hint, "not the shard's leader; moving");
                        if trail.not_leader(addr, hint, &unreachable) == Step::Now {
                            continue;
                        }
                    }
                    _ => {
                        // It served this worker until the connection ended.
                        backoff = MIN_BACKOFF;
                        trail.lost();
                        tracing::warn!(%addr, running = st.running.len(), "lost the coordinator; reconnecting");
                    }
                }
            }
            // Wait before retrying, still collecting completions and watching for shutdown.
            let pause = tokio::time::sleep(backoff);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    () = &mut pause => break,
                    Some(c) = done_rx.recv() => st.finished(c),
                    () = shutdown.cancelled(), if !st.draining => st.draining = true,
                }
                if st.draining && st.running.is_empty() {
                    // The coordinator re-queues what it does not hear about; nothing is lost.
                    if !st.outbox.is_empty() {
                        tracing::warn!(
                            undelivered = st.outbox.len(),
                            "stopping without a coordinator to report to"
                        );
                    }
                    return Ok(());
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Serves one connection until it fails or the worker has drained; returns the
    /// coordinator's refusal, if it sent one.
    async fn session<R, W>(
        &self,
        mut reader: FrameReader<R, CoordMsg>,
        writer: W,
        st: &mut State,
        (done_rx, reports_rx): (&mut mpsc::Receiver<Completion>, &mut mpsc::Receiver<Report>),
        shutdown: &CancellationToken,
    ) -> Option<WireError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let mut refusal = None;
        let (tx, rx) = mpsc::channel::<WorkerMsg>((self.slots + self.prefetch) as usize * 2 + 64);
        let conn_cancel = CancellationToken::new();
        let writer_task = tokio::spawn(write_loop(writer, rx, self.max_frame, conn_cancel.clone()));
        let mut kinds: Vec<String> = self.handlers.keys().cloned().collect();
        kinds.sort();
        let register = WorkerMsg::Register {
            slots: self.slots,
            prefetch: self.prefetch,
            kinds,
            queues: self.queues.clone(),
            weights: self.weights.clone(),
            // Finished attempts whose completion is still to be sent are held too: the
            // completion follows the registration on this connection.
            running: st
                .running
                .iter()
                .map(|(id, (attempt, _))| (*id, *attempt))
                .chain(st.outbox.iter().map(|c| (c.id, c.attempt)))
                .collect(),
        };
        let mut ok = tx.try_send(register).is_ok()
            && (!st.draining || tx.try_send(WorkerMsg::Draining).is_ok());
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        let mut heard = Instant::now();
        let silence = (self.heartbeat * SILENT_HEARTBEATS).max(MIN_SILENCE);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut done = Vec::with_capacity(self.slots as usize);
        let stop = shutdown.cancelled();
        tokio::pin!(stop);
        while ok {
            let mut owed = std::mem::take(&mut st.outbox).into_iter();
            while let Some(c) = owed.next() {
                if let Err(e) = tx.try_send(WorkerMsg::Completed(c)) {
                    if let WorkerMsg::Completed(c) = e.into_inner() {
                        st.outbox.push(c);
                    }
                    st.outbox.extend(owed);
                    break;
                }
            }
            if st.draining && st.running.is_empty() && st.outbox.is_empty() {
                break;
            }
            tokio::select! {
                msg = reader.next() => match msg {
                                        Ok(Some(CoordMsg::Assign(task))) => {
                        heard = Instant::now();
                        st.give(task);
                    }
                    Ok(Some(CoordMsg::Alive)) => heard = Instant::now(),
                    Ok(Some(CoordMsg::Cancel { id, attempt })) => {
                        heard = Instant::now();
                        st.cancel(id, attempt);
                    }
                                        Ok(Some(CoordMsg::Error(e))) => {
                        if !matches!(e, WireError::NotLeader { .. }) {
                            tracing::warn!(error = %e, "the coordinator refused this worker");
                        }
                        refusal = Some(e);
                        ok = false;
                    }
                    Ok(None) => ok = false,
                    Err(e) => {
                                                tracing::warn!(error = %e, "the connection to the coordinator failed");
                        ok = false;
                    }
                },
                n = done_rx.recv_many(&mut done, self.slots as usize) => {
                    for c in done.drain(..n) {
                        st.finished(c);
                    }
                }
                Some((id, attempt, progress)) = reports_rx.recv() => {
                    // Only for an attempt still held; a full queue drops the report.
                    if st.running.get(&id).is_some_and(|(a, _)| *a == attempt) {
                        let report = WorkerMsg::Progress { id, attempt, progress };
                        ok = !matches!(tx.try_send(report), Err(mpsc::error::TrySendError::Closed(_)));
                    }
                }
                                _ = heartbeat.tick() => {
                    if heard.elapsed() > silence {
                        // The coordinator's answers stopped: it is gone, no longer leads, or
                        // the network lost the connection without closing it.
                        tracing::warn!(silent = ?heard.elapsed(), "the coordinator stopped answering heartbeats; reconnecting");
                        ok = false;
                        continue;
                    }
                    // A full queue already carries news of life; only a closed one ends the session.
                    ok = !matches!(tx.try_send(WorkerMsg::Heartbeat), Err(mpsc::error::TrySendError::Closed(_)));
                }
                () = &mut stop, if !st.draining => {
                    tracing::info!(running = st.running.len(), "draining: finishing running tasks");
                    st.draining = true;
                    ok = tx.send(WorkerMsg::Draining).await.is_ok();
                }
            }
        }
        drop(tx);
        if writer_task.await.is_err() {
            tracing::warn!("the worker's writer stopped abnormally");
        }
        conn_cancel.cancel();
        refusal
    }
}

/// A worker's series in the process's metrics recorder (`dtc worker --metrics`), shared by
/// its slots.
#[derive(Clone)]
struct SlotMeters {
    busy: metrics::Gauge,
    succeeded: metrics::Counter,
    failed: metrics::Counter,
}

/// One slot: takes the next task from the shared inbox, runs its handler, reports the
/// completion, and repeats; it ends when the inbox closes. A slot that finishes a task starts
/// the next one at once, without a round trip through the connection's task.
async fn slot(
    handlers: Arc<HashMap<String, Handler>>,
    inbox: Arc<tokio::sync::Mutex<mpsc::Receiver<Task>>>,
    done: mpsc::Sender<Completion>,
    meters: SlotMeters,
) {
    loop {
        let next = inbox.lock().await.recv().await;
        let Some(task) = next else { return };
        let (id, attempt, stop) = (task.id, task.attempt, task.cancel_token());
        let run: BoxFuture = match handlers.get(&task.kind) {
            Some(handler) => handler(task),
            None => {
                let mut kinds: Vec<&str> = handlers.keys().map(String::as_str).collect();
                kinds.sort_unstable();
                let reason = format!(
                    "this worker has no handler for task type {:?} (it has: {})",
                    task.kind,
                    kinds.join(", ")
                );
                Box::pin(async move { Err(TaskError::retryable(reason)) })
            }
        };
        meters.busy.increment(1.0);
        // A stopped attempt's result does not count: the handler is dropped where it waits.
        let result = tokio::select! {
            biased;
            () = stop.cancelled() => Ok(Err(TaskError::fatal("the attempt was stopped"))),
            r = AssertUnwindSafe(run).catch_unwind() => r,
        };
        meters.busy.decrement(1.0);
        let completion = completion(id, attempt, result);
        match completion.outcome {
            Outcome::Succeeded(_) => meters.succeeded.increment(1),
            _ => meters.failed.increment(1),
        }
        if done.send(completion).await.is_err() {
            return;
        }
    }
}

/// The completion of an attempt from what its handler returned (or how it panicked).
fn completion(
    id: TaskId,
    attempt: u32,
    result: std::thread::Result<Result<Bytes, TaskError>>,
) -> Completion {
    let (outcome, retry) = match result {
        Ok(Ok(bytes)) => (Outcome::Succeeded(bytes), Retry::Policy),
        Ok(Err(e)) => (Outcome::Failed(e.message().to_owned()), e.retry()),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            (
                Outcome::Failed(format!("the handler panicked: {what}")),
                Retry::Policy,
            )
        }
    };
    Completion {
        id,
        attempt,
        outcome,
        retry,
    }
}
