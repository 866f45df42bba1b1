//! What `dtc top` shows, as plain data: the last cluster status, each shard's throughput
//! (from the difference of its leader's completed count between two readings) with a
//! minute of history, the named queues, the schedules, the workers in the chosen order, and
//! which pane has the focus. The
//! view draws it; the key handler and the poller change it. Nothing here touches a terminal,
//! so tests drive it directly.

use dtc_proto::schedule::ScheduleStatus;
use dtc_proto::status::{
    ClusterStatus, QueueStatus, RaftRole, ReplicaStatus, ShardStatus, WorkerStatus,
};
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

/// Seconds of throughput history kept per shard (one reading a second).
pub const HISTORY: usize = 60;

/// The pane that has the focus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    /// The shards.
    Shards,
    /// The workers.
    Workers,
    /// The named queues.
    Queues,
    /// The schedules.
    Schedules,
}

/// How the workers are ordered (`s` moves to the next).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerSort {
    /// By shard, then name.
    Shard,
    /// Busiest first.
    Busy,
    /// Most tasks done first.
    Done,
    /// Longest since its last heartbeat first.
    Heartbeat,
}

impl WorkerSort {
    fn next(self) -> Self {
        match self {
            Self::Shard => Self::Busy,
            Self::Busy => Self::Done,
            Self::Done => Self::Heartbeat,
            Self::Heartbeat => Self::Shard,
        }
    }

    /// Its name in the pane's title.
    pub fn label(self) -> &'static str {
        match self {
            Self::Shard => "shard",
            Self::Busy => "busy",
            Self::Done => "done",
            Self::Heartbeat => "heartbeat age",
        }
    }
}

/// A shard's throughput over time, tied to one leader's counter.
#[derive(Debug, Default)]
pub struct Rate {
    /// The leader (id, term) whose counter the last reading came from.
    leader: Option<(u64, u64)>,
    completed: u64,
    at: Option<Instant>,
    /// Tasks per second over the last interval; `None` until two readings of one leader.
    pub now: Option<f64>,
    /// One value a reading, oldest first.
    pub history: VecDeque<u64>,
}

impl Rate {
    fn reading(&mut self, leader: Option<&ReplicaStatus>, at: Instant) {
        let current = leader.map(|l| (l.id, l.term));
        let completed = leader.map_or(0, |l| l.stats.completed);
        self.now = match (self.leader, self.at) {
            (Some(prev), Some(then)) if Some(prev) == current && completed >= self.completed => {
                let secs = at.saturating_duration_since(then).as_secs_f64();
                (secs > 0.0).then(|| (completed - self.completed) as f64 / secs)
            }
            _ => None,
        };
        self.leader = current;
        self.completed = completed;
        self.at = Some(at);
        self.history
            .push_back(self.now.map_or(0, |r| r.round() as u64));
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }
}

/// A worker row: its shard and what the leader says of it.
#[derive(Clone, Debug)]
pub struct WorkerRow {
    /// The shard it serves.
    pub shard: u32,
    /// Its status.
    pub worker: WorkerStatus,
}

/// Everything `dtc top` shows.
#[derive(Debug)]
pub struct Top {
    /// What it watches (a router or a coordinator's address).
    pub source: String,
    /// The last status read.
    pub status: Option<ClusterStatus>,
    /// Why the last reading failed (the cluster went away); cleared by the next success.
    pub disconnected: Option<String>,
    /// Per shard.
    pub rates: BTreeMap<u32, Rate>,
    /// The named queues, as last read (empty until read, or if they could not be).
    pub queues: Vec<QueueStatus>,
    /// The focused pane.
    pub pane: Pane,
    /// The workers' order.
    pub sort: WorkerSort,
    /// The schedules, as last read.
    pub schedules: Vec<ScheduleStatus>,
    /// The selected row of each pane.
    pub selected: [usize; 4],
}

impl Top {
    /// Nothing read yet.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            status: None,
            disconnected: None,
            rates: BTreeMap::new(),
            queues: Vec::new(),
            pane: Pane::Shards,
            sort: WorkerSort::Shard,
            schedules: Vec::new(),
            selected: [0, 0, 0, 0],
        }
    }

    /// Takes a reading (or the error of one) made at `at`.
    pub fn update(&mut self, reading: Result<ClusterStatus, String>, at: Instant) {
        match reading {
            Ok(status) => {
                for shard in &status.shards {
                    self.rates
                        .entry(shard.shard)
                        .or_default()
                        .reading(shard.leader(), at);
                }
                self.status = Some(status);
                self.disconnected = None;
            }
            Err(e) => {
                // Rates restart once the cluster answers again.
                for rate in self.rates.values_mut() {
                    rate.reading(None, at);
                }
                self.disconnected = Some(e);
            }
        }
        self.clamp();
    }

    /// Takes a reading of the schedules.
    pub fn update_schedules(&mut self, schedules: Vec<ScheduleStatus>) {
        self.schedules = schedules;
        self.clamp();
    }

    /// Takes a reading of the queues.
    pub fn update_queues(&mut self, queues: Vec<QueueStatus>) {
        self.queues = queues;
        self.clamp();
    }

    /// The shards of the last reading.
    pub fn shards(&self) -> &[ShardStatus] {
        self.status.as_ref().map_or(&[], |s| &s.shards)
    }

    /// The whole cluster's tasks per second, where every shard's rate is known.
    pub fn total_rate(&self) -> Option<f64> {
        if self.disconnected.is_some() || self.rates.is_empty() {
            return None;
        }
        self.rates.values().map(|r| r.now).sum()
    }

    /// The whole cluster's throughput history (the shards' sum, second by second).
    pub fn total_history(&self) -> Vec<u64> {
        let len = self
            .rates
            .values()
            .map(|r| r.history.len())
            .max()
            .unwrap_or(0);
        (0..len)
            .map(|i| {
                self.rates
                    .values()
                    .map(|r| {
                        let offset = len - r.history.len();
                        i.checked_sub(offset)
                            .and_then(|j| r.history.get(j))
                            .copied()
                            .unwrap_or(0)
                    })
                    .sum()
            })
            .collect()
    }

    /// Every leader's workers, in the chosen order.
    pub fn workers(&self) -> Vec<WorkerRow> {
        let mut rows: Vec<WorkerRow> = self
            .shards()
            .iter()
            .filter_map(|s| s.leader().map(|l| (s.shard, l)))
            .flat_map(|(shard, l)| {
                l.workers.iter().map(move |w| WorkerRow {
                    shard,
                    worker: w.clone(),
                })
            })
            .collect();
        let key = |r: &WorkerRow| (r.shard, r.worker.name.clone(), r.worker.addr.clone());
        match self.sort {
            WorkerSort::Shard => rows.sort_by_key(key),
            WorkerSort::Busy => rows.sort_by_key(|r| (std::cmp::Reverse(r.worker.busy), key(r))),
            WorkerSort::Done => rows.sort_by_key(|r| (std::cmp::Reverse(r.worker.done), key(r))),
            WorkerSort::Heartbeat => {
                rows.sort_by_key(|r| (std::cmp::Reverse(r.worker.heartbeat_age_ms), key(r)));
            }
        }
        rows
    }

    /// Handles a key; returns `false` when it asks to quit.
    pub fn key(&mut self, key: Key) -> bool {
        let pane = self.pane as usize;
        match key {
            Key::Quit => return false,
            Key::NextPane => {
                self.pane = match self.pane {
                    Pane::Shards => Pane::Queues,
                    Pane::Queues => Pane::Schedules,
                    Pane::Schedules => Pane::Workers,
                    Pane::Workers => Pane::Shards,
                };
            }
            Key::Up => self.selected[pane] = self.selected[pane].saturating_sub(1),
            Key::Down => self.selected[pane] += 1,
            Key::Sort => self.sort = self.sort.next(),
        }
        self.clamp();
        true
    }

    fn clamp(&mut self) {
        let rows = [
            self.shards()
                .iter()
                .map(|s| s.replicas.len())
                .sum::<usize>(),
            self.workers().len(),
            self.queues.len(),
            self.schedules.len(),
        ];
        for (selected, rows) in self.selected.iter_mut().zip(rows) {
            *selected = (*selected).min(rows.saturating_sub(1));
        }
    }
}

/// What the keys mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// `q`, Esc, Ctrl-C.
    Quit,
    /// `Tab`, ←, →.
    NextPane,
    /// ↑ or `k`.
    Up,
    /// ↓ or `j`.
    Down,
    /// `s`.
    Sort,
}

/// The replica's role as a short word.
pub fn role(r: &ReplicaStatus) -> &'static str {
    match r.role {
        RaftRole::Leader => "leader",
        RaftRole::Follower => "follower",
        RaftRole::Candidate => "candidate",
        RaftRole::Learner => "learner",
        RaftRole::Shutdown => "stopped",
    }
}
