//! `dtc._native.Client`: one multiplexed connection of the Rust SDK (following leaders,
//! retrying with the same task id), shared by every thread of the process that holds it.
//! Blocking calls wait with the GIL released; `start_*` calls return at once and post their
//! answer to a [`Mailbox`] for an asyncio loop. `dtc.Client` and `dtc.AsyncClient` (in
//! Python) wrap it.

use crate::mailbox::Mailbox;
use crate::spec::{self, OptionArgs};
use crate::view::View;
use crate::{errors, runtime};
use dtc_sdk::{ClientConfig, ClientError, TaskId, TaskView};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;
use tokio::time::Instant;

/// A connection to a dtc router (or a shard's coordinators).
#[pyclass(frozen, module = "dtc._native")]
pub struct Client {
    /// `None` once closed.
    client: RwLock<Option<dtc_sdk::Client>>,
    /// Where and as whom it connects (schedules are asked on connections of their own).
    config: ClientConfig,
}

/// A schedule to add, as the Python layer passes it: `(name, cron, tz, overlap,
/// catch_up, type, payload, max_attempts, queue, priority)`.
pub type ScheduleArgs<'py> = (
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    Bound<'py, PyAny>,
    Option<u32>,
    Option<String>,
    u8,
);

/// A schedule as the Python layer reads it: `(name, cron, tz, overlap, catch_up, type,
/// paused, next_ms, last_tick_ms, last_task, fired, skipped)`.
pub type ScheduleRow = (
    String,
    String,
    Option<String>,
    &'static str,
    &'static str,
    String,
    bool,
    Option<u64>,
    u64,
    Option<String>,
    u64,
    u64,
);

/// What a request does, so that blocking and asyncio calls share one list.
enum Op {
    Submit(dtc_sdk::TaskSpec),
    Run(dtc_sdk::TaskSpec),
    Get(TaskId),
    Wait(TaskId),
    Cancel(TaskId),
    Retry(TaskId),
}

impl Op {
    async fn call(self, client: dtc_sdk::Client) -> Result<TaskView, ClientError> {
        match self {
            Op::Submit(spec) => client.submit(spec).await,
            Op::Run(spec) => client.run(spec).await,
            Op::Get(id) => client.get(id).await,
            Op::Wait(id) => client.wait(id).await,
            Op::Cancel(id) => client.cancel(id).await,
            Op::Retry(id) => client.retry(id).await,
        }
    }
}

impl Client {
    fn sdk(&self, py: Python<'_>) -> PyResult<dtc_sdk::Client> {
        self.client
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| errors::raise(py, "Unavailable", ("the client is closed",)))
    }

    /// Performs `op`, waiting up to `timeout_s`; `None` when the wait ran out.
    fn blocking(&self, py: Python<'_>, op: Op, timeout_s: Option<f64>) -> PyResult<Option<View>> {
        let client = self.sdk(py)?;
        let deadline = timeout_s.map(|s| {
            Instant::now() + Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
        });
        match runtime::wait(py, op.call(client), deadline)? {
            None => Ok(None),
            Some(Ok(view)) => Ok(Some(View(view))),
            Some(Err(e)) => Err(errors::client(py, &e)),
        }
    }

    fn start(&self, py: Python<'_>, mailbox: &Mailbox, future: Py<PyAny>, op: Op) -> PyResult<()> {
        let client = self.sdk(py)?;
        let inner = mailbox.inner.clone();
        inner.expect();
        runtime::get()?.spawn(async move {
            let answer = op.call(client).await;
            inner.post(future, answer);
        });
        Ok(())
    }
}

#[pymethods]
impl Client {
    /// Connects to the first reachable of `addrs`; raises `Unavailable` if none answers and
    /// `Refused` if the server refuses the credentials.
    #[new]
    #[pyo3(signature = (addrs, *, secrets=None, ca_file=None, token_file=None, retry_for=60.0, name=None))]
    fn new(
        py: Python<'_>,
        addrs: Vec<String>,
        secrets: Option<PathBuf>,
        ca_file: Option<PathBuf>,
        token_file: Option<PathBuf>,
        retry_for: f64,
        name: Option<String>,
    ) -> PyResult<Self> {
        let credentials = spec::credentials(secrets, ca_file, token_file)?;
        let mut config = ClientConfig::new(spec::addrs(&addrs)?).with_credentials(credentials);
        config.retry_for = Duration::try_from_secs_f64(retry_for.max(0.0)).unwrap_or(Duration::MAX);
        config.name = name.unwrap_or_else(|| format!("python client {}", std::process::id()));
        let connected = runtime::wait(py, dtc_sdk::Client::with_config(config.clone()), None)?;
        match connected {
            Some(Ok(client)) => Ok(Self {
                client: RwLock::new(Some(client)),
                config,
            }),
            Some(Err(e)) => Err(errors::client(py, &e)),
            None => Err(errors::raise(
                py,
                "Unavailable",
                ("the connection was not made",),
            )),
        }
    }

    /// Submits a task and returns at once with its state.
    #[pyo3(signature = (kind, payload, id=None, max_attempts=None, options=None))]
    fn submit(
        &self,
        py: Python<'_>,
        kind: String,
        payload: &Bound<'_, PyAny>,
        id: Option<&str>,
        max_attempts: Option<u32>,
        options: Option<OptionArgs>,
    ) -> PyResult<Option<View>> {
        let task = spec::task(kind, payload, id, max_attempts, options)?;
        self.blocking(py, Op::Submit(task), None)
    }

    /// Submits a task and waits for it to finish (up to `timeout` seconds: `None` then).
    #[pyo3(signature = (kind, payload, id=None, max_attempts=None, options=None, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        py: Python<'_>,
        kind: String,
        payload: &Bound<'_, PyAny>,
        id: Option<&str>,
        max_attempts: Option<u32>,
        options: Option<OptionArgs>,
        timeout: Option<f64>,
    ) -> PyResult<(String, Option<View>)> {
        let task = spec::task(kind, payload, id, max_attempts, options)?;
        let id = task.id.to_string();
        Ok((id, self.blocking(py, Op::Run(task), timeout)?))
    }

    /// The task as it stands, or (with `wait`) once it has finished, waiting up to
    /// `timeout` seconds (`None` then).
    #[pyo3(signature = (id, wait=false, timeout=None))]
    fn get(
        &self,
        py: Python<'_>,
        id: &str,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<Option<View>> {
        let id = spec::task_id(py, id)?;
        let op = if wait { Op::Wait(id) } else { Op::Get(id) };
        self.blocking(py, op, timeout)
    }

    /// Cancels an unfinished task.
    fn cancel(&self, py: Python<'_>, id: &str) -> PyResult<Option<View>> {
        let id = spec::task_id(py, id)?;
        self.blocking(py, Op::Cancel(id), None)
    }

    /// Runs a failed task again with fresh attempts.
    fn retry(&self, py: Python<'_>, id: &str) -> PyResult<Option<View>> {
        let id = spec::task_id(py, id)?;
        self.blocking(py, Op::Retry(id), None)
    }

    /// Submits (with `wait`: runs) a task; its answer goes to `future` through `mailbox`.
    /// Returns the task's id.
    #[pyo3(signature = (mailbox, future, kind, payload, wait, id=None, max_attempts=None, options=None))]
    #[allow(clippy::too_many_arguments)]
    fn start_submit(
        &self,
        py: Python<'_>,
        mailbox: &Mailbox,
        future: Py<PyAny>,
        kind: String,
        payload: &Bound<'_, PyAny>,
        wait: bool,
        id: Option<&str>,
        max_attempts: Option<u32>,
        options: Option<OptionArgs>,
    ) -> PyResult<String> {
        let task = spec::task(kind, payload, id, max_attempts, options)?;
        let id = task.id.to_string();
        let op = if wait {
            Op::Run(task)
        } else {
            Op::Submit(task)
        };
        self.start(py, mailbox, future, op)?;
        Ok(id)
    }

    /// Looks a task up (with `wait`: once finished), cancels or retries it (`what` is
    /// `get`, `wait`, `cancel` or `retry`); the answer goes to `future` through `mailbox`.
    fn start_call(
        &self,
        py: Python<'_>,
        mailbox: &Mailbox,
        future: Py<PyAny>,
        what: &str,
        id: &str,
    ) -> PyResult<()> {
        let id = spec::task_id(py, id)?;
        let op = match what {
            "get" => Op::Get(id),
            "wait" => Op::Wait(id),
            "cancel" => Op::Cancel(id),
            "retry" => Op::Retry(id),
            other => {
                return Err(errors::raise(
                    py,
                    "BadRequest",
                    (format!("unknown call {other:?}"),),
                ));
            }
        };
        self.start(py, mailbox, future, op)
    }

    /// Lists (`"list"`, the page after `name`), adds (`"add"`, with `spec`), or pauses,
    /// resumes, triggers or deletes (with `name`) schedules; the schedules answered, as rows.
    #[pyo3(signature = (op, name=None, spec=None))]
    fn schedule(
        &self,
        py: Python<'_>,
        op: &str,
        name: Option<String>,
        spec: Option<ScheduleArgs<'_>>,
    ) -> PyResult<Vec<ScheduleRow>> {
        use dtc_sdk::schedule::{CatchUp, Overlap, ScheduleOp, ScheduleSpec};
        let bad = |reason: String| errors::raise(py, "BadRequest", (reason,));
        let named = || {
            name.clone()
                .ok_or_else(|| bad(format!("{op} needs a schedule name")))
        };
        let op = match op {
            "list" => ScheduleOp::List {
                after: name.clone(),
            },
            "pause" => ScheduleOp::Pause(named()?),
            "resume" => ScheduleOp::Resume(named()?),
            "trigger" => ScheduleOp::Trigger(named()?),
            "delete" => ScheduleOp::Delete(named()?),
            "add" => {
                let Some((
                    name,
                    cron,
                    tz,
                    overlap,
                    catch_up,
                    kind,
                    payload,
                    attempts,
                    queue,
                    priority,
                )) = spec
                else {
                    return Err(bad("add needs a schedule".into()));
                };
                let overlap = match overlap.as_str() {
                    "skip" => Overlap::Skip,
                    "allow" => Overlap::Allow,
                    other => {
                        return Err(bad(format!(
                            "overlap is \"skip\" or \"allow\", not {other:?}"
                        )));
                    }
                };
                let catch_up = match catch_up.as_str() {
                    "none" => CatchUp::None,
                    "one" => CatchUp::One,
                    "all" => CatchUp::All,
                    other => {
                        return Err(bad(format!(
                            "catch_up is \"none\", \"one\" or \"all\", not {other:?}"
                        )));
                    }
                };
                let options = dtc_sdk::TaskOptions {
                    queue: queue.filter(|q| q != dtc_sdk::TaskSpec::DEFAULT_QUEUE),
                    priority,
                    ..dtc_sdk::TaskOptions::default()
                };
                ScheduleOp::Add(ScheduleSpec {
                    name,
                    cron,
                    tz,
                    overlap,
                    catch_up,
                    kind,
                    payload: spec::bytes_of(&payload)?,
                    max_attempts: attempts.unwrap_or(dtc_sdk::TaskSpec::DEFAULT_MAX_ATTEMPTS),
                    options: (options != dtc_sdk::TaskOptions::default())
                        .then(|| Box::new(options)),
                })
            }
            other => return Err(bad(format!("no schedule operation {other:?}"))),
        };
        let config = self.config.clone();
        let answer = runtime::wait(
            py,
            async move { dtc_sdk::schedule::manage(&config, &op).await },
            None,
        )?;
        let all = match answer {
            Some(Ok(all)) => all,
            Some(Err(e)) => return Err(errors::client(py, &e)),
            None => return Err(errors::raise(py, "Unavailable", ("no answer",))),
        };
        Ok(all
            .into_iter()
            .map(|s| {
                (
                    s.spec.name,
                    s.spec.cron,
                    s.spec.tz,
                    match s.spec.overlap {
                        Overlap::Skip => "skip",
                        Overlap::Allow => "allow",
                    },
                    match s.spec.catch_up {
                        CatchUp::None => "none",
                        CatchUp::One => "one",
                        CatchUp::All => "all",
                    },
                    s.spec.kind,
                    s.paused,
                    s.next_ms.filter(|_| !s.paused),
                    s.last_tick_ms,
                    s.last_task.map(|id| id.to_string()),
                    s.fired,
                    s.skipped,
                )
            })
            .collect())
    }

    /// Closes the connection once the calls in flight have been answered.
    fn close(&self) {
        self.client
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}
