//! Raft-replicated shards in one process, on real loopback sockets: shards of 1, 3 and 5
//! replicas form their group by themselves, serve through a router, and keep serving —
//! without losing or re-running a finished task — when their leader stops.

mod common;

use anyhow::{Context, bail};
use common::TempDir;
use dtc_sdk::{Client, ClientConfig, Outcome, TaskSpec, Worker};
use dtc_server::coordinator::{Coordinator, CoordinatorConfig};
use dtc_server::router::{Router, RouterConfig};
use dtc_server::shard::{Retention, ShardRaft, SharedTable};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One replica: its address, Raft handle, table and stop switch.
struct Replica {
    addr: SocketAddr,
    raft: ShardRaft,
    table: SharedTable,
    stop: CancellationToken,
}

/// Starts a shard of `n` replicas, each with a data directory under `dir`.
async fn start_shard(n: u64, dir: &TempDir) -> anyhow::Result<Vec<Replica>> {
    start_shard_with(n, dir, |_| Retention::default()).await
}

/// Starts a shard of `n` replicas, each with a data directory under `dir` and the settings
/// `settings(id)` gives it.
async fn start_shard_with(
    n: u64,
    dir: &TempDir,
    settings: impl Fn(u64) -> Retention,
) -> anyhow::Result<Vec<Replica>> {
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=n {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        members.insert(id, l.local_addr()?.to_string());
        listeners.push((id, l));
    }
    let mut replicas = Vec::new();
    for (id, listener) in listeners {
        let addr = listener.local_addr()?;
        let config = CoordinatorConfig {
            id,
            replicas: members.clone(),
            data_dir: Some(dir.path().join(id.to_string())),
            retention: settings(id),
            ..CoordinatorConfig::default()
        };
        let c = Coordinator::start(listener, dtc_proto::transport::Secure::plain(), config).await?;
        let raft = c.raft().clone();
        let table = c.table().clone();
        let stop = CancellationToken::new();
        tokio::spawn(c.run(stop.clone()));
        replicas.push(Replica {
            addr,
            raft,
            table,
            stop,
        });
    }
    Ok(replicas)
}

/// The replica that leads, once one does and every live replica agrees on it.
async fn leader(replicas: &[Replica]) -> anyhow::Result<usize> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let live: Vec<&Replica> = replicas.iter().filter(|r| !r.stop.is_cancelled()).collect();
        let views: Vec<Option<u64>> = live
            .iter()
            .map(|r| r.raft.metrics().borrow().current_leader)
            .collect();
        if let Some(Some(l)) = views.first()
            && views.iter().all(|v| *v == Some(*l))
        {
            let index = usize::try_from(*l - 1)?;
            if !replicas[index].stop.is_cancelled() {
                return Ok(index);
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no leader agreed on: {views:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `count` word counts through `client`, `concurrency` at a time, checking each result.
async fn run_wordcounts(client: &Client, count: usize, concurrency: usize) -> anyhow::Result<()> {
    let mut loops = tokio::task::JoinSet::new();
    for c in 0..concurrency {
        let client = client.clone();
        loops.spawn(async move {
            for i in (c..count).step_by(concurrency) {
                let words = "w ".repeat(i % 17 + 1);
                let view = client.run(TaskSpec::new("wordcount", words)).await?;
                let want = (i % 17 + 1).to_string();
                anyhow::ensure!(
                    view.outcome == Some(Outcome::Succeeded(want.into_bytes().into())),
                    "task {i}: {view:?}"
                );
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = loops.join_next().await {
        r??;
    }
    Ok(())
}

/// A shard of `n` replicas behind a router with two workers: serves a run, loses its leader
/// (`kills` times, one after another), and serves on.
async fn shard_survives_leader_loss(n: u64, kills: usize) -> anyhow::Result<()> {
    common::logs();
    common::bounded(async {
        let dir = TempDir::new(&format!("shard{n}"))?;
        let replicas = start_shard(n, &dir).await?;
        let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
        let cancel = CancellationToken::new();
        for _ in 0..2 {
            let worker = Worker::builder().builtins().slots(4).build()?;
            tokio::spawn(worker.run(addrs.clone(), cancel.clone()));
        }
        let router = Router::bind(RouterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            shards: vec![addrs.clone()],
            limits: Default::default(),
            http: None,
            credentials: Default::default(),
            insecure: false,
        })
        .await?;
        let raddr = router.local_addr()?;
        tokio::spawn(router.run(cancel.clone()));
        let client = Client::with_config(ClientConfig::new(vec![raddr])).await?;

        run_wordcounts(&client, 200, 16).await?;
        for _ in 0..kills {
            let old = leader(&replicas).await?;
            let term = replicas[old].raft.metrics().borrow().current_term;
            // Load runs while the leader stops.
            let during = {
                let client = client.clone();
                tokio::spawn(async move { run_wordcounts(&client, 300, 16).await })
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            replicas[old].stop.cancel();
            during.await.context("the run during failover")??;
            let new = leader(&replicas).await?;
            assert_ne!(new, old, "a new leader took over");
            assert!(replicas[new].raft.metrics().borrow().current_term > term);
        }
        run_wordcounts(&client, 200, 16).await?;
        // Every live replica applies the same log.
        let want = replicas[leader(&replicas).await?]
            .raft
            .metrics()
            .borrow()
            .last_applied;
        for r in replicas.iter().filter(|r| !r.stop.is_cancelled()) {
            let mut m = r.raft.metrics();
            m.wait_for(|m| m.last_applied >= want).await?;
        }
        cancel.cancel();
        for r in &replicas {
            r.stop.cancel();
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_of_one_replica_serves() -> anyhow::Result<()> {
    shard_survives_leader_loss(1, 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_of_three_survives_losing_its_leader() -> anyhow::Result<()> {
    shard_survives_leader_loss(3, 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_of_five_survives_losing_two_leaders() -> anyhow::Result<()> {
    shard_survives_leader_loss(5, 2).await
}

/// Waits until every replica has applied the same log index, then returns each one's table
/// as snapshot bytes (equal tables give equal bytes) with its settings.
async fn settled_tables(replicas: &[Replica]) -> anyhow::Result<Vec<(Vec<u8>, Retention)>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let applied: Vec<Option<u64>> = replicas
            .iter()
            .map(|r| r.raft.metrics().borrow().last_applied.map(|l| l.index))
            .collect();
        let logged: Vec<Option<u64>> = replicas
            .iter()
            .map(|r| r.raft.metrics().borrow().last_log_index)
            .collect();
        if applied.windows(2).all(|w| w[0] == w[1]) && logged.iter().all(|l| *l == applied[0]) {
            return Ok(replicas
                .iter()
                .map(|r| {
                    let t = r.table.lock();
                    (t.table.snapshot(), t.table.retention())
                })
                .collect());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the replicas did not settle: applied {applied:?}, logged {logged:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_with_different_retention_flags_hold_the_same_table() -> anyhow::Result<()>
{
    common::bounded(async {
        common::logs();
        let dir = TempDir::new("settings")?;
        // Each replica is told a different bound on kept results.
        let replicas = start_shard_with(3, &dir, |id| Retention {
            max_results: [4, 40, 400][usize::try_from(id - 1).unwrap_or(0)],
            ..Retention::default()
        })
        .await?;
        let first_leader = leader(&replicas).await?;
        let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
        let cancel = CancellationToken::new();
        let worker = Worker::builder().builtins().slots(4).build()?;
        tokio::spawn(worker.run(addrs.clone(), cancel.clone()));
        let client = Client::with_config(ClientConfig::new(addrs.clone())).await?;
        run_wordcounts(&client, 60, 8).await?;
        let tables = settled_tables(&replicas).await?;
        let want = [4, 40, 400][first_leader];
        for (i, (bytes, retention)) in tables.iter().enumerate() {
            assert_eq!(
                retention.max_results,
                want,
                "replica {} applies the first leader's",
                i + 1
            );
            assert_eq!(bytes, &tables[0].0, "replica {} holds another table", i + 1);
            let kept = replicas[i].table.lock().table.len();
            assert_eq!(kept, want.min(60), "replica {}", i + 1);
        }
        // An operator's change, through any replica, reaches every one of them.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dtc"))
            .args([
                "configure",
                &addrs[(first_leader + 1) % 3].to_string(),
                "--max-results",
                "3",
            ])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("at most 3 results"));
        let tables = settled_tables(&replicas).await?;
        for (i, (bytes, retention)) in tables.iter().enumerate() {
            assert_eq!(retention.max_results, 3, "replica {}", i + 1);
            assert_eq!(bytes, &tables[0].0, "replica {} holds another table", i + 1);
            assert_eq!(replicas[i].table.lock().table.len(), 3);
        }
        cancel.cancel();
        for r in &replicas {
            r.stop.cancel();
        }
        Ok(())
    })
    .await
}
