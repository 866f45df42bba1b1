//! The task model shared by clients, coordinators and workers.

use crate::{TaskId, WireError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What a submitter asks to run: a type name (which handler runs it) and a byte payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The task's id; submitting an id that exists returns the existing task.
    pub id: TaskId,
    /// The handler's name, e.g. `sleep` or `wordcount`.
    pub kind: String,
    /// Opaque input for the handler.
    pub payload: Bytes,
    /// How many times the task may run before it is given up as failed (a failed or lost
    /// attempt is retried while attempts remain). At least 1.
    pub max_attempts: u32,
}

impl TaskSpec {
    /// The default for [`TaskSpec::max_attempts`].
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

    /// A spec with a fresh id and the default attempt limit.
    pub fn new(kind: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            id: TaskId::new(),
            kind: kind.into(),
            payload: payload.into(),
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// The same spec with the given id.
    pub fn with_id(mut self, id: TaskId) -> Self {
        self.id = id;
        self
    }

    /// The longest task type name.
    pub const MAX_KIND_LEN: usize = 256;

    /// The most attempts a task may ask for.
    pub const MAX_ATTEMPTS: u32 = 100;

    /// The default bound on a payload (a node's `--max-payload`).
    pub const DEFAULT_MAX_PAYLOAD: usize = 8 * 1024 * 1024;

    /// Whether the spec is within dtc's bounds and a payload of at most `max_payload` bytes;
    /// if not, the answer to give its submitter.
    pub fn check(&self, max_payload: usize) -> Result<(), WireError> {
        self.check_shape()?;
        if self.payload.len() > max_payload {
            return Err(WireError::BadRequest {
                reason: format!(
                    "the payload is {} bytes; this cluster takes at most {max_payload} \
                     (--max-payload)",
                    self.payload.len()
                ),
            });
        }
        Ok(())
    }

    /// Whether the task's type and attempts are within bounds (what every replica checks
    /// alike; the payload's bound is a coordinator's flag, checked by [`TaskSpec::check`]).
    pub fn check_shape(&self) -> Result<(), WireError> {
        let bad = |reason: String| Err(WireError::BadRequest { reason });
        if self.kind.is_empty() {
            return bad("the task type is empty".into());
        }
        if self.kind.len() > Self::MAX_KIND_LEN {
            return bad(format!(
                "the task type is {} bytes long; at most {} are allowed",
                self.kind.len(),
                Self::MAX_KIND_LEN
            ));
        }
        if self.max_attempts > Self::MAX_ATTEMPTS {
            return bad(format!(
                "max_attempts is {}; at most {} are allowed",
                self.max_attempts,
                Self::MAX_ATTEMPTS
            ));
        }
        Ok(())
    }
}

/// Where a task is in its lifecycle: `Queued → Running → Succeeded | Failed`, or `Cancelled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    /// Waiting for a free worker slot.
    Queued,
    /// Assigned to a worker.
    Running,
    /// Finished; its handler returned a result.
    Succeeded,
    /// Finished; its handler failed (or its attempts ran out).
    Failed,
    /// Cancelled before it ran.
    Cancelled,
}

impl TaskState {
    /// Whether the task has finished for good.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// How an attempt (or a whole task) ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The handler's output.
    Succeeded(Bytes),
    /// Why the handler failed.
    Failed(String),
    /// The task was cancelled before it ran.
    Cancelled,
}

impl Outcome {
    /// The task state this outcome leaves a task in.
    pub fn state(&self) -> TaskState {
        match self {
            Self::Succeeded(_) => TaskState::Succeeded,
            Self::Failed(_) => TaskState::Failed,
            Self::Cancelled => TaskState::Cancelled,
        }
    }
}

/// What a submitter sees of a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    /// The task's id.
    pub id: TaskId,
    /// Its lifecycle state.
    pub state: TaskState,
    /// How many attempts have started so far.
    pub attempts: u32,
    /// The outcome, once finished.
    pub outcome: Option<Outcome>,
}
