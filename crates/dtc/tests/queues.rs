//! Named queues and priorities with a real `dtc coordinator` process on loopback: with one
//! slot, queued tasks run highest priority first; a task goes only to a worker serving its
//! queue; a low-priority task behind a stream of high-priority ones is passed only by tasks
//! that became ready within the aging bound after it; a paused queue holds its tasks, also
//! across the loss of its shard's leader, until resumed.

mod common;

use common::{Proc, Rig, Shard, dtc_ok, leader_of};
use dtc_sdk::{Client, Task, TaskSpec, TaskState, Worker};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// What the test's handlers saw, in the order they started.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

fn seen(record: &Seen) -> Vec<(String, String)> {
    record.lock().map(|s| s.clone()).unwrap_or_default()
}

/// Starts an in-test worker named `name` (of the coordinators at `addrs`) with one slot
/// (nothing taken ahead), serving
/// `queues`, whose `record` handler notes (its name, the payload) as it starts and then
/// sleeps `hold`.
fn recording_worker(
    addrs: &[std::net::SocketAddr],
    name: &str,
    queues: &[&str],
    hold: Duration,
    record: &Seen,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let record = Arc::clone(record);
    let me = name.to_string();
    let worker = Worker::builder()
        .slots(1)
        .prefetch(0)
        .name(name)
        .queues(queues.iter().copied())
        .handler("record", move |task: Task| {
            let payload = String::from_utf8_lossy(&task.payload).into_owned();
            if let Ok(mut s) = record.lock() {
                s.push((me.clone(), payload));
            }
            async move {
                tokio::time::sleep(hold).await;
                Ok::<_, String>("")
            }
        })
        .build()?;
    tokio::spawn(worker.run(addrs.to_vec(), stop.clone()));
    Ok(())
}

/// The common rig, and what the test's recording workers note.
struct Recorded {
    rig: Rig,
    record: Seen,
}

impl Recorded {
    async fn start() -> anyhow::Result<Self> {
        Ok(Self {
            rig: Rig::start(&[]).await?,
            record: Seen::default(),
        })
    }

    /// Starts a [`recording_worker`] of the coordinator.
    fn worker(&self, name: &str, queues: &[&str], hold: Duration) -> anyhow::Result<()> {
        let addr = self.rig.addr()?;
        recording_worker(&[addr], name, queues, hold, &self.record, &self.rig.stop)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_slot_queued_tasks_run_highest_priority_first() -> anyhow::Result<()> {
    common::bounded(async {
        let rig = Recorded::start().await?;
        let (client, record) = (&rig.rig.client, &rig.record);
        // All 100 become ready at the same instant (so waiting gives none a head start),
        // with no worker connected yet.
        let start = SystemTime::now() + Duration::from_secs(1);
        let mut ids = Vec::new();
        for i in 0..100u32 {
            let priority = u8::try_from(i * 7 % 10)?;
            let spec = TaskSpec::new("record", priority.to_string())
                .with_priority(priority)
                .with_start_at(start);
            ids.push(client.submit(spec).await?.id);
        }
        while SystemTime::now() < start + Duration::from_millis(100) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rig.worker("w", &["default"], Duration::ZERO)?;
        for id in ids {
            assert_eq!(client.wait(id).await?.state, TaskState::Succeeded);
        }
        rig.rig.stop.cancel();
        let order: Vec<u8> = seen(record)
            .into_iter()
            .filter_map(|(_, p)| p.parse().ok())
            .collect();
        assert_eq!(order.len(), 100, "{order:?}");
        let mut sorted = order.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(order, sorted, "tasks ran out of priority order");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_goes_only_to_workers_of_its_queue() -> anyhow::Result<()> {
    common::bounded(async {
        let rig = Recorded::start().await?;
        let (client, record) = (&rig.rig.client, &rig.record);
        rig.worker("crit", &["critical"], Duration::ZERO)?;
        rig.worker("both", &["critical", "default"], Duration::ZERO)?;
        rig.worker("bulk", &["bulk"], Duration::ZERO)?;
        let mut runs = Vec::new();
        for i in 0..60 {
            let queue = ["critical", "default", "bulk"][i % 3];
            let spec = TaskSpec::new("record", queue);
            let spec = if queue == "default" {
                spec
            } else {
                spec.with_queue(queue)
            };
            let client = client.clone();
            runs.push(tokio::spawn(async move { client.run(spec).await }));
        }
        for run in runs {
            assert_eq!(run.await??.state, TaskState::Succeeded);
        }
        rig.rig.stop.cancel();
        let all = seen(record);
        assert_eq!(all.len(), 60);
        for (worker, queue) in &all {
            let serves: &[&str] = match worker.as_str() {
                "crit" => &["critical"],
                "both" => &["critical", "default"],
                _ => &["bulk"],
            };
            assert!(
                serves.contains(&queue.as_str()),
                "{worker} ran a task of {queue}"
            );
        }
        // A queue no worker serves holds its task (and says nobody can run it yet only by
        // staying queued).
        let view = client
            .submit(TaskSpec::new("record", "nobody").with_queue("nobody"))
            .await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(client.get(view.id).await?.state, TaskState::Queued);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_priority_task_is_passed_only_within_the_aging_bound() -> anyhow::Result<()> {
    common::bounded(async {
        let rig = Recorded::start().await?;
        let (client, record) = (&rig.rig.client, &rig.record);
        // One slot, 20 ms a task: about 50 tasks a second.
        rig.worker("w", &["default"], Duration::from_millis(20))?;
        // A stream of priority-9 tasks that keeps 20 waiting, for at most 14 s or 2,000
        // tasks; the low task goes in after the first second. Each payload is the
        // submission's time in ms since the stream began.
        let began = Instant::now();
        let mut low = None;
        let mut pending = std::collections::VecDeque::new();
        let mut sent = 0u32;
        while began.elapsed() < Duration::from_secs(14) && sent < 2_000 {
            if low.is_none() && began.elapsed() >= Duration::from_secs(1) {
                let at = began.elapsed().as_millis().to_string();
                low = Some((
                    client
                        .submit(TaskSpec::new("record", format!("low {at}")))
                        .await?
                        .id,
                    at,
                ));
            }
            while pending.len() < 20 {
                let at = began.elapsed().as_millis();
                let spec = TaskSpec::new("record", format!("high {at}")).with_priority(9);
                pending.push_back(client.submit(spec).await?.id);
                sent += 1;
            }
            if let Some(id) = pending.pop_front() {
                client.wait(id).await?;
            }
        }
        for id in pending {
            client.wait(id).await?;
        }
        let (low_id, low_at) = low.ok_or_else(|| anyhow::anyhow!("the low task was never sent"))?;
        assert_eq!(client.wait(low_id).await?.state, TaskState::Succeeded);
        rig.rig.stop.cancel();
        let order: Vec<String> = seen(record).into_iter().map(|(_, p)| p).collect();
        let low_at: u64 = low_at.parse()?;
        let low_pos = order
            .iter()
            .position(|p| p.starts_with("low"))
            .ok_or_else(|| anyhow::anyhow!("the low task never ran"))?;
        // Every high task that ran before it was sent less than 9 aging steps after it
        // (the leader stamps readiness on arrival: 250 ms of slack for the submissions'
        // differing latencies; without aging it would be passed for the whole stream)...
        let bound = 9 * TaskSpec::AGING_MS;
        for p in &order[..low_pos] {
            let at: u64 = p.trim_start_matches("high ").parse()?;
            assert!(
                at <= low_at + bound + 250,
                "{p} passed the low task sent at {low_at}"
            );
        }
        // ...and the stream went on long enough past that bound for the test to mean it.
        let last: u64 = order
            .iter()
            .filter_map(|p| p.strip_prefix("high ")?.parse().ok())
            .max()
            .unwrap_or(0);
        assert!(last > low_at + bound, "the stream ended at {last} ms");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_queue_holds_its_tasks_and_resumes_them() -> anyhow::Result<()> {
    common::bounded(async {
        let rig = Recorded::start().await?;
        let (coord, client, record) = (&rig.rig.coord, &rig.rig.client, &rig.record);
        let port = coord.addr()?.port().to_string();
        rig.worker("w", &["critical", "default"], Duration::ZERO)?;
        let listed = dtc_ok(&["queue", "pause", "critical", "-p", &port])?;
        assert!(listed.contains("critical"), "{listed}");
        let mut held = Vec::new();
        for i in 0..5 {
            let spec = TaskSpec::new("record", format!("held {i}")).with_queue("critical");
            held.push(client.submit(spec).await?.id);
        }
        // The other queue still runs meanwhile.
        let other = client.run(TaskSpec::new("record", "other")).await?;
        assert_eq!(other.state, TaskState::Succeeded);
        let json = dtc_ok(&["queue", "list", "-p", &port, "--json"])?;
        let queues: Vec<serde_json::Value> = serde_json::from_str(&json)?;
        let critical = queues
            .iter()
            .find(|q| q["name"] == "critical")
            .ok_or_else(|| anyhow::anyhow!("no critical queue in {json}"))?;
        assert_eq!(critical["paused"], true, "{json}");
        assert_eq!(critical["queued"], 5, "{json}");
        assert_eq!(critical["workers"], 1, "{json}");
        for id in &held {
            let view = client.get(*id).await?;
            assert_eq!(view.state, TaskState::Queued);
            assert_eq!(view.queue.as_deref(), Some("critical"));
        }
        assert_eq!(seen(record).len(), 1, "only the other queue's task ran");
        dtc_ok(&["queue", "resume", "critical", "-p", &port])?;
        for id in held {
            assert_eq!(client.wait(id).await?.state, TaskState::Succeeded);
        }
        let table = dtc_ok(&["queue", "list", "-p", &port])?;
        assert!(
            table.contains("critical") && !table.contains("paused"),
            "{table}"
        );
        // A name that cannot be a queue is refused with a reason.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dtc"))
            .args(["queue", "pause", "no spaces", "-p", &port])
            .output()?;
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a queue name"));
        rig.rig.stop.cancel();
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_outlives_the_shards_leader() -> anyhow::Result<()> {
    common::bounded(async {
        let mut shard = Shard::start(3, &[])?;
        let router = Proc::start(&["router", "-p", "0", "--http", "off", "-s", &shard.list()])?;
        let raddr = router.addr()?;
        let port = raddr.port().to_string();
        let (leader, term) = leader_of(raddr, 0, 0).await?;
        dtc_ok(&["queue", "pause", "held", "-p", &port])?;
        let mut config = dtc_sdk::ClientConfig::new(vec![raddr]);
        config.retry_for = Duration::from_secs(60);
        let client = Client::with_config(config).await?;
        let mut held = Vec::new();
        for i in 0..3 {
            let spec = TaskSpec::new("record", format!("held {i}")).with_queue("held");
            held.push(client.submit(spec).await?.id);
        }
        let record = Seen::default();
        let stop = CancellationToken::new();
        recording_worker(&shard.addrs, "w", &["held"], Duration::ZERO, &record, &stop)?;
        // The leader dies; its successor reads the pause from the log.
        shard.kill9(leader)?;
        leader_of(raddr, 0, term).await?;
        let json = dtc_ok(&["queue", "list", "-p", &port, "--json"])?;
        let queues: Vec<serde_json::Value> = serde_json::from_str(&json)?;
        let q = queues
            .iter()
            .find(|q| q["name"] == "held")
            .ok_or_else(|| anyhow::anyhow!("no held queue in {json}"))?;
        assert_eq!(q["paused"], true, "{json}");
        for id in &held {
            assert_eq!(client.get(*id).await?.state, TaskState::Queued);
        }
        assert!(seen(&record).is_empty(), "a paused queue's task ran");
        dtc_ok(&["queue", "resume", "held", "-p", &port])?;
        for id in held {
            assert_eq!(client.wait(id).await?.state, TaskState::Succeeded);
        }
        assert_eq!(seen(&record).len(), 3);
        stop.cancel();
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_types_defaults_give_its_tasks_a_queue_and_priority() -> anyhow::Result<()> {
    common::bounded(async {
        let coord = Proc::coordinator(&["-p", "0"])?;
        let addr = coord.addr()?.to_string();
        let out = dtc_ok(&[
            "configure",
            &addr,
            "--type",
            "record",
            "--queue",
            "reports",
            "--priority",
            "5",
        ])?;
        assert!(out.contains("queue reports, priority 5"), "{out}");
        let client = Client::connect(coord.addr()?).await?;
        let plain = client.submit(TaskSpec::new("record", "a")).await?;
        assert_eq!(
            (plain.queue.as_deref(), plain.priority),
            (Some("reports"), 5)
        );
        // What a submit names wins.
        let own = client
            .submit(
                TaskSpec::new("record", "b")
                    .with_queue("mine")
                    .with_priority(2),
            )
            .await?;
        assert_eq!((own.queue.as_deref(), own.priority), (Some("mine"), 2));
        // A queue name that cannot be one is refused.
        let refused = std::process::Command::new(env!("CARGO_BIN_EXE_dtc"))
            .args(["configure", &addr, "--type", "record", "--queue", "a b"])
            .output()?;
        assert!(!refused.status.success());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_queue_weights_share_its_slot() -> anyhow::Result<()> {
    common::bounded(async {
        let rig = Recorded::start().await?;
        let (client, record) = (&rig.rig.client, &rig.record);
        // 40 tasks in each queue, all ready at the same instant, before the worker comes.
        let start = SystemTime::now() + Duration::from_secs(1);
        let mut ids = Vec::new();
        for i in 0..80 {
            let queue = if i % 2 == 0 { "lo" } else { "hi" };
            let spec = TaskSpec::new("record", queue)
                .with_queue(queue)
                .with_start_at(start);
            ids.push(client.submit(spec).await?.id);
        }
        while SystemTime::now() < start + Duration::from_millis(100) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rig.worker("w", &["hi=3", "lo=1"], Duration::ZERO)?;
        for id in ids {
            assert_eq!(client.wait(id).await?.state, TaskState::Succeeded);
        }
        rig.rig.stop.cancel();
        let order: Vec<String> = seen(record).into_iter().map(|(_, q)| q).collect();
        let hi = order.iter().take(40).filter(|q| *q == "hi").count();
        assert!(
            (29..=31).contains(&hi),
            "{hi} of the first 40 from hi=3: {order:?}"
        );
        // A weight out of bounds is refused when the worker is built.
        let bad = Worker::builder()
            .handler("record", |_task: Task| async { Ok::<_, String>("") })
            .queues(["hi=0"])
            .build();
        assert!(bad.is_err());
        Ok(())
    })
    .await
}
