//! What schedules cost the shard's leader: one `dtc coordinator` (a shard of one replica,
//! so it leads), one `dtc worker`, and N schedules added through the admin protocol; the
//! leader's CPU (utime + stime from `/proc/PID/stat`) is measured over a window, first
//! with no schedules, then with N that never tick in the window (yearly: the cost of
//! holding them), then with N more that each tick once a minute (spread over the seconds
//! of the minute: N/60 tasks a second, each logged, run and completed).
//!
//! `cargo bench -p dtc --bench schedules -- [N] [SECONDS]` (default 10000 and 60).

#[path = "../tests/common/mod.rs"]
mod common;

use common::Proc;
use dtc_proto::ask::ask_leader;
use dtc_proto::schedule::{CatchUp, Overlap, ScheduleOp, ScheduleSpec};
use dtc_proto::transport::Tcp;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// CPU seconds (user + system) the process has used.
fn cpu_s(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name (in parentheses, which may hold spaces).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("unreadable /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
        .iter()
        .map(|f| f.parse::<f64>().unwrap_or(0.0))
        .sum();
    Ok(ticks / 100.0)
}

/// The leader's share of one core over `secs`.
async fn leader_share(pid: u32, secs: u64) -> anyhow::Result<f64> {
    let (c0, t0) = (cpu_s(pid)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    Ok((cpu_s(pid)? - c0) / t0.elapsed().as_secs_f64())
}

/// Adds `n` schedules named `{prefix}{i}` with `cron(i)`, 64 requests at a time.
async fn add(
    addr: SocketAddr,
    n: usize,
    prefix: &str,
    cron: impl Fn(usize) -> String,
) -> anyhow::Result<()> {
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        let adds = chunk.iter().map(|i| {
            let spec = ScheduleSpec {
                name: format!("{prefix}{i}"),
                cron: cron(*i),
                tz: None,
                overlap: Overlap::Skip,
                catch_up: CatchUp::None,
                kind: "noop".into(),
                payload: bytes::Bytes::new(),
                max_attempts: 3,
                options: None,
            };
            async move { ask_leader(&Tcp, &[addr], "bench", &ScheduleOp::Add(spec)).await }
        });
        for added in futures_util::future::join_all(adds).await {
            added?;
        }
    }
    Ok(())
}

/// Ticks that submitted a task, over every schedule.
async fn fired(addr: SocketAddr) -> anyhow::Result<u64> {
    let all = dtc_proto::ask::ask_all_schedules(&Tcp, &[addr], "bench").await?;
    Ok(all.iter().map(|s| s.fired).sum())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    let coord = Proc::coordinator(&["-p", "0"])?;
    let addr = coord.addr()?;
    let port = addr.port().to_string();
    let _worker = Proc::start(&["worker", "-p", &port, "-w", "16"])?;
    let pid = coord.pid();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let idle = leader_share(pid, secs).await?;
    println!(
        "no schedules:            leader {:5.2}% of a core",
        idle * 100.0
    );

    let started = Instant::now();
    add(addr, n, "yearly-", |i| {
        format!("{} {} {} 1 1 *", i % 60, (i / 60) % 60, (i / 3600) % 24)
    })
    .await?;
    println!(
        "added {n} schedules in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let held = leader_share(pid, secs).await?;
    println!(
        "{n} yearly schedules:    leader {:5.2}% of a core",
        held * 100.0
    );

    add(addr, n, "minutely-", |i| format!("{} * * * * *", i % 60)).await?;
    // Let a minute pass first, so that every schedule ticks in the window.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let before = fired(addr).await?;
    let busy = leader_share(pid, secs).await?;
    let ticks = fired(addr).await? - before;
    println!(
        "{n} minutely schedules:  leader {:5.2}% of a core ({:.0} tasks fired a second)",
        busy * 100.0,
        ticks as f64 / secs as f64
    );
    Ok(())
}
