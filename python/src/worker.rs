//! `dtc._native.Worker`: the Rust SDK's worker (registration, prefetch, heartbeats,
//! following the shard's leader, draining) with Python functions as its handlers.
//! `dtc.Worker` (in Python) wraps it with the `@worker.task` decorator and the signal
//! handling of `run()`.
//!
//! The protocol and the heartbeats run on the runtime's threads and never take the GIL.
//! Handlers are called by a pool of Python threads (`Worker.serve`, one thread per slot,
//! started by the Python side): a slot hands a [`Call`] to the pool through a bounded
//! channel and waits for its answer. A plain function runs on the pool thread; a coroutine
//! function is scheduled on the event loop the Python side started
//! (`asyncio.run_coroutine_threadsafe`) and answers through a [`Reply`] called on the
//! loop's thread. A CPU-bound handler therefore delays nothing but other Python code.
//! Threads of Python's own keep their interpreter state between calls; calling from the
//! runtime's blocking pool made and dropped one per call (a 16 KiB frame stack mapped and
//! unmapped each time).

use crate::spec::{self, bytes_of};
use crate::{errors, lock, runtime};
use bytes::Bytes;
use dtc_sdk::{Task, TaskError};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One attempt of a task, as a Python handler sees it (`dtc.Task`).
#[pyclass(frozen, name = "Task", module = "dtc")]
pub struct HandlerTask {
    task: Task,
}

#[pymethods]
impl HandlerTask {
    /// The task's id (a UUID, as text).
    #[getter]
    fn id(&self) -> String {
        self.task.id.to_string()
    }

    /// The task's type.
    #[getter]
    fn r#type(&self) -> &str {
        &self.task.kind
    }

    /// Which attempt this is, from 1.
    #[getter]
    fn attempt(&self) -> u32 {
        self.task.attempt
    }

    /// The handler's input.
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.task.payload)
    }

    /// The input decoded as UTF-8 text.
    #[getter]
    fn text<'py>(&self, py: Python<'py>) -> PyResult<&str> {
        std::str::from_utf8(&self.task.payload).map_err(|e| {
            pyo3::exceptions::PyUnicodeDecodeError::new_err_from_utf8(py, &self.task.payload, e)
        })
    }

    /// Whether this attempt has been told to stop (it overran its timeout or the task was
    /// cancelled); a long handler should look now and then and return.
    #[getter]
    fn cancelled(&self) -> bool {
        self.task.is_cancelled()
    }

    /// Reports how far this attempt has come: `fraction` done (0 to 1) and what it is doing
    /// (at most 256 bytes), shown by `dtc get`, the HTTP API and the dashboard while it
    /// runs. Best effort: it never blocks, and reports sent faster than they can be
    /// forwarded are dropped.
    #[pyo3(signature = (fraction, message=""))]
    fn progress(&self, fraction: f64, message: &str) {
        self.task.progress(fraction, message);
    }

    fn __repr__(&self) -> String {
        format!(
            "Task(id='{}', type={:?}, attempt={})",
            self.task.id, self.task.kind, self.task.attempt
        )
    }
}

/// What an exception raised by a handler means for the attempt: `dtc.Fatal` ends the
/// task, `dtc.RetryAfter` retries after its delay, anything else is retried by the task's
/// backoff, with the traceback as the attempt's error.
fn task_error(py: Python<'_>, err: &PyErr) -> TaskError {
    let value = err.value(py);
    let is = |name: &str| {
        errors::class(py, name)
            .and_then(|cls| value.is_instance(&cls))
            .unwrap_or(false)
    };
    let text = value.str().map(|s| s.to_string()).unwrap_or_default();
    if is("Fatal") {
        return TaskError::fatal(text);
    }
    if is("RetryAfter") {
        let delay: f64 = value
            .getattr("delay")
            .and_then(|d| d.extract())
            .unwrap_or(0.0);
        let wait = Duration::try_from_secs_f64(delay.max(0.0)).unwrap_or(Duration::MAX);
        return TaskError::retry_after(text, wait);
    }
    TaskError::retryable(traceback(py, err).unwrap_or(text))
}

/// The exception's traceback as Python prints it.
fn traceback(py: Python<'_>, err: &PyErr) -> PyResult<String> {
    let lines = py.import("traceback")?.call_method1(
        "format_exception",
        (err.get_type(py), err.value(py), err.traceback(py)),
    )?;
    let lines: Vec<String> = lines.extract()?;
    Ok(lines.concat().trim_end().to_owned())
}

/// The attempt's result from what the handler returned (or raised).
fn outcome(py: Python<'_>, returned: PyResult<Bound<'_, PyAny>>) -> Result<Bytes, TaskError> {
    match returned {
        Ok(value) => bytes_of(&value).map_err(|e| {
            TaskError::retryable(format!(
                "the handler must return bytes, str or None: {}",
                e.value(py)
            ))
        }),
        Err(e) => Err(task_error(py, &e)),
    }
}

/// One handler call for the pool: the function, its task, where the answer goes, and for
/// a coroutine function the event loop to run it on and where its scheduled future is
/// kept (to cancel it if the attempt is stopped).
struct Call {
    func: Arc<Py<PyAny>>,
    task: Task,
    reply: oneshot::Sender<Result<Bytes, TaskError>>,
    coroutine: Option<(Arc<Py<PyAny>>, Scheduled)>,
}

/// A coroutine's future once scheduled on the event loop.
type Scheduled = Arc<Mutex<Option<Py<PyAny>>>>;

impl Call {
    /// Performs the call on a pool thread (with the GIL).
    fn perform(self, py: Python<'_>) {
        let Call {
            func,
            task,
            reply,
            coroutine,
        } = self;
        let arg = match Bound::new(py, HandlerTask { task }) {
            Ok(arg) => arg,
            Err(e) => {
                let _ = reply.send(Err(task_error(py, &e)));
                return;
            }
        };
        match coroutine {
            None => {
                // The attempt may have been stopped meanwhile; nobody waits then.
                let _ = reply.send(outcome(py, func.bind(py).call1((arg,))));
            }
            Some((event_loop, scheduled)) => {
                let started = (|| -> PyResult<Py<PyAny>> {
                    let coro = func.bind(py).call1((arg,))?;
                    let future = py
                        .import("asyncio")?
                        .call_method1("run_coroutine_threadsafe", (coro, event_loop.bind(py)))?;
                    Ok(future.unbind())
                })();
                match started {
                    Ok(future) => {
                        let reply = Reply {
                            tx: Mutex::new(Some(reply)),
                        };
                        if let Err(e) = future.bind(py).call_method1("add_done_callback", (reply,))
                        {
                            tracing::error!(error = %e, "cannot watch a handler's coroutine");
                        }
                        *lock(&scheduled) = Some(future);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(task_error(py, &e)));
                    }
                }
            }
        }
    }
}

/// Cancels a coroutine's future on the event loop if the attempt is dropped before it ends
/// (the attempt overran its timeout or was cancelled).
struct CancelOnDrop(Option<Scheduled>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(scheduled) = self.0.take() else {
            return;
        };
        let Some(future) = lock(&scheduled).take() else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn_blocking(move || {
                Python::attach(|py| {
                    if let Err(e) = future.bind(py).call_method0("cancel") {
                        tracing::debug!(error = %e, "cannot cancel a handler's coroutine");
                    }
                });
            });
        }
    }
}

/// Called on the event loop's thread when a handler's coroutine ends: sends its outcome to
/// the attempt waiting on the runtime.
#[pyclass(frozen, module = "dtc._native")]
pub struct Reply {
    tx: Mutex<Option<oneshot::Sender<Result<Bytes, TaskError>>>>,
}

#[pymethods]
impl Reply {
    fn __call__(&self, py: Python<'_>, future: &Bound<'_, PyAny>) {
        let result = if future
            .call_method0("cancelled")
            .and_then(|c| c.is_truthy())
            .unwrap_or(false)
        {
            Err(TaskError::fatal("the attempt was stopped"))
        } else {
            match future.call_method0("exception") {
                Ok(exc) if !exc.is_none() => Err(task_error(py, &PyErr::from_value(exc))),
                Ok(_) => outcome(py, future.call_method0("result")),
                Err(e) => Err(task_error(py, &e)),
            }
        };
        if let Some(tx) = lock(&self.tx).take() {
            // The attempt may have been dropped meanwhile (stopped); nobody waits then.
            let _ = tx.send(result);
        }
    }
}

/// Hands a call to the pool and waits for its answer (the attempt's slot).
async fn call(
    pool: std::sync::mpsc::SyncSender<Call>,
    func: Arc<Py<PyAny>>,
    event_loop: Option<Arc<Py<PyAny>>>,
    task: Task,
) -> Result<Bytes, TaskError> {
    let (reply, answer) = oneshot::channel();
    let scheduled: Scheduled = Arc::new(Mutex::new(None));
    let coroutine = event_loop.map(|l| (l, Arc::clone(&scheduled)));
    let call = Call {
        func,
        task,
        reply,
        coroutine,
    };
    // The channel holds one call per slot, and a slot has one call at a time: it is never
    // full, and a send fails only once the pool has stopped.
    if pool.try_send(call).is_err() {
        return Err(TaskError::retryable(
            "the worker's handler threads have stopped",
        ));
    }
    let mut guard = CancelOnDrop(Some(scheduled));
    let result = answer
        .await
        .unwrap_or_else(|_| Err(TaskError::retryable("the handler's thread stopped")));
    // Ended by itself: nothing to cancel.
    guard.0 = None;
    result
}

/// A handler as the Python side registers it: its task type, the function, and whether it
/// is a coroutine function.
type HandlerArgs = (String, Py<PyAny>, bool);

/// A run under way: its stop signal, its task, whether it has ended (and how), and where
/// the pool threads take their calls.
struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    ended: watch::Receiver<Option<Result<(), String>>>,
    calls: Arc<Mutex<Receiver<Call>>>,
}

/// A worker's settings, and its run once started.
#[pyclass(frozen, module = "dtc._native")]
pub struct Worker {
    addrs: Vec<std::net::SocketAddr>,
    slots: u32,
    prefetch: Option<u32>,
    name: String,
    heartbeat: Duration,
    builtins: bool,
    queues: Vec<String>,
    credentials: Arc<dtc_proto::credentials::Credentials>,
    running: Mutex<Option<Running>>,
}

#[pymethods]
impl Worker {
    #[new]
    #[pyo3(signature = (shard, *, slots=4, prefetch=None, name=None, heartbeat=0.2, builtins=false, secrets=None, ca_file=None, token_file=None, queues=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        shard: Vec<String>,
        slots: u32,
        prefetch: Option<u32>,
        name: Option<String>,
        heartbeat: f64,
        builtins: bool,
        secrets: Option<PathBuf>,
        ca_file: Option<PathBuf>,
        token_file: Option<PathBuf>,
        queues: Vec<String>,
    ) -> PyResult<Self> {
        for queue in &queues {
            // A queue may carry a weight: `name=weight` (checked by the SDK's builder).
            let name = queue.split_once('=').map_or(queue.as_str(), |(n, _)| n);
            dtc_proto::check_queue_name(name.trim())
                .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        }
        if slots == 0 {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "a worker needs at least one slot",
            ));
        }
        let heartbeat = Duration::try_from_secs_f64(heartbeat)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                pyo3::exceptions::PyValueError::new_err(
                    "heartbeat must be a positive number of seconds",
                )
            })?;
        Ok(Self {
            addrs: spec::addrs(&shard)?,
            slots,
            prefetch,
            name: name.unwrap_or_else(|| format!("python-worker-{}", std::process::id())),
            heartbeat,
            builtins,
            queues,
            credentials: spec::credentials(secrets, ca_file, token_file)?,
            running: Mutex::new(None),
        })
    }

    /// Starts serving with `handlers` (coroutine functions run on `event_loop`); returns
    /// at once.
    #[pyo3(signature = (handlers, event_loop=None))]
    fn start(&self, handlers: Vec<HandlerArgs>, event_loop: Option<Py<PyAny>>) -> PyResult<()> {
        let event_loop = event_loop.map(Arc::new);
        let mut builder = dtc_sdk::Worker::builder()
            .slots(self.slots)
            .name(self.name.clone())
            .heartbeat(self.heartbeat)
            .queues(self.queues.iter())
            .credentials(Arc::clone(&self.credentials));
        if let Some(n) = self.prefetch {
            builder = builder.prefetch(n);
        }
        if self.builtins {
            builder = builder.builtins();
        }
        let (pool, calls) = std::sync::mpsc::sync_channel(self.slots as usize);
        for (kind, func, is_async) in handlers {
            let func = Arc::new(func);
            let event_loop = match (is_async, &event_loop) {
                (false, _) => None,
                (true, Some(l)) => Some(Arc::clone(l)),
                (true, None) => {
                    return Err(PyRuntimeError::new_err(
                        "a coroutine handler needs an event loop",
                    ));
                }
            };
            let pool = pool.clone();
            builder = builder.handler(&kind, move |task| {
                call(pool.clone(), Arc::clone(&func), event_loop.clone(), task)
            });
        }
        drop(pool);
        let worker = builder
            .build()
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        let shutdown = CancellationToken::new();
        let (ended_tx, ended) = watch::channel(None);
        let addrs = self.addrs.clone();
        let stop = shutdown.clone();
        let mut running = lock(&self.running);
        if running.is_some() {
            return Err(PyRuntimeError::new_err("this worker is already running"));
        }
        let task = runtime::get()?.spawn(async move {
            let result = worker.run(addrs, stop).await.map_err(|e| e.to_string());
            let _ = ended_tx.send(Some(result));
        });
        *running = Some(Running {
            shutdown,
            task,
            ended,
            calls: Arc::new(Mutex::new(calls)),
        });
        Ok(())
    }

    /// Calls handlers until the run has ended: the loop of one pool thread (the Python
    /// side starts one per slot).
    fn serve(&self, py: Python<'_>) {
        let Some(calls) = lock(&self.running).as_ref().map(|r| Arc::clone(&r.calls)) else {
            return;
        };
        loop {
            // The run's end drops every sender: then the thread returns.
            match py.detach(|| lock(&calls).recv()) {
                Ok(call) => call.perform(py),
                Err(_) => return,
            }
        }
    }

    /// Waits up to `timeout` seconds for the run to end; whether it has.
    fn wait(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let Some(mut ended) = lock(&self.running).as_ref().map(|r| r.ended.clone()) else {
            return Ok(true);
        };
        let deadline =
            Instant::now() + Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(Duration::MAX);
        let waited = runtime::wait(
            py,
            async move {
                ended
                    .wait_for(Option::is_some)
                    .await
                    .map(|r| r.clone())
                    .ok()
                    .flatten()
            },
            Some(deadline),
        )?;
        match waited {
            None => Ok(false),
            Some(None | Some(Ok(()))) => {
                lock(&self.running).take();
                Ok(true)
            }
            Some(Some(Err(e))) => {
                lock(&self.running).take();
                Err(PyRuntimeError::new_err(e))
            }
        }
    }

    /// Stops taking tasks and finishes the running ones (`now`: stops at once; the shard
    /// runs the unfinished tasks again elsewhere).
    #[pyo3(signature = (now=false))]
    fn stop(&self, now: bool) {
        let mut running = lock(&self.running);
        let Some(r) = running.as_ref() else { return };
        r.shutdown.cancel();
        if now {
            r.task.abort();
            running.take();
        }
    }

    fn __repr__(&self) -> String {
        let addrs: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        format!("Worker('{}', slots={})", addrs.join(","), self.slots)
    }
}
