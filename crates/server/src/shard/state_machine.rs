//! The shard's task table: a deterministic state machine over [`Command`]s.
//!
//! It owns every task's spec and lifecycle, the retention of finished results (bounded by
//! age and by count) and the shard's settings ([`Retention`], changed only by a logged
//! [`Command::Configure`], so that every replica applies the same). It never reads a clock,
//! does no I/O and draws no random numbers: time arrives inside the commands, and the
//! table's own time is the latest a command carried, so that a command stamped earlier than
//! one before it (a leader whose clock is behind) reorders nothing.

use super::{Applied, Command, SubmitOutcome};
use bytes::Bytes;
use dtc_proto::{Outcome, TaskId, TaskSpec, TaskState, TaskView, WireError};
use foldhash::HashMap;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The shard's settings: how long and how many finished tasks are kept, and how many may
/// wait in the queue. Part of the replicated table: set by the shard's first leader from its
/// flags, changed by an operator through the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Finished tasks are forgotten this many ms after they finished.
    pub result_ttl_ms: u64,
    /// At most this many finished tasks are kept; the oldest go first.
    pub max_results: usize,
    /// At most this many tasks may be queued; a submit past it is `Overloaded`.
    pub max_queued: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            result_ttl_ms: 10 * 60 * 1000,
            max_results: 200_000,
            max_queued: 100_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    kind: String,
    payload: Bytes,
    max_attempts: u32,
    /// Attempts that have ended (failed or lost); the next attempt is `ended + 1`.
    ended: u32,
    outcome: Option<Outcome>,
}

impl Record {
    fn state(&self) -> TaskState {
        self.outcome
            .as_ref()
            .map_or(TaskState::Queued, Outcome::state)
    }
}

/// The task table of one shard.
#[derive(Debug, Default)]
pub struct TaskTable {
    tasks: HashMap<TaskId, Record>,
    /// Finished tasks in the order they finished, with when.
    finished: VecDeque<(u64, TaskId)>,
    queued: usize,
    settings: Settings,
    /// The latest time a command carried (ms since the Unix epoch).
    clock_ms: u64,
}

/// The settings in force, and whether a [`Command::Configure`] has set them (until one has,
/// they are the defaults the table was made with).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Settings {
    retention: Retention,
    configured: bool,
}

/// The table's content as a snapshot holds it. Tasks are sorted by id, so that equal tables
/// give equal bytes (replicas can be compared by their snapshots).
#[derive(Serialize, Deserialize)]
struct Image {
    tasks: Vec<(TaskId, Record)>,
    finished: VecDeque<(u64, TaskId)>,
    settings: Settings,
    clock_ms: u64,
}

/// A copy of the table's content, taken quickly (under the table's lock) and encoded later
/// (away from it): [`TaskTable::image`], then [`TableImage::encode`].
pub struct TableImage(Image);

impl TableImage {
    /// The snapshot bytes: tasks sorted by id, postcard-encoded; equal tables give equal
    /// bytes.
    pub fn encode(mut self) -> Vec<u8> {
        self.0.tasks.sort_unstable_by_key(|(id, _)| *id);
        // Encoding into a Vec fails only on out-of-memory, which aborts anyway.
        postcard::to_allocvec(&self.0).unwrap_or_default()
    }
}

/// A snapshot that could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("the task table snapshot is corrupt: {0}")]
pub struct CorruptSnapshot(#[from] postcard::Error);

impl TaskTable {
    /// An empty table whose settings, until configured, are `retention`.
    pub fn new(retention: Retention) -> Self {
        Self {
            settings: Settings {
                retention,
                configured: false,
            },
            ..Self::default()
        }
    }

    /// The settings in force.
    pub fn retention(&self) -> Retention {
        self.settings.retention
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
                ..
            } => self.complete(id, attempt, outcome, at_ms),
            Command::Requeue { id, attempt, .. } => self.requeue(id, attempt, at_ms),
            Command::Cancel { id, .. } => self.cancel(id, at_ms),
            Command::Expire { .. } => {
                self.expire(at_ms);
                Applied::Nothing
            }
            Command::Configure { retention } => {
                self.settings = Settings {
                    retention,
                    configured: true,
                };
                self.trim();
                Applied::Configured(retention)
            }
        }
    }

    /// The task as the table holds it (a running task shows as `Queued` here: which tasks
    /// run is runtime state, kept by the leader).
    pub fn view(&self, id: TaskId) -> Option<TaskView> {
        self.tasks.get(&id).map(|r| view_of(id, r))
    }

    /// The next attempt number and the input of a queued task; `None` if it is not queued.
    pub fn queued_input(&self, id: TaskId) -> Option<(u32, &str, &Bytes)> {
        let r = self.tasks.get(&id)?;
        (r.outcome.is_none()).then(|| (r.ended + 1, r.kind.as_str(), &r.payload))
    }

    /// How many tasks are queued (not finished).
    pub fn queued_len(&self) -> usize {
        self.queued
    }

    /// How many tasks the table holds, finished ones included.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the table holds no task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Every queued task's id and type, in no particular order: what a new leader puts in
    /// its ready queue.
    pub fn queued_tasks(&self) -> impl Iterator<Item = (TaskId, &str)> {
        self.tasks
            .iter()
            .filter(|(_, r)| r.outcome.is_none())
            .map(|(id, r)| (*id, r.kind.as_str()))
    }

    /// The table's content, encoded (postcard); equal tables give equal bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        self.image().encode()
    }

    /// A copy of the table's content, to encode later.
    pub fn image(&self) -> TableImage {
        TableImage(Image {
            tasks: self.tasks.iter().map(|(id, r)| (*id, r.clone())).collect(),
            finished: self.finished.clone(),
            settings: self.settings,
            clock_ms: self.clock_ms,
        })
    }

    /// A table restored from [`TaskTable::snapshot`] bytes.
    pub fn restore(bytes: &[u8]) -> Result<Self, CorruptSnapshot> {
        let image: Image = postcard::from_bytes(bytes)?;
        let queued = image
            .tasks
            .iter()
            .filter(|(_, r)| r.outcome.is_none())
            .count();
        Ok(Self {
            tasks: image.tasks.into_iter().collect(),
            finished: image.finished,
            queued,
            settings: image.settings,
            clock_ms: image.clock_ms,
        })
    }

    /// The one admission rule for a submit, applied by the table to every submit and by a
    /// leader deciding whether to run a task before its submit is applied: `Ok(true)` if
    /// `spec` would be a new task, `Ok(false)` if its id is known (the submit changes
    /// nothing), or why it is refused — a malformed spec, or no room in the queue with
    /// `ahead` more tasks queued outside the table (those a leader runs ahead).
    pub fn admits(&self, spec: &TaskSpec, ahead: usize) -> Result<bool, WireError> {
        if self.tasks.contains_key(&spec.id) {
            return Ok(false);
        }
        spec.check_shape()?;
        if self.queued + ahead >= self.settings.retention.max_queued {
            return Err(WireError::Overloaded);
        }
        Ok(true)
    }

    fn submit(&mut self, spec: TaskSpec, at_ms: u64) -> Result<SubmitOutcome, WireError> {
        if let Some(r) = self.tasks.get(&spec.id) {
            return Ok(SubmitOutcome {
                view: view_of(spec.id, r),
                created: false,
            });
        }
        self.admits(&spec, 0)?;
        self.expire(at_ms);
        let record = Record {
            kind: spec.kind,
            payload: spec.payload,
            max_attempts: spec.max_attempts.max(1),
            ended: 0,
            outcome: None,
        };
        let view = view_of(spec.id, &record);
        self.tasks.insert(spec.id, record);
        self.queued += 1;
        Ok(SubmitOutcome {
            view,
            created: true,
        })
    }

    fn complete(&mut self, id: TaskId, attempt: u32, outcome: Outcome, at_ms: u64) -> Applied {
        let Some(r) = self.tasks.get_mut(&id) else {
            return Applied::Nothing;
        };
        if r.outcome.is_some() {
            return Applied::Nothing;
        }
        let current = attempt == r.ended + 1;
        match outcome {
            Outcome::Failed(_) if !current => Applied::Nothing,
            Outcome::Failed(_) if r.ended + 1 < r.max_attempts => {
                r.ended += 1;
                Applied::Requeued(id)
            }
            outcome => {
                r.ended = r.ended.max(attempt);
                self.finish(id, outcome, at_ms)
            }
        }
    }

    fn requeue(&mut self, id: TaskId, attempt: u32, at_ms: u64) -> Applied {
        let Some(r) = self.tasks.get_mut(&id) else {
            return Applied::Nothing;
        };
        if r.outcome.is_some() || attempt != r.ended + 1 {
            return Applied::Nothing;
        }
        r.ended += 1;
        if r.ended < r.max_attempts {
            return Applied::Requeued(id);
        }
        let reason = format!(
            "gave up after {} attempts: the worker running it was lost",
            r.ended
        );
        self.finish(id, Outcome::Failed(reason), at_ms)
    }

    fn cancel(&mut self, id: TaskId, at_ms: u64) -> Applied {
        match self.tasks.get(&id) {
            None => Applied::CancelRefused(id, WireError::NotFound),
            Some(r) if r.outcome.is_some() => Applied::CancelRefused(
                id,
                WireError::BadRequest {
                    reason: "the task has already finished".into(),
                },
            ),
            Some(_) => self.finish(id, Outcome::Cancelled, at_ms),
        }
    }

    fn finish(&mut self, id: TaskId, outcome: Outcome, at_ms: u64) -> Applied {
        let Some(r) = self.tasks.get_mut(&id) else {
            return Applied::Nothing;
        };
        r.outcome = Some(outcome);
        // A finished task keeps only what its view shows: drop the input.
        r.payload = Bytes::new();
        r.kind = String::new();
        let view = view_of(id, r);
        self.queued -= 1;
        self.finished.push_back((at_ms, id));
        self.trim();
        Applied::Finished(view)
    }

    /// Forgets the oldest finished tasks past the bound on their number.
    fn trim(&mut self) {
        while self.finished.len() > self.settings.retention.max_results {
            if let Some((_, old)) = self.finished.pop_front() {
                self.tasks.remove(&old);
            }
        }
    }

    fn expire(&mut self, at_ms: u64) {
        let cutoff = at_ms.saturating_sub(self.settings.retention.result_ttl_ms);
        while let Some(&(done_at, id)) = self.finished.front() {
            if done_at > cutoff {
                break;
            }
            self.finished.pop_front();
            self.tasks.remove(&id);
        }
    }
}

fn view_of(id: TaskId, r: &Record) -> TaskView {
    TaskView {
        id,
        state: r.state(),
        attempts: r.ended,
        outcome: r.outcome.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(n: u128, max_attempts: u32) -> TaskSpec {
        TaskSpec {
            id: TaskId(n),
            kind: "noop".into(),
            payload: Bytes::from_static(b"x"),
            max_attempts,
        }
    }

    fn submit(t: &mut TaskTable, n: u128, max_attempts: u32) -> Applied {
        t.apply(Command::Submit {
            spec: spec(n, max_attempts),
            at_ms: 0,
        })
    }

    fn ok(bytes: &'static [u8]) -> Outcome {
        Outcome::Succeeded(Bytes::from_static(bytes))
    }

    #[test]
    fn submit_is_idempotent_and_returns_the_result() {
        let mut t = TaskTable::new(Retention::default());
        assert!(matches!(
            submit(&mut t, 1, 3),
            Applied::Submitted(Ok(SubmitOutcome { created: true, .. }))
        ));
        assert!(matches!(
            submit(&mut t, 1, 3),
            Applied::Submitted(Ok(SubmitOutcome { created: false, .. }))
        ));
        let done = t.apply(Command::Complete {
            id: TaskId(1),
            attempt: 1,
            outcome: ok(b"r"),
            at_ms: 5,
        });
        assert!(matches!(done, Applied::Finished(ref v) if v.state == TaskState::Succeeded));
        match submit(&mut t, 1, 3) {
            Applied::Submitted(Ok(s)) => {
                assert!(!s.created);
                assert_eq!(s.view.outcome, Some(ok(b"r")));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(t.queued_len(), 0);
    }

    #[test]
    fn failures_retry_while_attempts_remain() {
        let mut t = TaskTable::new(Retention::default());
        submit(&mut t, 1, 2);
        let fail = |attempt| Command::Complete {
            id: TaskId(1),
            attempt,
            outcome: Outcome::Failed("boom".into()),
            at_ms: 1,
        };
        assert_eq!(t.apply(fail(1)), Applied::Requeued(TaskId(1)));
        assert_eq!(t.queued_input(TaskId(1)).map(|q| q.0), Some(2));
        assert_eq!(
            t.apply(fail(1)),
            Applied::Nothing,
            "a stale failure is ignored"
        );
        match t.apply(fail(2)) {
            Applied::Finished(v) => {
                assert_eq!(v.state, TaskState::Failed);
                assert_eq!(v.attempts, 2);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn lost_attempts_requeue_then_give_up() {
        let mut t = TaskTable::new(Retention::default());
        submit(&mut t, 1, 2);
        assert_eq!(
            t.apply(Command::Requeue {
                id: TaskId(1),
                attempt: 1,
                at_ms: 1
            }),
            Applied::Requeued(TaskId(1))
        );
        assert_eq!(
            t.apply(Command::Requeue {
                id: TaskId(1),
                attempt: 1,
                at_ms: 1
            }),
            Applied::Nothing
        );
        assert!(matches!(
            t.apply(Command::Requeue {
                id: TaskId(1),
                attempt: 2,
                at_ms: 1
            }),
            Applied::Finished(TaskView {
                state: TaskState::Failed,
                ..
            })
        ));
    }

    #[test]
    fn a_late_success_of_an_old_attempt_still_counts() {
        let mut t = TaskTable::new(Retention::default());
        submit(&mut t, 1, 3);
        t.apply(Command::Requeue {
            id: TaskId(1),
            attempt: 1,
            at_ms: 1,
        });
        let late = t.apply(Command::Complete {
            id: TaskId(1),
            attempt: 1,
            outcome: ok(b"a"),
            at_ms: 2,
        });
        assert!(matches!(late, Applied::Finished(ref v) if v.outcome == Some(ok(b"a"))));
        let second = t.apply(Command::Complete {
            id: TaskId(1),
            attempt: 2,
            outcome: ok(b"b"),
            at_ms: 3,
        });
        assert_eq!(second, Applied::Nothing, "a task finishes once");
    }

    #[test]
    fn queue_bound_gives_overloaded() {
        let mut t = TaskTable::new(Retention {
            max_queued: 2,
            ..Retention::default()
        });
        submit(&mut t, 1, 1);
        submit(&mut t, 2, 1);
        assert_eq!(
            submit(&mut t, 3, 1),
            Applied::Submitted(Err(WireError::Overloaded))
        );
        t.apply(Command::Cancel {
            id: TaskId(1),
            at_ms: 0,
        });
        assert!(matches!(submit(&mut t, 3, 1), Applied::Submitted(Ok(_))));
    }

    #[test]
    fn cancel_only_unfinished_tasks() {
        let mut t = TaskTable::new(Retention::default());
        submit(&mut t, 1, 1);
        assert!(matches!(
            t.apply(Command::Cancel {
                id: TaskId(1),
                at_ms: 0
            }),
            Applied::Finished(TaskView {
                state: TaskState::Cancelled,
                ..
            })
        ));
        assert!(matches!(
            t.apply(Command::Cancel {
                id: TaskId(1),
                at_ms: 0
            }),
            Applied::CancelRefused(_, WireError::BadRequest { .. })
        ));
        assert!(matches!(
            t.apply(Command::Cancel {
                id: TaskId(9),
                at_ms: 0
            }),
            Applied::CancelRefused(_, WireError::NotFound)
        ));
    }

    #[test]
    fn results_are_kept_for_a_bounded_time_and_count() {
        let mut t = TaskTable::new(Retention {
            result_ttl_ms: 100,
            max_results: 3,
            max_queued: 100,
        });
        for n in 0..5 {
            submit(&mut t, n, 1);
            t.apply(Command::Complete {
                id: TaskId(n),
                attempt: 1,
                outcome: ok(b""),
                at_ms: 10,
            });
        }
        assert_eq!(t.len(), 3, "the count bound keeps the newest three");
        assert!(t.view(TaskId(0)).is_none());
        assert!(t.view(TaskId(4)).is_some());
        t.apply(Command::Expire { at_ms: 109 });
        assert_eq!(t.len(), 3);
        t.apply(Command::Expire { at_ms: 110 });
        assert!(t.is_empty(), "the age bound forgets them all");
    }

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
                    Command::Complete {
                        id: TaskId(n % 7),
                        attempt: 1,
                        outcome: ok(b"v"),
                        at_ms: n as u64,
                    },
                    Command::Expire { at_ms: n as u64 },
                ]
            })
            .collect();
        let mut a = TaskTable::new(Retention {
            result_ttl_ms: 20,
            max_results: 10,
            max_queued: 8,
        });
        let mut b = TaskTable::new(Retention {
            result_ttl_ms: 20,
            max_results: 10,
            max_queued: 8,
        });
        let ra: Vec<Applied> = cmds.iter().cloned().map(|c| a.apply(c)).collect();
        let rb: Vec<Applied> = cmds.into_iter().map(|c| b.apply(c)).collect();
        assert_eq!(ra, rb);
        let mut ids_a: Vec<_> = (0..17).filter_map(|n| a.view(TaskId(n))).collect();
        let mut ids_b: Vec<_> = (0..17).filter_map(|n| b.view(TaskId(n))).collect();
        ids_a.sort_by_key(|v| v.id);
        ids_b.sort_by_key(|v| v.id);
        assert_eq!(ids_a, ids_b);
        let unfinished = (0..17)
            .filter_map(|n| a.view(TaskId(n)))
            .filter(|v| !v.state.is_finished())
            .count();
        assert_eq!(a.queued_len(), unfinished);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn command() -> impl Strategy<Value = Command> {
            let id = (0..16u128).prop_map(TaskId);
            prop_oneof![
                (id.clone(), 1..4u32, 0..1000u64).prop_map(|(id, max_attempts, at_ms)| {
                    Command::Submit {
                        spec: TaskSpec {
                            id,
                            kind: "noop".into(),
                            payload: Bytes::from_static(b"p"),
                            max_attempts,
                        },
                        at_ms,
                    }
                }),
                (id.clone(), 1..4u32, any::<bool>(), 0..1000u64).prop_map(
                    |(id, attempt, ok, at_ms)| Command::Complete {
                        id,
                        attempt,
                        outcome: if ok {
                            Outcome::Succeeded(Bytes::from_static(b"r"))
                        } else {
                            Outcome::Failed("no".into())
                        },
                        at_ms,
                    }
                ),
                (id.clone(), 1..4u32, 0..1000u64)
                    .prop_map(|(id, attempt, at_ms)| Command::Requeue { id, attempt, at_ms }),
                (id, 0..1000u64).prop_map(|(id, at_ms)| Command::Cancel { id, at_ms }),
                (0..2000u64).prop_map(|at_ms| Command::Expire { at_ms }),
            ]
        }

        proptest! {
            /// The queued count matches the unfinished tasks, the result bound holds, and a
            /// finished task's outcome never changes while it is kept.
            #[test]
            fn table_invariants_hold(cmds in proptest::collection::vec(command(), 1..300)) {
                let retention = Retention { result_ttl_ms: 500, max_results: 6, max_queued: 8 };
                let mut t = TaskTable::new(retention);
                let mut finished: HashMap<TaskId, Outcome> = HashMap::default();
                for cmd in cmds {
                    t.apply(cmd);
                    let views: Vec<TaskView> = (0..16).filter_map(|n| t.view(TaskId(n))).collect();
                    let unfinished = views.iter().filter(|v| !v.state.is_finished()).count();
                    prop_assert_eq!(t.queued_len(), unfinished);
                    prop_assert!(unfinished <= retention.max_queued);
                    prop_assert!(views.len() - unfinished <= retention.max_results);
                    for v in &views {
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
            }
        }
    }
}
