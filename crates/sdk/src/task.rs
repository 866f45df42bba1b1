//! What a handler gets and gives back: the [`Task`] it runs (its input, which attempt this
//! is, and a cancellation signal) and the [`TaskError`] that ends an attempt in failure —
//! retryable (by the task's backoff, or after a given time) or fatal.

use bytes::Bytes;
use dtc_proto::message::Assignment;
use dtc_proto::{Retry, TaskId, TaskProgress};
use std::fmt;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One attempt of a task, as its handler sees it.
#[derive(Clone, Debug)]
pub struct Task {
    /// The task's id.
    pub id: TaskId,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// The task's type.
    pub kind: String,
    /// The handler's input.
    pub payload: Bytes,
    cancel: CancellationToken,
    /// Where progress reports go (to the worker's connection); none outside a worker.
    reports: Option<mpsc::Sender<Report>>,
}

/// A progress report on its way to the coordinator: task, attempt, how far.
pub(crate) type Report = (TaskId, u32, TaskProgress);

impl Task {
    /// The attempt the coordinator assigned, with its own cancellation signal, reporting
    /// its progress to `reports`.
    pub(crate) fn assigned(a: Assignment, reports: mpsc::Sender<Report>) -> Self {
        Self {
            id: a.id,
            attempt: a.attempt,
            kind: a.kind,
            payload: a.payload,
            cancel: CancellationToken::new(),
            reports: Some(reports),
        }
    }

    /// Reports how far this attempt has come: `fraction` done (0 to 1) and what it is
    /// doing (at most 256 bytes). `dtc get`, the HTTP API and the dashboard show the latest
    /// report while the attempt runs. Best effort and cheap: it never waits; reports sent
    /// faster than the connection takes them are dropped, and a new leader shows none
    /// until the next one.
    pub fn progress(&self, fraction: f64, message: &str) {
        if let Some(reports) = &self.reports {
            let report = (self.id, self.attempt, TaskProgress::new(fraction, message));
            reports.try_send(report).ok();
        }
    }

    /// A task to call a handler with outside a worker (in a test, say).
    pub fn new(kind: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            id: TaskId::new(),
            attempt: 1,
            kind: kind.into(),
            payload: payload.into(),
            cancel: CancellationToken::new(),
            reports: None,
        }
    }

    /// Resolves when this attempt must stop: it overran its timeout or the task was
    /// cancelled. The worker stops waiting for the handler then (its future is dropped at
    /// its next `.await`); work the handler runs elsewhere — a blocking thread, a child
    /// process — should watch this (or [`Task::cancel_token`]) and stop too.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// Whether this attempt has been told to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The attempt's cancellation signal, to hand to blocking work.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

/// Why an attempt failed, and whether and when to try again. A handler returns any error
/// that converts into it (`String`, `&str`); the task is then retried by its backoff while
/// attempts remain. [`TaskError::fatal`] fails the task for good; [`TaskError::retry_after`]
/// retries after a given time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskError {
    message: String,
    retry: Retry,
}

impl TaskError {
    /// A failure retried by the task's backoff while attempts remain.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: Retry::Policy,
        }
    }

    /// A failure that ends the task: no more attempts.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: Retry::Never,
        }
    }

    /// A failure to retry after `wait` (while attempts remain), e.g. what a rate-limited
    /// service said.
    pub fn retry_after(message: impl Into<String>, wait: Duration) -> Self {
        Self {
            message: message.into(),
            retry: Retry::After(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// The error's text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// How the task is to be retried.
    pub fn retry(&self) -> Retry {
        self.retry
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for TaskError {
    fn from(message: String) -> Self {
        Self::retryable(message)
    }
}

impl From<&str> for TaskError {
    fn from(message: &str) -> Self {
        Self::retryable(message)
    }
}
