//! The schedules family: the schedules a shard keeps as part of its replicated table (and
//! its snapshots) — each schedule's definition, whether it is paused, the last tick handled
//! and the counts of ticks fired and skipped — and the table's schedule commands (add,
//! pause, delete, trigger, and a tick's `Fire`, which submits the tick's task). The
//! leader's [`Firings`](crate::sched::Firings) decides when ticks are due and proposes them.
//!
//! A tick is handled at most once: a `Fire` for a tick at or before the last one handled
//! changes nothing, so a tick proposed by two leaders across a failover submits one task
//! (whose id is derived from the schedule and the tick besides).

use super::TaskTable;
use crate::shard::{Applied, SubmitOutcome};
use dtc_proto::schedule::{ScheduleSpec, ScheduleStatus, check_schedule_name};
use dtc_proto::{Start, TaskId, TaskSpec, WireError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One schedule as the table holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// What it is.
    pub spec: ScheduleSpec,
    /// Paused: its ticks pass without firing.
    pub paused: bool,
    /// The last tick handled, or when it was added or resumed (ms since the Unix epoch).
    pub last_tick_ms: u64,
    /// The task of its last firing.
    pub last_task: Option<TaskId>,
    /// Ticks (and triggers) that submitted a task.
    pub fired: u64,
    /// Ticks skipped by the overlap policy, or missed and not caught up.
    pub skipped: u64,
}

impl Schedule {
    /// What an operator sees of it, with its next tick read from its calendar.
    pub fn status(&self) -> ScheduleStatus {
        let next_ms = self
            .spec
            .calendar()
            .ok()
            .and_then(|c| c.next_after(self.last_tick_ms));
        self.status_with(next_ms)
    }

    /// What an operator sees of it, with its next tick as the caller knows it.
    pub fn status_with(&self, next_ms: Option<u64>) -> ScheduleStatus {
        ScheduleStatus {
            spec: self.spec.clone(),
            paused: self.paused,
            last_tick_ms: self.last_tick_ms,
            next_ms,
            last_task: self.last_task,
            fired: self.fired,
            skipped: self.skipped,
        }
    }
}

/// Every schedule of the shard, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedules(BTreeMap<String, Schedule>);

/// What applying a `Fire` asks of the table.
#[derive(Debug, PartialEq, Eq)]
pub enum Firing {
    /// Nothing: an unknown schedule, or a tick already handled.
    Nothing,
    /// The tick is skipped.
    Skip,
    /// Submit this task (unless the last one is unfinished and overlaps are skipped: the
    /// table knows, and says so with [`Schedules::skipped`]).
    Submit {
        /// The task.
        spec: TaskSpec,
        /// Whether an unfinished last task skips this tick.
        unless_running: Option<TaskId>,
    },
}

impl Schedules {
    /// A schedule by name.
    pub fn get(&self, name: &str) -> Option<&Schedule> {
        self.0.get(name)
    }

    /// Every schedule, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Schedule)> {
        self.0.iter()
    }

    /// The schedules named after `after` (every one when `None`), by name.
    pub fn after(&self, after: Option<&str>) -> impl Iterator<Item = &Schedule> {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_owned()));
        self.0.range((from, Bound::Unbounded)).map(|(_, s)| s)
    }

    /// Adds `spec` at `at_ms` (its first tick is the first after that). Adding the same spec
    /// again changes nothing; another spec under a taken name is refused.
    pub fn add(&mut self, spec: ScheduleSpec, at_ms: u64) -> Result<(), WireError> {
        check(&spec)?;
        if let Some(s) = self.0.get(&spec.name) {
            if s.spec == spec {
                return Ok(());
            }
            return Err(bad(format!(
                "a schedule named {:?} exists with another definition: delete it first (dtc \
                 schedule delete {})",
                spec.name, spec.name
            )));
        }
        if self.0.len() >= ScheduleSpec::MAX_SCHEDULES {
            return Err(bad(format!(
                "this shard keeps at most {} schedules; delete one first",
                ScheduleSpec::MAX_SCHEDULES
            )));
        }
        let schedule = Schedule {
            spec,
            paused: false,
            last_tick_ms: at_ms,
            last_task: None,
            fired: 0,
            skipped: 0,
        };
        self.0.insert(schedule.spec.name.clone(), schedule);
        Ok(())
    }

    /// Pauses or resumes a schedule at `at_ms`; a resumed one fires from its next tick
    /// after `at_ms` (the ticks while paused are not caught up).
    pub fn pause(&mut self, name: &str, paused: bool, at_ms: u64) -> Result<(), WireError> {
        let s = self.0.get_mut(name).ok_or_else(|| unknown(name))?;
        if s.paused && !paused {
            s.last_tick_ms = s.last_tick_ms.max(at_ms);
        }
        s.paused = paused;
        Ok(())
    }

    /// Removes a schedule.
    pub fn delete(&mut self, name: &str) -> Result<(), WireError> {
        self.0.remove(name).map(|_| ()).ok_or_else(|| unknown(name))
    }

    /// What handling tick `tick_ms` of `name` does (`run`: submit its task, or skip it), and
    /// `missed` ticks before it skipped; the schedule's last tick moves to `tick_ms`.
    pub fn fire(&mut self, name: &str, tick_ms: u64, run: bool, missed: u32) -> Firing {
        let Some(s) = self.0.get_mut(name) else {
            return Firing::Nothing;
        };
        if tick_ms <= s.last_tick_ms || s.paused {
            return Firing::Nothing;
        }
        s.last_tick_ms = tick_ms;
        s.skipped += u64::from(missed);
        if !run {
            s.skipped += 1;
            return Firing::Skip;
        }
        let unless_running = match s.spec.overlap {
            dtc_proto::schedule::Overlap::Skip => s.last_task,
            dtc_proto::schedule::Overlap::Allow => None,
        };
        let id = dtc_proto::schedule::schedule_task_id(name, tick_ms);
        Firing::Submit {
            spec: task_of(&s.spec, id),
            unless_running,
        }
    }

    /// The task a trigger of `name` at `at_ms` submits.
    pub fn trigger(&self, name: &str, at_ms: u64) -> Result<TaskSpec, WireError> {
        let s = self.0.get(name).ok_or_else(|| unknown(name))?;
        let id = dtc_proto::schedule::trigger_task_id(name, at_ms);
        Ok(task_of(&s.spec, id))
    }

    /// `name` submitted task `id`.
    pub fn fired(&mut self, name: &str, id: TaskId) {
        if let Some(s) = self.0.get_mut(name) {
            s.fired += 1;
            s.last_task = Some(id);
        }
    }

    /// `name` skipped a tick because its last task was unfinished.
    pub fn skipped(&mut self, name: &str) {
        if let Some(s) = self.0.get_mut(name) {
            s.skipped += 1;
        }
    }
}

/// Whether a spec can be kept: a valid name, a calendar that reads, a task within bounds.
pub fn check(spec: &ScheduleSpec) -> Result<(), WireError> {
    check_schedule_name(&spec.name)?;
    spec.calendar().map_err(|e| bad(e.to_string()))?;
    if let Some(o) = &spec.options {
        if o.start != Start::Now {
            return Err(bad(
                "a schedule's task starts at its tick: it takes no delay or start time".into(),
            ));
        }
        if o.concurrency.is_some() {
            return Err(bad(
                "a schedule's task is routed by the schedule's name: it takes no concurrency key"
                    .into(),
            ));
        }
    }
    let id = dtc_proto::schedule::schedule_task_id(&spec.name, 0);
    task_of(spec, id).check_shape()
}

fn task_of(spec: &ScheduleSpec, id: TaskId) -> TaskSpec {
    TaskSpec {
        id,
        kind: spec.kind.clone(),
        payload: spec.payload.clone(),
        max_attempts: spec.max_attempts,
        options: spec.options.clone(),
    }
}

fn bad(reason: String) -> WireError {
    WireError::BadRequest { reason }
}

fn unknown(name: &str) -> WireError {
    bad(format!(
        "no schedule named {name:?} on this shard (dtc schedule list shows them)"
    ))
}

impl TaskTable {
    /// The shard's schedules.
    pub fn schedules(&self) -> &Schedules {
        &self.settings.schedules
    }

    /// Adds a schedule (or replaces one of that name).
    pub(super) fn add_schedule(&mut self, spec: ScheduleSpec, at_ms: u64) -> Applied {
        let name = spec.name.clone();
        let result = self.settings.schedules.add(spec, at_ms);
        self.schedule_changed(name, result, None)
    }

    /// Pauses or resumes a schedule.
    pub(super) fn pause_schedule(&mut self, name: String, paused: bool, at_ms: u64) -> Applied {
        let result = self.settings.schedules.pause(&name, paused, at_ms);
        self.schedule_changed(name, result, None)
    }

    /// Deletes a schedule.
    pub(super) fn delete_schedule(&mut self, name: String) -> Applied {
        let result = self.settings.schedules.delete(&name);
        self.schedule_changed(name, result, None)
    }

    /// Runs a schedule's task now, outside its calendar.
    pub(super) fn trigger_schedule(&mut self, name: String, at_ms: u64) -> Applied {
        match self.settings.schedules.trigger(&name, at_ms) {
            Ok(spec) => {
                let created = self.submit_scheduled(&name, spec, at_ms);
                self.schedule_changed(name, Ok(()), created)
            }
            Err(e) => self.schedule_changed(name, Err(e), None),
        }
    }

    pub(super) fn schedule_changed(
        &self,
        name: String,
        result: Result<(), WireError>,
        created: Option<TaskId>,
    ) -> Applied {
        let result = result.map(|()| {
            self.settings
                .schedules
                .get(&name)
                .map(|s| vec![s.status()])
                .unwrap_or_default()
        });
        Applied::Schedule {
            name,
            result,
            created,
        }
    }

    /// Handles a schedule's tick: the task it submits, if one.
    pub(super) fn fire(
        &mut self,
        name: &str,
        tick_ms: u64,
        run: bool,
        missed: u32,
        at_ms: u64,
    ) -> Applied {
        match self.settings.schedules.fire(name, tick_ms, run, missed) {
            Firing::Nothing | Firing::Skip => Applied::Fired(None),
            Firing::Submit {
                spec,
                unless_running,
            } => {
                let last_runs = unless_running
                    .is_some_and(|id| self.tasks.get(&id).is_some_and(|r| !r.is_done()));
                if last_runs {
                    self.settings.schedules.skipped(name);
                    return Applied::Fired(None);
                }
                Applied::Fired(self.submit_scheduled(name, spec, at_ms))
            }
        }
    }

    /// Submits a schedule's task: its id if it is new. A full queue skips the tick, and so
    /// does a task of that id that exists already (two triggers in one millisecond): the
    /// schedule counts it as skipped, never as fired.
    pub(super) fn submit_scheduled(
        &mut self,
        name: &str,
        spec: TaskSpec,
        at_ms: u64,
    ) -> Option<TaskId> {
        let id = spec.id;
        match self.submit(spec, at_ms) {
            Ok(SubmitOutcome { created: true, .. }) => {
                self.settings.schedules.fired(name, id);
                Some(id)
            }
            Ok(_) | Err(_) => {
                self.settings.schedules.skipped(name);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::{Command, Retention};
    use bytes::Bytes;
    use dtc_proto::TaskOptions;
    use dtc_proto::schedule::{CatchUp, Overlap};
    use dtc_proto::schedule::{schedule_task_id, trigger_task_id};
    use dtc_proto::{Outcome, Retry, TaskState};

    fn spec(name: &str) -> ScheduleSpec {
        ScheduleSpec {
            name: name.into(),
            cron: "0 * * * *".into(),
            tz: None,
            overlap: Overlap::Skip,
            catch_up: CatchUp::One,
            kind: "noop".into(),
            payload: bytes::Bytes::new(),
            max_attempts: 1,
            options: None,
        }
    }

    #[test]
    fn pages_start_after_a_name_and_bad_specs_are_refused() {
        let mut all = Schedules::default();
        for name in ["c", "a", "b", "d"] {
            assert_eq!(all.add(spec(name), 0), Ok(()));
        }
        let names =
            |after| -> Vec<String> { all.after(after).map(|s| s.spec.name.clone()).collect() };
        assert_eq!(names(None), ["a", "b", "c", "d"]);
        assert_eq!(names(Some("b")), ["c", "d"]);
        assert_eq!(names(Some("bb")), ["c", "d"]);
        let mut delayed = spec("late");
        delayed.options = Some(Box::new(TaskOptions {
            start: Start::After(1_000),
            ..TaskOptions::default()
        }));
        assert!(
            all.add(delayed, 0).is_err(),
            "a schedule's task starts at its tick"
        );
        assert!(all.add(spec("no spaces here"), 0).is_err());
        assert!(all.pause("missing", true, 0).is_err());
    }

    fn every_second(name: &str, overlap: Overlap) -> ScheduleSpec {
        ScheduleSpec {
            name: name.into(),
            cron: "* * * * * *".into(),
            tz: None,
            overlap,
            catch_up: CatchUp::All,
            kind: "noop".into(),
            payload: Bytes::from_static(b"tick"),
            max_attempts: 1,
            options: None,
        }
    }

    fn fire(t: &mut TaskTable, name: &str, tick_ms: u64) -> Applied {
        t.apply(Command::Fire {
            name: name.into(),
            tick_ms,
            run: true,
            missed: 0,
            at_ms: tick_ms,
        })
    }

    #[test]
    fn a_schedules_tick_submits_one_task_once_and_overlaps_follow_its_policy() {
        let mut t = TaskTable::new(Retention::default());
        let add = |t: &mut TaskTable, spec: ScheduleSpec| {
            t.apply(Command::AddSchedule {
                spec: Box::new(spec),
                at_ms: 1_000,
            })
        };
        assert!(
            matches!(add(&mut t, every_second("s", Overlap::Skip)), Applied::Schedule { result: Ok(ref v), .. } if v.len() == 1)
        );
        assert!(
            matches!(
                add(&mut t, every_second("s", Overlap::Skip)),
                Applied::Schedule { result: Ok(_), .. }
            ),
            "adding the same spec again is no change"
        );
        assert!(matches!(
            add(&mut t, every_second("s", Overlap::Allow)),
            Applied::Schedule { result: Err(_), .. }
        ));
        let mut bad = every_second("bad", Overlap::Skip);
        bad.cron = "every second".into();
        assert!(matches!(
            add(&mut t, bad),
            Applied::Schedule { result: Err(_), .. }
        ));

        let first = schedule_task_id("s", 2_000);
        assert_eq!(fire(&mut t, "s", 2_000), Applied::Fired(Some(first)));
        assert_eq!(t.view(first).map(|v| v.state), Some(TaskState::Queued));
        for stale in [2_000, 1_500] {
            assert_eq!(
                fire(&mut t, "s", stale),
                Applied::Fired(None),
                "a tick handled once"
            );
        }
        // The first tick's task is unfinished: overlap skip skips the next tick.
        assert_eq!(fire(&mut t, "s", 3_000), Applied::Fired(None));
        t.apply(Command::Complete {
            id: first,
            attempt: 1,
            outcome: Outcome::Succeeded(Bytes::new()),
            retry: Retry::Policy,
            at_ms: 3_100,
        });
        let fourth = schedule_task_id("s", 4_000);
        assert_eq!(fire(&mut t, "s", 4_000), Applied::Fired(Some(fourth)));
        let status = t
            .schedules()
            .get("s")
            .map(|s| (s.fired, s.skipped, s.last_tick_ms));
        assert_eq!(status, Some((2, 1, 4_000)));

        t.apply(Command::Complete {
            id: fourth,
            attempt: 1,
            outcome: Outcome::Succeeded(Bytes::new()),
            retry: Retry::Policy,
            at_ms: 4_100,
        });
        // Paused ticks pass; resumed, it fires from its next tick after the resume.
        t.apply(Command::PauseSchedule {
            name: "s".into(),
            paused: true,
            at_ms: 4_500,
        });
        assert_eq!(fire(&mut t, "s", 5_000), Applied::Fired(None));
        t.apply(Command::PauseSchedule {
            name: "s".into(),
            paused: false,
            at_ms: 7_200,
        });
        assert_eq!(fire(&mut t, "s", 7_000), Applied::Fired(None));
        assert!(matches!(fire(&mut t, "s", 8_000), Applied::Fired(Some(_))));
        // A trigger submits a task now, outside the calendar.
        let triggered = t.apply(Command::TriggerSchedule {
            name: "s".into(),
            at_ms: 8_100,
        });
        assert!(
            matches!(triggered, Applied::Schedule { created: Some(id), .. } if id == trigger_task_id("s", 8_100))
        );

        let restored = TaskTable::restore(&t.image().encode()).ok();
        assert_eq!(
            restored.as_ref().map(TaskTable::schedules),
            Some(t.schedules())
        );
        let deleted = t.apply(Command::DeleteSchedule { name: "s".into() });
        assert!(matches!(deleted, Applied::Schedule { result: Ok(ref v), .. } if v.is_empty()));
        assert_eq!(fire(&mut t, "s", 9_000), Applied::Fired(None));
    }

    #[test]
    fn a_tick_whose_task_exists_already_is_counted_as_skipped_never_as_fired() {
        let mut t = TaskTable::new(Retention::default());
        let Applied::Schedule { result: Ok(_), .. } = t.apply(Command::AddSchedule {
            spec: Box::new(every_second("s", Overlap::Allow)),
            at_ms: 1_000,
        }) else {
            panic!("the schedule was not added");
        };
        // A task already holds the second tick's id (no client can submit one: the id is
        // reserved; this is the table's own guard behind that).
        let planted = TaskSpec {
            id: schedule_task_id("s", 3_000),
            kind: "noop".into(),
            payload: Bytes::from_static(b"planted"),
            max_attempts: 1,
            options: None,
        };
        t.apply(Command::Submit {
            spec: planted,
            at_ms: 1_500,
        });
        assert!(matches!(fire(&mut t, "s", 2_000), Applied::Fired(Some(_))));
        assert_eq!(fire(&mut t, "s", 3_000), Applied::Fired(None));
        let counts = t.schedules().get("s").map(|s| (s.fired, s.skipped));
        assert_eq!(counts, Some((1, 1)));
    }
}
