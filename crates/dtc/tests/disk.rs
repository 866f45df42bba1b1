//! Disk faults with real processes: a replica whose data directory is a small tmpfs that
//! fills up under load stops — its process exits non-zero rather than serve without a disk
//! — while its shard carries on, and no task it acknowledged is lost.

mod common;

use anyhow::Context;
use common::{Proc, Shard, TempDir, Tmpfs};
use dtc_sdk::{Client, ClientConfig, TaskSpec, TaskState};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_disk_fills_up_stops_and_no_acknowledged_task_is_lost() -> anyhow::Result<()>
{
    common::bounded(async {
        let dirs = vec![
            TempDir::new("replica")?,
            TempDir::new("replica")?,
            TempDir::new("small-replica")?,
        ];
        let small = Tmpfs::mount(dirs[2].path(), 6 * 1024 * 1024)?;
        let mut shard = Shard::start_in(dirs, &[])?;
        let list = shard.list();
        let _worker = Proc::start(&["worker", "-s", &list, "-w", "4"])?;
        let mut config = ClientConfig::new(shard.addrs.clone());
        config.retry_for = Duration::from_secs(30);
        let client = Client::with_config(config).await?;
        // 64 KiB payloads: the small replica's 6 MiB fill within a hundred or so tasks.
        let payload = vec![b'x'; 64 * 1024];
        let mut acknowledged = Vec::new();
        for _ in 0..2_000 {
            if !shard.procs[2].alive() {
                break;
            }
            let spec = TaskSpec::new("noop", payload.clone());
            let id = spec.id;
            if client.submit(spec).await.is_ok() {
                acknowledged.push(id);
            }
        }
        anyhow::ensure!(!shard.procs[2].alive(), "the small replica did not stop");
        assert!(
            !shard.procs[2].wait_success()?,
            "the replica must exit non-zero when its disk is full"
        );
        // The other two carry on: more tasks are accepted, and every acknowledged one ran.
        for _ in 0..20 {
            let spec = TaskSpec::new("noop", payload.clone());
            acknowledged.push(spec.id);
            client.submit(spec).await?;
        }
        for id in &acknowledged {
            let view = client
                .wait(*id)
                .await
                .with_context(|| format!("task {id}"))?;
            assert_eq!(view.state, TaskState::Succeeded, "{view:?}");
        }
        assert!(
            acknowledged.len() > 20,
            "some tasks were acknowledged before the disk filled"
        );
        drop(small);
        Ok(())
    })
    .await
}
