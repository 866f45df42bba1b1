//! The operator's view: what a connection with `Role::Admin` asks ([`AdminRequest`]) and
//! what it is told ([`AdminResponse`]). A coordinator describes itself as one replica
//! ([`ReplicaStatus`]); a router gathers every replica of every shard ([`ClusterStatus`]).
//! `dtc status` prints these; the tests use them to find leaders.

use crate::schedule::{ScheduleOp, ScheduleStatus};
use crate::{TaskId, TaskOptions, TaskState, TaskView};
use serde::{Deserialize, Serialize};

/// An operator's question.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Describe yourself (a coordinator) or the whole cluster (a router).
    Status,
    /// Change the shard's settings (to a coordinator, which must lead its shard). With
    /// secrets, only a connection that proved itself a member of the cluster (its
    /// certificate) may: the admin token alone is read-only.
    Configure(SettingsChange),
    /// List tasks, newest first (to a coordinator: its shard's, answered by the leader;
    /// to a router: every shard's, merged).
    Tasks(TaskQuery),
    /// Set (or with `None` clear) the options tasks of a type take where their submit gives
    /// none (to a coordinator, for its shard; needs the member certificate like
    /// [`AdminRequest::Configure`]).
    TypeDefaults {
        /// The task type.
        kind: String,
        /// Its defaults (its `start` is not taken).
        options: Option<TaskOptions>,
    },
    /// Forget every finished task in this state (failed, succeeded or cancelled): to a
    /// coordinator, its shard's (through its leader); to a router, every shard's. Like a
    /// change of settings, it needs the member certificate when secrets are on.
    Purge(TaskState),
    /// List the named queues, or pause or resume one (to a coordinator: its shard's,
    /// through its leader; to a router: every shard's). Pausing and resuming are logged
    /// and, like a change of settings, need the member certificate when secrets are on.
    Queues(QueueOp),
    /// List, add, pause, resume, trigger or delete schedules (to a coordinator: its
    /// shard's, through its leader; to a router: a schedule's own shard, or every shard's
    /// for a list). Changes are logged and, like a change of settings, need the member
    /// certificate when secrets are on.
    Schedules(ScheduleOp),
}

impl AdminRequest {
    /// Whether this request changes anything. The one place that decides it: the sessions
    /// refuse a change to a credential that may only read ([`Self::refusal_if_read_only`])
    /// and name no request. Deny by default: lists and lookups are named here as reads,
    /// everything else — including any request added later — is a write.
    pub fn changes(&self) -> bool {
        !matches!(
            self,
            Self::Status
                | Self::Tasks(_)
                | Self::Queues(QueueOp::List)
                | Self::Schedules(ScheduleOp::List { .. })
        )
    }

    /// How an error answers this request, in the form its asker reads: what an answer
    /// given later (once a change is applied) keeps instead of the request.
    pub fn error_form(&self) -> fn(crate::WireError) -> AdminResponse {
        match self {
            Self::Status => AdminResponse::Failed,
            Self::Configure(_) => |e| AdminResponse::Configured(Err(e)),
            Self::Tasks(_) => |e| AdminResponse::Tasks(Err(e)),
            Self::TypeDefaults { .. } => |e| AdminResponse::TypeDefaults(Err(e)),
            Self::Purge(_) => |e| AdminResponse::Purged(Err(e)),
            Self::Queues(_) => |e| AdminResponse::Queues(Err(e)),
            Self::Schedules(_) => |e| AdminResponse::Schedules(Err(e)),
        }
    }

    /// The answer to this request that carries `error` instead.
    pub fn failed(&self, error: crate::WireError) -> AdminResponse {
        (self.error_form())(error)
    }

    /// How this request is refused to a credential that may only read (the admin token
    /// without the cluster's member certificate): its own answer carrying the reason, or
    /// `None` if it does not [change](Self::changes) anything.
    pub fn refusal_if_read_only(&self) -> Option<AdminResponse> {
        self.changes().then(|| {
            self.failed(crate::WireError::Auth {
                reason: "role not allowed for this credential: the admin token is read-only; \
                         a change needs the cluster's member certificate too (--secrets DIR on \
                         a member's machine)"
                    .into(),
            })
        })
    }
}

/// What [`AdminRequest::Queues`] asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueOp {
    /// Every queue the shard knows: with tasks, served by a worker, or paused.
    List,
    /// Hold the queue's tasks (running ones finish); new tasks are still accepted.
    Pause(String),
    /// Let the queue's tasks run again.
    Resume(String),
    /// Limit how fast the queue's tasks start, in starts per hour (`None`: no limit).
    /// Through a router the rate is split evenly among the shards, as tasks are.
    Limit(String, Option<u64>),
}

/// One named queue as a shard's leader (or, merged, a router) sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueStatus {
    /// Its name.
    pub name: String,
    /// Tasks ready and waiting for a slot.
    pub queued: u64,
    /// Tasks running.
    pub running: u64,
    /// Connected workers that serve it.
    pub workers: u32,
    /// Whether its tasks are held (through a router: on every shard).
    pub paused: bool,
    /// Tasks of it that finished per second, over the last 10 seconds.
    pub done_per_s: f64,
    /// Its rate limit in starts per hour, if it has one (through a router: the sum over
    /// the shards).
    pub rate_per_hour: Option<u64>,
}

impl Eq for QueueStatus {}

/// The most queues one shard keeps paused.
pub const MAX_PAUSED_QUEUES: usize = 1024;

/// The most queues one shard keeps rate-limited.
pub const MAX_LIMITED_QUEUES: usize = 1024;

/// A rate as people write it — `100/s`, `30/m`, `5/h` (also `100/sec`, `30/min`,
/// `5/hour`) — in starts per hour.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a rate: write it as 100/s, 30/m or 5/h");
    let (n, per) = text.trim().split_once('/').ok_or_else(bad)?;
    let n: u64 = n.trim().parse().map_err(|_| bad())?;
    let factor = match per.trim() {
        "s" | "sec" | "second" => 3600,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 1,
        _ => return Err(bad()),
    };
    match n.checked_mul(factor) {
        Some(0) => Err(format!(
            "{text:?}: a rate must allow at least 1 task an hour"
        )),
        Some(per_hour) => Ok(per_hour),
        None => Err(format!("{text:?} is too fast to be a limit")),
    }
}

/// A rate in starts per hour, written in the largest unit that keeps it whole (`100/s`,
/// `30/m`, `5/h`).
pub fn format_rate(per_hour: u64) -> String {
    if per_hour.is_multiple_of(3600) {
        format!("{}/s", per_hour / 3600)
    } else if per_hour.is_multiple_of(60) {
        format!("{}/m", per_hour / 60)
    } else {
        format!("{per_hour}/h")
    }
}

/// Which tasks to list: those older than `before` (a page's `next`), of a state and a type
/// if given, at most `limit` (at most [`TaskQuery::MAX_LIMIT`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskQuery {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks of this type.
    pub kind: Option<String>,
    /// At most this many.
    pub limit: u32,
    /// Only tasks listed after this one (newest first).
    pub before: Option<Cursor>,
}

impl TaskQuery {
    /// The longest page.
    pub const MAX_LIMIT: u32 = 1000;
}

/// A place in the list of tasks, newest first: tasks are ordered by when they were
/// accepted, then by id, so that every shard and every page agrees on the order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cursor {
    /// When the task was accepted (ms since the Unix epoch).
    pub created_ms: u64,
    /// Its id.
    pub id: TaskId,
}

impl Cursor {
    /// The place of `view` in the list.
    pub fn of(view: &TaskView) -> Self {
        Self {
            created_ms: view.created_ms,
            id: view.id,
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.created_ms, self.id)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a cursor (a page's \"next\")");
        let (ms, id) = s.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            created_ms: ms.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// One page of a task listing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPage {
    /// The tasks, newest first.
    pub tasks: Vec<TaskView>,
    /// Where the next page starts, if there may be one.
    pub next: Option<Cursor>,
}

/// How many tasks are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts([u64; 7]);

impl StateCounts {
    fn slot(state: TaskState) -> usize {
        TaskState::ALL
            .iter()
            .position(|s| *s == state)
            .unwrap_or_default()
    }

    /// How many are in `state`.
    pub fn get(&self, state: TaskState) -> u64 {
        self.0[Self::slot(state)]
    }

    /// Sets how many are in `state`.
    pub fn set(&mut self, state: TaskState, n: u64) {
        self.0[Self::slot(state)] = n;
    }

    /// One more in `state`.
    pub fn add(&mut self, state: TaskState) {
        self.0[Self::slot(state)] += 1;
    }

    /// One fewer in `state`.
    pub fn sub(&mut self, state: TaskState) {
        let n = &mut self.0[Self::slot(state)];
        *n = n.saturating_sub(1);
    }

    /// Every state with its count, in lifecycle order.
    pub fn iter(&self) -> impl Iterator<Item = (TaskState, u64)> + '_ {
        TaskState::ALL.into_iter().map(|s| (s, self.get(s)))
    }

    /// These counts and `other`'s, added.
    pub fn plus(mut self, other: &StateCounts) -> Self {
        for (n, m) in self.0.iter_mut().zip(other.0) {
            *n += m;
        }
        self
    }
}

/// The answer to an [`AdminRequest`].
// One answer per operator's request: the size of the enum does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminResponse {
    /// A coordinator's own state.
    Replica(ReplicaStatus),
    /// Every shard, as a router sees it.
    Cluster(ClusterStatus),
    /// The shard's settings after a [`AdminRequest::Configure`], once committed.
    Configured(Result<ShardSettings, crate::WireError>),
    /// The answer to [`AdminRequest::Tasks`].
    Tasks(Result<TaskPage, crate::WireError>),
    /// The answer to [`AdminRequest::Purge`]: how many tasks were forgotten.
    Purged(Result<u64, crate::WireError>),
    /// The answer to [`AdminRequest::TypeDefaults`]: every type's defaults, once committed.
    TypeDefaults(Result<Vec<(String, TaskOptions)>, crate::WireError>),
    /// The answer to [`AdminRequest::Queues`]: every queue, after the change if one was
    /// asked (once committed), by name.
    Queues(Result<Vec<QueueStatus>, crate::WireError>),
    /// The answer to [`AdminRequest::Schedules`]: the schedules after the change if one was
    /// asked (once committed; for a change, only the one it changed), by name.
    Schedules(Result<Vec<ScheduleStatus>, crate::WireError>),
    /// A request that could not be answered in its own form (a status a node cannot give).
    Failed(crate::WireError),
}

/// The settings every replica of a shard applies alike, kept in the shard's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSettings {
    /// Succeeded and cancelled tasks are forgotten this many ms after they finished.
    pub result_ttl_ms: u64,
    /// At most this many succeeded and cancelled tasks are kept; the oldest go first.
    pub max_results: u64,
    /// At most this many tasks may be unfinished; a submit past it is answered `Overloaded`.
    pub max_queued: u64,
    /// Failed tasks are kept this many ms.
    pub failed_ttl_ms: u64,
    /// At most this many failed tasks are kept; the oldest go first.
    pub max_failed: u64,
}

/// A change to some of a shard's settings; what is `None` stays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsChange {
    /// A new result TTL, in ms.
    pub result_ttl_ms: Option<u64>,
    /// A new bound on kept results.
    pub max_results: Option<u64>,
    /// A new bound on queued tasks.
    pub max_queued: Option<u64>,
    /// A new retention of failed tasks, in ms.
    pub failed_ttl_ms: Option<u64>,
    /// A new bound on kept failed tasks.
    pub max_failed: Option<u64>,
}

/// A replica's part in its shard's Raft group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftRole {
    /// Leads the shard: proposes commands and schedules tasks.
    Leader,
    /// Follows the leader's log.
    Follower,
    /// Asking for votes.
    Candidate,
    /// Receives the log without a vote.
    Learner,
    /// Stopped.
    Shutdown,
}

impl std::fmt::Display for RaftRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Leader => "leader",
            Self::Follower => "follower",
            Self::Candidate => "candidate",
            Self::Learner => "learner",
            Self::Shutdown => "shutdown",
        })
    }
}

/// One coordinator replica, as it describes itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// Its id in the shard.
    pub id: u64,
    /// The address it serves on.
    pub addr: String,
    /// Its part in the Raft group.
    pub role: RaftRole,
    /// The leader's id, when known.
    pub leader: Option<u64>,
    /// The current Raft term.
    pub term: u64,
    /// The index of its last log entry.
    pub last_log: u64,
    /// The index of the last entry it knows to be committed.
    pub committed: u64,
    /// The index of the last entry applied to its task table.
    pub applied: u64,
    /// The shard's replicas: id and address.
    pub replicas: Vec<(u64, String)>,
    /// Tasks in its table that have not finished.
    pub queued: u64,
    /// Tasks in its table, finished results included.
    pub tasks: u64,
    /// Its tasks by state (running ones as the leader knows them; a follower counts them
    /// in the state its table holds).
    pub states: StateCounts,
    /// Attempts running on workers (the leader only; 0 elsewhere).
    pub running: u64,
    /// Workers attached (the leader only).
    pub workers: Vec<WorkerStatus>,
    /// The shard's settings as this replica's table holds them.
    pub settings: ShardSettings,
    /// What this replica has done as leader (zeros on a follower; counted from its election).
    pub stats: LeaderStats,
}

/// A leader's counters since its election, and the latency of the tasks it finished in the
/// last full second. Operator tools take rates from the difference of two readings (and start
/// again when the leader changes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderStats {
    /// New tasks accepted into the table.
    pub submitted: u64,
    /// Tasks finished with a result.
    pub completed: u64,
    /// Tasks finished as failed (their attempts ran out, or no handler).
    pub failed: u64,
    /// Attempts that failed or were lost and went back to the queue.
    pub retried: u64,
    /// Median arrival-to-end latency of the tasks finished in the last full second, in µs.
    pub p50_us: Option<u64>,
    /// 95th percentile of the same, in µs.
    pub p95_us: Option<u64>,
}

/// A worker attached to a shard's leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The name it registered with.
    pub name: String,
    /// Where it connects from.
    pub addr: String,
    /// How many tasks it runs at once.
    pub slots: u32,
    /// How many tasks it may hold: its slots plus those it takes ahead (prefetch).
    pub capacity: u32,
    /// How many it holds now, running or taken ahead.
    pub busy: u32,
    /// Tasks it has finished for this leader.
    pub done: u64,
    /// Milliseconds since its last heartbeat (or other message) reached the leader.
    pub heartbeat_age_ms: u64,
}

/// One shard, as a router sees it: each of its replicas, or why it could not be asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStatus {
    /// The shard's index.
    pub shard: u32,
    /// Each replica's address and its answer (or the error asking it).
    pub replicas: Vec<(String, Result<ReplicaStatus, String>)>,
}

impl ShardStatus {
    /// The replica that says it leads (and is the leader the others name), if any.
    pub fn leader(&self) -> Option<&ReplicaStatus> {
        self.replicas
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .filter(|r| r.role == RaftRole::Leader)
            .max_by_key(|r| r.term)
    }
}

impl WorkerStatus {
    /// Its slots running a task: a worker runs what it holds, up to its slots.
    pub fn running(&self) -> u32 {
        self.busy.min(self.slots)
    }

    /// Tasks it holds beyond its running slots, waiting for one to free.
    pub fn ahead(&self) -> u32 {
        self.busy - self.running()
    }
}

/// Every shard of a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The shards, in order.
    pub shards: Vec<ShardStatus>,
}

/// Merges the queue lists of several shards: counts and rates add up, a queue is paused
/// only where every shard that lists it holds it paused.
pub fn merge_queues(lists: impl IntoIterator<Item = Vec<QueueStatus>>) -> Vec<QueueStatus> {
    let mut all: std::collections::BTreeMap<String, QueueStatus> = Default::default();
    for q in lists.into_iter().flatten() {
        match all.get_mut(&q.name) {
            Some(m) => {
                m.queued += q.queued;
                m.running += q.running;
                m.workers += q.workers;
                m.paused &= q.paused;
                m.done_per_s += q.done_per_s;
                m.rate_per_hour = match (m.rate_per_hour, q.rate_per_hour) {
                    (Some(a), Some(b)) => Some(a.saturating_add(b)),
                    (a, b) => a.or(b),
                };
            }
            None => {
                all.insert(q.name.clone(), q);
            }
        }
    }
    all.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ScheduleSpec;

    #[test]
    fn only_lists_and_lookups_are_open_to_a_read_only_credential() {
        let reads = [
            AdminRequest::Status,
            AdminRequest::Tasks(TaskQuery {
                state: None,
                kind: None,
                limit: 10,
                before: None,
            }),
            AdminRequest::Queues(QueueOp::List),
            AdminRequest::Schedules(ScheduleOp::List { after: None }),
        ];
        for read in &reads {
            assert_eq!(read.refusal_if_read_only(), None, "{read:?}");
        }
        let spec = ScheduleSpec {
            name: "s".into(),
            cron: "* * * * *".into(),
            tz: None,
            overlap: crate::schedule::Overlap::Allow,
            catch_up: crate::schedule::CatchUp::All,
            kind: "noop".into(),
            payload: bytes::Bytes::new(),
            max_attempts: 1,
            options: None,
        };
        let writes = [
            AdminRequest::Configure(SettingsChange::default()),
            AdminRequest::TypeDefaults {
                kind: "t".into(),
                options: None,
            },
            AdminRequest::Purge(TaskState::Failed),
            AdminRequest::Queues(QueueOp::Pause("q".into())),
            AdminRequest::Queues(QueueOp::Resume("q".into())),
            AdminRequest::Queues(QueueOp::Limit("q".into(), None)),
            AdminRequest::Schedules(ScheduleOp::Add(spec)),
            AdminRequest::Schedules(ScheduleOp::Pause("s".into())),
            AdminRequest::Schedules(ScheduleOp::Resume("s".into())),
            AdminRequest::Schedules(ScheduleOp::Trigger("s".into())),
            AdminRequest::Schedules(ScheduleOp::Delete("s".into())),
        ];
        for write in &writes {
            let refused = write.refusal_if_read_only();
            // Answered in the form its asker reads, with the reason.
            let err = match &refused {
                Some(AdminResponse::Configured(Err(e)))
                    if matches!(write, AdminRequest::Configure(_)) =>
                {
                    e
                }
                Some(AdminResponse::TypeDefaults(Err(e)))
                    if matches!(write, AdminRequest::TypeDefaults { .. }) =>
                {
                    e
                }
                Some(AdminResponse::Purged(Err(e))) if matches!(write, AdminRequest::Purge(_)) => e,
                Some(AdminResponse::Queues(Err(e))) if matches!(write, AdminRequest::Queues(_)) => {
                    e
                }
                Some(AdminResponse::Schedules(Err(e)))
                    if matches!(write, AdminRequest::Schedules(_)) =>
                {
                    e
                }
                other => panic!("{write:?} answered {other:?}"),
            };
            assert!(err.to_string().contains("member certificate"), "{err}");
        }
    }

    #[test]
    fn rates_read_and_write_as_people_write_them() {
        assert_eq!(parse_rate("100/s"), Ok(360_000));
        assert_eq!(parse_rate(" 30 / min "), Ok(1_800));
        assert_eq!(parse_rate("5/h"), Ok(5));
        for bad in [
            "fast",
            "100",
            "0/s",
            "-1/s",
            "1/day",
            "1e3/s",
            "99999999999999999/s",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        for (per_hour, text) in [
            (360_000, "100/s"),
            (1_800, "30/m"),
            (5, "5/h"),
            (90, "90/h"),
        ] {
            assert_eq!(format_rate(per_hour), text);
            assert_eq!(parse_rate(text), Ok(per_hour));
        }
    }
}
