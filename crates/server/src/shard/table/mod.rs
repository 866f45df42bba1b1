//! The shard's task table: a deterministic state machine over [`Command`]s.
//!
//! It owns every task's spec and lifecycle, the retention of finished results (bounded by
//! age and by count) and the shard's replicated settings, changed only by logged commands
//! so that every replica applies the same. It never reads a clock, does no I/O and draws no
//! random numbers: time arrives inside the commands, and the table's own time is the latest
//! a command carried, so that a command stamped earlier than one before it (a leader whose
//! clock is behind) reorders nothing.
//!
//! [`TaskTable::apply`] is the one dispatch: each family of commands is a file of its own
//! (`lifecycle`, `retention`, `type_defaults`, `queues`, `schedules`), the record layout is
//! `record` and the snapshot image `image`. The table store applies commands and takes
//! snapshots; the leader reads the table to schedule and to answer.

mod image;
mod lifecycle;
mod queues;
mod record;
mod retention;
mod schedules;
#[cfg(test)]
mod test_support;
mod type_defaults;

pub use image::{CorruptSnapshot, TableImage};
pub use retention::Retention;
pub use schedules::{Schedule, Schedules, check as check_schedule};

use super::cow_map::CowMap;
use super::{Applied, Command};
use bytes::Bytes;
use dtc_proto::status::{Cursor, StateCounts};
use dtc_proto::{TaskId, TaskOptions, TaskState, TaskView};
use record::{KindNames, Phase, Record, view_of};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// What the next attempt of a task that may start needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Input<'a> {
    /// The attempt's number.
    pub attempt: u32,
    /// The task's type.
    pub kind: &'a str,
    /// The handler's input.
    pub payload: &'a Bytes,
    /// How long the attempt may run.
    pub timeout_ms: Option<u64>,
    /// The queue it waits in.
    pub queue: &'a str,
    /// Its priority.
    pub priority: u8,
    /// Its concurrency key and limit.
    pub key: Option<(&'a str, u32)>,
    /// Since when it has been ready to start (ms since the Unix epoch).
    pub since_ms: u64,
}

/// A task as a listing first sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Its place in the list.
    pub at: Cursor,
    /// Its state in the table.
    pub state: TaskState,
    /// When it may next start, if it waits for a time.
    pub due_ms: Option<u64>,
}

/// What the leader needs to time an unfinished task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// It may not start before this time (ms since the Unix epoch); 0 if it may now.
    pub due_ms: u64,
    /// Not started by then, it fails as expired (only before its first attempt).
    pub expires_at_ms: Option<u64>,
    /// How long one attempt may run.
    pub timeout_ms: Option<u64>,
}

/// The task table of one shard.
#[derive(Debug, Default)]
pub struct TaskTable {
    tasks: CowMap<Record>,
    /// Succeeded and cancelled tasks in the order they finished, with when.
    finished: VecDeque<(u64, TaskId)>,
    /// Failed tasks in the order they failed, with when; an entry whose task has since
    /// been retried or purged is skipped (its time no longer matches).
    failed: VecDeque<(u64, TaskId)>,
    /// How many tasks are failed (the entries of `failed` that still count).
    failed_len: usize,
    /// How many tasks are unfinished.
    unfinished: usize,
    /// How many tasks are in each state (running ones in the state the table holds).
    counts: StateCounts,
    /// One shared copy of each task type name (not state: only saves memory and copies).
    kinds: KindNames,
    settings: Settings,
    /// The latest time a command carried (ms since the Unix epoch).
    clock_ms: u64,
}

/// The settings in force, and whether a [`Command::Configure`] has set them (until one has,
/// they are the defaults the table was made with).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Settings {
    retention: Retention,
    configured: bool,
    /// Options a task of a type takes where its submit gives none, by type, sorted.
    type_defaults: Vec<(String, TaskOptions)>,
    /// The queues whose tasks are held, sorted.
    paused_queues: Vec<String>,
    /// The rate-limited queues and their starts per hour, sorted by name.
    queue_rates: Vec<(String, u64)>,
    /// The shard's schedules.
    schedules: Schedules,
}

impl TaskTable {
    /// An empty table whose settings, until configured, are `retention`.
    pub fn new(retention: Retention) -> Self {
        Self {
            settings: Settings {
                retention,
                configured: false,
                type_defaults: Vec::new(),
                paused_queues: Vec::new(),
                queue_rates: Vec::new(),
                schedules: Schedules::default(),
            },
            ..Self::default()
        }
    }

    /// The concurrency key and limit of an unfinished or kept task, if it has one.
    pub fn key_of(&self, id: TaskId) -> Option<(&str, u32)> {
        self.tasks.get(&id).and_then(Record::key)
    }

    /// The queue an unfinished or kept task waits (or waited) in.
    pub fn queue_of(&self, id: TaskId) -> Option<&str> {
        self.tasks.get(&id).map(Record::queue)
    }

    /// Whether a [`Command::Configure`] has set the settings.
    pub fn configured(&self) -> bool {
        self.settings.configured
    }

    /// The latest time a command carried (ms since the Unix epoch).
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Applies one command. Deterministic: the same commands give the same table.
    pub fn apply(&mut self, cmd: Command) -> Applied {
        if let Some(at_ms) = cmd.at_ms() {
            self.clock_ms = self.clock_ms.max(at_ms);
        }
        // Time inside the table never goes back, whatever a command says.
        let at_ms = self.clock_ms;
        match cmd {
            Command::Submit { spec, .. } => Applied::Submitted(self.submit(spec, at_ms)),
            Command::Complete {
                id,
                attempt,
                outcome,
                retry,
                ..
            } => self.complete(id, attempt, outcome, retry, at_ms),
            Command::Requeue { id, attempt, .. } => self.requeue(id, attempt, at_ms),
            Command::Cancel { id, .. } => self.cancel(id, at_ms),
            Command::Retry { id, .. } => self.retry(id),
            Command::Lapse { id, .. } => self.lapse(id, at_ms),
            Command::Purge { state, .. } => Applied::Purged(self.purge(state)),
            Command::SetTypeDefaults { kind, options } => {
                self.set_type_defaults(kind, options.map(|o| *o))
            }
            Command::PauseQueue { queue, paused } => self.pause_queue(queue, paused),
            Command::LimitQueue { queue, per_hour } => self.limit_queue(queue, per_hour),
            Command::AddSchedule { spec, at_ms } => self.add_schedule(*spec, at_ms),
            Command::PauseSchedule {
                name,
                paused,
                at_ms,
            } => self.pause_schedule(name, paused, at_ms),
            Command::DeleteSchedule { name } => self.delete_schedule(name),
            Command::TriggerSchedule { name, at_ms } => self.trigger_schedule(name, at_ms),
            Command::Fire {
                name,
                tick_ms,
                run,
                missed,
                at_ms,
            } => self.fire(&name, tick_ms, run, missed, at_ms),
            Command::Expire { .. } => {
                self.expire(at_ms);
                Applied::Nothing
            }
            Command::Configure { retention } => self.configure(retention),
        }
    }

    /// The task as the table holds it (a running task shows as `Queued` here: which tasks
    /// run is runtime state, kept by the leader).
    pub fn view(&self, id: TaskId) -> Option<TaskView> {
        self.tasks.get(&id).map(|r| view_of(id, r))
    }

    /// The next attempt number and the input of a task that may start at `now_ms` (queued,
    /// or scheduled or retrying and due, and not past its expiry); `None` otherwise.
    pub fn runnable(&self, id: TaskId, now_ms: u64) -> Option<Input<'_>> {
        let r = self.tasks.get(&id)?;
        let (due, since_ms) = match r.phase {
            Phase::Queued => (true, r.created_ms),
            Phase::Scheduled(due) | Phase::Retrying(due) => (due <= now_ms, due),
            Phase::Done { .. } => (false, 0),
        };
        let lapsed = r.ended == 0 && r.expires_at_ms().is_some_and(|at| at <= now_ms);
        (due && !lapsed).then(|| Input {
            attempt: r.ended + 1,
            kind: &r.kind,
            payload: &r.payload,
            timeout_ms: r.timeout_ms(),
            queue: r.queue(),
            priority: r.priority(),
            key: r.key(),
            since_ms,
        })
    }

    /// The next attempt number of an unfinished task.
    pub fn next_attempt(&self, id: TaskId) -> Option<u32> {
        let r = self.tasks.get(&id).filter(|r| !r.is_done())?;
        Some(r.ended + 1)
    }

    /// When an unfinished task may start, expires, and how long an attempt may run.
    pub fn timing(&self, id: TaskId) -> Option<Timing> {
        let r = self.tasks.get(&id).filter(|r| !r.is_done())?;
        Some(Timing {
            due_ms: r.due_ms().unwrap_or(0),
            expires_at_ms: r.expires_at_ms().filter(|_| r.ended == 0),
            timeout_ms: r.timeout_ms(),
        })
    }

    /// How many tasks are in each state, as the table holds them (a running task is in
    /// the state it was in when it started).
    pub fn state_counts(&self) -> StateCounts {
        self.counts
    }

    /// The tasks listed after `before` (newest first: by creation time, then id, both
    /// descending), of type `kind` if given, in no particular order: the caller picks and
    /// sorts. A scan of the whole table.
    pub fn scan<'a>(
        &'a self,
        before: Option<Cursor>,
        kind: Option<&'a str>,
    ) -> impl Iterator<Item = Listed> + 'a {
        self.tasks.iter().filter_map(move |(id, r)| {
            let at = Cursor {
                created_ms: r.created_ms,
                id: *id,
            };
            let listed = before.is_none_or(|b| at < b) && kind.is_none_or(|k| *r.kind == *k);
            listed.then(|| Listed {
                at,
                state: r.state(),
                due_ms: r.due_ms(),
            })
        })
    }

    /// How many tasks are unfinished (scheduled, queued, running or retrying).
    pub fn unfinished_len(&self) -> usize {
        self.unfinished
    }

    /// How many tasks the table holds, finished ones included.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the table holds no task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Every unfinished task's id, in no particular order: what a new leader schedules.
    pub fn unfinished_tasks(&self) -> impl Iterator<Item = TaskId> {
        self.tasks
            .iter()
            .filter(|(_, r)| !r.is_done())
            .map(|(id, _)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use dtc_proto::{Backoff, Outcome, Retry, TaskSpec};

    #[test]
    fn apply_is_deterministic() {
        let cmds: Vec<Command> = (0..50u128)
            .flat_map(|n| {
                [
                    Command::Submit {
                        spec: spec(n % 17, 2),
                        at_ms: n as u64,
                    },
                    Command::Requeue {
                        id: TaskId(n % 5),
                        attempt: 1,
                        at_ms: n as u64,
                    },
                    complete(n % 7, 1, ok(b"v"), Retry::Policy, n as u64),
                    fail(n % 11, 1, n as u64),
                    Command::Expire { at_ms: n as u64 },
                ]
            })
            .collect();
        let retention = Retention {
            result_ttl_ms: 20,
            max_results: 10,
            max_queued: 8,
            failed_ttl_ms: 30,
            max_failed: 4,
        };
        let mut a = TaskTable::new(retention);
        let mut b = TaskTable::new(retention);
        let ra: Vec<Applied> = cmds.iter().cloned().map(|c| a.apply(c)).collect();
        let rb: Vec<Applied> = cmds.into_iter().map(|c| b.apply(c)).collect();
        assert_eq!(ra, rb);
        assert_eq!(a.snapshot(), b.snapshot());
        let unfinished = (0..17)
            .filter_map(|n| a.view(TaskId(n)))
            .filter(|v| !v.state.is_finished())
            .count();
        assert_eq!(a.unfinished_len(), unfinished);
        let restored = TaskTable::restore(&a.snapshot()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(restored.snapshot(), a.snapshot());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn command() -> impl Strategy<Value = Command> {
            let id = (0..16u128).prop_map(TaskId);
            prop_oneof![
                (id.clone(), 1..4u32, 0..3u64, 0..1000u64).prop_map(
                    |(id, max_attempts, delay, at_ms)| Command::Submit {
                        spec: TaskSpec::new("noop", "p")
                            .with_id(id)
                            .with_max_attempts(max_attempts)
                            .with_delay(std::time::Duration::from_millis(delay * 50))
                            .with_backoff(Backoff {
                                jitter_pct: 50,
                                ..EXACT
                            }),
                        at_ms,
                    }
                ),
                (id.clone(), 1..4u32, 0..4u8, 0..1000u64).prop_map(|(id, attempt, how, at_ms)| {
                    let (outcome, retry) = match how {
                        0 => (Outcome::Succeeded(Bytes::from_static(b"r")), Retry::Policy),
                        1 => (Outcome::Failed("no".into()), Retry::Policy),
                        2 => (Outcome::Failed("no".into()), Retry::Never),
                        _ => (Outcome::Failed("no".into()), Retry::After(30)),
                    };
                    Command::Complete {
                        id,
                        attempt,
                        outcome,
                        retry,
                        at_ms,
                    }
                }),
                (id.clone(), 1..4u32, 0..1000u64)
                    .prop_map(|(id, attempt, at_ms)| Command::Requeue { id, attempt, at_ms }),
                (id.clone(), 0..1000u64).prop_map(|(id, at_ms)| Command::Cancel { id, at_ms }),
                (id.clone(), 0..1000u64).prop_map(|(id, at_ms)| Command::Retry { id, at_ms }),
                (id, 0..1000u64).prop_map(|(id, at_ms)| Command::Lapse { id, at_ms }),
                (0..7usize, 0..1000u64).prop_map(|(s, at_ms)| Command::Purge {
                    state: TaskState::ALL[s],
                    at_ms
                }),
                (0..2000u64).prop_map(|at_ms| Command::Expire { at_ms }),
            ]
        }

        proptest! {
            /// The unfinished count matches the unfinished tasks, the bounds hold, a
            /// finished task's outcome never changes while it is kept (unless a retry
            /// runs it again), and a snapshot restores the same table.
            #[test]
            fn table_invariants_hold(cmds in proptest::collection::vec(command(), 1..300)) {
                let retention = Retention {
                    result_ttl_ms: 500,
                    max_results: 6,
                    max_queued: 8,
                    failed_ttl_ms: 700,
                    max_failed: 3,
                };
                let mut t = TaskTable::new(retention);
                let mut finished: dtc_proto::hash::HashMap<TaskId, Outcome> = dtc_proto::hash::HashMap::default();
                for cmd in cmds {
                    let retried = match &cmd {
                        Command::Retry { id, .. } => Some(*id),
                        _ => None,
                    };
                    let applied = t.apply(cmd);
                    if let (Some(id), Applied::Retried(_)) = (retried, &applied) {
                        finished.remove(&id);
                    }
                    let views: Vec<TaskView> = (0..16).filter_map(|n| t.view(TaskId(n))).collect();
                    let unfinished = views.iter().filter(|v| !v.state.is_finished()).count();
                    let failed = views.iter().filter(|v| v.state == TaskState::Failed).count();
                    prop_assert_eq!(t.unfinished_len(), unfinished);
                    for state in TaskState::ALL {
                        let n = views.iter().filter(|v| v.state == state).count() as u64;
                        prop_assert_eq!(t.state_counts().get(state), n, "{:?}", state);
                    }
                    prop_assert!(unfinished <= retention.max_queued);
                    prop_assert!(failed <= retention.max_failed);
                    prop_assert!(views.len() - unfinished - failed <= retention.max_results);
                    for v in &views {
                        prop_assert!(v.errors.len() <= TaskView::MAX_ERRORS);
                        if let Some(outcome) = &v.outcome {
                            if let Some(before) = finished.get(&v.id) {
                                prop_assert_eq!(before, outcome, "a kept result changed");
                            }
                            finished.insert(v.id, outcome.clone());
                        } else {
                            // Forgotten (expired) and submitted anew: a new task.
                            finished.remove(&v.id);
                        }
                    }
                    finished.retain(|id, _| t.view(*id).is_some());
                }
                let restored = TaskTable::restore(&t.snapshot());
                prop_assert!(restored.is_ok_and(|r| r.snapshot() == t.snapshot()));
            }
        }
    }
}
