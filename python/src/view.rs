//! `dtc.TaskView`: what a client sees of a task (its state, attempts, result or errors),
//! converted to Python values when a field is read.

use dtc_sdk::{Outcome, TaskView};
use pyo3::exceptions::PyUnicodeDecodeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// A task as the shard last reported it.
#[pyclass(frozen, name = "TaskView", module = "dtc")]
pub struct View(pub TaskView);

/// Milliseconds since the Unix epoch as Python's seconds.
fn seconds(ms: u64) -> f64 {
    // Exact for any date before the year 285,000.
    #[allow(clippy::cast_precision_loss)]
    let s = ms as f64 / 1000.0;
    s
}

#[pymethods]
impl View {
    /// The task's id (a UUID, as text).
    #[getter]
    fn id(&self) -> String {
        self.0.id.to_string()
    }

    /// The task's type.
    #[getter]
    fn r#type(&self) -> &str {
        &self.0.kind
    }

    /// `scheduled`, `queued`, `running`, `retrying`, `succeeded`, `failed` or `cancelled`.
    #[getter]
    fn state(&self) -> &'static str {
        self.0.state.name()
    }

    /// Whether the task has finished for good (succeeded, failed or cancelled).
    #[getter]
    fn done(&self) -> bool {
        self.0.state.is_finished()
    }

    /// Whether the task succeeded.
    #[getter]
    fn ok(&self) -> bool {
        matches!(self.0.outcome, Some(Outcome::Succeeded(_)))
    }

    /// How many attempts have started.
    #[getter]
    fn attempts(&self) -> u32 {
        self.0.attempts
    }

    /// The handler's result, once the task succeeded.
    #[getter]
    fn result<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        match &self.0.outcome {
            Some(Outcome::Succeeded(bytes)) => Some(PyBytes::new(py, bytes)),
            _ => None,
        }
    }

    /// The result decoded as UTF-8 text, once the task succeeded.
    #[getter]
    fn text<'py>(&self, py: Python<'py>) -> PyResult<Option<&str>> {
        match &self.0.outcome {
            Some(Outcome::Succeeded(bytes)) => std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|e| PyUnicodeDecodeError::new_err_from_utf8(py, bytes, e)),
            _ => Ok(None),
        }
    }

    /// Why the task failed (or its last attempt's error while it is retried).
    #[getter]
    fn error(&self) -> Option<String> {
        match &self.0.outcome {
            Some(Outcome::Failed(e)) => Some(e.clone()),
            Some(Outcome::Cancelled) => Some("cancelled".to_owned()),
            _ => self.0.errors.last().cloned(),
        }
    }

    /// The error of each failed attempt, oldest first.
    #[getter]
    fn errors(&self) -> Vec<String> {
        self.0.errors.clone()
    }

    /// When the shard accepted the task (seconds since the Unix epoch, the leader's clock).
    #[getter]
    fn created(&self) -> f64 {
        seconds(self.0.created_ms)
    }

    /// While scheduled or retrying: when it may run next (seconds since the Unix epoch).
    #[getter]
    fn due(&self) -> Option<f64> {
        self.0.due_ms.map(seconds)
    }

    /// Once finished: when (seconds since the Unix epoch).
    #[getter]
    fn finished(&self) -> Option<f64> {
        self.0.finished_ms.map(seconds)
    }

    /// Unfinished, and no worker connected to its shard has a handler for its type.
    #[getter]
    fn no_handler(&self) -> bool {
        self.0.no_handler
    }

    /// The queue it waits in.
    #[getter]
    fn queue(&self) -> &str {
        self.0
            .queue
            .as_deref()
            .unwrap_or(dtc_sdk::TaskSpec::DEFAULT_QUEUE)
    }

    /// Its priority (0 to 9, higher first).
    #[getter]
    fn priority(&self) -> u8 {
        self.0.priority
    }

    /// Its concurrency key, if it has one.
    #[getter]
    fn key(&self) -> Option<&str> {
        self.0.concurrency.as_ref().map(|c| c.key.as_str())
    }

    /// While it runs: its handler's last report, as `(fraction, message)`.
    #[getter]
    fn progress(&self) -> Option<(f64, String)> {
        self.0
            .progress
            .as_ref()
            .map(|p| (f64::from(p.permille) / 1000.0, p.message.clone()))
    }

    /// How many of its key's tasks may run at once (with a key).
    #[getter]
    fn key_limit(&self) -> Option<u32> {
        self.0.concurrency.as_ref().map(|c| c.limit)
    }

    fn __repr__(&self) -> String {
        format!(
            "TaskView(id='{}', type={:?}, state='{}', attempts={})",
            self.0.id,
            &*self.0.kind,
            self.0.state.name(),
            self.0.attempts
        )
    }
}
