//! Concurrency keys and rate limits with real `dtc coordinator` and `dtc router` processes
//! on loopback: the tasks of a key all go to the key's shard, whose leader runs at most the
//! key's limit at once, as the workers themselves count; a rate-limited queue starts its
//! tasks no faster than its limit.

mod common;

use common::{Proc, Rig, dtc_ok};
use dtc_sdk::{Client, Task, TaskSpec, TaskState, Worker};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What the workers saw per key: how many run now, the most that ran at once, and which
/// shards ran the key's tasks.
#[derive(Default)]
struct KeyCount {
    now: u32,
    most: u32,
    shards: std::collections::BTreeSet<usize>,
}

type Counts = Arc<Mutex<HashMap<String, KeyCount>>>;

/// Notes one more running task of `key` on `shard` (`start`), or one fewer.
fn note(counts: &Counts, key: &str, shard: usize, start: bool) {
    if let Ok(mut all) = counts.lock() {
        let c = all.entry(key.to_owned()).or_default();
        if start {
            c.now += 1;
            c.most = c.most.max(c.now);
            c.shards.insert(shard);
        } else {
            c.now -= 1;
        }
    }
}

/// A worker of shard `shard` with 4 slots whose `count` handler notes its payload (the
/// task's key) as running for 5 ms.
fn counting_worker(
    addr: std::net::SocketAddr,
    shard: usize,
    counts: &Counts,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let counts = Arc::clone(counts);
    let worker = Worker::builder()
        .slots(4)
        .prefetch(0)
        .handler("count", move |task: Task| {
            let key = String::from_utf8_lossy(&task.payload).into_owned();
            let counts = Arc::clone(&counts);
            note(&counts, &key, shard, true);
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                note(&counts, &key, shard, false);
                Ok::<_, String>("")
            }
        })
        .build()?;
    tokio::spawn(worker.run(vec![addr], stop.clone()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_never_runs_more_than_its_limit_across_two_shards() -> anyhow::Result<()> {
    common::bounded(async {
        let shards = [
            Proc::coordinator(&["-p", "0"])?,
            Proc::coordinator(&["-p", "0"])?,
        ];
        let (a, b) = (shards[0].addr()?, shards[1].addr()?);
        let router = Proc::start(&[
            "router",
            "-p",
            "0",
            "--http",
            "off",
            "-s",
            &a.to_string(),
            "-s",
            &b.to_string(),
        ])?;
        let raddr = router.addr()?;
        let client = Client::connect(raddr).await?;
        let counts = Counts::default();
        let stop = CancellationToken::new();
        for (shard, addr) in [a, b].into_iter().enumerate() {
            for _ in 0..2 {
                counting_worker(addr, shard, &counts, &stop)?;
            }
        }
        // 300 tasks of tenant:42 (at most 3 at once) and 100 of tenant:7 (at most 2),
        // interleaved with 200 unkeyed ones (8 keys' worth of room, so keys are the bound).
        let mut runs = tokio::task::JoinSet::new();
        for i in 0..600u32 {
            let spec = match i % 6 {
                0 | 2 | 4 => TaskSpec::new("count", "tenant:42").with_concurrency("tenant:42", 3),
                1 => TaskSpec::new("count", "tenant:7").with_concurrency("tenant:7", 2),
                _ => TaskSpec::new("count", "none"),
            };
            let client = client.clone();
            runs.spawn(async move { client.run(spec).await });
        }
        let mut succeeded = 0;
        while let Some(run) = runs.join_next().await {
            if run??.state == TaskState::Succeeded {
                succeeded += 1;
            }
        }
        assert_eq!(succeeded, 600);
        let all = counts.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let count = |key: &str| {
            all.get(key)
                .ok_or_else(|| anyhow::anyhow!("{key} never ran"))
        };
        let (t42, t7, none) = (count("tenant:42")?, count("tenant:7")?, count("none")?);
        assert_eq!(
            t42.most, 3,
            "tenant:42 is limited to 3, and 300 of its tasks keep it full"
        );
        assert_eq!(t7.most, 2);
        assert_eq!(t42.shards.len(), 1, "a key's tasks all run on its shard");
        assert_eq!(t7.shards.len(), 1);
        assert_eq!(
            none.shards.len(),
            2,
            "unkeyed tasks spread over both shards"
        );
        assert!(
            none.most > 3,
            "unkeyed tasks are not limited: {}",
            none.most
        );
        drop(all);

        let rport = raddr.port().to_string();
        // The command line: the id is routed by the key, and the task shows its key.
        let out = dtc_ok(&[
            "submit",
            "count",
            "tenant:9",
            "--key",
            "tenant:9",
            "--key-limit",
            "2",
            "-p",
            &rport,
        ])?;
        let id = out
            .lines()
            .find_map(|l| l.strip_prefix("id: "))
            .ok_or_else(|| anyhow::anyhow!("no id in {out}"))?;
        let parsed: dtc_sdk::TaskId = id.trim().parse()?;
        assert_eq!(
            &parsed.to_string()[14..15],
            "8",
            "a routed id is a UUID version 8"
        );
        let json: serde_json::Value =
            serde_json::from_str(&dtc_ok(&["get", id.trim(), "--json", "-p", &rport])?)?;
        assert_eq!(json["key"], "tenant:9", "{json}");
        assert_eq!(json["key_limit"], 2, "{json}");
        assert_eq!(json["state"], "succeeded", "{json}");
        stop.cancel();
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_queue_starts_no_faster_than_its_limit() -> anyhow::Result<()> {
    common::bounded(async {
        let rig = Rig::start(&[]).await?;
        let port = rig.addr()?.port().to_string();
        let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let seen = Arc::clone(&starts);
        let worker = Worker::builder()
            .slots(16)
            .queues(["slow"])
            .handler("note", move |_task: Task| {
                if let Ok(mut s) = seen.lock() {
                    s.push(Instant::now());
                }
                async { Ok::<_, String>("") }
            })
            .build()?;
        rig.run(worker)?;
        dtc_ok(&["queue", "limit", "slow", "5/s", "-p", &port])?;
        let listed: Vec<serde_json::Value> =
            serde_json::from_str(&dtc_ok(&["queue", "list", "--json", "-p", &port])?)?;
        let slow = listed.iter().find(|q| q["name"] == "slow");
        assert_eq!(
            slow.map(|q| &q["rate_per_hour"]),
            Some(&serde_json::json!(18_000)),
            "{listed:?}"
        );

        // 20 tasks at once, with 16 free slots: at most one second's worth (5) starts at
        // once, then 5 a second.
        let client = rig.client.clone();
        let mut runs = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let client = client.clone();
            runs.spawn(async move {
                client
                    .run(TaskSpec::new("note", "").with_queue("slow"))
                    .await
            });
        }
        while let Some(run) = runs.join_next().await {
            assert_eq!(run??.state, TaskState::Succeeded);
        }
        let mut starts = starts
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone();
        starts.sort();
        assert_eq!(starts.len(), 20);
        let span = starts[19] - starts[0];
        assert!(
            span >= Duration::from_millis(2_500),
            "15 starts past the first 5 took {span:?}"
        );
        for (i, first) in starts.iter().enumerate() {
            let in_a_second = starts[i..]
                .iter()
                .take_while(|t| **t - *first < Duration::from_secs(1))
                .count();
            assert!(in_a_second <= 11, "{in_a_second} starts within a second");
        }

        // Lifted: the queue shows no limit.
        dtc_ok(&["queue", "limit", "slow", "off", "-p", &port])?;
        let table = dtc_ok(&["queue", "list", "-p", &port])?;
        assert!(table.contains("slow") && !table.contains("5/s"), "{table}");
        let refused = std::process::Command::new(env!("CARGO_BIN_EXE_dtc"))
            .args(["queue", "limit", "slow", "fast", "-p", &port])
            .output()?;
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("100/s"),
            "the error shows the form"
        );
        Ok(())
    })
    .await
}
