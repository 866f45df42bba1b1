//! Schedules with real `dtc coordinator` and `dtc router` processes on loopback: a
//! per-second schedule added with `dtc schedule add` fires every tick exactly once while
//! its shard's leader is killed mid-run (the ticks missed without a leader are caught up
//! under `--catch-up all`), and `dtc schedule pause|resume|trigger|delete|list` do what they
//! say.

mod common;

use common::{Proc, Shard, dtc_ok, leader_of, schedule_status as status, until_tick};
use dtc_proto::schedule::schedule_task_id;
use dtc_sdk::{Client, ClientConfig, Task, TaskState, Worker};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_second_schedule_fires_each_tick_once_across_a_leader_kill() -> anyhow::Result<()> {
    common::bounded(async {
        let mut shard = Shard::start(3, &[])?;
        let router = Proc::start(&["router", "-p", "0", "--http", "off", "-s", &shard.list()])?;
        let raddr = router.addr()?;
        let port = raddr.port().to_string();
        let (leader, term) = leader_of(raddr, 0, 0).await?;
        let stop = CancellationToken::new();
        let worker = Worker::builder()
            .handler("tick", |_task: Task| async { Ok::<_, String>("") })
            .build()?;
        tokio::spawn(worker.run(shard.addrs.clone(), stop.clone()));

        let added = common::add_every_second(&port, "every-second", "tick", "")?;
        assert!(added.contains("every-second"), "{added}");
        let start = status(raddr, "every-second").await?.last_tick_ms;
        // Three ticks under the first leader, then it dies; the next leader catches up.
        until_tick(raddr, "every-second", start + 3_000).await?;
        shard.kill9(leader)?;
        let killed_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis();
        leader_of(raddr, 0, term).await?;
        let killed_ms = u64::try_from(killed_at)?;
        until_tick(raddr, "every-second", killed_ms + 3_000).await?;
        dtc_ok(&["schedule", "pause", "every-second", "-p", &port])?;
        let end = status(raddr, "every-second").await?;
        assert!(end.paused);

        // Every whole second after the start up to the last tick handled: one task each,
        // and no tick skipped.
        let first = start / 1000 + 1;
        let last = end.last_tick_ms / 1000;
        let ticks = last + 1 - first;
        assert!(ticks >= 6, "{ticks} ticks");
        assert_eq!((end.fired, end.skipped), (ticks, 0), "{end:?}");
        let mut config = ClientConfig::new(vec![raddr]);
        config.retry_for = Duration::from_secs(30);
        let client = Client::with_config(config).await?;
        for second in first..=last {
            let id = schedule_task_id("every-second", second * 1000);
            let view = client.wait(id).await?;
            assert_eq!(view.state, TaskState::Succeeded, "tick {second}");
        }

        // A trigger runs it now even while paused; delete removes it.
        let triggered = dtc_ok(&["schedule", "trigger", "every-second", "-p", &port, "--json"])?;
        let listed: Vec<serde_json::Value> = serde_json::from_str(&triggered)?;
        assert_eq!(
            listed.first().map(|s| &s["fired"]),
            Some(&serde_json::json!(ticks + 1)),
            "{triggered}"
        );
        dtc_ok(&["schedule", "delete", "every-second", "-p", &port])?;
        let table = dtc_ok(&["schedule", "list", "-p", &port])?;
        assert!(table.contains("no schedules"), "{table}");
        let refused = std::process::Command::new(env!("CARGO_BIN_EXE_dtc"))
            .args([
                "schedule",
                "add",
                "bad",
                "tick",
                "--cron",
                "every second",
                "-p",
                &port,
            ])
            .output()?;
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("five fields"));
        stop.cancel();
        Ok(())
    })
    .await
}
