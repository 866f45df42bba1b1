//! `dtc submit`, `dtc get`, `dtc cancel`, `dtc retry`: one request each against a router
//! (or a coordinator), printing the task as text or JSON; `dtc tasks`: pages of tasks.

use crate::cli::{
    GetArgs, IdArgs, PurgeArgs, QueueAction, QueueArgs, SubmitArgs, TargetArgs, TasksArgs,
};
use anyhow::Context;
use dtc_proto::ask::{Purge, ask_leader};
use dtc_proto::status::{QueueOp, QueueStatus, TaskQuery};
use dtc_proto::transport::{Secure, Tcp};

use dtc_sdk::{Client, ClientConfig, Outcome, TaskSpec, TaskView};
use dtc_server::router::task_json::{TaskJson, rfc3339};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

async fn connect(target: &TargetArgs) -> anyhow::Result<Client> {
    let addr = SocketAddr::new(target.ip, target.port);
    let config = ClientConfig::new(vec![addr]).with_credentials(target.security.credentials()?);
    Ok(Client::with_config(config).await?)
}

/// Submits one task; prints it when it has finished (or when accepted, with `--no-wait`).
pub async fn submit(args: SubmitArgs) -> anyhow::Result<TaskView> {
    let client = connect(&args.target).await?;
    let spec = spec(args.kind.clone(), args.payload.clone().into_bytes(), &args)?;
    // Accepted first, then waited for: so that a task no worker can run is said at once.
    let mut view = client.submit(spec).await?;
    if view.no_handler {
        eprintln!(
            "warning: no worker connected to its shard has a handler for task type {:?}; the \
             task waits until one connects (use --expires to bound the wait, dtc cancel {} \
             to drop it)",
            &*view.kind, view.id
        );
    }
    if !args.no_wait && !view.state.is_finished() {
        view = client.wait(view.id).await?;
    }
    print(&view, args.target.json)?;
    Ok(view)
}

/// The task `dtc submit` asks for.
fn spec(kind: String, payload: Vec<u8>, args: &SubmitArgs) -> anyhow::Result<TaskSpec> {
    let shape = &args.shape;
    let mut spec = TaskSpec::new(kind, payload).with_max_attempts(shape.max_attempts);
    if let Some(id) = args.id {
        spec = spec.with_id(id);
    }
    if let Some(delay) = args.delay {
        spec = spec.with_delay(delay);
    }
    if let Some(at) = args.at {
        spec = spec.with_start_at(at);
    }
    if let Some(timeout) = shape.timeout {
        spec = spec.with_timeout(timeout);
    }
    if let Some(ttl) = args.expires {
        spec = spec.with_expiry(ttl);
    }
    if let Some(backoff) = args.backoff.backoff()? {
        spec = spec.with_backoff(backoff);
    }
    if shape.queue != TaskSpec::DEFAULT_QUEUE {
        dtc_proto::check_queue_name(&shape.queue)?;
        spec = spec.with_queue(&shape.queue);
    }
    if shape.priority > 0 {
        spec = spec.with_priority(shape.priority);
    }
    if let Some(key) = &args.key {
        spec = spec.with_concurrency(key, args.key_limit);
    }
    Ok(spec)
}

/// Looks a task up.
pub async fn get(args: GetArgs) -> anyhow::Result<TaskView> {
    let client = connect(&args.target).await?;
    let view = if args.wait {
        client.wait(args.id).await?
    } else {
        client.get(args.id).await?
    };
    print(&view, args.target.json)?;
    Ok(view)
}

/// Cancels an unfinished task.
pub async fn cancel(args: IdArgs) -> anyhow::Result<TaskView> {
    let client = connect(&args.target).await?;
    let view = client.cancel(args.id).await?;
    print(&view, args.target.json)?;
    Ok(view)
}

/// Runs a failed task again.
pub async fn retry(args: IdArgs) -> anyhow::Result<TaskView> {
    let client = connect(&args.target).await?;
    let view = client.retry(args.id).await?;
    print(&view, args.target.json)?;
    Ok(view)
}

/// Lists tasks, newest first: one page, or with `--all` every page.
pub async fn list(args: TasksArgs) -> anyhow::Result<()> {
    let addr = SocketAddr::new(args.target.ip, args.target.port);
    let transport = Secure::new(Tcp, args.target.security.credentials()?);
    let mut query = TaskQuery {
        state: args.state,
        kind: args.kind.clone(),
        limit: args.limit.clamp(1, TaskQuery::MAX_LIMIT),
        before: args.cursor,
    };
    let mut shown = 0usize;
    loop {
        // A router merges every shard; a coordinator answers for its shard (its leader).
        let page = ask_leader(&transport, &[addr], "dtc tasks", &query)
            .await
            .with_context(|| format!("listing tasks through {addr}"))?;
        for view in &page.tasks {
            if args.target.json {
                println!("{}", json(view)?);
            } else {
                if shown == 0 {
                    println!(
                        "{:<36}  {:<12} {:<9} {:>8}  {:<20}  DUE / ERROR",
                        "ID", "TYPE", "STATE", "ATTEMPTS", "CREATED"
                    );
                }
                println!("{}", row(view));
            }
            shown += 1;
        }
        match page.next {
            Some(next) if args.all => query.before = Some(next),
            Some(next) => {
                if !args.target.json {
                    eprintln!("more: dtc tasks --cursor {next} (or --all)");
                }
                break;
            }
            None => break,
        }
    }
    if shown == 0 && !args.target.json {
        eprintln!("no tasks");
    }
    Ok(())
}

/// Forgets every finished task in a state.
pub async fn purge(args: PurgeArgs) -> anyhow::Result<()> {
    let addr = SocketAddr::new(args.target.ip, args.target.port);
    let transport = Secure::new(Tcp, args.target.security.credentials()?);
    let n = ask_leader(&transport, &[addr], "dtc purge", &Purge(args.state))
        .await
        .with_context(|| format!("purging {} tasks through {addr}", args.state.name()))?;
    if args.target.json {
        println!("{}", serde_json::json!({ "purged": n }));
    } else {
        println!("purged {n} {} tasks", args.state.name());
    }
    Ok(())
}

/// Lists, pauses or resumes queues, and prints every queue as it then stands.
pub async fn queue(args: QueueArgs) -> anyhow::Result<()> {
    let (op, doing, target) = match args.action {
        QueueAction::List { target } => (QueueOp::List, "listing the queues".to_owned(), target),
        QueueAction::Pause { name, target } => {
            dtc_proto::check_queue_name(&name)?;
            let doing = format!("pausing queue {name}");
            (QueueOp::Pause(name), doing, target)
        }
        QueueAction::Resume { name, target } => {
            dtc_proto::check_queue_name(&name)?;
            let doing = format!("resuming queue {name}");
            (QueueOp::Resume(name), doing, target)
        }
        QueueAction::Limit { name, rate, target } => {
            dtc_proto::check_queue_name(&name)?;
            let per_hour = match rate.as_str() {
                "off" | "none" => None,
                text => Some(dtc_proto::status::parse_rate(text).map_err(anyhow::Error::msg)?),
            };
            let doing = format!("limiting queue {name}");
            (QueueOp::Limit(name, per_hour), doing, target)
        }
    };
    let addr = SocketAddr::new(target.ip, target.port);
    let transport = Secure::new(Tcp, target.security.credentials()?);
    let queues = ask_leader(&transport, &[addr], "dtc queue", &op)
        .await
        .with_context(|| format!("{doing} through {addr}"))?;
    if target.json {
        println!("{}", serde_json::to_string(&queues)?);
    } else {
        print!("{}", queue_table(&queues));
    }
    Ok(())
}

/// `dtc queue list`'s table.
fn queue_table(queues: &[QueueStatus]) -> String {
    let mut out = format!(
        "{:<24} {:>9} {:>9} {:>8} {:>10} {:>10}  {}\n",
        "QUEUE", "QUEUED", "RUNNING", "WORKERS", "DONE/S", "LIMIT", "STATE"
    );
    for q in queues {
        let limit = q
            .rate_per_hour
            .map_or_else(|| "-".to_owned(), dtc_proto::status::format_rate);
        out.push_str(&format!(
            "{:<24} {:>9} {:>9} {:>8} {:>10.1} {:>10}  {}\n",
            q.name,
            q.queued,
            q.running,
            q.workers,
            q.done_per_s,
            limit,
            if q.paused { "paused" } else { "active" }
        ));
    }
    if queues.is_empty() {
        out.push_str("(no queue has tasks or workers yet)\n");
    }
    out
}

/// One task as a row of `dtc tasks`.
fn row(view: &TaskView) -> String {
    let detail = match (&view.outcome, view.due_ms) {
        (Some(Outcome::Failed(e)), _) => e.clone(),
        (_, Some(due)) => format!("due {}", from_now(due)),
        _ if view.no_handler => "waiting for a worker with its handler".to_owned(),
        _ => view.errors.last().cloned().unwrap_or_default(),
    };
    let created = rfc3339(view.created_ms);
    let detail: String = detail
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(80)
        .collect();
    format!(
        "{:<36}  {:<12} {:<9} {:>8}  {:<20}  {detail}",
        view.id,
        &*view.kind,
        view.state.name(),
        view.attempts,
        created.get(..19).unwrap_or(&created),
    )
}

/// How far `ms` (since the epoch) is from now, for people: "in 2.5s", "3s ago".
pub(crate) fn from_now(ms: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    if ms >= now {
        format!("in {:.1}s", (ms - now) as f64 / 1000.0)
    } else {
        format!("{:.1}s ago", (now - ms) as f64 / 1000.0)
    }
}

/// A task's result and error, as text.
fn result_and_error(view: &TaskView) -> (Option<String>, Option<String>) {
    match &view.outcome {
        Some(Outcome::Succeeded(bytes)) => {
            (Some(String::from_utf8_lossy(bytes).into_owned()), None)
        }
        Some(Outcome::Failed(reason)) => (None, Some(reason.clone())),
        Some(Outcome::Cancelled) | None => (None, None),
    }
}

/// A task as one JSON object, as the HTTP API shows it.
fn json(view: &TaskView) -> serde_json::Result<String> {
    serde_json::to_string(&TaskJson::from(view.clone()))
}

fn print(view: &TaskView, json: bool) -> anyhow::Result<()> {
    let (result, error) = result_and_error(view);
    if json {
        println!("{}", self::json(view)?);
    } else {
        println!("id: {}", view.id);
        if !view.kind.is_empty() {
            println!("type: {}", view.kind);
        }
        println!("state: {}", view.state.name());
        if let Some(queue) = &view.queue {
            println!("queue: {queue}");
        }
        if view.priority > 0 {
            println!("priority: {}", view.priority);
        }
        if let Some(c) = &view.concurrency {
            println!("key: {} (at most {} at once)", c.key, c.limit);
        }
        if let Some(p) = &view.progress {
            println!(
                "progress: {:.1}% {}",
                f64::from(p.permille) / 10.0,
                p.message
            );
        }
        println!("attempts: {}", view.attempts);
        if let Some(due) = view.due_ms {
            println!("due: {} ({})", rfc3339(due), from_now(due));
        }
        if view.no_handler {
            println!("waiting: no connected worker has a handler for its type");
        }
        if let Some(r) = result {
            println!("result: {r}");
        }
        if let Some(e) = error {
            println!("error: {e}");
        }
        if view.errors.len() > 1 || (view.errors.len() == 1 && view.outcome.is_none()) {
            println!("attempt errors (oldest first):");
            for e in &view.errors {
                println!("  - {e}");
            }
        }
    }
    Ok(())
}
