//! One task as the table records it: its phase, the options only some tasks have, the
//! shared type names, and the view an operator sees of it. The table's families read and
//! change records through this; nothing outside the table sees them.

use bytes::Bytes;
use dtc_proto::hash::HashSet;
use dtc_proto::status::StateCounts;
use dtc_proto::{Backoff, Concurrency, Outcome, TaskId, TaskSpec, TaskState, TaskView};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Where a task is, as the table records it (which tasks run is the leader's runtime
/// state: a running task is `Queued` here).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Phase {
    /// Waiting for its start time (ms since the Unix epoch).
    Scheduled(u64),
    /// Ready to run (or running).
    Queued,
    /// An attempt failed; the next may start at this time.
    Retrying(u64),
    /// Finished at `at_ms`.
    Done { outcome: Outcome, at_ms: u64 },
}

/// One task. Kept small, since the table holds up to hundreds of thousands and copies them
/// all for each snapshot: the type name is shared, and what most tasks lack (options,
/// errors) sits behind one pointer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) kind: Arc<str>,
    /// The input; dropped once the task has succeeded or been cancelled.
    pub(super) payload: Bytes,
    pub(super) max_attempts: u32,
    /// Attempts that have ended (failed or lost); the next attempt is `ended + 1`.
    pub(super) ended: u32,
    pub(super) phase: Phase,
    pub(super) created_ms: u64,
    pub(super) extra: Option<Box<Extra>>,
}

/// What only some tasks have.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Extra {
    pub(super) timeout_ms: Option<u64>,
    /// Not started by then (ms since the Unix epoch), the task fails as expired.
    pub(super) expires_at_ms: Option<u64>,
    pub(super) backoff: Option<Backoff>,
    /// The last failed attempts' errors, oldest first.
    pub(super) errors: Vec<String>,
    /// Its queue, if not the default.
    pub(super) queue: Option<String>,
    /// Its priority.
    pub(super) priority: u8,
    /// Its concurrency key and limit.
    pub(super) concurrency: Option<Concurrency>,
}

/// Moves `r` to `phase`, keeping `counts` right.
pub(super) fn set_phase(counts: &mut StateCounts, r: &mut Record, phase: Phase) {
    counts.sub(r.state());
    r.phase = phase;
    counts.add(r.state());
}

impl Record {
    pub(super) fn timeout_ms(&self) -> Option<u64> {
        self.extra.as_ref().and_then(|e| e.timeout_ms)
    }

    pub(super) fn expires_at_ms(&self) -> Option<u64> {
        self.extra.as_ref().and_then(|e| e.expires_at_ms)
    }

    pub(super) fn backoff(&self) -> Backoff {
        self.extra
            .as_ref()
            .and_then(|e| e.backoff)
            .unwrap_or_default()
    }

    pub(super) fn errors(&self) -> &[String] {
        self.extra.as_ref().map_or(&[], |e| e.errors.as_slice())
    }

    pub(super) fn queue(&self) -> &str {
        self.extra
            .as_ref()
            .and_then(|e| e.queue.as_deref())
            .unwrap_or(TaskSpec::DEFAULT_QUEUE)
    }

    pub(super) fn priority(&self) -> u8 {
        self.extra.as_ref().map_or(0, |e| e.priority)
    }

    pub(super) fn key(&self) -> Option<(&str, u32)> {
        self.extra
            .as_ref()
            .and_then(|e| e.concurrency.as_ref())
            .map(|c| (c.key.as_str(), c.limit))
    }

    pub(super) fn state(&self) -> TaskState {
        match &self.phase {
            Phase::Scheduled(_) => TaskState::Scheduled,
            Phase::Queued => TaskState::Queued,
            Phase::Retrying(_) => TaskState::Retrying,
            Phase::Done { outcome, .. } => outcome.state(),
        }
    }

    pub(super) fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done { .. })
    }

    /// When it may next start, if it waits for a time.
    pub(super) fn due_ms(&self) -> Option<u64> {
        match self.phase {
            Phase::Scheduled(due) | Phase::Retrying(due) => Some(due),
            Phase::Queued | Phase::Done { .. } => None,
        }
    }

    /// Keeps a failed attempt's error (bounded in number and length).
    pub(super) fn record_error(&mut self, error: &str) {
        let errors = &mut self.extra.get_or_insert_default().errors;
        if errors.len() >= TaskView::MAX_ERRORS {
            errors.remove(0);
        }
        let mut end = error.len().min(TaskView::MAX_ERROR_LEN);
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        errors.push(error[..end].to_owned());
    }
}

/// Shares task type names among the tasks of a table: a table holds a handful of types
/// over hundreds of thousands of tasks. Bounded: past [`KindNames::MAX`] names, a new one is
/// not shared.
#[derive(Debug, Default)]
pub(super) struct KindNames(HashSet<Arc<str>>);

impl KindNames {
    const MAX: usize = 4096;

    pub(super) fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(name) {
            return Arc::clone(shared);
        }
        let new: Arc<str> = Arc::from(name);
        if self.0.len() < Self::MAX {
            self.0.insert(Arc::clone(&new));
        }
        new
    }
}

pub(super) fn view_of(id: TaskId, r: &Record) -> TaskView {
    let (outcome, finished_ms) = match &r.phase {
        Phase::Done { outcome, at_ms } => (Some(outcome.clone()), Some(*at_ms)),
        _ => (None, None),
    };
    TaskView {
        id,
        kind: Arc::clone(&r.kind),
        state: r.state(),
        attempts: r.ended,
        outcome,
        created_ms: r.created_ms,
        due_ms: r.due_ms(),
        finished_ms,
        errors: r.errors().to_vec(),
        no_handler: false,
        queue: r.extra.as_ref().and_then(|e| e.queue.clone()),
        priority: r.priority(),
        concurrency: r.extra.as_ref().and_then(|e| e.concurrency.clone()),
        progress: None,
    }
}
