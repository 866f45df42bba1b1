//! The task lifecycle with real `dtc` processes on loopback: attempt timeouts that stop the
//! handler and free its slot, retries spaced by their backoff and a failed task run again
//! with `dtc retry`, a delayed task that outlives `kill -9` of every replica, a running
//! task cancelled, and a handler's progress shown by `dtc get`.

mod common;

use anyhow::Context;
use common::{Proc, Rig, Shard, TEST_LIMIT, until};
use dtc_proto::ask::ask_admin;
use dtc_proto::credentials::Credentials;
use dtc_proto::status::{AdminRequest, AdminResponse};
use dtc_proto::transport::{Secure, Tcp};
use dtc_sdk::{
    Backoff, Client, ClientConfig, Outcome, Task, TaskError, TaskId, TaskSpec, TaskState, TaskView,
    Worker,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// A `sleep` payload of one hour: a slot it holds is held for the whole test unless the
/// attempt is stopped.
const AN_HOUR_US: &str = "3600000000";

/// How many slots the coordinator at `addr` sees busy on its workers.
async fn busy_slots(addr: SocketAddr) -> anyhow::Result<u32> {
    let transport = Secure::new(Tcp, Arc::new(Credentials::plain()));
    match ask_admin(&transport, addr, "test", &AdminRequest::Status).await? {
        AdminResponse::Replica(r) => Ok(r.workers.iter().map(|w| w.busy).sum()),
        other => anyhow::bail!("unexpected answer {other:?}"),
    }
}

/// Runs `dtc ARGS…` to its end; its success and standard output.
fn dtc(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dtc"))
        .args(args)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_past_its_timeout_is_stopped_and_its_slot_freed() -> anyhow::Result<()> {
    common::bounded(async {
        let rig = Rig::start(&[]).await?;
        let (coord, client) = (&rig.coord, &rig.client);
        let _worker = rig.worker_process(&["-w", "1"])?;
        let spec = TaskSpec::new("sleep", AN_HOUR_US)
            .with_max_attempts(1)
            .with_timeout(Duration::from_millis(200));
        let view = client.run(spec).await?;
        assert_eq!(view.state, TaskState::Failed, "{view:?}");
        let error = view.errors.first().cloned().unwrap_or_default();
        assert!(error.contains("timed out"), "{error}");
        // The hour-long sleep was stopped: its one slot frees, and the next task runs.
        until(|| async { Ok(busy_slots(coord.addr()?).await? == 0) }).await?;
        let next = client.run(TaskSpec::new("wordcount", "still here")).await?;
        assert_eq!(next.outcome, Some(Outcome::Succeeded("2".into())));
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_stops_it_and_frees_its_slot() -> anyhow::Result<()> {
    common::bounded(async {
        let rig = Rig::start(&[]).await?;
        let (coord, client) = (&rig.coord, &rig.client);
        let port = rig.port()?;
        let _worker = rig.worker_process(&["-w", "1"])?;
        let id = client.submit(TaskSpec::new("sleep", AN_HOUR_US)).await?.id;
        until(|| async { Ok(client.get(id).await?.state == TaskState::Running) }).await?;
        let id_text = id.to_string();
        let (ok, out) = dtc(&["cancel", &id_text, "-p", &port])?;
        assert!(ok, "dtc cancel failed: {out}");
        assert!(out.contains("state: cancelled"), "{out}");
        until(|| async { Ok(busy_slots(coord.addr()?).await? == 0) }).await?;
        assert_eq!(client.get(id).await?.state, TaskState::Cancelled);
        // A finished task cannot be cancelled.
        let (ok, _) = dtc(&["cancel", &id_text, "-p", &port])?;
        assert!(!ok, "cancelling a cancelled task must fail");
        Ok(())
    })
    .await
}

/// A worker in this process whose `fail` handler is the built-in one, recording when each
/// attempt started.
fn recording_fail_worker(
    addr: SocketAddr,
    stop: &CancellationToken,
) -> anyhow::Result<Arc<Mutex<Vec<Instant>>>> {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let worker = Worker::builder()
        .slots(2)
        .handler("fail", move |task: Task| {
            if let Ok(mut calls) = seen.lock() {
                calls.push(Instant::now());
            }
            async move { dtc_sdk::handlers::fail(&task.payload) }
        })
        .build()?;
    tokio::spawn(worker.run(vec![addr], stop.clone()));
    Ok(calls)
}

fn calls(record: &Mutex<Vec<Instant>>) -> Vec<Instant> {
    record.lock().map(|c| c.clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_are_spaced_by_their_backoff_and_a_failed_task_can_run_again()
-> anyhow::Result<()> {
    common::bounded(async {
        let coord = Proc::coordinator(&["-p", "0"])?;
        let port = coord.addr()?.port().to_string();
        let stop = CancellationToken::new();
        let record = recording_fail_worker(coord.addr()?, &stop)?;
        let client = Client::connect(coord.addr()?).await?;
        let spec = TaskSpec::new("fail", "the disk is on fire")
            .with_max_attempts(3)
            .with_backoff(Backoff {
                initial_ms: 100,
                multiplier_pct: 200,
                max_ms: 10_000,
                jitter_pct: 0,
            });
        let view = client.run(spec).await?;
        assert_eq!(view.state, TaskState::Failed, "{view:?}");
        assert_eq!(view.attempts, 3);
        assert_eq!(view.errors, vec!["the disk is on fire"; 3]);
        let at = calls(&record);
        assert_eq!(at.len(), 3, "three attempts ran");
        assert!(at[1] - at[0] >= Duration::from_millis(100), "{at:?}");
        assert!(at[2] - at[1] >= Duration::from_millis(200), "{at:?}");
        // `dtc retry` runs it again with fresh attempts; its errors are all kept.
        let id = view.id.to_string();
        let (ok, out) = dtc(&["retry", &id, "-p", &port])?;
        assert!(ok, "dtc retry failed: {out}");
        let again = client.wait(view.id).await?;
        assert_eq!(again.state, TaskState::Failed);
        assert_eq!(again.errors.len(), 6, "{again:?}");
        assert_eq!(calls(&record).len(), 6);
        // A fatal error ends the task at its first attempt.
        let fatal = TaskSpec::new("fail", "fatal: no such customer").with_max_attempts(5);
        let view = client.run(fatal).await?;
        assert_eq!((view.state, view.attempts), (TaskState::Failed, 1));
        assert_eq!(
            view.outcome,
            Some(Outcome::Failed("no such customer".into()))
        );
        // Listed as failed, then purged: both failed tasks are gone.
        let (ok, out) = dtc(&["tasks", "--state", "failed", "-p", &port])?;
        assert!(
            ok && out.contains(&id) && out.contains("no such customer"),
            "{out}"
        );
        let (ok, out) = dtc(&["purge", "--state", "failed", "-p", &port])?;
        assert!(ok, "dtc purge failed: {out}");
        assert!(out.contains("purged 2 failed tasks"), "{out}");
        assert!(
            client.get(view.id).await.is_err(),
            "a purged task is not found"
        );
        let (ok, _) = dtc(&["purge", "--state", "queued", "-p", &port])?;
        assert!(!ok, "unfinished tasks cannot be purged");
        stop.cancel();
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_task_outlives_kill_9_of_every_replica_and_runs_once_after_its_time()
-> anyhow::Result<()> {
    common::bounded(async {
        let mut shard = Shard::start(3, &[])?;
        let mut config = ClientConfig::new(shard.addrs.clone());
        config.retry_for = TEST_LIMIT;
        let client = Client::with_config(config).await?;
        let runs: Arc<Mutex<Vec<(TaskId, SystemTime)>>> = Arc::default();
        let seen = Arc::clone(&runs);
        let worker = Worker::builder()
            .slots(2)
            .handler("stamp", move |task: Task| {
                if let Ok(mut runs) = seen.lock() {
                    runs.push((task.id, SystemTime::now()));
                }
                async { Ok::<_, TaskError>("done") }
            })
            .build()?;
        let stop = CancellationToken::new();
        let worker = tokio::spawn(worker.run(shard.addrs.clone(), stop.clone()));
        let view: TaskView = client
            .submit(TaskSpec::new("stamp", "").with_delay(Duration::from_secs(3)))
            .await?;
        assert_eq!(view.state, TaskState::Scheduled);
        let due = view.due_ms.context("a scheduled task has its time")?;
        for p in &mut shard.procs {
            p.kill9()?;
        }
        let restarted = (0..3)
            .map(|i| shard.spawn(i, &[]))
            .collect::<anyhow::Result<Vec<_>>>()?;
        shard.procs = restarted;
        let done = client.wait(view.id).await?;
        assert_eq!(done.state, TaskState::Succeeded, "{done:?}");
        // Give a second run every chance to show up before counting.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let runs = runs.lock().map(|r| r.clone()).unwrap_or_default();
        assert_eq!(runs.len(), 1, "it ran exactly once: {runs:?}");
        let ran_ms = runs[0]
            .1
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_millis();
        assert!(ran_ms >= u128::from(due), "it ran before its time");
        stop.cancel();
        worker.await??;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_through_every_task_of_two_shards_without_repeats_or_gaps()
-> anyhow::Result<()> {
    use dtc_proto::ask::ask_leader;
    use dtc_proto::status::TaskQuery;
    common::bounded(async {
        let a = Proc::coordinator(&["-p", "0"])?;
        let b = Proc::coordinator(&["-p", "0"])?;
        let (sa, sb) = (a.addr()?.to_string(), b.addr()?.to_string());
        let router = Proc::start(&["router", "-p", "0", "--http", "off", "-s", &sa, "-s", &sb])?;
        let client = Client::connect(router.addr()?).await?;
        // No worker: every task stays queued. Submitted 500 at a time.
        let mut ids = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut batch = tokio::task::JoinSet::new();
            for _ in 0..500 {
                let client = client.clone();
                batch.spawn(async move { client.submit(TaskSpec::new("later", "")).await });
            }
            while let Some(view) = batch.join_next().await {
                ids.insert(view??.id);
            }
        }
        assert_eq!(ids.len(), 10_000);
        let transport = Secure::new(Tcp, Arc::new(Credentials::plain()));
        let mut query = TaskQuery {
            state: Some(TaskState::Queued),
            kind: None,
            limit: 777,
            before: None,
        };
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = ask_leader(&transport, &[router.addr()?], "test", &query).await?;
            pages += 1;
            seen.extend(page.tasks.iter().map(dtc_proto::status::Cursor::of));
            match page.next {
                Some(next) => query.before = Some(next),
                None => break,
            }
            anyhow::ensure!(pages <= 20, "the listing does not end");
        }
        assert_eq!(pages, 13, "10,000 tasks in pages of 777");
        assert!(
            seen.windows(2).all(|w| w[0] > w[1]),
            "newest first, no repeat"
        );
        let listed: std::collections::HashSet<TaskId> = seen.iter().map(|c| c.id).collect();
        assert_eq!(listed, ids, "every task, no gap");
        // Each shard's leader counts its tasks by state.
        let mut queued = 0;
        for coord in [&a, &b] {
            match ask_admin(&transport, coord.addr()?, "test", &AdminRequest::Status).await? {
                AdminResponse::Replica(r) => queued += r.states.get(TaskState::Queued),
                other => anyhow::bail!("unexpected answer {other:?}"),
            }
        }
        assert_eq!(queued, 10_000);
        // A filter that matches nothing lists nothing.
        let none = TaskQuery {
            state: Some(TaskState::Failed),
            kind: None,
            limit: 10,
            before: None,
        };
        let page = ask_leader(&transport, &[router.addr()?], "test", &none).await?;
        assert!(page.tasks.is_empty() && page.next.is_none());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_types_defaults_apply_to_its_tasks_until_cleared() -> anyhow::Result<()> {
    common::bounded(async {
        let coord = Proc::coordinator(&["-p", "0"])?;
        let (addr, port) = (coord.addr()?.to_string(), coord.addr()?.port().to_string());
        let _worker = Proc::start(&["worker", "-p", &port, "-w", "2"])?;
        let (ok, out) = dtc(&["configure", &addr, "--type", "sleep", "--timeout", "200ms"])?;
        assert!(ok && out.contains("type sleep: timeout 200 ms"), "{out}");
        let client = Client::connect(coord.addr()?).await?;
        // Submitted with wait and no timeout of its own: the type's applies.
        let view = client
            .run(TaskSpec::new("sleep", AN_HOUR_US).with_max_attempts(1))
            .await?;
        assert_eq!(view.state, TaskState::Failed, "{view:?}");
        assert!(
            view.errors[0].contains("timeout of 200 ms"),
            "{:?}",
            view.errors
        );
        let (ok, out) = dtc(&["configure", &addr, "--type", "sleep", "--clear"])?;
        assert!(ok && out.contains("no task type has defaults"), "{out}");
        let id = client.submit(TaskSpec::new("sleep", "300000")).await?.id;
        let done = client.wait(id).await?;
        assert_eq!(done.state, TaskState::Succeeded, "no timeout once cleared");
        let (ok, _) = dtc(&["configure", &addr, "--type", "sleep"])?;
        assert!(!ok, "--type alone says nothing to set");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_progress_shows_in_dtc_get_while_it_runs() -> anyhow::Result<()> {
    common::bounded(async {
        let rig = Rig::start(&[]).await?;
        let port = rig.addr()?.port().to_string();
        let go = Arc::new(tokio::sync::Notify::new());
        let release = Arc::clone(&go);
        let worker = Worker::builder()
            .handler("copy", move |task: Task| {
                let release = Arc::clone(&release);
                async move {
                    task.progress(0.25, "copying part 1 of 4");
                    release.notified().await;
                    Ok::<_, String>("copied")
                }
            })
            .build()?;
        rig.run(worker)?;
        let client = &rig.client;
        let id = client.submit(TaskSpec::new("copy", "")).await?.id;
        until(|| {
            let client = client.clone();
            async move { Ok(client.get(id).await?.progress.is_some()) }
        })
        .await?;
        let text = common::dtc_ok(&["get", &id.to_string(), "-p", &port])?;
        assert!(
            text.contains("progress: 25.0% copying part 1 of 4"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&common::dtc_ok(&[
            "get",
            &id.to_string(),
            "-p",
            &port,
            "--json",
        ])?)?;
        assert_eq!(json["progress"]["fraction"], 0.25, "{json}");
        go.notify_one();
        let done = client.wait(id).await?;
        assert_eq!((done.state, done.progress), (TaskState::Succeeded, None));
        Ok(())
    })
    .await
}
