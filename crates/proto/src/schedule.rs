//! Schedules: a task submitted on a cron calendar. A schedule lives in the replicated table
//! of the shard its name routes to ([`key_route_hash`](crate::key_route_hash) of the name);
//! each firing submits a task whose id is derived from the schedule and the tick
//! ([`schedule_task_id`]) and routed by the name, so the task lives on the same shard and a
//! tick fired twice (by two leaders across a failover) is one task. An operator manages
//! schedules with [`ScheduleOp`] through the admin protocol
//! ([`AdminRequest::Schedules`](crate::status::AdminRequest::Schedules)). Its calendar
//! ([`Calendar`]) reads the cron expression in its time zone.

pub use crate::calendar::{Calendar, CalendarError};
use crate::{TaskId, TaskOptions, WireError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What happens at a tick while the task of the previous tick has not finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overlap {
    /// The tick is skipped (counted in [`ScheduleStatus::skipped`]).
    #[default]
    Skip,
    /// The tick's task is submitted anyway: runs may overlap.
    Allow,
}

/// What happens to the ticks that passed while the shard had no leader (or its leader was
/// more than [`ScheduleSpec::LATE_MS`] late).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatchUp {
    /// They are skipped.
    None,
    /// One task runs for all of them (the latest tick's).
    #[default]
    One,
    /// Each runs, in order.
    All,
}

/// A schedule as an operator defines it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// Its name: 1 to 64 letters, digits and `_ - . :` (like a queue's).
    pub name: String,
    /// The cron expression: five fields (minute to weekday), or six with seconds first.
    pub cron: String,
    /// The IANA time zone the expression is read in (`Europe/Paris`); UTC when `None`.
    pub tz: Option<String>,
    /// At a tick while the last tick's task is unfinished.
    pub overlap: Overlap,
    /// For ticks missed while the shard had no leader.
    pub catch_up: CatchUp,
    /// The task type each firing submits.
    pub kind: String,
    /// Its payload.
    pub payload: Bytes,
    /// Its attempt limit.
    pub max_attempts: u32,
    /// Its options (queue, priority, timeout, …; not a start time or a concurrency key).
    pub options: Option<Box<TaskOptions>>,
}

impl ScheduleSpec {
    /// A tick fired more than this late counts as missed (see [`CatchUp`]).
    pub const LATE_MS: u64 = 1_000;
    /// The most schedules one shard keeps.
    pub const MAX_SCHEDULES: usize = 100_000;
    /// The most schedules one list answers with (one page).
    pub const MAX_LISTED: usize = 1_000;

    /// Its calendar: the cron expression read in its time zone.
    pub fn calendar(&self) -> Result<Calendar, CalendarError> {
        Calendar::parse(&self.cron, self.tz.as_deref())
    }
}

/// A schedule as its shard holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleStatus {
    /// What it is.
    pub spec: ScheduleSpec,
    /// Paused: its ticks pass without firing.
    pub paused: bool,
    /// The last tick handled (fired or skipped), or when it was added or resumed (ms since
    /// the Unix epoch).
    pub last_tick_ms: u64,
    /// Its next tick, if its calendar has one (ms since the Unix epoch).
    pub next_ms: Option<u64>,
    /// The task of its last firing.
    pub last_task: Option<TaskId>,
    /// Ticks that submitted a task (and triggers).
    pub fired: u64,
    /// Ticks skipped: by the overlap policy, or missed and not caught up.
    pub skipped: u64,
}

/// What [`AdminRequest::Schedules`](crate::status::AdminRequest::Schedules) asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScheduleOp {
    /// The schedules named after `after` (all when `None`), by name, at most
    /// [`ScheduleSpec::MAX_LISTED`] (through a router: of every shard). A full page's last
    /// name asks for the next page.
    List {
        /// Where the page starts (exclusive).
        after: Option<String>,
    },
    /// Add a schedule (adding the same spec again changes nothing).
    Add(ScheduleSpec),
    /// Let its ticks pass without firing.
    Pause(String),
    /// Fire again from the next tick on (the ticks while paused are not caught up).
    Resume(String),
    /// Submit its task now, outside its calendar.
    Trigger(String),
    /// Remove it (tasks it submitted are not touched).
    Delete(String),
}

impl ScheduleOp {
    /// The schedule it is about (`None` for a list).
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::List { .. } => None,
            Self::Add(spec) => Some(&spec.name),
            Self::Pause(n) | Self::Resume(n) | Self::Trigger(n) | Self::Delete(n) => Some(n),
        }
    }
}

/// The id of the task a schedule's tick submits: derived from the name and the tick,
/// routed by the name, and in the namespace clients may not submit in
/// ([`TaskId::reserved_by`]), so nobody can plant a task in a tick's place.
pub fn schedule_task_id(name: &str, tick_ms: u64) -> TaskId {
    derived_id(name, tick_ms, 0x5C4E_D01E)
}

/// The id of the task a trigger of a schedule at `at_ms` submits.
pub fn trigger_task_id(name: &str, at_ms: u64) -> TaskId {
    derived_id(name, at_ms, 0x7219_6E55)
}

fn derived_id(name: &str, ms: u64, salt: u64) -> TaskId {
    let base = crate::key_route_hash(name);
    let hi = crate::id::mix64(base ^ ms ^ salt);
    let lo = crate::id::mix64(hi ^ ms.rotate_left(32) ^ !salt);
    TaskId((u128::from(hi) << 64) | u128::from(lo)).reserved_by(name)
}

/// Whether `name` may name a schedule (the rules of a queue's name).
pub fn check_schedule_name(name: &str) -> Result<(), WireError> {
    crate::check_queue_name(name).map_err(|_| WireError::BadRequest {
        reason: format!(
            "{name:?} is not a schedule name: use 1 to {} letters, digits, '_', '-', '.' or ':'",
            crate::TaskSpec::MAX_QUEUE_LEN
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_ids_are_distinct_stable_reserved_and_routed_by_the_name() {
        let a = schedule_task_id("nightly", 1_000);
        assert_eq!(a, schedule_task_id("nightly", 1_000));
        assert_ne!(a, schedule_task_id("nightly", 2_000));
        assert_ne!(a, schedule_task_id("hourly", 1_000));
        assert_ne!(a, trigger_task_id("nightly", 1_000));
        assert!(a.is_reserved(), "no client may submit it");
        assert_eq!(a.route_hash(), crate::key_route_hash("nightly"));
        let ids: std::collections::HashSet<TaskId> = (0..10_000)
            .map(|t| schedule_task_id("s", t * 1000))
            .collect();
        assert_eq!(ids.len(), 10_000);
    }
}
