//! Which worker runs which task: connected workers and their slots and queues, the ready
//! tasks in priority order, paused queues, concurrency keys (in `sched/keys.rs`), rate
//! limits per queue (in `sched/rate_limits.rs`), the running attempts, and heartbeat
//! deadlines.
//! Owned by the coordinator's actor loop; rebuilt from the task table when a coordinator
//! starts leading.

use super::keys::{Entry, Keys};
use super::rate_limits::RateLimits;
use dtc_proto::hash::{HashMap, HashSet};
use dtc_proto::{TaskId, TaskSpec};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A connected worker's id, unique within one coordinator's lifetime.
pub type WorkerId = u64;

/// A decision to run one attempt of a task on a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assign {
    /// The worker that gets it.
    pub worker: WorkerId,
    /// The task.
    pub id: TaskId,
    /// The attempt number.
    pub attempt: u32,
}

/// Where a ready task waits and how urgent it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready<'a> {
    /// Its queue.
    pub queue: &'a str,
    /// Its priority (higher first).
    pub priority: u8,
    /// Its concurrency key and limit: it starts only while fewer of the key's attempts run.
    pub key: Option<(&'a str, u32)>,
    /// When it became ready (ms since the Unix epoch): ties within a priority go to the
    /// earliest, and waiting ages it (see [`TaskSpec::AGING_MS`]).
    pub since_ms: u64,
}

impl Ready<'_> {
    /// The default queue, priority 0, ready since the epoch: order by arrival alone.
    pub const DEFAULT: Ready<'static> = Ready {
        queue: TaskSpec::DEFAULT_QUEUE,
        priority: 0,
        key: None,
        since_ms: 0,
    };

    /// The task's rank: lower runs first. A level of priority counts as having waited
    /// [`TaskSpec::AGING_MS`] longer.
    fn rank(&self) -> i64 {
        let since = i64::try_from(self.since_ms).unwrap_or(i64::MAX);
        let head_start = i64::from(self.priority.min(TaskSpec::MAX_PRIORITY))
            * i64::try_from(TaskSpec::AGING_MS).unwrap_or(0);
        since.saturating_sub(head_start)
    }
}

/// The ready tasks of one task type in one queue, lowest rank (then earliest arrival)
/// first.
#[derive(Debug)]
struct Lane {
    queue: Arc<str>,
    kind: String,
    tasks: BinaryHeap<Reverse<(i64, u64, TaskId)>>,
}

#[derive(Debug)]
struct Worker {
    slots: u32,
    /// The task types it has handlers for.
    kinds: HashSet<String>,
    /// The queues it serves.
    queues: HashSet<Arc<str>>,
    /// Its queues' weights, if it gave any but 1 (see [`Shares`]).
    shares: Option<Box<Shares>>,
    /// The attempts this worker holds a slot for (an attempt that timed out or was
    /// cancelled holds its slot until the worker reports it stopped).
    busy: HashSet<(TaskId, u32)>,
    /// The keyed ones among them, with their key.
    keyed: HashMap<(TaskId, u32), Arc<str>>,
    last_seen: Instant,
    draining: bool,
}

impl Worker {
    fn free(&self) -> u32 {
        if self.draining {
            0
        } else {
            self.slots.saturating_sub(self.busy.len() as u32)
        }
    }
}

/// A worker's split of its slots among its weighted queues, by stride scheduling: each
/// queue advances its pass by `STRIDE / weight` per task it gets, and the worker's next
/// task comes from the ready queue of lowest pass (a queue back from idle starts at the
/// worker's current pass, so it gets no burst for the time it was empty).
#[derive(Debug)]
struct Shares {
    weights: HashMap<Arc<str>, u32>,
    pass: HashMap<Arc<str>, u64>,
    /// The pass of the queue that got the last task.
    now: u64,
}

impl Shares {
    const STRIDE: u64 = 1_000_000;

    fn pass_of(&self, queue: &str) -> u64 {
        self.pass.get(queue).copied().unwrap_or(0).max(self.now)
    }

    fn took(&mut self, queue: &Arc<str>) {
        let weight = u64::from(self.weights.get(queue).copied().unwrap_or(1).max(1));
        let at = self.pass_of(queue);
        self.now = at;
        self.pass
            .insert(Arc::clone(queue), at + Self::STRIDE / weight);
    }
}

/// The runtime scheduling state of a shard's leader.
///
/// Ready tasks wait in one lane per queue and task type; a task goes only to a worker that
/// serves its queue and has a handler for its type (it waits while none is connected), and
/// never while its queue is paused. Among the lanes some free worker can run, the task of
/// lowest rank goes first ([`Ready`]: priority, aged by waiting, then arrival), to the least
/// loaded such worker.
#[derive(Debug)]
pub struct Scheduler {
    workers: HashMap<WorkerId, Worker>,
    /// Ready tasks by queue and type, each with its rank and arrival number; only non-empty
    /// lanes are kept (there are few, so a short list beats a map).
    ready: Vec<Lane>,
    /// Queues whose tasks are held.
    paused: HashSet<Arc<str>>,
    /// Keyed tasks wait there for room under their key before entering a lane.
    keys: Keys,
    /// The rate-limited queues' buckets.
    rates: RateLimits,
    arrivals: u64,
    ready_len: usize,
    /// Running attempts: task → (worker, attempt).
    running: HashMap<TaskId, (WorkerId, u32)>,
    /// How many connected workers handle each task type.
    handled: HashMap<String, u32>,
    heartbeat_timeout: Duration,
}

impl Scheduler {
    /// A scheduler that declares a worker dead after `heartbeat_timeout` without a message.
    pub fn new(heartbeat_timeout: Duration) -> Self {
        Self {
            workers: HashMap::default(),
            ready: Vec::new(),
            paused: HashSet::default(),
            keys: Keys::default(),
            rates: RateLimits::default(),
            arrivals: 0,
            ready_len: 0,
            running: HashMap::default(),
            handled: HashMap::default(),
            heartbeat_timeout,
        }
    }

    /// A worker registered with `slots` slots and handlers for `kinds`, serving `queues`
    /// (none: the default queue).
    pub fn add_worker(
        &mut self,
        id: WorkerId,
        slots: u32,
        kinds: impl IntoIterator<Item = String>,
        queues: &[String],
        now: Instant,
    ) {
        let kinds: HashSet<String> = kinds.into_iter().collect();
        let queues = if queues.is_empty() {
            HashSet::from_iter([Arc::from(TaskSpec::DEFAULT_QUEUE)])
        } else {
            queues.iter().map(|q| Arc::from(q.as_str())).collect()
        };
        for kind in &kinds {
            *self.handled.entry(kind.clone()).or_default() += 1;
        }
        let worker = Worker {
            slots,
            kinds,
            queues,
            shares: None,
            busy: HashSet::default(),
            keyed: HashMap::default(),
            last_seen: now,
            draining: false,
        };
        self.workers.insert(id, worker);
    }

    /// The worker gives its queues these weights: while several of them have tasks ready,
    /// its slots go to them in proportion (all 1, the default: by rank alone).
    pub fn set_weights(&mut self, id: WorkerId, weights: &[(String, u32)]) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        worker.shares = weights.iter().any(|(_, w)| *w != 1).then(|| {
            Box::new(Shares {
                weights: weights
                    .iter()
                    .map(|(q, w)| (Arc::from(q.as_str()), (*w).max(1)))
                    .collect(),
                pass: HashMap::default(),
                now: 0,
            })
        });
    }

    /// The worker holds these attempts (with their task's concurrency key) from before it
    /// reconnected: they keep their slot, count under their key, and are not run again (the
    /// caller passes only tasks that are still unfinished; a task already running elsewhere
    /// stays there).
    pub fn hold<'k>(
        &mut self,
        id: WorkerId,
        attempts: impl IntoIterator<Item = (TaskId, u32, Option<&'k str>)>,
    ) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        for (task, attempt, key) in attempts {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.running.entry(task) {
                slot.insert((id, attempt));
                worker.busy.insert((task, attempt));
                if let Some(key) = key {
                    worker.keyed.insert((task, attempt), self.keys.held(key));
                }
            }
        }
    }

    /// A new leader found an unfinished task of `key`: until [`Scheduler::end_reservations`]
    /// it counts as running, as it may still run on a worker that has not reconnected.
    pub fn reserve(&mut self, key: &str) {
        self.keys.reserve(key);
    }

    /// Unclaimed tasks run nowhere: their reservations end, and their keys make room.
    pub fn end_reservations(&mut self) {
        for entry in self.keys.end_reservations() {
            self.push_lane(entry);
        }
    }

    /// The worker is gone: returns the attempts it was running, which must be re-queued.
    pub fn remove_worker(&mut self, id: WorkerId) -> Vec<(TaskId, u32)> {
        let Some(worker) = self.workers.remove(&id) else {
            return Vec::new();
        };
        for kind in &worker.kinds {
            self.unhandle(kind);
        }
        for key in worker.keyed.values() {
            for entry in self.keys.stopped(key) {
                self.push_lane(entry);
            }
        }
        worker
            .busy
            .into_iter()
            .filter_map(|(task, attempt)| match self.running.get(&task) {
                Some(&(w, running)) if w == id && running == attempt => {
                    self.running.remove(&task);
                    Some((task, attempt))
                }
                _ => None,
            })
            .collect()
    }

    /// One fewer worker handles `kind`.
    fn unhandle(&mut self, kind: &str) {
        if let Some(n) = self.handled.get_mut(kind) {
            *n -= 1;
            if *n == 0 {
                self.handled.remove(kind);
            }
        }
    }

    /// Whether some connected worker has a handler for `kind` (a draining one included).
    pub fn handles(&self, kind: &str) -> bool {
        self.handled.contains_key(kind)
    }

    /// A message arrived from the worker.
    pub fn seen(&mut self, id: WorkerId, now: Instant) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.last_seen = now;
        }
    }

    /// The worker is shutting down: give it nothing more.
    pub fn drain(&mut self, id: WorkerId) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.draining = true;
        }
    }

    /// Workers silent for longer than the heartbeat timeout.
    pub fn expired(&self, now: Instant) -> Vec<WorkerId> {
        self.workers
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.last_seen) > self.heartbeat_timeout)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The task, of type `kind`, is ready to run (a keyed one once its key has room).
    pub fn enqueue(&mut self, id: TaskId, kind: &str, ready: Ready<'_>) {
        self.arrivals += 1;
        let Some((key, limit)) = ready.key else {
            self.push_to_lane(ready.queue, kind, (ready.rank(), self.arrivals, id));
            return;
        };
        let entry = Entry {
            rank: ready.rank(),
            arrival: self.arrivals,
            id,
            limit,
            queue: Arc::from(ready.queue),
            kind: Arc::from(kind),
        };
        for entry in self.keys.wait(key, entry) {
            self.push_lane(entry);
        }
    }

    /// A keyed task its key let in takes its place in its lane.
    fn push_lane(&mut self, e: Entry) {
        self.push_to_lane(&e.queue, &e.kind, (e.rank, e.arrival, e.id));
    }

    fn push_to_lane(&mut self, queue: &str, kind: &str, entry: (i64, u64, TaskId)) {
        self.ready_len += 1;
        match self
            .ready
            .iter_mut()
            .find(|l| l.kind == kind && &*l.queue == queue)
        {
            Some(lane) => lane.tasks.push(Reverse(entry)),
            None => self.ready.push(Lane {
                queue: Arc::from(queue),
                kind: kind.to_owned(),
                tasks: BinaryHeap::from([Reverse(entry)]),
            }),
        }
    }

    /// Holds exactly the queues in `paused`, releasing any other: a paused queue's ready
    /// tasks stay queued, and running ones finish.
    pub fn set_all_paused(&mut self, paused: &[String]) {
        self.paused = paused.iter().map(|q| Arc::from(q.as_str())).collect();
    }

    /// Limits exactly the queues in `limits` (name, starts per hour), as of `now`: a token bucket per queue
    /// that holds one second's worth and starts empty.
    pub fn set_rates(&mut self, limits: &[(String, u64)], now: Instant) {
        self.rates.set(limits, now);
    }

    /// When a queue held by its rate limit may start its next ready task (the leader wakes
    /// then to schedule).
    pub fn next_rate_start(&self) -> Option<Instant> {
        if self.rates.is_empty() {
            return None;
        }
        self.rates.next_start(self.ready.iter().map(|l| &*l.queue))
    }

    /// How many connected workers serve each queue.
    pub fn workers_by_queue(&self) -> HashMap<Arc<str>, u32> {
        let mut out: HashMap<Arc<str>, u32> = HashMap::default();
        for w in self.workers.values() {
            for q in &w.queues {
                *out.entry(Arc::clone(q)).or_default() += 1;
            }
        }
        out
    }

    /// Ready tasks per queue (entries not yet skipped, and keyed tasks waiting for room
    /// under their key, included).
    pub fn ready_by_queue(&self) -> HashMap<Arc<str>, usize> {
        let mut out: HashMap<Arc<str>, usize> = HashMap::default();
        for lane in &self.ready {
            *out.entry(Arc::clone(&lane.queue)).or_default() += lane.tasks.len();
        }
        for queue in self.keys.waiting_by_queue() {
            *out.entry(Arc::clone(queue)).or_default() += 1;
        }
        out
    }

    /// The worker stopped `attempt` of `id` (it finished, failed, or gave up after a stop):
    /// frees its slot, and its place under its key.
    pub fn completed(&mut self, worker: WorkerId, id: TaskId, attempt: u32) {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.busy.remove(&(id, attempt));
            if !w.keyed.is_empty()
                && let Some(key) = w.keyed.remove(&(id, attempt))
            {
                for entry in self.keys.stopped(&key) {
                    self.push_lane(entry);
                }
            }
        }
        if self.running.get(&id) == Some(&(worker, attempt)) {
            self.running.remove(&id);
        }
    }

    /// The task's running attempt no longer counts (the task finished, was cancelled, or
    /// the attempt timed out): it runs nowhere now. A worker still running that attempt
    /// keeps its slot until it reports completion.
    pub fn forget(&mut self, id: TaskId) {
        self.running.remove(&id);
    }

    /// Where the task runs, if it does.
    pub fn running_on(&self, id: TaskId) -> Option<(WorkerId, u32)> {
        self.running.get(&id).copied()
    }

    /// Ready tasks waiting for a slot or for room under their key (including stale entries
    /// not yet skipped).
    pub fn ready_len(&self) -> usize {
        self.ready_len + self.keys.waiting_len()
    }

    /// The tasks that run.
    pub fn running_tasks(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.running.keys().copied()
    }

    /// Running attempts.
    pub fn running_len(&self) -> usize {
        self.running.len()
    }

    /// A worker's capacity and how many attempts it holds.
    pub fn load(&self, id: WorkerId) -> Option<(u32, u32)> {
        self.workers
            .get(&id)
            .map(|w| (w.slots, u32::try_from(w.busy.len()).unwrap_or(u32::MAX)))
    }

    /// When a worker was last heard from.
    pub fn last_seen(&self, id: WorkerId) -> Option<Instant> {
        self.workers.get(&id).map(|w| w.last_seen)
    }

    /// The least loaded worker with a free slot, serving `queue`, with a handler for `kind`.
    fn best_worker(&self, queue: &str, kind: &str) -> Option<WorkerId> {
        self.workers
            .iter()
            .filter(|(_, w)| w.free() > 0 && w.kinds.contains(kind) && w.queues.contains(queue))
            .max_by_key(|(id, w)| (w.free(), std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
    }

    /// Hands ready tasks to free slots until no ready task has a free worker that can run
    /// it, as of `now` (for the rate limits). `next_attempt` gives a task's next attempt
    /// number, or `None` if it is no longer queued (finished or cancelled since it was
    /// enqueued); such entries are dropped.
    pub fn assign(
        &mut self,
        now: Instant,
        mut next_attempt: impl FnMut(TaskId) -> Option<u32>,
    ) -> Vec<Assign> {
        let mut out = Vec::new();
        let limited = !self.rates.is_empty();
        if limited {
            self.rates.refill(now);
        }
        while self.ready_len > 0 {
            // The lowest-ranked head among the lanes, neither paused nor held by their
            // rate, that some free worker can run.
            let pick = self
                .ready
                .iter()
                .enumerate()
                .filter(|(_, l)| self.paused.is_empty() || !self.paused.contains(&l.queue))
                .filter(|(_, l)| !limited || self.rates.allows(&l.queue))
                .filter_map(|(i, l)| {
                    l.tasks
                        .peek()
                        .map(|Reverse((rank, arrival, _))| ((*rank, *arrival), i, l))
                })
                .filter_map(|(key, i, l)| self.best_worker(&l.queue, &l.kind).map(|w| (key, i, w)))
                .min_by_key(|&(key, ..)| key);
            let Some((_, mut index, worker)) = pick else {
                break;
            };
            // A worker with weighted queues takes from its ready queue of lowest pass.
            if let Some(w) = self.workers.get(&worker)
                && let Some(shares) = w.shares.as_deref()
            {
                let fairest = self
                    .ready
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| w.queues.contains(&l.queue) && w.kinds.contains(&l.kind))
                    .filter(|(_, l)| self.paused.is_empty() || !self.paused.contains(&l.queue))
                    .filter(|(_, l)| !limited || self.rates.allows(&l.queue))
                    .filter_map(|(i, l)| {
                        let Reverse((rank, arrival, _)) = l.tasks.peek()?;
                        Some(((shares.pass_of(&l.queue), *rank, *arrival), i))
                    })
                    .min_by_key(|(key, _)| *key);
                if let Some((_, i)) = fairest {
                    index = i;
                }
            }
            let Some(lane) = self.ready.get_mut(index) else {
                break;
            };
            let Some(Reverse((_, arrival, id))) = lane.tasks.pop() else {
                break;
            };
            let queue = limited.then(|| Arc::clone(&lane.queue));
            if let Some(shares) = self
                .workers
                .get_mut(&worker)
                .and_then(|w| w.shares.as_deref_mut())
            {
                shares.took(&lane.queue);
            }
            if lane.tasks.is_empty() {
                self.ready.swap_remove(index);
            }
            self.ready_len -= 1;
            let attempt = if self.running.contains_key(&id) {
                None
            } else {
                next_attempt(id)
            };
            let key = match self.keys.left_lane(arrival, attempt.is_some()) {
                Some((key, admitted)) => {
                    for entry in admitted {
                        self.push_lane(entry);
                    }
                    Some(key)
                }
                None => None,
            };
            let Some(attempt) = attempt else {
                continue;
            };
            if let Some(queue) = queue {
                self.rates.take(&queue);
            }
            let mut counted_twice = None;
            if let Some(w) = self.workers.get_mut(&worker) {
                w.busy.insert((id, attempt));
                if let Some(key) = key {
                    // The worker may still hold this very attempt (a task forgotten and
                    // submitted again): it counts under its key once.
                    if w.keyed.insert((id, attempt), Arc::clone(&key)).is_some() {
                        counted_twice = Some(key);
                    }
                }
            }
            if let Some(key) = counted_twice {
                for entry in self.keys.stopped(&key) {
                    self.push_lane(entry);
                }
            }
            self.running.insert(id, (worker, attempt));
            out.push(Assign {
                worker,
                id,
                attempt,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u128) -> TaskId {
        TaskId(n)
    }

    fn kinds() -> Vec<String> {
        vec!["noop".to_string(), "sleep".to_string()]
    }

    #[test]
    fn tasks_go_only_to_workers_with_their_handler_oldest_first() {
        let now = Instant::now();
        let mut s = Scheduler::new(Duration::from_secs(1));
        s.add_worker(1, 4, ["sleep".to_string()], &[], now);
        s.enqueue(t(1), "render", Ready::DEFAULT);
        s.enqueue(t(2), "sleep", Ready::DEFAULT);
        s.enqueue(t(3), "sleep", Ready::DEFAULT);
        let got: Vec<TaskId> = s
            .assign(now, |_| Some(1))
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(
            got,
            vec![t(2), t(3)],
            "nobody renders yet; the sleeps go in order"
        );
        assert_eq!(s.ready_len(), 1);
        s.add_worker(2, 1, ["render".to_string()], &[], now);
        s.enqueue(t(4), "sleep", Ready::DEFAULT);
        let got = s.assign(now, |_| Some(1));
        assert_eq!(
            got,
            vec![
                Assign {
                    worker: 2,
                    id: t(1),
                    attempt: 1
                },
                Assign {
                    worker: 1,
                    id: t(4),
                    attempt: 1
                }
            ]
        );
    }

    fn at(queue: &str, priority: u8, since_ms: u64) -> Ready<'_> {
        Ready {
            queue,
            priority,
            since_ms,
            key: None,
        }
    }

    fn run_one_by_one(s: &mut Scheduler, worker: WorkerId) -> Vec<TaskId> {
        let mut order = Vec::new();
        while let Some(a) = s.assign(Instant::now(), |_| Some(1)).first().copied() {
            s.completed(worker, a.id, a.attempt);
            order.push(a.id);
        }
        order
    }

    #[test]
    fn higher_priority_first_then_arrival() {
        let now = Instant::now();
        let mut s = Scheduler::new(Duration::from_secs(1));
        for (n, p) in [(1, 0), (2, 5), (3, 9), (4, 5), (5, 0), (6, 9)] {
            s.enqueue(t(n), "noop", at("default", p, 10_000));
        }
        s.add_worker(1, 1, kinds(), &[], now);
        let order = run_one_by_one(&mut s, 1);
        assert_eq!(order, [3, 6, 2, 4, 1, 5].map(t));
    }

    #[test]
    fn waiting_ages_a_task_past_later_higher_ones() {
        // A priority-0 task ready at 0 s outranks priority-9 tasks ready after 9 s, and
        // only those: it is passed by tasks that arrived less than 9 aging steps later.
        let now = Instant::now();
        let mut s = Scheduler::new(Duration::from_secs(1));
        let step = TaskSpec::AGING_MS;
        s.enqueue(t(1), "noop", at("default", 0, 100_000));
        s.enqueue(t(2), "noop", at("default", 9, 100_000 + 9 * step - 1));
        s.enqueue(t(3), "noop", at("default", 9, 100_000 + 9 * step + 1));
        s.enqueue(t(4), "noop", at("default", 4, 100_000 + 4 * step));
        s.add_worker(1, 1, kinds(), &[], now);
        assert_eq!(run_one_by_one(&mut s, 1), [2, 1, 4, 3].map(t));
    }

    #[test]
    fn a_task_goes_only_to_a_worker_of_its_queue() {
        let now = Instant::now();
        let mut s = Scheduler::new(Duration::from_secs(1));
        s.enqueue(t(1), "noop", at("critical", 0, 0));
        s.enqueue(t(2), "noop", at("default", 9, 0));
        s.add_worker(1, 4, kinds(), &["critical".to_string()], now);
        let got = s.assign(now, |_| Some(1));
        assert_eq!(
            got.iter().map(|a| (a.worker, a.id)).collect::<Vec<_>>(),
            [(1, t(1))]
        );
        s.add_worker(2, 4, kinds(), &[], now);
        let got = s.assign(now, |_| Some(1));
        assert_eq!(
            got.iter().map(|a| (a.worker, a.id)).collect::<Vec<_>>(),
            [(2, t(2))]
        );
        assert_eq!(s.ready_len(), 0);
    }

    fn keyed(key: &str, limit: u32, since_ms: u64) -> Ready<'_> {
        Ready {
            key: Some((key, limit)),
            since_ms,
            ..Ready::DEFAULT
        }
    }

    fn ids(assigned: &[Assign]) -> Vec<TaskId> {
        assigned.iter().map(|a| a.id).collect()
    }

    #[test]
    fn a_key_runs_at_most_its_limit_and_frees_room_only_when_the_worker_stops() {
        let now = Instant::now();
        let mut s = Scheduler::new(Duration::from_secs(1));
        s.add_worker(1, 10, kinds(), &[], now);
        for n in 1..=5 {
            s.enqueue(t(n), "noop", keyed("tenant:1", 2, n as u64));
        }
        s.enqueue(t(6), "noop", at("default", 0, 100));
        s.enqueue(t(7), "noop", keyed("tenant:2", 1, 1));
        let first = s.assign(now, |_| Some(1));
        assert_eq!(
            ids(&first),
            [1, 7, 2, 6].map(t),
            "two of tenant:1, one of tenant:2"
        );
        assert_eq!(s.ready_len(), 3);
        assert_eq!(s.keys.running("tenant:1"), 2);
        // The leader forgets an attempt that timed out; its worker still runs it.
        s.forget(t(1));
        assert!(
            s.assign(now, |_| Some(1)).is_empty(),
            "the key is still full"
        );
        s.completed(1, t(1), 1);
        assert_eq!(ids(&s.assign(now, |_| Some(1))), [t(3)]);
        // A worker that is gone runs nothing of the key any more.
        assert_eq!(s.remove_worker(1).len(), 4);
        assert_eq!(s.keys.running("tenant:1"), 0);
        s.add_worker(2, 10, kinds(), &[], now);
        assert_eq!(ids(&s.assign(now, |_| Some(1))), [4, 5].map(t));
    }

    #[test]
    fn a_stale_keyed_entry_makes_room_for_the_next() {
        let now = Instant::now();
        let mut s = Scheduler::new(Duration::from_secs(1));
        s.add_worker(1, 10, kinds(), &[], now);
        for n in 1..=3 {
            s.enqueue(t(n), "noop", keyed("k", 1, n as u64));
        }
        // The first was cancelled while it waited: the second takes the key's one place.
        let got = s.assign(now, |id| (id != t(1)).then_some(1));
        assert_eq!(ids(&got), [t(2)]);
        assert_eq!(s.ready_len(), 1);
        s.completed(1, t(2), 1);
        assert_eq!(ids(&s.assign(now, |_| Some(1))), [t(3)]);
    }

    #[test]
    fn a_new_leader_counts_unclaimed_keyed_tasks_until_the_grace_ends() {
        let now = Instant::now();
        let mut s = Scheduler::new(Duration::from_secs(1));
        // Found unfinished at election: two of key k, which may run on workers not back yet.
        s.reserve("k");
        s.reserve("k");
        s.add_worker(1, 10, kinds(), &[], now);
        s.enqueue(t(3), "noop", keyed("k", 2, 3));
        assert!(
            s.assign(now, |_| Some(1)).is_empty(),
            "both places may be taken"
        );
        // One comes back with its worker: it counts in place of its reservation.
        s.add_worker(2, 10, kinds(), &[], now);
        s.hold(2, [(t(1), 1, Some("k"))]);
        assert!(s.assign(now, |_| Some(1)).is_empty());
        assert_eq!(s.keys.running("k"), 2);
        // The grace ends: the other runs nowhere, so there is room for one.
        s.end_reservations();
        assert_eq!(ids(&s.assign(now, |_| Some(1))), [t(3)]);
        assert_eq!(s.keys.running("k"), 2);
        s.completed(2, t(1), 1);
        assert_eq!(s.keys.running("k"), 1);
    }

    #[test]
    fn a_rate_limited_queue_starts_tasks_as_its_bucket_allows_and_says_when_next() {
        let now = Instant::now();
        let mut s = Scheduler::new(Duration::from_secs(1));
        s.add_worker(1, 10, kinds(), &["slow".into(), "default".into()], now);
        s.set_rates(&[("slow".into(), 2 * 3600)], now);
        for n in 1..=4 {
            s.enqueue(t(n), "noop", at("slow", 0, n as u64));
        }
        s.enqueue(t(5), "noop", at("default", 0, 5));
        assert_eq!(
            ids(&s.assign(now, |_| Some(1))),
            [t(5)],
            "the bucket starts empty"
        );
        assert_eq!(s.next_rate_start(), Some(now + Duration::from_millis(500)));
        let later = now + Duration::from_millis(1_100);
        assert_eq!(ids(&s.assign(later, |_| Some(1))), [1, 2].map(t), "2/s");
        assert_eq!(
            s.next_rate_start(),
            Some(later + Duration::from_millis(500))
        );
        s.set_rates(&[], later);
        assert_eq!(ids(&s.assign(later, |_| Some(1))), [3, 4].map(t));
        assert_eq!(s.next_rate_start(), None);
    }

    #[test]
    fn a_workers_weighted_queues_share_its_slots_by_weight() {
        let now = Instant::now();
        let mut s = Scheduler::new(Duration::from_secs(1));
        s.add_worker(1, 1, kinds(), &["hi".into(), "lo".into()], now);
        s.set_weights(1, &[("hi".into(), 3), ("lo".into(), 1)]);
        for n in 0..40u64 {
            // The low queue's tasks are older: by rank alone they would all go first.
            s.enqueue(t(u128::from(n)), "noop", at("lo", 0, n));
            s.enqueue(t(u128::from(100 + n)), "noop", at("hi", 0, 1_000 + n));
        }
        let order = run_one_by_one(&mut s, 1);
        let hi_in = |k: usize| order.iter().take(k).filter(|id| id.0 >= 100).count();
        assert_eq!(hi_in(20), 15, "three of four: {order:?}");
        assert_eq!(hi_in(40), 30);
        assert_eq!(order.len(), 80, "then the rest");
        // Without weights, rank alone: every older low task first.
        let mut plain = Scheduler::new(Duration::from_secs(1));
        plain.add_worker(1, 1, kinds(), &["hi".into(), "lo".into()], now);
        plain.set_weights(1, &[("hi".into(), 1), ("lo".into(), 1)]);
        for n in 0..4u64 {
            plain.enqueue(t(u128::from(n)), "noop", at("lo", 0, n));
            plain.enqueue(t(u128::from(100 + n)), "noop", at("hi", 0, 1_000 + n));
        }
        let order = run_one_by_one(&mut plain, 1);
        assert_eq!(&order[..4], [0, 1, 2, 3].map(t));
    }

    #[test]
    fn a_paused_queue_holds_its_tasks_until_resumed() {
        let now = Instant::now();
        let mut s = Scheduler::new(Duration::from_secs(1));
        s.add_worker(1, 4, kinds(), &["a".to_string(), "b".to_string()], now);
        s.set_all_paused(&["a".to_string()]);
        s.enqueue(t(1), "noop", at("a", 9, 0));
        s.enqueue(t(2), "noop", at("b", 0, 5));
        let got: Vec<TaskId> = s.assign(now, |_| Some(1)).iter().map(|a| a.id).collect();
        assert_eq!(got, [t(2)]);
        assert_eq!(s.ready_by_queue().get("a"), Some(&1));
        s.set_all_paused(&[]);
        let got: Vec<TaskId> = s.assign(now, |_| Some(1)).iter().map(|a| a.id).collect();
        assert_eq!(got, [t(1)]);
    }

    #[test]
    fn fills_the_least_loaded_worker_first() {
        let now = Instant::now();
        let mut s = Scheduler::new(Duration::from_secs(1));
        s.add_worker(1, 2, kinds(), &[], now);
        s.add_worker(2, 4, kinds(), &[], now);
        for n in 0..5 {
            s.enqueue(t(n), "noop", Ready::DEFAULT);
        }
        let got = s.assign(now, |_| Some(1));
        assert_eq!(got.len(), 5);
        let on_2 = got.iter().filter(|a| a.worker == 2).count();
        assert_eq!(
            on_2, 3,
            "worker 2 has more free slots, so it takes more: {got:?}"
        );
        s.enqueue(t(8), "noop", Ready::DEFAULT);
        s.enqueue(t(9), "noop", Ready::DEFAULT);
        assert_eq!(
            s.assign(now, |_| Some(1)).len(),
            1,
            "one slot of six was left"
        );
        assert_eq!(s.ready_len(), 1);
    }

    #[test]
    fn no_slot_no_assignment_and_finished_tasks_are_skipped() {
        let now = Instant::now();
        let mut s = Scheduler::new(Duration::from_secs(1));
        s.enqueue(t(1), "noop", Ready::DEFAULT);
        assert!(s.assign(now, |_| Some(1)).is_empty(), "no worker yet");
        s.add_worker(1, 1, kinds(), &[], now);
        s.enqueue(t(2), "noop", Ready::DEFAULT);
        let got = s.assign(now, |id| (id != t(1)).then_some(1));
        assert_eq!(
            got,
            vec![Assign {
                worker: 1,
                id: t(2),
                attempt: 1
            }]
        );
        assert_eq!(s.ready_len(), 0);
    }

    #[test]
    fn a_dead_worker_gives_back_its_tasks() {
        let now = Instant::now();
        let mut s = Scheduler::new(Duration::from_millis(1000));
        s.add_worker(1, 2, kinds(), &[], now);
        s.add_worker(2, 2, kinds(), &[], now);
        s.enqueue(t(1), "noop", Ready::DEFAULT);
        s.enqueue(t(2), "noop", Ready::DEFAULT);
        let got = s.assign(now, |_| Some(1));
        assert_eq!(got.len(), 2);
        s.seen(2, now + Duration::from_millis(900));
        assert_eq!(s.expired(now + Duration::from_millis(1500)), vec![1]);
        let lost = s.remove_worker(1);
        assert_eq!(lost.len(), 1);
        assert_eq!(s.running_len(), 1);
    }

    #[test]
    fn it_knows_which_types_some_worker_handles() {
        let now = Instant::now();
        let mut s = Scheduler::new(Duration::from_secs(1));
        assert!(!s.handles("noop"));
        s.add_worker(1, 1, kinds(), &[], now);
        s.add_worker(2, 1, ["noop".to_string()], &[], now);
        s.remove_worker(1);
        assert!(s.handles("noop") && !s.handles("sleep"));
        s.remove_worker(2);
        assert!(!s.handles("noop"));
    }

    #[test]
    fn completion_frees_the_slot_and_draining_takes_nothing() {
        let now = Instant::now();
        let mut s = Scheduler::new(Duration::from_secs(1));
        s.add_worker(1, 1, kinds(), &[], now);
        s.enqueue(t(1), "noop", Ready::DEFAULT);
        s.enqueue(t(2), "noop", Ready::DEFAULT);
        assert_eq!(s.assign(now, |_| Some(1)).len(), 1);
        s.completed(1, t(1), 1);
        s.drain(1);
        assert!(s.assign(now, |_| Some(1)).is_empty());
        assert_eq!(s.ready_len(), 1);
    }

    #[test]
    fn reported_running_tasks_are_not_run_again() {
        let now = Instant::now();
        let mut s = Scheduler::new(Duration::from_secs(1));
        s.add_worker(7, 2, kinds(), &[], now);
        s.hold(7, [(t(1), 1, None)]);
        s.enqueue(t(1), "noop", Ready::DEFAULT);
        s.enqueue(t(2), "noop", Ready::DEFAULT);
        let got = s.assign(now, |_| Some(1));
        assert_eq!(
            got,
            vec![Assign {
                worker: 7,
                id: t(2),
                attempt: 1
            }]
        );
        assert_eq!(s.running_on(t(1)), Some((7, 1)));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            Join {
                worker: u64,
                slots: u32,
                sleeps: bool,
            },
            Leave {
                worker: u64,
            },
            Drain {
                worker: u64,
            },
            Enqueue {
                task: u128,
            },
            Complete {
                pick: usize,
            },
            Forget {
                task: u128,
            },
            Assign,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0..4u64, 1..4u32, any::<bool>()).prop_map(|(worker, slots, sleeps)| Op::Join {
                    worker,
                    slots,
                    sleeps
                }),
                (0..4u64).prop_map(|worker| Op::Leave { worker }),
                (0..4u64).prop_map(|worker| Op::Drain { worker }),
                (0..24u128).prop_map(|task| Op::Enqueue { task }),
                (0..64usize).prop_map(|pick| Op::Complete { pick }),
                (0..24u128).prop_map(|task| Op::Forget { task }),
                Just(Op::Assign),
            ]
        }

        proptest! {
            /// Whatever happens, no worker holds more tasks than its slots, a running task is
            /// never assigned again, every assignment goes to a worker with the task's
            /// handler, and the running map agrees with the workers' slots. (A task forgotten
            /// as finished may be held by a worker's stale attempt and run anew if its id is
            /// submitted again after its result expired; that is at-least-once, by design.)
            #[test]
            fn assignments_respect_slots_types_and_uniqueness(ops in proptest::collection::vec(op(), 1..200)) {
                let now = Instant::now();
                let mut s = Scheduler::new(Duration::from_secs(1));
                let mut kind_of: HashMap<TaskId, &str> = HashMap::default();
                let mut handles: HashMap<WorkerId, bool> = HashMap::default();
                for op in ops {
                    match op {
                        Op::Join { worker, slots, sleeps } => {
                            if handles.contains_key(&worker) {
                                continue;
                            }
                            let kinds = if sleeps { kinds() } else { vec!["noop".to_string()] };
                            s.add_worker(worker, slots, kinds, &[], now);
                            handles.insert(worker, sleeps);
                        }
                        Op::Leave { worker } => {
                            handles.remove(&worker);
                            for (task, _) in s.remove_worker(worker) {
                                let kind = kind_of.get(&task).copied().unwrap_or("noop");
                                s.enqueue(task, kind, Ready::DEFAULT);
                            }
                        }
                        Op::Drain { worker } => s.drain(worker),
                        Op::Enqueue { task } => {
                            // A task's type and key never change: even ids sleep, and
                            // multiples of 3 count under one key limited to 2.
                            let kind = if task % 2 == 0 { "sleep" } else { "noop" };
                            kind_of.insert(TaskId(task), kind);
                            let ready = if task % 3 == 0 { keyed("k", 2, 0) } else { Ready::DEFAULT };
                            s.enqueue(TaskId(task), kind, ready);
                        }
                        Op::Complete { pick } => {
                            let mut running: Vec<(TaskId, WorkerId, u32)> = s.running.iter().map(|(t, (w, a))| (*t, *w, *a)).collect();
                            running.sort();
                            if let Some(&(task, worker, attempt)) = running.get(pick % running.len().max(1)) {
                                s.completed(worker, task, attempt);
                            }
                        }
                        Op::Forget { task } => s.forget(TaskId(task)),
                        Op::Assign => {
                            let before: HashSet<TaskId> = s.running.keys().copied().collect();
                            for a in s.assign(now, |_| Some(1)) {
                                prop_assert!(!before.contains(&a.id), "{} assigned while running", a.id);
                                let kind = kind_of.get(&a.id).copied().unwrap_or("noop");
                                let can_sleep = handles.get(&a.worker).copied().unwrap_or(false);
                                prop_assert!(kind == "noop" || can_sleep, "{kind} went to a worker without its handler");
                            }
                        }
                    }
                    for (id, w) in &s.workers {
                        prop_assert!(w.busy.len() as u32 <= w.slots, "worker {id} over its slots");
                    }
                    for (task, (worker, attempt)) in &s.running {
                        let held = s.workers.get(worker).is_some_and(|w| w.busy.contains(&(*task, *attempt)));
                        prop_assert!(held, "running {task} is not in worker {worker}'s slots");
                    }
                    let keyed_busy: usize = s.workers.values().map(|w| w.keyed.len()).sum();
                    prop_assert!(keyed_busy <= 2, "{keyed_busy} attempts of a key limited to 2");
                    prop_assert_eq!(keyed_busy as u32, s.keys.running("k"));
                }
            }
        }
    }
}
