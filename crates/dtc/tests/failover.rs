//! Raft-replicated shards as real `dtc` processes, killed with SIGKILL: a shard's leader
//! dies under load and a new one takes over without losing or duplicating a result; every
//! replica of a shard dies at once and, restarted from its data directory, still holds
//! every acknowledged task.

mod common;

use anyhow::{Context, bail, ensure};
use common::{Proc, Shard, cluster_status, leader_of};
use dtc_proto::status::AdminResponse;
use dtc_sdk::{Client, ClientConfig, Outcome, TaskId, TaskSpec, TaskState};
use dtc_server::router::shard_map::ShardMap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the client saw of one task.
#[derive(Clone, Debug)]
struct Seen {
    shard: usize,
    sent: Instant,
    at: Instant,
    outcome: Option<Outcome>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_each_shards_leader_under_load_loses_nothing() -> anyhow::Result<()> {
    common::bounded(async {
        let shards = [Shard::start(3, &[])?, Shard::start(3, &[])?];
        let mut _workers = Vec::new();
        for s in &shards {
            for _ in 0..4 {
                _workers.push(Proc::start(&["worker", "-s", &s.list(), "-w", "4"])?);
            }
        }
        let router = Proc::start(&["router", "-p", "0", "--http", "off", "-s", &shards[0].list(), "-s", &shards[1].list()])?;
        let raddr = router.addr()?;
        let mut config = ClientConfig::new(vec![raddr]);
        config.retry_for = Duration::from_secs(60);
        let client = Client::with_config(config).await?;
        let map = ShardMap::new(2);

        // 64 closed-loop clients, mixed work: word counts (checked) and short sleeps.
        let seen: Arc<Mutex<HashMap<TaskId, Seen>>> = Arc::default();
        let start = Instant::now();
        let mut loops = tokio::task::JoinSet::new();
        for c in 0..64usize {
            let client = client.clone();
            let seen = Arc::clone(&seen);
            loops.spawn(async move {
                for i in 0..60usize {
                    let spec = if (c + i) % 2 == 0 {
                        TaskSpec::new("wordcount", "w ".repeat(i % 9 + 1))
                    } else {
                        TaskSpec::new("sleep", ["100", "1000", "5000"][i % 3])
                    };
                    let id = spec.id;
                    let want = (spec.kind == "wordcount").then(|| (i % 9 + 1).to_string());
                                        let sent = Instant::now();
                    let view = client.run(spec).await?;
                    ensure!(view.state == TaskState::Succeeded, "{view:?}");
                    if let Some(want) = want {
                        ensure!(
                            view.outcome == Some(Outcome::Succeeded(want.into_bytes().into())),
                            "{view:?}"
                        );
                    }
                    let shard = map.shard_of(id);
                    let prev = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.insert(
                        id,
                                                Seen {
                            shard,
                            sent,
                            at: Instant::now(),
                            outcome: view.outcome,
                        },
                    );
                    ensure!(prev.is_none(), "task {id} answered twice");
                }
                anyhow::Ok(())
            });
        }
        let done = || seen.lock().map(|s| s.len()).unwrap_or(0);
        let total = 64 * 60;

        let mut kills = Vec::new();
        for (index, shard) in shards.iter().enumerate() {
            let before = done();
            while done() < before + total / 5 {
                ensure!(!loops.is_empty(), "the run ended early");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let (old, term) = leader_of(raddr, index, 0).await?;
            let victim = shard
                .addrs
                .iter()
                .position(|a| *a == old)
                .context("the leader is one of the shard's replicas")?;
            let killed_at = Instant::now();
            // Proc::kill9 needs &mut; the procs live in the shard, so signal by pid.
            shard.procs[victim].signal("KILL")?;
            let (new, _) = leader_of(raddr, index, term).await?;
            ensure!(new != old, "a new leader took over");
                        // The first task of this shard sent after the kill was served by the new
            // leader: the old one was dead by then.
            let served = loop {
                let first = seen
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .values()
                    .filter(|s| s.shard == index && s.sent > killed_at)
                    .map(|s| s.at)
                    .min();
                if let Some(at) = first {
                    break at;
                }
                ensure!(killed_at.elapsed() < Duration::from_secs(30), "shard {index} served nothing after the kill");
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            eprintln!(
                "shard {index}: leader {old} killed at {:.2}s; new leader {new}; first task served {:.0} ms after the kill",
                (killed_at - start).as_secs_f64(),
                (served - killed_at).as_secs_f64() * 1000.0
            );
            kills.push(killed_at);
        }
        while let Some(r) = loops.join_next().await {
            r??;
        }
        let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
        assert_eq!(seen.len(), total, "every task was answered once");

        // Throughput per 250 ms, to show the dip around each kill.
        let slots = (start.elapsed().as_millis() / 250 + 1) as usize;
        let mut per = vec![0u32; slots];
        for s in seen.values() {
            per[((s.at - start).as_millis() / 250) as usize] += 1;
        }
        let kill_slots: Vec<usize> = kills
            .iter()
            .map(|k| ((*k - start).as_millis() / 250) as usize)
            .collect();
        eprintln!("tasks answered per 250 ms (kills in slots {kill_slots:?}): {per:?}");

        // Exactly one result is visible per task: what the shard holds now is what the
        // client was told.
        for (id, s) in &seen {
            let view = client.get(*id).await?;
            assert_eq!(view.outcome, s.outcome, "task {id}");
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_restarted_from_its_data_directories_keeps_every_task() -> anyhow::Result<()> {
    common::bounded(async {
        // Frequent snapshots, so that the restart also reads them back.
        let extra = ["--snapshot-every", "50"];
        let mut shard = Shard::start(3, &extra)?;
        let mut config = ClientConfig::new(shard.addrs.clone());
        config.retry_for = Duration::from_secs(60);
        let client = Client::with_config(config).await?;
        let count = 10_000usize;
        let specs: Vec<TaskSpec> = (0..count)
            .map(|i| TaskSpec::new("wordcount", "w ".repeat(i % 7 + 1)))
            .collect();
        let mut submits = tokio::task::JoinSet::new();
        for chunk in specs.chunks(count / 64) {
            let client = client.clone();
            let chunk = chunk.to_vec();
            submits.spawn(async move {
                for spec in chunk {
                    let view = client.submit(spec).await?;
                    ensure!(view.state == TaskState::Queued, "{view:?}");
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = submits.join_next().await {
            r??;
        }
        // Every acknowledged submit is on disk: kill every replica at once.
        for p in &mut shard.procs {
            p.kill9()?;
        }
        shard.procs.clear();
        for i in 0..3 {
            let p = shard.spawn(i, &extra)?;
            shard.procs.push(p);
        }
        let list = shard.list();
        let _w1 = Proc::start(&["worker", "-s", &list, "-w", "4"])?;
        let _w2 = Proc::start(&["worker", "-s", &list, "-w", "4"])?;
        let mut waits = tokio::task::JoinSet::new();
        for (n, chunk) in specs.chunks(count / 64).enumerate() {
            let client = client.clone();
            let ids: Vec<TaskId> = chunk.iter().map(|s| s.id).collect();
            waits.spawn(async move {
                for (k, id) in ids.into_iter().enumerate() {
                    let view = client.wait(id).await?;
                    let i = n * (count / 64) + k;
                    let want = (i % 7 + 1).to_string();
                    ensure!(
                        view.outcome == Some(Outcome::Succeeded(want.into_bytes().into())),
                        "task {i}: {view:?}"
                    );
                    ensure!(view.attempts == 1, "task {i} ran more than once: {view:?}");
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = waits.join_next().await {
            r??;
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_two_coordinator_form_replicates_and_status_shows_it() -> anyhow::Result<()> {
    common::bounded(async {
        // The seed's form: two coordinators naming each other, a worker given one of them
        // (it follows the leader if that one is not it), a router given both.
        let shard = Shard::start(2, &[])?;
        let port = shard.addrs[0].port().to_string();
        let _worker = Proc::start(&["worker", "-p", &port, "-w", "2"])?;
        let router = Proc::start(&["router", "-p", "0", "--http", "off", "-s", &shard.list()])?;
        let raddr = router.addr()?;
        let client = Client::connect(raddr).await?;
        for i in 1..=50usize {
            let view = client
                .run(TaskSpec::new("wordcount", "w ".repeat(i)))
                .await?;
            assert_eq!(
                view.outcome,
                Some(Outcome::Succeeded(i.to_string().into_bytes().into()))
            );
        }
        // `dtc status --json` through the router: one leader, both replicas at the same
        // applied index once the follower has caught up.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let args = ["status", "--router", &raddr.to_string(), "--json"].map(String::from);
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_dtc"))
                    .args(args)
                    .output()
            })
            .await??;
            ensure!(out.status.success(), "dtc status failed: {out:?}");
            let AdminResponse::Cluster(c) = serde_json::from_slice(&out.stdout)? else {
                bail!("the router answered as a coordinator");
            };
            let shard0 = c.shards.first().context("one shard")?;
            let applied: Vec<u64> = shard0
                .replicas
                .iter()
                .filter_map(|(_, r)| r.as_ref().ok().map(|r| r.applied))
                .collect();
            let leader = shard0.leader().map(|l| l.workers.len());
            if leader == Some(1) && applied.len() == 2 && applied[0] == applied[1] && applied[0] > 0
            {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the two replicas did not converge: {c:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_its_disk_catches_up_from_a_snapshot() -> anyhow::Result<()> {
    common::bounded(async {
        // Snapshots every 20 entries, keeping 20 before them: a replica that comes back
        // empty cannot be sent the log from the start, only a snapshot and what follows.
        let extra = ["--snapshot-every", "20"];
        let mut shard = Shard::start(3, &extra)?;
        let list = shard.list();
        let _worker = Proc::start(&["worker", "-s", &list, "-w", "4"])?;
        let router = Proc::start(&["router", "-p", "0", "--http", "off", "-s", &list])?;
        let raddr = router.addr()?;
        let client = Client::connect(raddr).await?;
        let run = |n: usize| {
            let client = client.clone();
            async move {
                for i in 0..n {
                    let view = client
                        .submit(TaskSpec::new("wordcount", "w ".repeat(i % 5 + 1)))
                        .await?;
                    ensure!(view.state != TaskState::Failed, "{view:?}");
                }
                anyhow::Ok(())
            }
        };
        run(300).await?;
        // A follower loses its disk: stopped, its data directory emptied, started again.
        let (leader, _) = leader_of(raddr, 0, 0).await?;
        let victim = shard
            .addrs
            .iter()
            .position(|a| *a != leader)
            .context("a follower")?;
        shard.procs[victim].kill9()?;
        std::fs::remove_dir_all(shard.dirs[victim].path())?;
        std::fs::create_dir_all(shard.dirs[victim].path())?;
        run(300).await?;
        shard.procs[victim] = shard.spawn(victim, &extra)?;
        run(100).await?;
        // It catches up with the others.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let c = cluster_status(raddr).await?;
            let shard0 = c.shards.first().context("one shard")?;
            let applied: Vec<u64> = shard0
                .replicas
                .iter()
                .filter_map(|(_, r)| r.as_ref().ok().map(|r| r.applied))
                .collect();
            if applied.len() == 3 && applied.iter().all(|a| *a == applied[0]) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the emptied replica did not catch up: {c:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(
            shard.dirs[victim].path().join("snapshot.bin").exists(),
            "the emptied replica holds a snapshot"
        );
        Ok(())
    })
    .await
}
