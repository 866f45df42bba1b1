//! The whole pipeline in one process on real loopback sockets: a router, coordinators,
//! workers and closed-loop clients.

mod common;

use anyhow::Context;
use bytes::Bytes;
use dtc::cli::{BenchArgs, Workload};
use dtc::local::{LocalCluster, LocalSpec};
use dtc_proto::message::RequestBody;
use dtc_sdk::{Client, ClientError, Outcome, TaskSpec, TaskState, WireError, Worker};
use dtc_server::coordinator::{Coordinator, CoordinatorConfig};
use dtc_server::shard::Retention;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio_util::sync::CancellationToken;

fn bench(workload: Workload, clients: usize, tasks: u64) -> BenchArgs {
    BenchArgs {
        clients,
        tasks,
        workload,
        conns: None,
        json: true,
        csv: None,
        retry_for_s: 30,
        seed: 7,
        delayed: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_of_three_replicas_64_clients_5000_mixed_tasks_all_right() -> anyhow::Result<()>
{
    common::bounded(async {
        common::logs();
        let dir = common::TempDir::new("pipeline")?;
        let spec = LocalSpec {
            shards: 2,
            workers: 2,
            slots: 4,
            router_port: 0,
            replicas: 3,
            data_dir: Some(dir.path().to_path_buf()),
            in_memory: false,
            http: None,
            secure: false,
        };
        let cluster = LocalCluster::start(&spec).await?;
        // 64 clients × 79 tasks = 5056 tasks; every word count is checked against its text.
        let args = bench(Workload::Mixed, 64, 79);
        let run = dtc::bench::run(cluster.router, &args, Default::default());
        let report = tokio::time::timeout(common::TEST_LIMIT, run)
            .await
            .context("timed out")??;
        cluster.stop().await;
        assert_eq!(report.tasks_failed, 0);
        assert_eq!(report.tasks_ok, 64 * 79);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_delayed_tasks_runs_from_its_start_time_and_never_before() -> anyhow::Result<()>
{
    common::bounded(async {
        let spec = LocalSpec {
            shards: 2,
            workers: 2,
            slots: 4,
            router_port: 0,
            replicas: 1,
            data_dir: None,
            in_memory: true,
            http: None,
            secure: false,
        };
        let cluster = LocalCluster::start(&spec).await?;
        let args = BenchArgs {
            delayed: Some(2),
            ..bench(Workload::Noop, 8, 250)
        };
        let report = dtc::bench::run(cluster.router, &args, Default::default()).await;
        cluster.stop().await;
        let report = report?;
        assert_eq!(report.tasks_failed, 0, "none ended before its time");
        assert_eq!(report.tasks_ok, 2000);
        Ok(())
    })
    .await
}

async fn coordinator(retention: Retention) -> anyhow::Result<(SocketAddr, CancellationToken)> {
    let cancel = CancellationToken::new();
    let config = CoordinatorConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        retention,
        ..CoordinatorConfig::default()
    };
    let c = Coordinator::bind(config).await?;
    let addr = c.local_addr()?;
    tokio::spawn(c.run(cancel.clone()));
    Ok((addr, cancel))
}

#[tokio::test]
async fn the_same_id_runs_once_and_returns_the_same_result() -> anyhow::Result<()> {
    common::bounded(async {
        let (addr, cancel) = coordinator(Retention::default()).await?;
        let runs = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&runs);
        let worker = Worker::builder()
            .handler("count", move |task: dtc_sdk::Task| {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                async move { Ok::<_, String>(format!("{}:{n}", task.payload.len())) }
            })
            .build()?;
        tokio::spawn(worker.run(vec![addr], cancel.clone()));
        let client = Client::connect(addr).await?;
        let spec = TaskSpec::new("count", "abc");
        let first = client.run(spec.clone()).await?;
        let second = client.run(spec.clone()).await?;
        assert_eq!(first.outcome, Some(Outcome::Succeeded(Bytes::from("3:1"))));
        assert_eq!(second, first, "a resubmitted id returns the stored result");
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran once");
        let looked_up = client.get(spec.id).await?;
        assert_eq!(looked_up.state, TaskState::Succeeded);
        cancel.cancel();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn queued_tasks_can_be_cancelled_and_a_full_queue_says_overloaded() -> anyhow::Result<()> {
    common::bounded(async {
        let retention = Retention {
            max_queued: 2,
            ..Retention::default()
        };
        let (addr, cancel) = coordinator(retention).await?;
        let client = Client::connect(addr).await?;
        let a = TaskSpec::new("noop", "");
        let b = TaskSpec::new("noop", "");
        assert_eq!(client.submit(a.clone()).await?.state, TaskState::Queued);
        assert_eq!(client.submit(b.clone()).await?.state, TaskState::Queued);
        let third = client
            .call(RequestBody::Submit {
                task: TaskSpec::new("noop", ""),
                wait: false,
            })
            .await;
        assert!(
            matches!(third, Err(ClientError::Wire(WireError::Overloaded))),
            "{third:?}"
        );
        let cancelled = client.cancel(a.id).await?;
        assert_eq!(cancelled.state, TaskState::Cancelled);
        assert_eq!(client.get(a.id).await?.outcome, Some(Outcome::Cancelled));
        let again = client.cancel(a.id).await;
        assert!(
            matches!(again, Err(ClientError::Wire(WireError::BadRequest { .. }))),
            "{again:?}"
        );
        let unknown = client.get(dtc_sdk::TaskId::new()).await;
        assert!(
            matches!(unknown, Err(ClientError::Wire(WireError::NotFound))),
            "{unknown:?}"
        );
        // A task too large for one frame is refused before it is sent.
        let huge = TaskSpec::new("noop", vec![0u8; dtc_proto::DEFAULT_MAX_FRAME]);
        assert!(matches!(
            client.submit(huge).await,
            Err(ClientError::TooLarge { .. })
        ));
        // The cancelled task freed a place in the queue.
        assert_eq!(
            client.submit(TaskSpec::new("noop", "")).await?.state,
            TaskState::Queued
        );
        cancel.cancel();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn handler_failures_retry_then_fail_with_the_reason() -> anyhow::Result<()> {
    common::bounded(async {
        let (addr, cancel) = coordinator(Retention::default()).await?;
        let worker = Worker::builder()
            .builtins()
            .handler("boom", |_task: dtc_sdk::Task| async {
                Err::<Bytes, _>("it broke")
            })
            .build()?;
        tokio::spawn(worker.run(vec![addr], cancel.clone()));
        let client = Client::connect(addr).await?;
        let failed = client.run(TaskSpec::new("boom", "")).await?;
        assert_eq!(failed.state, TaskState::Failed);
        assert_eq!(failed.attempts, TaskSpec::DEFAULT_MAX_ATTEMPTS);
        assert_eq!(failed.outcome, Some(Outcome::Failed("it broke".into())));
        // A type no connected worker handles waits in the queue ...
        let orphan = TaskSpec::new("render", "frame 1");
        assert_eq!(
            client.submit(orphan.clone()).await?.state,
            TaskState::Queued
        );
        assert_eq!(client.get(orphan.id).await?.state, TaskState::Queued);
        // ... until a worker with that handler arrives.
        let renderer = Worker::builder()
            .handler("render", |task: dtc_sdk::Task| async move {
                Ok::<_, String>(task.payload)
            })
            .build()?;
        tokio::spawn(renderer.run(vec![addr], cancel.clone()));
        let rendered = client.wait(orphan.id).await?;
        assert_eq!(
            rendered.outcome,
            Some(Outcome::Succeeded(Bytes::from("frame 1")))
        );
        let bad_sleep = client.run(TaskSpec::new("sleep", "soon")).await?;
        assert_eq!(bad_sleep.state, TaskState::Failed);
        cancel.cancel();
        Ok(())
    })
    .await
}
