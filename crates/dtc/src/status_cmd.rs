//! `dtc status`: asks a router (the whole cluster) or one coordinator replica for its
//! status and prints it as text or, with `--json`, as one JSON object.

use crate::cli::{ConfigureArgs, StatusArgs};
use anyhow::Context;
use dtc_proto::TaskOptions;
use dtc_proto::ask::{SetTypeDefaults, ask_leader, ask_status};
use dtc_proto::status::{
    AdminResponse, ClusterStatus, RaftRole, ReplicaStatus, SettingsChange, ShardSettings,
    StateCounts,
};
use dtc_proto::transport::{Secure, Tcp};
use std::fmt::Write;

/// Runs `dtc status`.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let addr = args.addr.unwrap_or(args.router);
    let transport = Secure::new(Tcp, args.security.credentials()?);
    let answer = ask_status(&transport, addr, "dtc status")
        .await
        .with_context(|| format!("asking {addr} for its status"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    print!("{}", render(&answer));
    Ok(())
}

/// The status as text.
pub fn render(answer: &AdminResponse) -> String {
    match answer {
        AdminResponse::Replica(r) => {
            let mut out = String::new();
            replica_lines(&mut out, r);
            runtime_lines(&mut out, r);
            out
        }
        AdminResponse::Cluster(c) => cluster(c),
        AdminResponse::Failed(e) => format!("no status: {e}\n"),
        _ => "an answer to another question\n".to_owned(),
    }
}

/// Every task type's defaults, a line each.
fn type_defaults_lines(all: &[(String, TaskOptions)]) -> String {
    if all.is_empty() {
        return "  no task type has defaults of its own\n".to_owned();
    }
    let mut out = String::new();
    for (kind, o) in all {
        let mut parts = Vec::new();
        if let Some(t) = o.timeout_ms {
            parts.push(format!("timeout {t} ms"));
        }
        if let Some(e) = o.expires_ms {
            parts.push(format!("expires after {e} ms"));
        }
        if let Some(b) = o.backoff {
            parts.push(format!(
                "backoff {} ms x{:.2} up to {} ms, jitter {}%",
                b.initial_ms,
                f64::from(b.multiplier_pct) / 100.0,
                b.max_ms,
                b.jitter_pct
            ));
        }
        if let Some(q) = &o.queue {
            parts.push(format!("queue {q}"));
        }
        if o.priority > 0 {
            parts.push(format!("priority {}", o.priority));
        }
        let _ = writeln!(out, "  type {kind}: {}", parts.join(", "));
    }
    out
}

/// How many tasks are in each state, as one line.
pub fn states_line(s: &StateCounts) -> String {
    let parts: Vec<String> = s
        .iter()
        .map(|(state, n)| format!("{} {n}", state.name()))
        .collect();
    format!("  tasks: {}\n", parts.join(", "))
}

/// A shard's settings, as one line.
pub fn settings_line(s: &ShardSettings) -> String {
    format!(
        "  settings: results kept {} s, at most {} results, at most {} queued; failed tasks \
         kept {} s, at most {}\n",
        s.result_ttl_ms / 1000,
        s.max_results,
        s.max_queued,
        s.failed_ttl_ms / 1000,
        s.max_failed
    )
}

fn cluster(c: &ClusterStatus) -> String {
    let mut out = String::new();
    for shard in &c.shards {
        let leader = shard.leader();
        let _ = writeln!(
            out,
            "shard {}: {}",
            shard.shard,
            leader.map_or_else(
                || "NO LEADER".to_string(),
                |l| format!("leader replica {} at {} (term {})", l.id, l.addr, l.term)
            )
        );
        for (addr, replica) in &shard.replicas {
            match replica {
                Ok(r) => replica_lines(&mut out, r),
                Err(e) => {
                    let _ = writeln!(out, "  {addr:<21}  unreachable: {e}");
                }
            }
        }
        if let Some(l) = leader {
            runtime_lines(&mut out, l);
        }
    }
    out
}

fn replica_lines(out: &mut String, r: &ReplicaStatus) {
    let _ = writeln!(
        out,
        "  {:<21}  replica {:<2} {:<9} term {:<4} log {:<8} commit {:<8} applied {:<8} tasks {} (unfinished {})",
        r.addr,
        r.id,
        r.role.to_string(),
        r.term,
        r.last_log,
        r.committed,
        r.applied,
        r.tasks,
        r.queued
    );
}

fn runtime_lines(out: &mut String, r: &ReplicaStatus) {
    if r.role != RaftRole::Leader {
        return;
    }
    out.push_str(&settings_line(&r.settings));
    out.push_str(&states_line(&r.states));
    let s = &r.stats;
    let _ = writeln!(
        out,
        "  running {}, workers {}; as leader: submitted {}, completed {}, failed {}, retried {}{}",
        r.running,
        r.workers.len(),
        s.submitted,
        s.completed,
        s.failed,
        s.retried,
        match (s.p50_us, s.p95_us) {
            (Some(p50), Some(p95)) => format!("; last second p50 {p50} µs, p95 {p95} µs"),
            _ => String::new(),
        }
    );
    for w in &r.workers {
        let _ = writeln!(
            out,
            "    {:<20} {:<21} {}/{} slots busy, {} taken ahead, {} done, heard from {} ms ago",
            w.name,
            w.addr,
            w.running(),
            w.slots,
            w.ahead(),
            w.done,
            w.heartbeat_age_ms
        );
    }
}

/// Runs `dtc configure`: changes a shard's settings through its leader (found from any of
/// its replicas), once the change is committed; prints them.
pub async fn configure(args: ConfigureArgs) -> anyhow::Result<()> {
    let change = SettingsChange {
        result_ttl_ms: args.result_ttl_s.map(|s| s.saturating_mul(1000)),
        max_results: args.max_results,
        max_queued: args.max_queue,
        failed_ttl_ms: args.failed_ttl_s.map(|s| s.saturating_mul(1000)),
        max_failed: args.max_failed,
    };
    let transport = Secure::new(Tcp, args.security.credentials()?);
    // Through whichever replica leads (a follower names it; while none does, an election
    // is under way and it asks again for a few seconds).
    let addrs = [args.addr];
    let name = "dtc configure";
    let settings = match &args.kind {
        Some(kind) => {
            anyhow::ensure!(
                change == SettingsChange::default(),
                "--type changes a task type's defaults; change the shard's settings apart"
            );
            let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            let options = TaskOptions {
                timeout_ms: args.timeout.map(ms),
                expires_ms: args.expires.map(ms),
                backoff: args.backoff.backoff()?,
                queue: args.queue.clone(),
                priority: args.priority.unwrap_or(0),
                ..TaskOptions::default()
            };
            anyhow::ensure!(
                args.clear || options != TaskOptions::default(),
                "say what its tasks take: --timeout, --expires, --backoff…, --queue, --priority \
                 (or --clear)"
            );
            let change = SetTypeDefaults {
                kind: kind.clone(),
                options: (!args.clear).then_some(options),
            };
            ask_leader(&transport, &addrs, name, &change)
                .await
                .map(|all| type_defaults_lines(&all))
        }
        None => {
            anyhow::ensure!(
                change != SettingsChange::default(),
                "say what to change: --result-ttl-s, --max-results, --max-queue, \
                 --failed-ttl-s, --max-failed, or a task type's defaults with --type"
            );
            ask_leader(&transport, &addrs, name, &change)
                .await
                .map(|s| settings_line(&s))
        }
    };
    let settings = settings.map_err(|e| match e {
        dtc_proto::WireError::Unavailable { reason } => {
            anyhow::anyhow!(
                "cannot change the settings of {}'s shard: {reason}",
                args.addr
            )
        }
        e => anyhow::anyhow!("{} refused: {e}", args.addr),
    })?;
    print!("{settings}");
    Ok(())
}
