//! The shard's task table: a deterministic state machine over [`Command`]s.
//!
//! It owns every task's spec and lifecycle, the retention of finished results (bounded by
//! age and by count) and the shard's settings ([`Retention`], changed only by a logged
//! [`Command::Configure`], so that every replica applies the same). It never reads a clock,
//! does no I/O and draws no random numbers: time arrives inside the commands, and the
//! table's own time is the latest a command carried, so that a command stamped earlier than
//! one before it (a leader whose clock is behind) reorders nothing.

use super::cow_map::{CowMap, Frozen};
use super::schedules::{Firing, Schedules};
use super::{Applied, Command, SubmitOutcome};
use bytes::Bytes;
use dtc_proto::hash::HashSet;
use dtc_proto::status::{Cursor, MAX_LIMITED_QUEUES, MAX_PAUSED_QUEUES, StateCounts};
use dtc_proto::{
    Backoff, Concurrency, Outcome, Retry, Start, TaskId, TaskOptions, TaskSpec, TaskState,
    TaskView, WireError,
};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;

/// The shard's settings: how long and how many finished tasks are kept, and how many may
/// wait in the queue. Part of the replicated table: set by the shard's first leader from its
/// flags, changed by an operator through the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Succeeded and cancelled tasks are forgotten this many ms after they finished.
    pub result_ttl_ms: u64,
    /// At most this many succeeded and cancelled tasks are kept; the oldest go first.
    pub max_results: usize,
    /// At most this many tasks may be unfinished; a submit past it is `Overloaded`.
    pub max_queued: usize,
    /// Failed tasks are kept this many ms (to be seen, retried or purged).
    pub failed_ttl_ms: u64,
    /// At most this many failed tasks are kept; the oldest go first.
    pub max_failed: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            result_ttl_ms: 10 * 60 * 1000,
            max_results: 200_000,
            max_queued: 100_000,
            failed_ttl_ms: 7 * 24 * 3600 * 1000,
            max_failed: 100_000,
        }
    }
}

/// Where a task is, as the table records it (which tasks run is the leader's runtime
/// state: a running task is `Queued` here).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
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
struct Record {
    kind: Arc<str>,
    /// The input; dropped once the task has succeeded or been cancelled.
    payload: Bytes,
    max_attempts: u32,
    /// Attempts that have ended (failed or lost); the next attempt is `ended + 1`.
    ended: u32,
    phase: Phase,
    created_ms: u64,
    extra: Option<Box<Extra>>,
}

/// What only some tasks have.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Extra {
    timeout_ms: Option<u64>,
    /// Not started by then (ms since the Unix epoch), the task fails as expired.
    expires_at_ms: Option<u64>,
    backoff: Option<Backoff>,
    /// The last failed attempts' errors, oldest first.
    errors: Vec<String>,
    /// Its queue, if not the default.
    queue: Option<String>,
    /// Its priority.
    priority: u8,
    /// Its concurrency key and limit.
    concurrency: Option<Concurrency>,
}

/// Moves `r` to `phase`, keeping `counts` right.
fn set_phase(counts: &mut StateCounts, r: &mut Record, phase: Phase) {
    counts.sub(r.state());
    r.phase = phase;
    counts.add(r.state());
}

impl Record {
    fn timeout_ms(&self) -> Option<u64> {
        self.extra.as_ref().and_then(|e| e.timeout_ms)
    }

    fn expires_at_ms(&self) -> Option<u64> {
        self.extra.as_ref().and_then(|e| e.expires_at_ms)
    }

    fn backoff(&self) -> Backoff {
        self.extra
            .as_ref()
            .and_then(|e| e.backoff)
            .unwrap_or_default()
    }

    fn errors(&self) -> &[String] {
        self.extra.as_ref().map_or(&[], |e| e.errors.as_slice())
    }

    fn queue(&self) -> &str {
        self.extra
            .as_ref()
            .and_then(|e| e.queue.as_deref())
            .unwrap_or(TaskSpec::DEFAULT_QUEUE)
    }

    fn priority(&self) -> u8 {
        self.extra.as_ref().map_or(0, |e| e.priority)
    }

    fn key(&self) -> Option<(&str, u32)> {
        self.extra
            .as_ref()
            .and_then(|e| e.concurrency.as_ref())
            .map(|c| (c.key.as_str(), c.limit))
    }

    fn state(&self) -> TaskState {
        match &self.phase {
            Phase::Scheduled(_) => TaskState::Scheduled,
            Phase::Queued => TaskState::Queued,
            Phase::Retrying(_) => TaskState::Retrying,
            Phase::Done { outcome, .. } => outcome.state(),
        }
    }

    fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done { .. })
    }

    /// When it may next start, if it waits for a time.
    fn due_ms(&self) -> Option<u64> {
        match self.phase {
            Phase::Scheduled(due) | Phase::Retrying(due) => Some(due),
            Phase::Queued | Phase::Done { .. } => None,
        }
    }

    /// Keeps a failed attempt's error (bounded in number and length).
    fn record_error(&mut self, error: &str) {
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

/// Shares task type names among the tasks of a table: a table holds a handful of types
/// over hundreds of thousands of tasks. Bounded: past [`KindNames::MAX`] names, a new one is
/// not shared.
#[derive(Debug, Default)]
struct KindNames(HashSet<Arc<str>>);

impl KindNames {
    const MAX: usize = 4096;

    fn get(&mut self, name: &str) -> Arc<str> {
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

/// The most task types with defaults of their own.
pub const MAX_TYPE_DEFAULTS: usize = 256;

/// The table's content as a snapshot holds it. Tasks are sorted by id, so that equal tables
/// give equal bytes (replicas can be compared by their snapshots). `T` holds the tasks:
/// frozen while the image waits to be encoded, a sorted list of borrowed records when
/// encoding, of owned ones when decoding.
#[derive(Serialize, Deserialize)]
struct Image<T> {
    tasks: T,
    finished: VecDeque<(u64, TaskId)>,
    failed: VecDeque<(u64, TaskId)>,
    settings: Settings,
    clock_ms: u64,
}

/// A copy of the table's content, taken quickly (under the table's lock: the tasks are
/// frozen, not copied) and encoded later (away from it): [`TaskTable::image`], then
/// [`TableImage::encode`].
pub struct TableImage(Image<Frozen<Record>>);

impl TableImage {
    /// The snapshot bytes: tasks sorted by id, postcard-encoded; equal tables give equal
    /// bytes.
    pub fn encode(self) -> Vec<u8> {
        let Image {
            tasks: frozen,
            finished,
            failed,
            settings,
            clock_ms,
        } = self.0;
        let mut tasks: Vec<(TaskId, &Record)> = Vec::with_capacity(frozen.len());
        tasks.extend(frozen.iter().map(|(id, r)| (*id, r)));
        tasks.sort_unstable_by_key(|(id, _)| *id);
        let image = Image {
            tasks,
            finished,
            failed,
            settings,
            clock_ms,
        };
        // Encoding into a Vec fails only on out-of-memory, which aborts anyway.
        postcard::to_allocvec(&image).unwrap_or_default()
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
                type_defaults: Vec::new(),
                paused_queues: Vec::new(),
                queue_rates: Vec::new(),
                schedules: Schedules::default(),
            },
            ..Self::default()
        }
    }

    /// The settings in force.
    pub fn retention(&self) -> Retention {
        self.settings.retention
    }

    /// The options tasks of type `kind` take where their submit gives none.
    pub fn type_defaults(&self, kind: &str) -> Option<&TaskOptions> {
        let all = &self.settings.type_defaults;
        all.binary_search_by(|(k, _)| k.as_str().cmp(kind))
            .ok()
            .map(|i| &all[i].1)
    }

    /// Every task type's defaults.
    pub fn all_type_defaults(&self) -> &[(String, TaskOptions)] {
        &self.settings.type_defaults
    }

    fn set_type_defaults(&mut self, kind: String, options: Option<TaskOptions>) -> Applied {
        let all = &mut self.settings.type_defaults;
        match (
            all.binary_search_by(|(k, _)| k.as_str().cmp(&kind)),
            options,
        ) {
            (Ok(i), Some(o)) => all[i].1 = o,
            (Ok(i), None) => {
                all.remove(i);
            }
            (Err(_), Some(_)) if all.len() >= MAX_TYPE_DEFAULTS => {
                let reason = format!(
                    "at most {MAX_TYPE_DEFAULTS} task types may have defaults; clear one first"
                );
                return Applied::TypeDefaults(Err(WireError::BadRequest { reason }));
            }
            (Err(i), Some(o)) => all.insert(i, (kind, o)),
            (Err(_), None) => {}
        }
        Applied::TypeDefaults(Ok(all.clone()))
    }

    /// The queues whose tasks are held, sorted.
    pub fn paused_queues(&self) -> &[String] {
        &self.settings.paused_queues
    }

    fn pause_queue(&mut self, queue: String, paused: bool) -> Applied {
        if let Err(e) = dtc_proto::check_queue_name(&queue) {
            return Applied::QueuesPaused(Err(e));
        }
        let all = &mut self.settings.paused_queues;
        match (all.binary_search(&queue), paused) {
            (Ok(_), true) | (Err(_), false) => {}
            (Ok(i), false) => {
                all.remove(i);
            }
            (Err(_), true) if all.len() >= MAX_PAUSED_QUEUES => {
                let reason = format!(
                    "at most {MAX_PAUSED_QUEUES} queues may be paused at once; resume one first"
                );
                return Applied::QueuesPaused(Err(WireError::BadRequest { reason }));
            }
            (Err(i), true) => all.insert(i, queue),
        }
        Applied::QueuesPaused(Ok(all.clone()))
    }

    /// The rate-limited queues and their starts per hour, sorted by name.
    pub fn queue_rates(&self) -> &[(String, u64)] {
        &self.settings.queue_rates
    }

    fn limit_queue(&mut self, queue: String, per_hour: Option<u64>) -> Applied {
        if let Err(e) = dtc_proto::check_queue_name(&queue) {
            return Applied::QueueRates(Err(e));
        }
        let all = &mut self.settings.queue_rates;
        let at = all.binary_search_by(|(q, _)| q.as_str().cmp(&queue));
        match (at, per_hour) {
            (_, Some(0)) => {
                let reason = "a rate limit must allow at least 1 task an hour".to_owned();
                return Applied::QueueRates(Err(WireError::BadRequest { reason }));
            }
            (Err(_), None) => {}
            (Ok(i), None) => {
                all.remove(i);
            }
            (Ok(i), Some(rate)) => all[i].1 = rate,
            (Err(_), Some(_)) if all.len() >= MAX_LIMITED_QUEUES => {
                let reason = format!(
                    "at most {MAX_LIMITED_QUEUES} queues may be rate-limited; lift a limit first"
                );
                return Applied::QueueRates(Err(WireError::BadRequest { reason }));
            }
            (Err(i), Some(rate)) => all.insert(i, (queue, rate)),
        }
        Applied::QueueRates(Ok(all.clone()))
    }

    /// The shard's schedules.
    pub fn schedules(&self) -> &Schedules {
        &self.settings.schedules
    }

    fn schedule_changed(
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
    fn fire(&mut self, name: &str, tick_ms: u64, run: bool, missed: u32, at_ms: u64) -> Applied {
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
    fn submit_scheduled(&mut self, name: &str, spec: TaskSpec, at_ms: u64) -> Option<TaskId> {
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
            Command::AddSchedule { spec, at_ms } => {
                let name = spec.name.clone();
                let result = self.settings.schedules.add(*spec, at_ms);
                self.schedule_changed(name, result, None)
            }
            Command::PauseSchedule {
                name,
                paused,
                at_ms,
            } => {
                let result = self.settings.schedules.pause(&name, paused, at_ms);
                self.schedule_changed(name, result, None)
            }
            Command::DeleteSchedule { name } => {
                let result = self.settings.schedules.delete(&name);
                self.schedule_changed(name, result, None)
            }
            Command::TriggerSchedule { name, at_ms } => {
                match self.settings.schedules.trigger(&name, at_ms) {
                    Ok(spec) => {
                        let created = self.submit_scheduled(&name, spec, at_ms);
                        self.schedule_changed(name, Ok(()), created)
                    }
                    Err(e) => self.schedule_changed(name, Err(e), None),
                }
            }
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
            Command::Configure { retention } => {
                self.settings.retention = retention;
                self.settings.configured = true;
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

    /// The table's content, encoded (postcard); equal tables give equal bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        self.image().encode()
    }

    /// A copy of the table's content, to encode later.
    pub fn image(&self) -> TableImage {
        TableImage(Image {
            tasks: self.tasks.freeze(),
            finished: self.finished.clone(),
            failed: self.failed.clone(),
            settings: self.settings.clone(),
            clock_ms: self.clock_ms,
        })
    }

    /// A table restored from [`TaskTable::snapshot`] bytes.
    pub fn restore(bytes: &[u8]) -> Result<Self, CorruptSnapshot> {
        let image: Image<Vec<(TaskId, Record)>> = postcard::from_bytes(bytes)?;
        let unfinished = image.tasks.iter().filter(|(_, r)| !r.is_done()).count();
        let failed_len = image
            .tasks
            .iter()
            .filter(|(_, r)| r.state() == TaskState::Failed)
            .count();
        let mut kinds = KindNames::default();
        let mut counts = StateCounts::default();
        for (_, r) in &image.tasks {
            counts.add(r.state());
        }
        Ok(Self {
            counts,
            tasks: image
                .tasks
                .into_iter()
                .map(|(id, mut r)| {
                    r.kind = kinds.get(&r.kind);
                    (id, r)
                })
                .collect(),
            kinds,
            finished: image.finished,
            failed: image.failed,
            failed_len,
            unfinished,
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
        self.has_room(ahead)?;
        Ok(true)
    }

    fn has_room(&self, ahead: usize) -> Result<(), WireError> {
        if self.unfinished + ahead >= self.settings.retention.max_queued {
            return Err(WireError::Overloaded);
        }
        Ok(())
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
        let mut o = spec.options();
        if let Some(d) = self.type_defaults(&spec.kind) {
            o.timeout_ms = o.timeout_ms.or(d.timeout_ms);
            o.expires_ms = o.expires_ms.or(d.expires_ms);
            o.backoff = o.backoff.or(d.backoff);
            o.queue = o.queue.or_else(|| d.queue.clone());
            if o.priority == 0 {
                o.priority = d.priority;
            }
        }
        let start = match o.start {
            Start::Now => at_ms,
            Start::After(ms) => at_ms.saturating_add(ms),
            Start::At(t) => t,
        };
        let extra = Extra {
            timeout_ms: o.timeout_ms,
            expires_at_ms: o.expires_ms.map(|ms| at_ms.saturating_add(ms)),
            backoff: o.backoff,
            errors: Vec::new(),
            queue: o.queue.filter(|q| q != TaskSpec::DEFAULT_QUEUE),
            priority: o.priority,
            concurrency: o.concurrency,
        };
        let record = Record {
            kind: self.kinds.get(&spec.kind),
            payload: spec.payload,
            max_attempts: spec.max_attempts.max(1),
            ended: 0,
            phase: if start > at_ms {
                Phase::Scheduled(start)
            } else {
                Phase::Queued
            },
            created_ms: at_ms,
            extra: (extra != Extra::default()).then(|| Box::new(extra)),
        };
        let view = view_of(spec.id, &record);
        self.counts.add(record.state());
        self.tasks.insert(spec.id, record);
        self.unfinished += 1;
        Ok(SubmitOutcome {
            view,
            created: true,
        })
    }

    /// An attempt ended. Only the current attempt counts: a completion of an attempt that
    /// has already ended (lost, timed out) changes nothing.
    fn complete(
        &mut self,
        id: TaskId,
        attempt: u32,
        outcome: Outcome,
        retry: Retry,
        at_ms: u64,
    ) -> Applied {
        let Some(r) = self.tasks.get_mut(&id) else {
            return Applied::Nothing;
        };
        // A scheduled or retrying task stays so in the table while its attempt runs.
        if r.is_done() || attempt != r.ended + 1 {
            return Applied::Nothing;
        }
        let error = match outcome {
            Outcome::Succeeded(result) => {
                r.ended = attempt;
                return self.finish(id, Outcome::Succeeded(result), at_ms);
            }
            Outcome::Failed(error) => error,
            Outcome::Cancelled => "the worker reported the attempt cancelled".to_owned(),
        };
        r.ended = attempt;
        r.record_error(&error);
        let wait = match retry {
            Retry::Never => None,
            _ if r.ended >= r.max_attempts => None,
            Retry::After(ms) => Some(ms.min(Backoff::MAX_WAIT_MS)),
            Retry::Policy => Some(r.backoff().wait_ms(id, attempt)),
        };
        match wait {
            None => self.finish(id, Outcome::Failed(error), at_ms),
            Some(0) => {
                set_phase(&mut self.counts, r, Phase::Queued);
                Applied::Requeued(id)
            }
            Some(ms) => {
                set_phase(
                    &mut self.counts,
                    r,
                    Phase::Retrying(at_ms.saturating_add(ms)),
                );
                Applied::Waiting(id)
            }
        }
    }

    /// The running attempt was lost with its worker: it runs again at once while attempts
    /// remain (the task did not fail; its worker did).
    fn requeue(&mut self, id: TaskId, attempt: u32, at_ms: u64) -> Applied {
        let Some(r) = self.tasks.get_mut(&id) else {
            return Applied::Nothing;
        };
        if r.is_done() || attempt != r.ended + 1 {
            return Applied::Nothing;
        }
        r.ended += 1;
        set_phase(&mut self.counts, r, Phase::Queued);
        r.record_error("the worker running it was lost");
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
            None => Applied::Refused(id, WireError::NotFound),
            Some(r) if r.is_done() => Applied::Refused(
                id,
                WireError::BadRequest {
                    reason: format!("the task has already finished ({})", r.state().name()),
                },
            ),
            Some(_) => self.finish(id, Outcome::Cancelled, at_ms),
        }
    }

    /// A failed task runs again, with fresh attempts (its past errors are kept).
    fn retry(&mut self, id: TaskId) -> Applied {
        let room = self.has_room(0);
        let Some(r) = self.tasks.get_mut(&id) else {
            return Applied::Refused(id, WireError::NotFound);
        };
        if r.state() != TaskState::Failed {
            let reason = format!(
                "only failed tasks can be retried; this one is {}",
                r.state().name()
            );
            return Applied::Refused(id, WireError::BadRequest { reason });
        }
        if let Err(e) = room {
            return Applied::Refused(id, e);
        }
        set_phase(&mut self.counts, r, Phase::Queued);
        r.ended = 0;
        if let Some(extra) = &mut r.extra {
            extra.expires_at_ms = None;
        }
        let view = view_of(id, r);
        self.failed_len -= 1;
        self.unfinished += 1;
        Applied::Retried(view)
    }

    /// A task not started by its expiry fails as expired (the leader proposes this only for
    /// a task it does not run).
    fn lapse(&mut self, id: TaskId, at_ms: u64) -> Applied {
        let Some(r) = self.tasks.get(&id) else {
            return Applied::Nothing;
        };
        let lapsed = !r.is_done() && r.ended == 0 && r.expires_at_ms().is_some_and(|t| t <= at_ms);
        if !lapsed {
            return Applied::Nothing;
        }
        let waited = at_ms.saturating_sub(r.created_ms);
        let reason = format!("expired: not started within {waited} ms of being submitted");
        self.finish(id, Outcome::Failed(reason), at_ms)
    }

    fn finish(&mut self, id: TaskId, outcome: Outcome, at_ms: u64) -> Applied {
        let Some(r) = self.tasks.get_mut(&id) else {
            return Applied::Nothing;
        };
        let failed = matches!(outcome, Outcome::Failed(_));
        if !failed {
            // Only a failed task may run again: the others keep just what their view shows.
            r.payload = Bytes::new();
        }
        set_phase(&mut self.counts, r, Phase::Done { outcome, at_ms });
        let view = view_of(id, r);
        self.unfinished -= 1;
        if failed {
            self.failed_len += 1;
            self.failed.push_back((at_ms, id));
        } else {
            self.finished.push_back((at_ms, id));
        }
        self.trim();
        Applied::Finished(view)
    }

    /// Forgets the oldest finished tasks past the bounds on their number.
    fn trim(&mut self) {
        let r = self.settings.retention;
        while self.finished.len() > r.max_results {
            if let Some((_, old)) = self.finished.pop_front() {
                self.remove(old);
            }
        }
        while self.failed_len > r.max_failed {
            let Some(entry) = self.failed.pop_front() else {
                break;
            };
            self.forget_failed(entry);
        }
        // Entries of tasks retried since they failed are skipped when they come first;
        // drop them sooner if many accumulate.
        if self.failed.len() > 2 * self.failed_len + 1024 {
            let tasks = &self.tasks;
            self.failed.retain(|(at, id)| {
                tasks.get(id).is_some_and(|r| {
                    matches!(&r.phase, Phase::Done { outcome: Outcome::Failed(_), at_ms } if at_ms == at)
                })
            });
        }
    }

    /// Forgets the failed task of a `failed` entry, unless it has been retried since.
    fn forget_failed(&mut self, (at, id): (u64, TaskId)) {
        let current = self.tasks.get(&id).is_some_and(|r| {
            matches!(&r.phase, Phase::Done { outcome: Outcome::Failed(_), at_ms } if *at_ms == at)
        });
        if current {
            self.remove(id);
            self.failed_len -= 1;
        }
    }

    /// Forgets every finished task in `state` (none if `state` is not a finished one).
    fn purge(&mut self, state: TaskState) -> u64 {
        let before = self.tasks.len();
        match state {
            TaskState::Failed => {
                for entry in std::mem::take(&mut self.failed) {
                    self.forget_failed(entry);
                }
            }
            TaskState::Succeeded | TaskState::Cancelled => {
                let tasks = &self.tasks;
                let (gone, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.finished)
                    .into_iter()
                    .partition(|(_, id)| tasks.get(id).is_some_and(|r| r.state() == state));
                self.finished = kept;
                for (_, id) in gone {
                    self.remove(id);
                }
            }
            _ => {}
        }
        (before - self.tasks.len()) as u64
    }

    fn remove(&mut self, id: TaskId) {
        if let Some(r) = self.tasks.remove(&id) {
            self.counts.sub(r.state());
        }
    }

    fn expire(&mut self, at_ms: u64) {
        let r = self.settings.retention;
        let cutoff = at_ms.saturating_sub(r.result_ttl_ms);
        while let Some(&(done_at, id)) = self.finished.front() {
            if done_at > cutoff {
                break;
            }
            self.finished.pop_front();
            self.remove(id);
        }
        let cutoff = at_ms.saturating_sub(r.failed_ttl_ms);
        while let Some(&entry) = self.failed.front() {
            if entry.0 > cutoff {
                break;
            }
            self.failed.pop_front();
            self.forget_failed(entry);
        }
    }
}

fn view_of(id: TaskId, r: &Record) -> TaskView {
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

#[cfg(test)]
mod tests {
    use super::*;
    use dtc_proto::schedule::{CatchUp, Overlap, ScheduleSpec, schedule_task_id, trigger_task_id};

    fn spec(n: u128, max_attempts: u32) -> TaskSpec {
        TaskSpec {
            id: TaskId(n),
            kind: "noop".into(),
            payload: Bytes::from_static(b"x"),
            max_attempts,
            options: None,
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

    fn complete(n: u128, attempt: u32, outcome: Outcome, retry: Retry, at_ms: u64) -> Command {
        Command::Complete {
            id: TaskId(n),
            attempt,
            outcome,
            retry,
            at_ms,
        }
    }

    fn fail(n: u128, attempt: u32, at_ms: u64) -> Command {
        complete(
            n,
            attempt,
            Outcome::Failed(format!("boom {attempt}")),
            Retry::Policy,
            at_ms,
        )
    }

    fn state(t: &TaskTable, n: u128) -> Option<TaskState> {
        t.view(TaskId(n)).map(|v| v.state)
    }

    /// Exact waits: 100 ms, doubling, no jitter.
    const EXACT: Backoff = Backoff {
        initial_ms: 100,
        multiplier_pct: 200,
        max_ms: 10_000,
        jitter_pct: 0,
    };

    #[test]
    fn paused_queues_are_a_replicated_setting_kept_in_snapshots() {
        let mut t = TaskTable::new(Retention::default());
        let pause = |t: &mut TaskTable, q: &str, paused: bool| {
            t.apply(Command::PauseQueue {
                queue: q.into(),
                paused,
            })
        };
        assert_eq!(
            pause(&mut t, "b", true),
            Applied::QueuesPaused(Ok(vec!["b".into()]))
        );
        pause(&mut t, "a", true);
        pause(&mut t, "a", true);
        assert_eq!(t.paused_queues(), ["a", "b"]);
        assert_eq!(
            pause(&mut t, "b", false),
            Applied::QueuesPaused(Ok(vec!["a".into()]))
        );
        assert!(matches!(
            pause(&mut t, "not a name", true),
            Applied::QueuesPaused(Err(WireError::BadRequest { .. }))
        ));
        let restored = TaskTable::restore(&t.image().encode());
        assert_eq!(
            restored.map(|r| r.paused_queues().to_vec()).ok(),
            Some(vec!["a".to_string()])
        );
    }

    #[test]
    fn queue_rate_limits_are_a_bounded_replicated_setting_kept_in_snapshots() {
        let mut t = TaskTable::new(Retention::default());
        let limit = |t: &mut TaskTable, q: &str, per_hour: Option<u64>| {
            t.apply(Command::LimitQueue {
                queue: q.into(),
                per_hour,
            })
        };
        limit(&mut t, "b", Some(7));
        limit(&mut t, "a", Some(3600));
        assert_eq!(
            limit(&mut t, "b", Some(60)),
            Applied::QueueRates(Ok(vec![("a".into(), 3600), ("b".into(), 60)]))
        );
        assert_eq!(
            limit(&mut t, "a", None),
            Applied::QueueRates(Ok(vec![("b".into(), 60)]))
        );
        for refused in [
            limit(&mut t, "c", Some(0)),
            limit(&mut t, "no name", Some(1)),
        ] {
            assert!(matches!(
                refused,
                Applied::QueueRates(Err(WireError::BadRequest { .. }))
            ));
        }
        for n in 1..MAX_LIMITED_QUEUES {
            limit(&mut t, &format!("q{n}"), Some(1));
        }
        assert!(matches!(
            limit(&mut t, "one-too-many", Some(1)),
            Applied::QueueRates(Err(WireError::BadRequest { .. }))
        ));
        assert_eq!(t.queue_rates().len(), MAX_LIMITED_QUEUES);
        let restored = TaskTable::restore(&t.image().encode());
        assert_eq!(
            restored.map(|r| r.queue_rates().to_vec()).ok(),
            Some(t.queue_rates().to_vec())
        );
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
        let done = t.apply(complete(1, 1, ok(b"r"), Retry::Policy, 5));
        assert!(matches!(done, Applied::Finished(ref v) if v.state == TaskState::Succeeded));
        match submit(&mut t, 1, 3) {
            Applied::Submitted(Ok(s)) => {
                assert!(!s.created);
                assert_eq!(s.view.outcome, Some(ok(b"r")));
                assert_eq!(&*s.view.kind, "noop");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(t.unfinished_len(), 0);
    }

    #[test]
    fn a_failed_attempt_retries_after_its_backoff_and_the_errors_are_kept() {
        let mut t = TaskTable::new(Retention::default());
        t.apply(Command::Submit {
            spec: spec(1, 3).with_backoff(EXACT),
            at_ms: 1_000,
        });
        assert_eq!(t.apply(fail(1, 1, 2_000)), Applied::Waiting(TaskId(1)));
        let v = t.view(TaskId(1)).unwrap_or_else(|| panic!("kept"));
        assert_eq!((v.state, v.due_ms), (TaskState::Retrying, Some(2_100)));
        assert!(
            t.runnable(TaskId(1), 2_099).is_none(),
            "not before its time"
        );
        assert_eq!(t.runnable(TaskId(1), 2_100).map(|r| r.attempt), Some(2));
        assert_eq!(
            t.apply(fail(1, 1, 2_150)),
            Applied::Nothing,
            "a stale failure"
        );
        assert_eq!(t.apply(fail(1, 2, 2_200)), Applied::Waiting(TaskId(1)));
        assert_eq!(
            t.timing(TaskId(1)).map(|t| t.due_ms),
            Some(2_400),
            "doubled"
        );
        match t.apply(fail(1, 3, 2_500)) {
            Applied::Finished(v) => {
                assert_eq!(v.state, TaskState::Failed);
                assert_eq!(v.attempts, 3);
                assert_eq!(v.errors, ["boom 1", "boom 2", "boom 3"]);
                assert_eq!(v.outcome, Some(Outcome::Failed("boom 3".into())));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_fatal_error_ends_the_task_and_retry_after_sets_the_time() {
        let mut t = TaskTable::new(Retention::default());
        submit(&mut t, 1, 5);
        submit(&mut t, 2, 5);
        let fatal = complete(1, 1, Outcome::Failed("bad input".into()), Retry::Never, 10);
        assert!(matches!(t.apply(fatal), Applied::Finished(v) if v.state == TaskState::Failed));
        let later = complete(
            2,
            1,
            Outcome::Failed("busy".into()),
            Retry::After(5_000),
            10,
        );
        assert_eq!(t.apply(later), Applied::Waiting(TaskId(2)));
        assert_eq!(t.timing(TaskId(2)).map(|t| t.due_ms), Some(5_010));
        let now = complete(
            2,
            2,
            Outcome::Failed("again".into()),
            Retry::After(0),
            5_010,
        );
        assert_eq!(
            t.apply(now),
            Applied::Requeued(TaskId(2)),
            "no wait: queued"
        );
        assert_eq!(state(&t, 2), Some(TaskState::Queued));
    }

    #[test]
    fn a_failed_task_can_be_retried_with_fresh_attempts() {
        let mut t = TaskTable::new(Retention::default());
        submit(&mut t, 1, 1);
        t.apply(fail(1, 1, 5));
        assert_eq!(state(&t, 1), Some(TaskState::Failed));
        assert_eq!(t.unfinished_len(), 0);
        match t.apply(Command::Retry {
            id: TaskId(1),
            at_ms: 6,
        }) {
            Applied::Retried(v) => {
                assert_eq!((v.state, v.attempts), (TaskState::Queued, 0));
                assert_eq!(v.errors, ["boom 1"], "past errors stay");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            t.runnable(TaskId(1), 6)
                .map(|r| (r.attempt, r.payload.clone())),
            Some((1, Bytes::from_static(b"x")))
        );
        assert!(
            matches!(
                t.apply(Command::Retry {
                    id: TaskId(1),
                    at_ms: 7
                }),
                Applied::Refused(_, WireError::BadRequest { .. })
            ),
            "only a failed task"
        );
        assert!(matches!(
            t.apply(Command::Retry {
                id: TaskId(9),
                at_ms: 7
            }),
            Applied::Refused(_, WireError::NotFound)
        ));
        t.apply(complete(1, 1, ok(b"fine"), Retry::Policy, 8));
        assert_eq!(state(&t, 1), Some(TaskState::Succeeded));
    }

    #[test]
    fn a_delayed_task_is_scheduled_until_its_time() {
        let mut t = TaskTable::new(Retention::default());
        let delayed = spec(1, 1).with_delay(std::time::Duration::from_millis(3_000));
        t.apply(Command::Submit {
            spec: delayed,
            at_ms: 1_000,
        });
        let mut at = spec(2, 1);
        at.options_mut().start = Start::At(500);
        t.apply(Command::Submit {
            spec: at,
            at_ms: 1_000,
        });
        assert_eq!(state(&t, 1), Some(TaskState::Scheduled));
        assert_eq!(t.view(TaskId(1)).and_then(|v| v.due_ms), Some(4_000));
        assert_eq!(state(&t, 2), Some(TaskState::Queued), "a time past is now");
        assert!(t.runnable(TaskId(1), 3_999).is_none());
        assert!(t.runnable(TaskId(1), 4_000).is_some());
        assert_eq!(
            t.unfinished_len(),
            2,
            "scheduled tasks count against the bound"
        );
        assert!(matches!(
            t.apply(Command::Cancel { id: TaskId(1), at_ms: 1_500 }),
            Applied::Finished(v) if v.state == TaskState::Cancelled
        ));
    }

    #[test]
    fn a_task_not_started_by_its_expiry_lapses() {
        let mut t = TaskTable::new(Retention::default());
        let expiring = spec(1, 3).with_expiry(std::time::Duration::from_millis(100));
        t.apply(Command::Submit {
            spec: expiring.clone(),
            at_ms: 0,
        });
        assert_eq!(t.timing(TaskId(1)).and_then(|t| t.expires_at_ms), Some(100));
        assert!(
            t.runnable(TaskId(1), 100).is_none(),
            "not started once lapsed"
        );
        assert_eq!(
            t.apply(Command::Lapse {
                id: TaskId(1),
                at_ms: 99
            }),
            Applied::Nothing
        );
        assert!(matches!(
            t.apply(Command::Lapse {
                id: TaskId(1),
                at_ms: 100
            }),
            Applied::Finished(TaskView {
                state: TaskState::Failed,
                ..
            })
        ));
        // A task that has started once does not lapse.
        t.apply(Command::Submit {
            spec: expiring.with_id(TaskId(2)),
            at_ms: 0,
        });
        t.apply(fail(2, 1, 50));
        assert_eq!(t.timing(TaskId(2)).and_then(|t| t.expires_at_ms), None);
        assert_eq!(
            t.apply(Command::Lapse {
                id: TaskId(2),
                at_ms: 200
            }),
            Applied::Nothing
        );
    }

    #[test]
    fn lost_attempts_requeue_at_once_then_give_up() {
        let mut t = TaskTable::new(Retention::default());
        submit(&mut t, 1, 2);
        let lost = |attempt| Command::Requeue {
            id: TaskId(1),
            attempt,
            at_ms: 1,
        };
        assert_eq!(t.apply(lost(1)), Applied::Requeued(TaskId(1)));
        assert_eq!(t.apply(lost(1)), Applied::Nothing);
        assert!(matches!(
            t.apply(lost(2)),
            Applied::Finished(TaskView {
                state: TaskState::Failed,
                ..
            })
        ));
    }

    #[test]
    fn a_completion_of_an_ended_attempt_changes_nothing() {
        let mut t = TaskTable::new(Retention::default());
        submit(&mut t, 1, 3);
        t.apply(Command::Requeue {
            id: TaskId(1),
            attempt: 1,
            at_ms: 1,
        });
        assert_eq!(
            t.apply(complete(1, 1, ok(b"a"), Retry::Policy, 2)),
            Applied::Nothing
        );
        let second = t.apply(complete(1, 2, ok(b"b"), Retry::Policy, 3));
        assert!(matches!(second, Applied::Finished(ref v) if v.outcome == Some(ok(b"b"))));
        assert_eq!(
            t.apply(complete(1, 3, ok(b"c"), Retry::Policy, 4)),
            Applied::Nothing,
            "a task finishes once"
        );
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
            Applied::Refused(_, WireError::BadRequest { .. })
        ));
        assert!(matches!(
            t.apply(Command::Cancel {
                id: TaskId(9),
                at_ms: 0
            }),
            Applied::Refused(_, WireError::NotFound)
        ));
    }

    #[test]
    fn results_and_failures_are_kept_for_bounded_times_and_counts() {
        let mut t = TaskTable::new(Retention {
            result_ttl_ms: 100,
            max_results: 3,
            max_queued: 100,
            failed_ttl_ms: 1_000,
            max_failed: 2,
        });
        for n in 0..5 {
            submit(&mut t, n, 1);
            t.apply(complete(n, 1, ok(b""), Retry::Policy, 10));
        }
        for n in 10..13 {
            submit(&mut t, n, 1);
            t.apply(fail(n, 1, 10));
        }
        assert_eq!(t.len(), 5, "the newest three results and two failures");
        assert!(t.view(TaskId(0)).is_none());
        assert!(t.view(TaskId(10)).is_none());
        assert!(t.view(TaskId(4)).is_some());
        t.apply(Command::Retry {
            id: TaskId(11),
            at_ms: 10,
        });
        t.apply(fail(11, 1, 20));
        t.apply(Command::Expire { at_ms: 110 });
        assert_eq!(t.len(), 2, "results go after 100 ms, failures stay");
        t.apply(Command::Expire { at_ms: 1_010 });
        assert_eq!(
            state(&t, 11),
            Some(TaskState::Failed),
            "failed again at 20: kept"
        );
        assert!(t.view(TaskId(12)).is_none());
        t.apply(Command::Expire { at_ms: 1_020 });
        assert!(t.is_empty());
    }

    #[test]
    fn a_purge_forgets_the_finished_tasks_of_one_state() {
        let mut t = TaskTable::new(Retention::default());
        for n in 0..6 {
            submit(&mut t, n, 1);
        }
        t.apply(fail(0, 1, 1));
        t.apply(fail(1, 1, 1));
        t.apply(complete(2, 1, ok(b""), Retry::Policy, 1));
        t.apply(Command::Cancel {
            id: TaskId(3),
            at_ms: 1,
        });
        let purge = |state| Command::Purge { state, at_ms: 2 };
        assert_eq!(
            t.apply(purge(TaskState::Queued)),
            Applied::Purged(0),
            "unfinished stay"
        );
        assert_eq!(t.apply(purge(TaskState::Failed)), Applied::Purged(2));
        assert_eq!(t.apply(purge(TaskState::Cancelled)), Applied::Purged(1));
        assert_eq!(state(&t, 2), Some(TaskState::Succeeded));
        assert_eq!(t.len(), 3);
        assert_eq!(t.state_counts().get(TaskState::Failed), 0);
        assert!(matches!(
            t.apply(Command::Retry {
                id: TaskId(0),
                at_ms: 3
            }),
            Applied::Refused(_, WireError::NotFound)
        ));
    }

    #[test]
    fn a_types_defaults_fill_what_its_submits_leave_out() {
        let mut t = TaskTable::new(Retention::default());
        let defaults = TaskOptions {
            timeout_ms: Some(5_000),
            backoff: Some(EXACT),
            ..TaskOptions::default()
        };
        let set = t.apply(Command::SetTypeDefaults {
            kind: "noop".into(),
            options: Some(Box::new(defaults.clone())),
        });
        assert_eq!(
            set,
            Applied::TypeDefaults(Ok(vec![("noop".into(), defaults)]))
        );
        submit(&mut t, 1, 3);
        let own = spec(2, 3).with_timeout(std::time::Duration::from_millis(7));
        t.apply(Command::Submit {
            spec: own,
            at_ms: 0,
        });
        assert_eq!(t.timing(TaskId(1)).and_then(|t| t.timeout_ms), Some(5_000));
        assert_eq!(
            t.timing(TaskId(2)).and_then(|t| t.timeout_ms),
            Some(7),
            "its own wins"
        );
        assert_eq!(t.apply(fail(1, 1, 10)), Applied::Waiting(TaskId(1)));
        assert_eq!(
            t.timing(TaskId(1)).map(|t| t.due_ms),
            Some(110),
            "the type's backoff"
        );
        t.apply(Command::SetTypeDefaults {
            kind: "noop".into(),
            options: None,
        });
        assert!(t.all_type_defaults().is_empty());
        submit(&mut t, 3, 3);
        assert_eq!(t.timing(TaskId(3)).and_then(|t| t.timeout_ms), None);
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
