//! The commands of the shard's task table and what applying one yields.
//!
//! Commands carry every input `apply` needs, time included, so that applying the same
//! commands in the same order gives the same table on every replica.

use super::Retention;
use dtc_proto::schedule::{ScheduleSpec, ScheduleStatus};
use dtc_proto::{Outcome, Retry, TaskId, TaskOptions, TaskSpec, TaskState, TaskView, WireError};
use serde::{Deserialize, Serialize};

/// A change to the task table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add a task unless its id exists.
    Submit {
        /// The task.
        spec: TaskSpec,
        /// The leader's clock (ms since the Unix epoch) when it proposed this.
        at_ms: u64,
    },
    /// An attempt finished with `outcome`.
    Complete {
        /// The task.
        id: TaskId,
        /// Which attempt finished.
        attempt: u32,
        /// What the handler returned.
        outcome: Outcome,
        /// If it failed: how to retry.
        retry: Retry,
        /// The leader's clock when it proposed this.
        at_ms: u64,
    },
    /// The running attempt was lost (its worker died): run it again while attempts remain.
    Requeue {
        /// The task.
        id: TaskId,
        /// The attempt that was lost.
        attempt: u32,
        /// The leader's clock when it proposed this.
        at_ms: u64,
    },
    /// Cancel an unfinished task.
    Cancel {
        /// The task.
        id: TaskId,
        /// The leader's clock when it proposed this.
        at_ms: u64,
    },
    /// Run a failed task again with fresh attempts.
    Retry {
        /// The task.
        id: TaskId,
        /// The leader's clock when it proposed this.
        at_ms: u64,
    },
    /// Set (or with `None` clear) the options tasks of a type take where their submit
    /// gives none (its start is not taken).
    SetTypeDefaults {
        /// The task type.
        kind: String,
        /// Its defaults (boxed: rare, and commands should stay small).
        options: Option<Box<TaskOptions>>,
    },
    /// Hold (or let run again) the tasks of a named queue.
    PauseQueue {
        /// The queue.
        queue: String,
        /// Paused (`true`) or resumed.
        paused: bool,
    },
    /// Limit (or with `None` stop limiting) how fast a named queue's tasks start.
    LimitQueue {
        /// The queue.
        queue: String,
        /// Starts per hour.
        per_hour: Option<u64>,
    },
    /// Add a schedule (its first tick is the first after `at_ms`).
    AddSchedule {
        /// The schedule (boxed: rare, and commands should stay small).
        spec: Box<ScheduleSpec>,
        /// The leader's clock when it proposed this.
        at_ms: u64,
    },
    /// Pause or resume a schedule.
    PauseSchedule {
        /// The schedule.
        name: String,
        /// Paused (`true`) or resumed.
        paused: bool,
        /// The leader's clock when it proposed this (a resumed schedule fires from its
        /// next tick after it).
        at_ms: u64,
    },
    /// Remove a schedule.
    DeleteSchedule {
        /// The schedule.
        name: String,
    },
    /// Submit a schedule's task now, outside its calendar.
    TriggerSchedule {
        /// The schedule.
        name: String,
        /// The leader's clock when it proposed this.
        at_ms: u64,
    },
    /// Handle a schedule's tick: submit its task (`run`) or skip it, with `missed` earlier
    /// ticks skipped. A tick at or before the last one handled changes nothing.
    Fire {
        /// The schedule.
        name: String,
        /// The tick (ms since the Unix epoch).
        tick_ms: u64,
        /// Submit its task (else skip it).
        run: bool,
        /// Earlier ticks skipped with it (by the catch-up policy).
        missed: u32,
        /// The leader's clock when it proposed this.
        at_ms: u64,
    },
    /// Forget every finished task in this state.
    Purge {
        /// Failed, succeeded or cancelled.
        state: TaskState,
        /// The leader's clock when it proposed this.
        at_ms: u64,
    },
    /// The task was not started before its expiry: it fails as expired.
    Lapse {
        /// The task.
        id: TaskId,
        /// The leader's clock when it proposed this.
        at_ms: u64,
    },
    /// Forget finished tasks older than the retention time.
    Expire {
        /// The leader's clock when it proposed this.
        at_ms: u64,
    },
    /// Set the shard's settings (the first leader's flags, or an operator's change).
    Configure {
        /// The new settings.
        retention: Retention,
    },
}

impl Command {
    /// Roughly how many bytes the command's variable parts take (payloads, results): what
    /// bounds the size of a log entry.
    pub fn payload_len(&self) -> usize {
        match self {
            Self::Submit { spec, .. } => spec.kind.len() + spec.payload.len(),
            Self::Complete { outcome, .. } => match outcome {
                Outcome::Succeeded(b) => b.len(),
                Outcome::Failed(s) => s.len(),
                Outcome::Cancelled => 0,
            },
            Self::Requeue { .. }
            | Self::Cancel { .. }
            | Self::Retry { .. }
            | Self::Lapse { .. }
            | Self::Purge { .. }
            | Self::Expire { .. }
            | Self::Configure { .. } => 0,
            Self::SetTypeDefaults { kind, .. } => kind.len(),
            Self::PauseQueue { queue, .. } | Self::LimitQueue { queue, .. } => queue.len(),
            Self::AddSchedule { spec, .. } => {
                spec.name.len() + spec.cron.len() + spec.kind.len() + spec.payload.len()
            }
            Self::PauseSchedule { name, .. }
            | Self::DeleteSchedule { name }
            | Self::TriggerSchedule { name, .. }
            | Self::Fire { name, .. } => name.len(),
        }
    }

    /// The leader's clock when it proposed the command, for those that carry it.
    pub fn at_ms(&self) -> Option<u64> {
        match self {
            Self::Submit { at_ms, .. }
            | Self::Complete { at_ms, .. }
            | Self::Requeue { at_ms, .. }
            | Self::Cancel { at_ms, .. }
            | Self::Retry { at_ms, .. }
            | Self::Lapse { at_ms, .. }
            | Self::Purge { at_ms, .. }
            | Self::AddSchedule { at_ms, .. }
            | Self::PauseSchedule { at_ms, .. }
            | Self::TriggerSchedule { at_ms, .. }
            | Self::Fire { at_ms, .. }
            | Self::Expire { at_ms } => Some(*at_ms),
            Self::Configure { .. }
            | Self::SetTypeDefaults { .. }
            | Self::PauseQueue { .. }
            | Self::LimitQueue { .. }
            | Self::DeleteSchedule { .. } => None,
        }
    }
}

/// What a submit did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitOutcome {
    /// The task as it now stands.
    pub view: TaskView,
    /// True if the task is new (and so must be scheduled); false if the id existed.
    pub created: bool,
}

/// The result of applying one command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// The answer to a [`Command::Submit`].
    Submitted(Result<SubmitOutcome, WireError>),
    /// The task is queued again and must be scheduled.
    Requeued(TaskId),
    /// The task is retrying: it must be scheduled when its time comes.
    Waiting(TaskId),
    /// The answer to a [`Command::Retry`]: the failed task is queued again.
    Retried(TaskView),
    /// The task finished for good (succeeded, failed, or cancelled).
    Finished(TaskView),
    /// The answer to a [`Command::Cancel`] or [`Command::Retry`] that could not be done.
    Refused(TaskId, WireError),
    /// The shard's settings are now these.
    Configured(Retention),
    /// A purge forgot this many tasks.
    Purged(u64),
    /// Every task type's defaults after a [`Command::SetTypeDefaults`], or why it was
    /// refused.
    TypeDefaults(Result<Vec<(String, TaskOptions)>, WireError>),
    /// The paused queues after a [`Command::PauseQueue`], by name, or why it was refused.
    QueuesPaused(Result<Vec<String>, WireError>),
    /// The rate-limited queues (name, starts per hour) after a [`Command::LimitQueue`], or
    /// why it was refused.
    QueueRates(Result<Vec<(String, u64)>, WireError>),
    /// A schedule after a change (none once deleted), or why the change was refused; and
    /// the task a trigger submitted, to schedule.
    Schedule {
        /// The schedule.
        name: String,
        /// It as it now stands.
        result: Result<Vec<ScheduleStatus>, WireError>,
        /// A new task to schedule.
        created: Option<TaskId>,
    },
    /// A schedule's tick submitted this new task (to schedule), or nothing.
    Fired(Option<TaskId>),
    /// Nothing changed that anyone waits for (a stale completion, an expiry).
    Nothing,
}
