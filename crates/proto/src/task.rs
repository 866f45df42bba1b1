//! The task model shared by clients, coordinators and workers.

use crate::{TaskId, WireError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A duration in whole ms, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

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
    /// When it may start, how long an attempt may run, how failures are retried; `None`
    /// for the defaults (boxed, so that the common spec stays small as it moves through
    /// the router, the log and the table).
    pub options: Option<Box<TaskOptions>>,
}

/// When a task may first start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Start {
    /// As soon as a worker is free.
    #[default]
    Now,
    /// This many ms after the shard accepted it.
    After(u64),
    /// At this time (ms since the Unix epoch), or at once if that has passed.
    At(u64),
}

/// How long to wait before the next attempt after a failed one: `initial_ms` after the
/// first failure, multiplied by `multiplier_pct`/100 after each further one, at most
/// `max_ms`, plus up to `jitter_pct` percent (drawn from the task's id and attempt, so that
/// every replica computes the same wait).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// The wait after the first failed attempt.
    pub initial_ms: u64,
    /// How the wait grows with each failure, in percent (200 doubles it).
    pub multiplier_pct: u32,
    /// The longest wait.
    pub max_ms: u64,
    /// Up to this percent is added to each wait at random, so that tasks that failed
    /// together do not all retry together (0–100).
    pub jitter_pct: u8,
}

impl Default for Backoff {
    /// 1 s, doubling, at most 10 minutes, 20% jitter.
    fn default() -> Self {
        Self {
            initial_ms: 1_000,
            multiplier_pct: 200,
            max_ms: 10 * 60 * 1_000,
            jitter_pct: 20,
        }
    }
}

impl Backoff {
    /// The longest wait a policy may ask for (one week).
    pub const MAX_WAIT_MS: u64 = 7 * 24 * 3600 * 1000;

    /// The wait after attempt number `attempt` (from 1) of task `id` failed: at least the
    /// backoff's wait for that attempt, at most that plus its jitter.
    pub fn wait_ms(&self, id: TaskId, attempt: u32) -> u64 {
        let mut wait = self.initial_ms.min(self.max_ms);
        for _ in 1..attempt {
            wait = (u128::from(wait) * u128::from(self.multiplier_pct) / 100)
                .min(u128::from(self.max_ms))
                .try_into()
                .unwrap_or(self.max_ms);
            if wait >= self.max_ms {
                break;
            }
        }
        let jitter = u64::from(self.jitter_pct.min(100));
        // A draw in 0..=1000 from the id and attempt (splitmix64): the same on every replica.
        let mut z = (id.0 as u64 ^ (id.0 >> 64) as u64)
            .wrapping_add(u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let draw = u128::from(z % 1001);
        let extra = u128::from(wait) * u128::from(jitter) * draw / 100_000;
        wait.saturating_add(u64::try_from(extra).unwrap_or(0))
    }
}

/// A task's options beyond its input. `None` takes the shard's default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOptions {
    /// When it may first start.
    pub start: Start,
    /// How long one attempt may run before the leader fails it (and tells its worker to
    /// stop); none by default.
    pub timeout_ms: Option<u64>,
    /// A task not started within this many ms of being accepted fails as expired.
    pub expires_ms: Option<u64>,
    /// How failed attempts are retried.
    pub backoff: Option<Backoff>,
    /// The named queue it waits in ([`TaskSpec::DEFAULT_QUEUE`] when `None`): only workers
    /// that serve the queue run it, and a paused queue holds its tasks.
    pub queue: Option<String>,
    /// 0 (the default) to [`TaskSpec::MAX_PRIORITY`]; a higher one runs first. Waiting
    /// ages a task: it is never passed by a task that became ready more than
    /// [`TaskSpec::AGING_MS`] per level of priority after it.
    pub priority: u8,
    /// A cluster-wide bound on how many tasks of one key run at once.
    pub concurrency: Option<Concurrency>,
}

impl TaskOptions {
    /// Whether a task with these options must be in its shard's table before it may run:
    /// one that waits for a time, whose attempts are timed, or that counts against a
    /// concurrency key (the leader's timers and counts start from the table). Others may
    /// run ahead of their log entry, the leader's fast path. Every field is named here, so
    /// a new option has to say which it is.
    pub fn needs_table(&self) -> bool {
        let Self {
            start,
            timeout_ms,
            expires_ms: _,
            backoff: _,
            queue: _,
            priority: _,
            concurrency,
        } = self;
        *start != Start::Now || timeout_ms.is_some() || concurrency.is_some()
    }
}

/// At most `limit` tasks carrying `key` run at once, across the whole cluster: the task's
/// id is routed by its key ([`TaskId::routed_by`]), so every task of a key lives on one
/// shard, whose leader counts the key's running attempts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concurrency {
    /// The key, such as `tenant:42`.
    pub key: String,
    /// How many of the key's tasks may run at once (at least 1). A task starts only while
    /// fewer than its own limit run.
    pub limit: u32,
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
            options: None,
        }
    }

    /// Its options (the defaults when it has none).
    pub fn options(&self) -> TaskOptions {
        self.options.as_deref().cloned().unwrap_or_default()
    }

    /// The queue it waits in.
    pub fn queue(&self) -> &str {
        self.options
            .as_deref()
            .and_then(|o| o.queue.as_deref())
            .unwrap_or(Self::DEFAULT_QUEUE)
    }

    /// Its priority (0 unless set).
    pub fn priority(&self) -> u8 {
        self.options.as_deref().map_or(0, |o| o.priority)
    }

    /// The same spec, waiting in `queue`.
    pub fn with_queue(mut self, queue: impl Into<String>) -> Self {
        self.options_mut().queue = Some(queue.into());
        self
    }

    /// The same spec with `priority` (0 to [`TaskSpec::MAX_PRIORITY`], higher first).
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.options_mut().priority = priority;
        self
    }

    /// Its concurrency key and limit, if it has one.
    pub fn concurrency(&self) -> Option<&Concurrency> {
        self.options.as_deref().and_then(|o| o.concurrency.as_ref())
    }

    /// The same spec, limited to `limit` running at once among all tasks carrying `key`.
    /// Its id becomes [`TaskId::routed_by`] the key, which places it on the key's shard.
    pub fn with_concurrency(mut self, key: impl Into<String>, limit: u32) -> Self {
        let key = key.into();
        self.id = self.id.routed_by(&key);
        self.options_mut().concurrency = Some(Concurrency { key, limit });
        self
    }

    /// Its options, to change.
    pub fn options_mut(&mut self) -> &mut TaskOptions {
        self.options.get_or_insert_default()
    }

    /// The same spec with the given id.
    pub fn with_id(mut self, id: TaskId) -> Self {
        self.id = id;
        self
    }

    /// The same spec allowed `attempts` attempts (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The same spec, to start `delay` after the shard accepts it.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.options_mut().start = Start::After(millis(delay));
        self
    }

    /// The same spec, to start at `at` (at once if that has passed).
    pub fn with_start_at(mut self, at: SystemTime) -> Self {
        let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        self.options_mut().start = Start::At(millis(since_epoch));
        self
    }

    /// The same spec with each attempt limited to `timeout`: an attempt that runs longer is
    /// failed (and retried while attempts remain) and its handler told to stop.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.options_mut().timeout_ms = Some(millis(timeout).max(1));
        self
    }

    /// The same spec, failing as expired if not started within `ttl` of being accepted.
    pub fn with_expiry(mut self, ttl: Duration) -> Self {
        self.options_mut().expires_ms = Some(millis(ttl));
        self
    }

    /// The same spec with these options.
    pub fn with_options(mut self, options: TaskOptions) -> Self {
        self.options = Some(Box::new(options));
        self
    }

    /// The same spec with failed attempts retried after `backoff`.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.options_mut().backoff = Some(backoff);
        self
    }

    /// The longest task type name.
    pub const MAX_KIND_LEN: usize = 256;

    /// The queue of a task that names none.
    pub const DEFAULT_QUEUE: &'static str = "default";

    /// The longest queue name.
    pub const MAX_QUEUE_LEN: usize = 64;

    /// The highest priority.
    pub const MAX_PRIORITY: u8 = 9;

    /// The longest concurrency key.
    pub const MAX_KEY_LEN: usize = 128;

    /// The highest concurrency limit.
    pub const MAX_KEY_LIMIT: u32 = 100_000;

    /// How long a wait is worth one level of priority: a ready task counts as having
    /// become ready this much earlier per level, so a task of priority 0 is passed only by
    /// tasks that became ready less than 9 × this after it.
    pub const AGING_MS: u64 = 1_000;

    /// The most attempts a task may ask for.
    pub const MAX_ATTEMPTS: u32 = 100;

    /// The longest delay a task may ask for (a year).
    pub const MAX_DELAY_MS: u64 = 366 * 24 * 3600 * 1000;

    /// The default bound on a payload (a node's `--max-payload`).
    pub const DEFAULT_MAX_PAYLOAD: usize = 8 * 1024 * 1024;

    /// Whether the spec is within dtc's bounds and a payload of at most `max_payload` bytes;
    /// if not, the answer to give its submitter.
    pub fn check(&self, max_payload: usize) -> Result<(), WireError> {
        self.check_shape()?;
        if self.id.is_reserved() {
            return Err(WireError::BadRequest {
                reason: format!(
                    "task id {} is of the form a shard keeps for the tasks it submits itself \
                     (a schedule's ticks); submit with an id of your own, or none",
                    self.id
                ),
            });
        }
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
        let o = self.options();
        if let Some(b) = o.backoff {
            if b.initial_ms > Backoff::MAX_WAIT_MS || b.max_ms > Backoff::MAX_WAIT_MS {
                return bad(format!(
                    "a backoff wait is at most {} ms (a week)",
                    Backoff::MAX_WAIT_MS
                ));
            }
            if b.multiplier_pct < 100 || b.multiplier_pct > 10_000 {
                return bad(format!(
                    "the backoff multiplier is {}%; it must be 100% to 10000%",
                    b.multiplier_pct
                ));
            }
            if b.jitter_pct > 100 {
                return bad(format!("the jitter is {}%; at most 100%", b.jitter_pct));
            }
        }
        if let Some(queue) = &o.queue {
            check_queue_name(queue)?;
        }
        if o.priority > Self::MAX_PRIORITY {
            return bad(format!(
                "the priority is {}; it must be 0 to {}",
                o.priority,
                Self::MAX_PRIORITY
            ));
        }
        if let Some(c) = &o.concurrency {
            if c.key.is_empty()
                || c.key.len() > Self::MAX_KEY_LEN
                || c.key.contains(char::is_control)
            {
                return bad(format!(
                    "a concurrency key is 1 to {} bytes without control characters",
                    Self::MAX_KEY_LEN
                ));
            }
            if c.limit == 0 || c.limit > Self::MAX_KEY_LIMIT {
                return bad(format!(
                    "the concurrency limit is {}; it must be 1 to {}",
                    c.limit,
                    Self::MAX_KEY_LIMIT
                ));
            }
            if !self.id.is_routed_by(&c.key) {
                return bad(format!(
                    "the id {} is not routed by its concurrency key {:?}, so it would not \
                     reach the key's shard: make the id with TaskId::routed_by (the SDKs' \
                     with_concurrency and concurrency= do)",
                    self.id, c.key
                ));
            }
        }
        if o.timeout_ms == Some(0) {
            return bad("a timeout must be at least 1 ms".into());
        }
        if let Start::After(ms) = o.start
            && ms > Self::MAX_DELAY_MS
        {
            return bad(format!(
                "a delay is at most {} ms (a year)",
                Self::MAX_DELAY_MS
            ));
        }
        Ok(())
    }
}

/// Whether `name` may name a queue: 1 to [`TaskSpec::MAX_QUEUE_LEN`] bytes of letters,
/// digits and `_ - . :`; if not, the answer to give.
pub fn check_queue_name(name: &str) -> Result<(), WireError> {
    let ok = !name.is_empty()
        && name.len() <= TaskSpec::MAX_QUEUE_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(WireError::BadRequest {
            reason: format!(
                "{name:?} is not a queue name: use 1 to {} letters, digits, '_', '-', '.' or ':'",
                TaskSpec::MAX_QUEUE_LEN
            ),
        })
    }
}

/// Where a task is in its lifecycle: `Scheduled → Queued → Running → Succeeded | Failed`,
/// with `Retrying` between a failed attempt and the next, or `Cancelled` from any
/// unfinished state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    /// Waiting for its start time.
    Scheduled,
    /// Waiting for a free worker slot.
    Queued,
    /// Assigned to a worker.
    Running,
    /// Finished; its handler returned a result.
    Succeeded,
    /// Finished; its handler failed (or its attempts ran out).
    Failed,
    /// Cancelled before it finished.
    Cancelled,
    /// An attempt failed; waiting for the time of the next.
    Retrying,
}

impl TaskState {
    /// Every state, in lifecycle order.
    pub const ALL: [TaskState; 7] = [
        Self::Scheduled,
        Self::Queued,
        Self::Running,
        Self::Retrying,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The state's name in the CLI, the HTTP API and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state named `name` (as [`TaskState::name`] spells it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

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
    /// The task was cancelled.
    Cancelled,
}

/// How a failed attempt asks to be retried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Retry {
    /// As the task's backoff says, while attempts remain.
    #[default]
    Policy,
    /// After this many ms, while attempts remain.
    After(u64),
    /// Never: the task fails for good (a fatal error).
    Never,
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
    /// Its type (shared: the table keeps one copy of each type name).
    pub kind: Arc<str>,
    /// Its lifecycle state.
    pub state: TaskState,
    /// How many attempts have started so far.
    pub attempts: u32,
    /// The outcome, once finished.
    pub outcome: Option<Outcome>,
    /// When it was accepted (ms since the Unix epoch, the leader's clock).
    pub created_ms: u64,
    /// While scheduled or retrying: when it may run next (ms since the Unix epoch).
    pub due_ms: Option<u64>,
    /// Once finished: when (ms since the Unix epoch, the leader's clock).
    pub finished_ms: Option<u64>,
    /// The error of each failed attempt, oldest first (the last
    /// [`TaskView::MAX_ERRORS`], each at most [`TaskView::MAX_ERROR_LEN`] bytes).
    pub errors: Vec<String>,
    /// Unfinished, and no worker connected to its shard has a handler for its type: it
    /// waits until one connects (or its expiry).
    pub no_handler: bool,
    /// Its queue, when not [`TaskSpec::DEFAULT_QUEUE`].
    pub queue: Option<String>,
    /// Its priority (0 to [`TaskSpec::MAX_PRIORITY`]).
    pub priority: u8,
    /// Its concurrency key and limit, if it has one.
    pub concurrency: Option<Concurrency>,
    /// While it runs: the last progress its handler reported.
    pub progress: Option<TaskProgress>,
}

/// How far a running attempt has come, as its handler reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskProgress {
    /// Done, in thousandths (0 to 1000).
    pub permille: u16,
    /// What it is doing (at most [`TaskProgress::MAX_MESSAGE`] bytes).
    pub message: String,
}

impl TaskProgress {
    /// The longest progress message.
    pub const MAX_MESSAGE: usize = 256;

    /// A report of `fraction` (clamped to 0–1) done, doing `message` (cut at
    /// [`TaskProgress::MAX_MESSAGE`] bytes, on a character boundary).
    pub fn new(fraction: f64, message: &str) -> Self {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        let mut end = message.len().min(Self::MAX_MESSAGE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            // In 0..=1000 after the clamp.
            permille: (fraction * 1000.0).round() as u16,
            message: message[..end].to_owned(),
        }
    }

    /// Whether it is within bounds (what a coordinator checks of a worker's report).
    pub fn is_valid(&self) -> bool {
        self.permille <= 1000 && self.message.len() <= Self::MAX_MESSAGE
    }
}

impl TaskView {
    /// How many attempts' errors a task keeps.
    pub const MAX_ERRORS: usize = 16;
    /// How much of one error is kept.
    pub const MAX_ERROR_LEN: usize = 4096;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_timed_delayed_or_keyed_tasks_need_the_table_before_they_run() {
        let plain = TaskOptions {
            queue: Some("q".into()),
            priority: 9,
            expires_ms: Some(1_000),
            backoff: Some(Backoff::default()),
            ..TaskOptions::default()
        };
        assert!(!plain.needs_table());
        for needs in [
            TaskOptions {
                start: Start::After(10),
                ..plain.clone()
            },
            TaskOptions {
                timeout_ms: Some(10),
                ..plain.clone()
            },
            TaskOptions {
                concurrency: Some(Concurrency {
                    key: "k".into(),
                    limit: 1,
                }),
                ..plain.clone()
            },
        ] {
            assert!(needs.needs_table(), "{needs:?}");
        }
    }

    #[test]
    fn backoff_grows_to_its_bound_with_bounded_jitter_the_same_everywhere() {
        let exact = Backoff {
            initial_ms: 100,
            multiplier_pct: 200,
            max_ms: 1_000,
            jitter_pct: 0,
        };
        let waits: Vec<u64> = (1..=6).map(|a| exact.wait_ms(TaskId(7), a)).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1_000, 1_000]);
        let jittered = Backoff {
            jitter_pct: 50,
            ..exact
        };
        let mut distinct = std::collections::HashSet::new();
        for n in 0..200u128 {
            let wait = jittered.wait_ms(TaskId(n), 2);
            assert!((200..=300).contains(&wait), "{wait}");
            assert_eq!(wait, jittered.wait_ms(TaskId(n), 2), "a pure function");
            distinct.insert(wait);
        }
        assert!(
            distinct.len() > 20,
            "the jitter spreads retries: {distinct:?}"
        );
    }

    #[test]
    fn options_out_of_bounds_are_refused() {
        let base = TaskSpec::new("noop", "");
        assert!(
            base.clone()
                .with_timeout(Duration::from_millis(5))
                .check(10)
                .is_ok()
        );
        let slow = base.clone().with_backoff(Backoff {
            multiplier_pct: 50,
            ..Backoff::default()
        });
        assert!(slow.check(10).is_err(), "a backoff that shrinks");
        let keyed = base.clone().with_concurrency("tenant:42", 3);
        assert!(keyed.check(10).is_ok());
        assert!(
            keyed.clone().with_id(TaskId(9)).check(10).is_err(),
            "an id not routed by the key"
        );
        assert!(base.clone().with_concurrency("t", 0).check(10).is_err());
        assert!(base.clone().with_concurrency("", 1).check(10).is_err());
        let cut = TaskProgress::new(7.0, &"é".repeat(200));
        assert_eq!(cut.permille, 1000, "clamped");
        assert!(cut.message.len() <= TaskProgress::MAX_MESSAGE && cut.is_valid());
        assert_eq!(TaskProgress::new(f64::NAN, "").permille, 0);
        let late = base.with_delay(Duration::from_millis(TaskSpec::MAX_DELAY_MS + 1));
        assert!(late.check(10).is_err());
    }
}
