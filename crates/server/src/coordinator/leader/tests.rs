//! The leader's decisions, driven by hand over a real task table: no actor, no clock.

use super::super::clock::system_ms;
use super::*;
use bytes::Bytes;
use dtc_proto::message::{RequestBody, WorkerMsg};
use dtc_proto::schedule::ScheduleOp;
use dtc_proto::status::{AdminRequest, AdminResponse};
use dtc_proto::{Outcome, TaskSpec, TaskState};
use tokio::sync::oneshot;

const GRACE: Duration = Duration::from_millis(500);

fn config() -> LeaderConfig {
    LeaderConfig {
        replica: "test".into(),
        heartbeat_timeout: Duration::from_secs(1),
        reclaim_grace: GRACE,
        max_payload: 1024,
        initial_settings: Retention::default(),
    }
}

fn spec(n: u128) -> TaskSpec {
    TaskSpec {
        id: TaskId(n),
        kind: "noop".into(),
        payload: Bytes::from_static(b"in"),
        max_attempts: 3,
        options: None,
    }
}

fn submit(n: u128, wait: bool) -> RequestBody {
    RequestBody::Submit {
        task: spec(n),
        wait,
    }
}

fn done(n: u128, attempt: u32) -> WorkerMsg {
    WorkerMsg::Completed(Completion {
        id: TaskId(n),
        attempt,
        outcome: Outcome::Succeeded(Bytes::from_static(b"out")),
        retry: dtc_proto::Retry::Policy,
    })
}

/// A leader, its table, the log index it has reached, and the time.
struct Shard {
    leader: Leader,
    table: TaskTable,
    index: u64,
    now: Instant,
    /// Worker queues, kept open.
    queues: Vec<mpsc::Receiver<CoordMsg>>,
    /// Clients' connections, kept open (a reply whose client has gone is dropped).
    clients: Vec<mpsc::Receiver<dtc_proto::connection::WithPermit<dtc_proto::message::Response>>>,
}

impl Shard {
    /// A leader elected over `table`, its barrier applied.
    fn ready(table: TaskTable) -> Self {
        let mut shard = Self::elected(table);
        let out = shard.barrier();
        shard.commit(out);
        assert!(shard.leader.is_ready());
        shard
    }

    /// A leader elected over `table`, its barrier proposed but not yet applied.
    fn elected(table: TaskTable) -> Self {
        let now = Instant::now();
        let mut leader = Leader::elected(config(), &table, system_ms(), now);
        assert!(leader.take_barrier_due());
        assert!(!leader.take_barrier_due(), "the barrier is proposed once");
        Self {
            leader,
            table,
            index: 1,
            now,
            queues: Vec::new(),
            clients: Vec::new(),
        }
    }

    /// The barrier is applied; what the leader does then.
    fn barrier(&mut self) -> Effects {
        let mut out = Effects::default();
        self.leader
            .barrier_applied(self.index, &self.table, self.now, &mut out);
        out
    }

    fn worker(&mut self, worker: WorkerId, slots: u32, running: Vec<(TaskId, u32)>) {
        let (tx, rx) = mpsc::channel(64);
        self.queues.push(rx);
        let w = NewWorker {
            worker,
            name: format!("w{worker}"),
            peer: SocketAddr::from(([127, 0, 0, 1], 9000)),
            tx,
            slots,
            capacity: slots,
            kinds: vec!["noop".into()],
            queues: Vec::new(),
            weights: Vec::new(),
            running,
            cancel: CancellationToken::new(),
        };
        self.leader.worker_up(w, &self.table, self.now);
    }

    fn request(&mut self, body: RequestBody, req: u64) -> Effects {
        let (reply, rx) = Reply::for_test(req);
        self.clients.push(rx);
        let mut out = Effects::default();
        self.leader
            .request(body, reply, &self.table, self.now, &mut out);
        out
    }

    fn worker_says(&mut self, worker: WorkerId, msg: WorkerMsg) -> Effects {
        let mut out = Effects::default();
        self.leader.worker_msg(worker, msg, self.now, &mut out);
        out
    }

    /// Commits and applies every proposed command in one entry, the leader told of
    /// each result; what that made it do next (answers, more proposals).
    fn commit(&mut self, mut out: Effects) -> Effects {
        self.index += 1;
        let mut next = Effects::default();
        for (cmd, then) in std::mem::take(&mut out.propose) {
            let applied = self.table.apply(cmd);
            self.leader
                .applied(applied, then, self.index, &self.table, self.now, &mut next);
        }
        next.answers.extend(out.answers);
        next
    }

    /// Time passes by `ms`: the leader's tick, with what it decided.
    fn advance(&mut self, ms: u64) -> Effects {
        self.now += Duration::from_millis(ms);
        let mut out = Effects::default();
        self.leader.tick(self.now, &self.table, &mut out);
        out
    }

    /// The assignments the leader hands out now, as (worker, task, attempt).
    fn schedule(&mut self) -> Vec<(WorkerId, u128, u32)> {
        let mut out = Effects::default();
        self.leader.schedule(&self.table, self.now, &mut out);
        out.sends
            .into_iter()
            .filter_map(|(w, msg)| match msg {
                CoordMsg::Assign(a) => Some((w, a.id.0, a.attempt)),
                _ => None,
            })
            .collect()
    }
}

/// The request numbers answered, with whether each answer is a finished task.
fn answered(out: &Effects) -> Vec<(u64, Result<TaskState, WireError>)> {
    out.answers
        .iter()
        .map(|(r, a)| (r.req(), a.as_ref().map(|v| v.state).map_err(Clone::clone)))
        .collect()
}

fn proposed(out: &Effects) -> Vec<&'static str> {
    out.propose
        .iter()
        .map(|(cmd, _)| match cmd {
            Command::Submit { .. } => "submit",
            Command::Complete { .. } => "complete",
            Command::Requeue { .. } => "requeue",
            Command::Cancel { .. } => "cancel",
            Command::Retry { .. } => "retry",
            Command::Lapse { .. } => "lapse",
            Command::PauseQueue { .. } => "pause queue",
            Command::LimitQueue { .. } => "limit queue",
            Command::AddSchedule { .. } => "add schedule",
            Command::PauseSchedule { .. } => "pause schedule",
            Command::DeleteSchedule { .. } => "delete schedule",
            Command::TriggerSchedule { .. } => "trigger schedule",
            Command::Fire { .. } => "fire",
            Command::Purge { .. } => "purge",
            Command::SetTypeDefaults { .. } => "type defaults",
            Command::Expire { .. } => "expire",
            Command::Configure { .. } => "configure",
        })
        .collect()
}

#[test]
fn a_new_shards_first_leader_proposes_its_settings_at_the_barrier() {
    let table = TaskTable::new(Retention::default());
    let mut leader = Leader::elected(config(), &table, system_ms(), Instant::now());
    let mut out = Effects::default();
    leader.barrier_applied(1, &table, Instant::now(), &mut out);
    assert_eq!(proposed(&out), ["configure"]);
}

#[test]
fn a_waiting_submit_runs_unlogged_and_is_logged_with_its_completion() {
    let mut s = Shard::ready(TaskTable::new(Retention::default()));
    s.worker(1, 2, Vec::new());
    let out = s.request(submit(1, true), 10);
    assert!(proposed(&out).is_empty(), "nothing logged on arrival");
    assert!(out.answers.is_empty());
    assert_eq!(s.schedule(), [(1, 1, 1)], "it runs at once");
    let out = s.worker_says(1, done(1, 1));
    assert_eq!(proposed(&out), ["submit", "complete"], "one entry for both");
    let out = s.commit(out);
    assert_eq!(answered(&out), [(10, Ok(TaskState::Succeeded))]);
    assert_eq!(s.leader.early.ahead(), 0);
}

#[test]
fn a_submit_without_wait_is_proposed_at_once_and_runs_ahead_of_its_commit() {
    let mut s = Shard::ready(TaskTable::new(Retention::default()));
    s.worker(1, 2, Vec::new());
    let out = s.request(submit(1, false), 10);
    assert_eq!(proposed(&out), ["submit"]);
    assert_eq!(
        s.schedule(),
        [(1, 1, 1)],
        "it runs before its submit commits"
    );
    let out = s.commit(out);
    assert_eq!(answered(&out), [(10, Ok(TaskState::Running))]);
    assert!(s.schedule().is_empty(), "committing does not run it twice");
    let out = s.worker_says(1, done(1, 1));
    assert_eq!(proposed(&out), ["complete"]);
}

#[test]
fn a_completion_from_a_session_that_does_not_hold_the_attempt_changes_nothing() {
    let mut s = Shard::ready(TaskTable::new(Retention::default()));
    s.worker(1, 1, Vec::new());
    s.worker(2, 1, Vec::new());
    let out = s.request(submit(1, false), 10);
    let running = s.schedule();
    s.commit(out);
    let (holder, _, _) = running[0];
    let other = if holder == 1 { 2 } else { 1 };
    assert!(proposed(&s.worker_says(other, done(1, 1))).is_empty());
    assert_eq!(s.leader.sched.running_on(TaskId(1)), Some((holder, 1)));
    assert_eq!(proposed(&s.worker_says(holder, done(1, 1))), ["complete"]);
}

#[test]
fn a_lost_worker_has_its_attempts_requeued_and_run_again() {
    let mut s = Shard::ready(TaskTable::new(Retention::default()));
    s.worker(1, 1, Vec::new());
    let out = s.request(submit(1, true), 10);
    assert!(proposed(&out).is_empty());
    assert_eq!(s.schedule(), [(1, 1, 1)]);
    let mut out = Effects::default();
    s.leader.drop_worker(1, 0, &mut out);
    // The unlogged task is logged first, then its lost attempt.
    assert_eq!(proposed(&out), ["submit", "requeue"]);
    s.commit(out);
    s.worker(2, 1, Vec::new());
    assert_eq!(s.schedule(), [(2, 1, 2)], "the second attempt");
}

#[test]
fn a_reconnecting_workers_claim_is_taken_only_for_its_tasks_current_attempt() {
    // Tasks 1 and 2 queued by an earlier leader; task 2 already lost one attempt.
    let mut table = TaskTable::new(Retention::default());
    for n in [1, 2] {
        table.apply(Command::Submit {
            spec: spec(n),
            at_ms: 0,
        });
    }
    table.apply(Command::Requeue {
        id: TaskId(2),
        attempt: 1,
        at_ms: 0,
    });
    let mut s = Shard::ready(table);
    // It says it runs attempt 1 of both, and of a task the table does not hold.
    s.worker(1, 4, vec![(TaskId(1), 1), (TaskId(2), 1), (TaskId(9), 1)]);
    s.worker(2, 4, Vec::new());
    assert!(
        s.schedule().is_empty(),
        "within the grace, nothing is re-queued"
    );
    s.now += GRACE;
    let mut out = Effects::default();
    s.leader.tick(s.now, &s.table, &mut out);
    // Task 1 is left with the worker that claimed it; task 2 runs again, attempt 2.
    let mut runs = s.schedule();
    runs.sort_unstable();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!((runs[0].1, runs[0].2), (2, 2));
    assert_eq!(proposed(&s.worker_says(1, done(1, 1))), ["complete"]);
}

#[test]
fn a_completion_sent_before_the_barrier_for_a_claimed_attempt_counts_with_the_claim() {
    // Task 1 was assigned under an earlier leader; its worker finished it while no one
    // led, registers with the new leader before its barrier (claiming the attempt, as
    // it holds the completion still to send) and sends the completion at once.
    let mut table = TaskTable::new(Retention::default());
    table.apply(Command::Submit {
        spec: spec(1),
        at_ms: 0,
    });
    let mut s = Shard::elected(table);
    s.worker(1, 4, vec![(TaskId(1), 1)]);
    assert!(proposed(&s.worker_says(1, done(1, 1))).is_empty());
    // The same completion again, or one the worker did not claim, is not kept.
    assert!(proposed(&s.worker_says(1, done(1, 1))).is_empty());
    assert!(proposed(&s.worker_says(1, done(2, 1))).is_empty());
    let out = s.barrier();
    let after = proposed(&out);
    assert_eq!(
        after.iter().filter(|p| **p == "complete").count(),
        1,
        "{after:?}"
    );
    assert_eq!(s.leader.sched.running_on(TaskId(1)), None);
}

#[test]
fn a_new_leader_counts_a_keys_tasks_from_the_table_and_the_claims() {
    // Tasks 1 to 3 of key k (one at a time) were queued under an earlier leader; task 1
    // ran on a worker that comes back.
    let keyed = |n: u128| {
        // The low 32 bits of a routed id are the key's.
        let spec = spec(n << 64).with_concurrency("k", 1);
        let id = spec.id;
        (spec, id)
    };
    let mut table = TaskTable::new(Retention::default());
    let mut ids = Vec::new();
    for n in 1..=3 {
        let (spec, id) = keyed(n);
        // A ms apart: their order is their rank, not the order of their re-queueing.
        table.apply(Command::Submit {
            spec,
            at_ms: u64::try_from(n).unwrap_or(0),
        });
        ids.push(id);
    }
    let mut s = Shard::ready(table);
    s.worker(2, 4, Vec::new());
    // A task of the key submitted now waits: any of the three may run on a worker
    // that is not back yet.
    let (fourth, _) = keyed(4);
    let out = s.request(
        RequestBody::Submit {
            task: fourth,
            wait: false,
        },
        10,
    );
    s.commit(out);
    assert!(s.schedule().is_empty());
    s.worker(1, 4, vec![(ids[0], 1)]);
    s.now += GRACE;
    let mut out = Effects::default();
    s.leader.tick(s.now, &s.table, &mut out);
    assert!(
        s.schedule().is_empty(),
        "past the grace, the claimed attempt still holds the key"
    );
    let out = s.worker_says(
        1,
        WorkerMsg::Completed(Completion {
            id: ids[0],
            attempt: 1,
            outcome: Outcome::Succeeded(Bytes::new()),
            retry: dtc_proto::Retry::Policy,
        }),
    );
    assert_eq!(proposed(&out), ["complete"]);
    s.commit(out);
    let runs = s.schedule();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(TaskId(runs[0].1), ids[1], "the next of the key, in order");
}

#[test]
fn a_schedule_added_through_the_leader_fires_each_tick_as_a_task() {
    use dtc_proto::schedule::{CatchUp, Overlap, ScheduleSpec, schedule_task_id};
    let mut s = Shard::ready(TaskTable::new(Retention::default()));
    s.worker(1, 4, Vec::new());
    let spec = ScheduleSpec {
        name: "every-second".into(),
        cron: "* * * * * *".into(),
        tz: None,
        overlap: Overlap::Allow,
        catch_up: CatchUp::All,
        kind: "noop".into(),
        payload: Bytes::from_static(b"tick"),
        max_attempts: 3,
        options: None,
    };
    let (tx, mut rx) = oneshot::channel();
    let mut out = Effects::default();
    let add = AdminRequest::Schedules(ScheduleOp::Add(spec));
    s.leader.admin(add, tx, &s.table, s.now, &mut out);
    assert_eq!(proposed(&out), ["add schedule"]);
    s.commit(out);
    let added = match rx.try_recv() {
        Ok(AdminResponse::Schedules(Ok(added))) => added,
        other => panic!("the schedule is added: {other:?}"),
    };
    let next = added.first().and_then(|st| st.next_ms).unwrap_or(0);
    let until_tick = next.saturating_sub(s.leader.at_ms(s.now));
    assert!(
        until_tick <= 1_000,
        "the next whole second: {until_tick} ms"
    );
    // The leader wakes for the tick, proposes it, and runs its task.
    let wake = s.leader.next_timer(s.now).map(|at| at - s.now);
    assert!(
        wake.is_some_and(|w| w <= Duration::from_millis(until_tick)),
        "{wake:?}"
    );
    let out = s.advance(until_tick);
    assert_eq!(proposed(&out), ["fire"]);
    s.commit(out);
    let runs = s.schedule();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(TaskId(runs[0].1), schedule_task_id("every-second", next));
    // Two seconds later (the worker, silent that long, is gone): two more ticks.
    let out = s.advance(2_000);
    let fires = proposed(&out).iter().filter(|p| **p == "fire").count();
    assert_eq!(fires, 2);
    s.commit(out);
    assert_eq!(
        s.leader.sched.ready_len(),
        3,
        "the lost attempt and two new tasks"
    );
}

#[test]
fn a_running_attempts_progress_shows_in_its_view_until_it_ends() {
    let mut s = Shard::ready(TaskTable::new(Retention::default()));
    s.worker(1, 1, Vec::new());
    s.worker(2, 1, Vec::new());
    let out = s.request(submit(1, false), 10);
    s.commit(out);
    let runs = s.schedule();
    let (holder, _, _) = runs[0];
    let other = if holder == 1 { 2 } else { 1 };
    let report = |fraction, message: &str| WorkerMsg::Progress {
        id: TaskId(1),
        attempt: 1,
        progress: TaskProgress::new(fraction, message),
    };
    let shown = |s: &Shard| {
        s.leader
            .view(TaskId(1), &s.table, s.now)
            .and_then(|v| v.progress)
    };
    s.worker_says(other, report(0.9, "not mine"));
    assert_eq!(shown(&s), None, "only the holder reports");
    s.worker_says(holder, report(0.5, "halfway"));
    assert_eq!(shown(&s), Some(TaskProgress::new(0.5, "halfway")));
    assert_eq!(shown(&s).map(|p| p.permille), Some(500));
    // Another worker's forged completion leaves the holder's report alone.
    s.worker_says(other, done(1, 1));
    assert_eq!(shown(&s), Some(TaskProgress::new(0.5, "halfway")));
    let out = s.worker_says(holder, done(1, 1));
    s.commit(out);
    assert_eq!(shown(&s), None, "a finished task has no progress");
    assert!(s.leader.progress.is_empty());
}

#[test]
fn tasks_run_ahead_count_against_the_queue_bound() {
    let retention = Retention {
        max_queued: 2,
        ..Retention::default()
    };
    let mut table = TaskTable::new(retention);
    table.apply(Command::Configure { retention });
    let mut s = Shard::ready(table);
    // Task 1 runs unlogged; task 2 is in the table: the bound of 2 is reached.
    s.request(submit(1, true), 10);
    let out = s.request(submit(2, false), 11);
    s.commit(out);
    // Task 3 is not run ahead; its submit goes to the table, which has room for it
    // (task 1 is not in it), and it runs once applied.
    let out = s.request(submit(3, false), 12);
    assert_eq!(proposed(&out), ["submit"]);
    s.worker(1, 8, Vec::new());
    let mut runs = s.schedule();
    runs.sort_unstable();
    assert_eq!(runs, [(1, 1, 1), (1, 2, 1)]);
    let out = s.commit(out);
    assert_eq!(answered(&out), [(12, Ok(TaskState::Queued))]);
    assert_eq!(s.schedule(), [(1, 3, 1)]);
    // With tasks 2 and 3 in the table, it refuses a fourth.
    let out = s.request(submit(4, false), 13);
    let out = s.commit(out);
    assert_eq!(answered(&out), [(13, Err(WireError::Overloaded))]);
}

/// The messages sent to workers that tell one to stop an attempt.
fn stops(out: &Effects) -> Vec<(WorkerId, u128, u32)> {
    out.sends
        .iter()
        .filter_map(|(w, msg)| match msg {
            CoordMsg::Cancel { id, attempt } => Some((*w, id.0, *attempt)),
            _ => None,
        })
        .collect()
}

#[test]
fn cancelling_a_running_task_commits_first_then_stops_its_worker() {
    let mut s = Shard::ready(TaskTable::new(Retention::default()));
    s.worker(1, 1, Vec::new());
    let out = s.request(submit(1, false), 10);
    s.commit(out);
    assert_eq!(s.schedule(), [(1, 1, 1)]);
    let out = s.request(RequestBody::Cancel { id: TaskId(1) }, 20);
    assert_eq!(proposed(&out), ["cancel"]);
    assert!(
        stops(&out).is_empty(),
        "nothing is stopped before the commit"
    );
    let out = s.commit(out);
    assert_eq!(answered(&out), [(20, Ok(TaskState::Cancelled))]);
    assert_eq!(stops(&out), [(1, 1, 1)]);
    // The slot is held until the worker reports the attempt stopped.
    s.request(submit(2, false), 11);
    assert!(s.schedule().is_empty());
    let late = s.worker_says(1, done(1, 1));
    assert!(
        proposed(&late).is_empty(),
        "its late result changes nothing"
    );
    assert_eq!(s.schedule(), [(1, 2, 1)]);
}

#[test]
fn an_attempt_past_its_timeout_is_failed_stopped_and_retried_when_due() {
    let mut s = Shard::ready(TaskTable::new(Retention::default()));
    s.worker(1, 1, Vec::new());
    let task = spec(1)
        .with_timeout(Duration::from_millis(200))
        .with_backoff(dtc_proto::Backoff {
            initial_ms: 100,
            multiplier_pct: 200,
            max_ms: 1_000,
            jitter_pct: 0,
        });
    let out = s.request(RequestBody::Submit { task, wait: false }, 10);
    assert!(s.schedule().is_empty(), "a timed task waits for its commit");
    s.commit(out);
    assert_eq!(s.schedule(), [(1, 1, 1)]);
    assert!(proposed(&s.advance(199)).is_empty());
    let out = s.advance(1);
    assert_eq!(proposed(&out), ["complete"], "the overrun is committed");
    assert_eq!(stops(&out), [(1, 1, 1)]);
    s.commit(out);
    let v = s.table.view(TaskId(1)).unwrap_or_else(|| panic!("kept"));
    assert_eq!(v.state, TaskState::Retrying);
    assert!(v.errors[0].contains("timed out"), "{:?}", v.errors);
    // The worker stops the attempt: its slot frees, its result counts for nothing.
    assert!(proposed(&s.worker_says(1, done(1, 1))).is_empty());
    s.advance(99);
    assert!(s.schedule().is_empty(), "not before the backoff");
    s.advance(1);
    assert_eq!(s.schedule(), [(1, 1, 2)], "the second attempt");
}

#[test]
fn a_delayed_task_is_logged_then_started_when_due_in_due_order() {
    let mut s = Shard::ready(TaskTable::new(Retention::default()));
    s.worker(1, 4, Vec::new());
    let later = spec(1).with_delay(Duration::from_millis(300));
    let sooner = spec(2).with_delay(Duration::from_millis(100));
    let out = s.request(
        RequestBody::Submit {
            task: later,
            wait: true,
        },
        10,
    );
    assert_eq!(proposed(&out), ["submit"], "not run ahead: logged at once");
    let out2 = s.request(
        RequestBody::Submit {
            task: sooner,
            wait: false,
        },
        11,
    );
    let answers = s.commit(out);
    assert!(answers.answers.is_empty(), "the waiting submitter waits");
    let answers = s.commit(out2);
    assert_eq!(answered(&answers), [(11, Ok(TaskState::Scheduled))]);
    assert!(s.schedule().is_empty());
    s.advance(100);
    assert_eq!(s.schedule(), [(1, 2, 1)]);
    s.advance(199);
    assert!(s.schedule().is_empty());
    s.advance(1);
    assert_eq!(s.schedule(), [(1, 1, 1)]);
}

#[test]
fn a_task_not_started_by_its_expiry_is_failed_through_the_log() {
    let mut s = Shard::ready(TaskTable::new(Retention::default()));
    let task = spec(1).with_expiry(Duration::from_millis(50));
    let out = s.request(RequestBody::Submit { task, wait: false }, 10);
    s.commit(out);
    assert!(proposed(&s.advance(49)).is_empty());
    let out = s.advance(1);
    assert_eq!(proposed(&out), ["lapse"]);
    s.commit(out);
    assert_eq!(
        s.table.view(TaskId(1)).map(|v| v.state),
        Some(TaskState::Failed)
    );
}

#[test]
fn stepping_down_answers_every_waiting_submitter() {
    let mut s = Shard::ready(TaskTable::new(Retention::default()));
    let (reply, mut rx) = Reply::for_test(1);
    let mut out = Effects::default();
    s.leader
        .request(submit(1, true), reply, &s.table, s.now, &mut out);
    let err = WireError::NotLeader { leader: None };
    s.leader.step_down(&err);
    assert!(rx.try_recv().is_ok(), "the waiting submitter is answered");
}

#[test]
fn waiters_whose_clients_have_left_are_dropped() {
    let mut s = Shard::ready(TaskTable::new(Retention::default()));
    let mut out = Effects::default();
    // One submitter waits for a task that runs unlogged, two clients for another task.
    let (runs_unlogged, gone_1) = Reply::for_test(1);
    s.leader
        .request(submit(1, true), runs_unlogged, &s.table, s.now, &mut out);
    let (stays, _kept) = Reply::for_test(2);
    let (leaves, gone_2) = Reply::for_test(3);
    s.leader.wait_for(TaskId(2), stays);
    s.leader.wait_for(TaskId(2), leaves);
    drop((gone_1, gone_2));
    s.leader.drop_abandoned();
    let waiting: Vec<u64> = s
        .leader
        .waiters
        .values()
        .flatten()
        .map(Reply::req)
        .collect();
    assert_eq!(waiting, [2]);
    assert_eq!(s.leader.early.drain_waiting().count(), 0);
    // A wait already abandoned when it would start is not kept at all.
    let (late, gone_3) = Reply::for_test(4);
    drop(gone_3);
    s.leader.wait_for(TaskId(3), late);
    assert!(!s.leader.waiters.contains_key(&TaskId(3)));
}

#[test]
fn before_its_barrier_a_leader_runs_nothing_ahead() {
    let table = TaskTable::new(Retention::default());
    let mut leader = Leader::elected(config(), &table, system_ms(), Instant::now());
    let (reply, _rx) = Reply::for_test(1);
    let mut out = Effects::default();
    leader.request(submit(1, true), reply, &table, Instant::now(), &mut out);
    assert_eq!(proposed(&out), ["submit"], "logged like any other");
    assert_eq!(leader.early.ahead(), 0);
}
