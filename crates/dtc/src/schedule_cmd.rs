//! `dtc schedule add|list|pause|resume|trigger|delete`: one admin request each, through a
//! router (which sends a change to the shard the schedule's name routes to, and gathers a
//! list from every shard) or a coordinator (its shard, through its leader); prints the
//! schedules as a table or JSON.

use crate::cli::{CatchUpArg, OverlapArg, ScheduleAction, ScheduleAddArgs, ScheduleArgs};
use crate::task_cmd::from_now;
use anyhow::Context;
use dtc_proto::ask::{ask_all_schedules, ask_leader};
use dtc_proto::schedule::Calendar;
use dtc_proto::schedule::{CatchUp, Overlap, ScheduleOp, ScheduleSpec, ScheduleStatus};
use dtc_proto::transport::{Secure, Tcp};
use dtc_proto::{TaskOptions, TaskSpec};
use dtc_server::router::http_schedules::schedule_json;
use std::net::SocketAddr;

/// Runs one `dtc schedule` action and prints the schedules it answers with.
pub async fn run(args: ScheduleArgs) -> anyhow::Result<()> {
    let (op, doing, target) = match args.action {
        ScheduleAction::List { target } => (
            ScheduleOp::List { after: None },
            "listing the schedules".into(),
            target,
        ),
        ScheduleAction::Add(add) => {
            let doing = format!("adding schedule {}", add.name);
            (ScheduleOp::Add(spec(&add)?), doing, add.target)
        }
        ScheduleAction::Pause(a) => (
            ScheduleOp::Pause(a.name.clone()),
            format!("pausing schedule {}", a.name),
            a.target,
        ),
        ScheduleAction::Resume(a) => (
            ScheduleOp::Resume(a.name.clone()),
            format!("resuming schedule {}", a.name),
            a.target,
        ),
        ScheduleAction::Trigger(a) => (
            ScheduleOp::Trigger(a.name.clone()),
            format!("triggering schedule {}", a.name),
            a.target,
        ),
        ScheduleAction::Delete(a) => (
            ScheduleOp::Delete(a.name.clone()),
            format!("deleting schedule {}", a.name),
            a.target,
        ),
    };
    if let Some(name) = op.name() {
        dtc_proto::schedule::check_schedule_name(name)?;
    }
    let addr = SocketAddr::new(target.ip, target.port);
    let transport = Secure::new(Tcp, target.security.credentials()?);
    let schedules = match op {
        ScheduleOp::List { .. } => ask_all_schedules(&transport, &[addr], "dtc schedule").await,
        op => ask_leader(&transport, &[addr], "dtc schedule", &op).await,
    }
    .with_context(|| format!("{doing} through {addr}"))?;
    if target.json {
        let list: Vec<serde_json::Value> = schedules.iter().map(schedule_json).collect();
        println!("{}", serde_json::to_string(&list)?);
    } else {
        print!("{}", table(&schedules));
    }
    Ok(())
}

/// The schedule `dtc schedule add` asks for, its calendar checked here first.
fn spec(a: &ScheduleAddArgs) -> anyhow::Result<ScheduleSpec> {
    Calendar::parse(&a.cron, a.tz.as_deref())?;
    let mut options = TaskOptions {
        timeout_ms: a
            .shape
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)),
        priority: a.shape.priority,
        ..TaskOptions::default()
    };
    if a.shape.queue != TaskSpec::DEFAULT_QUEUE {
        dtc_proto::check_queue_name(&a.shape.queue)?;
        options.queue = Some(a.shape.queue.clone());
    }
    Ok(ScheduleSpec {
        name: a.name.clone(),
        cron: a.cron.clone(),
        tz: a.tz.clone(),
        overlap: match a.overlap {
            OverlapArg::Skip => Overlap::Skip,
            OverlapArg::Allow => Overlap::Allow,
        },
        catch_up: match a.catch_up {
            CatchUpArg::None => CatchUp::None,
            CatchUpArg::One => CatchUp::One,
            CatchUpArg::All => CatchUp::All,
        },
        kind: a.kind.clone(),
        payload: a.payload.clone().into_bytes().into(),
        max_attempts: a.shape.max_attempts,
        options: (options != TaskOptions::default()).then(|| Box::new(options)),
    })
}

/// `dtc schedule list`'s table.
fn table(schedules: &[ScheduleStatus]) -> String {
    let mut out = format!(
        "{:<20} {:<16} {:<14} {:<12} {:>7} {:>7}  {:<7} {}\n",
        "SCHEDULE", "CRON", "ZONE", "NEXT", "FIRED", "SKIPPED", "STATE", "TYPE"
    );
    for s in schedules {
        let next = match (s.paused, s.next_ms) {
            (true, _) => "-".to_owned(),
            (false, Some(ms)) => from_now(ms),
            (false, None) => "never".to_owned(),
        };
        out.push_str(&format!(
            "{:<20} {:<16} {:<14} {:<12} {:>7} {:>7}  {:<7} {}\n",
            s.spec.name,
            s.spec.cron,
            s.spec.tz.as_deref().unwrap_or("UTC"),
            next,
            s.fired,
            s.skipped,
            if s.paused { "paused" } else { "active" },
            s.spec.kind,
        ));
    }
    if schedules.is_empty() {
        out.push_str("(no schedules: dtc schedule add NAME --cron EXPR TYPE adds one)\n");
    }
    out
}
