//! `dtc submit`, `dtc get`, `dtc cancel`: one request each against a router (or a
//! coordinator), printing the task as text or JSON.

use crate::cli::{CancelArgs, GetArgs, SubmitArgs, TargetArgs};

use dtc_sdk::{Client, ClientConfig, Outcome, TaskSpec, TaskView};
use std::net::SocketAddr;

async fn connect(target: &TargetArgs) -> anyhow::Result<Client> {
    let addr = SocketAddr::new(target.ip, target.port);
    let config = ClientConfig::new(vec![addr]).with_credentials(target.security.credentials()?);
    Ok(Client::with_config(config).await?)
}

/// Submits one task; prints it when it has finished (or when accepted, with `--no-wait`).
pub async fn submit(args: SubmitArgs) -> anyhow::Result<TaskView> {
    let client = connect(&args.target).await?;
    let mut spec = TaskSpec::new(args.kind, args.payload.into_bytes());
    spec.max_attempts = args.max_attempts.max(1);
    if let Some(id) = args.id {
        spec = spec.with_id(id);
    }
    let view = if args.no_wait {
        client.submit(spec).await?
    } else {
        client.run(spec).await?
    };
    print(&view, args.target.json)?;
    Ok(view)
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

/// Cancels a queued task.
pub async fn cancel(args: CancelArgs) -> anyhow::Result<TaskView> {
    let client = connect(&args.target).await?;
    let view = client.cancel(args.id).await?;
    print(&view, args.target.json)?;
    Ok(view)
}

fn print(view: &TaskView, json: bool) -> anyhow::Result<()> {
    let (result, error) = match &view.outcome {
        Some(Outcome::Succeeded(bytes)) => {
            (Some(String::from_utf8_lossy(bytes).into_owned()), None)
        }
        Some(Outcome::Failed(reason)) => (None, Some(reason.clone())),
        Some(Outcome::Cancelled) | None => (None, None),
    };
    if json {
        let value = serde_json::json!({
            "id": view.id.to_string(),
            "state": format!("{:?}", view.state).to_lowercase(),
            "attempts": view.attempts,
            "result": result,
            "error": error,
        });
        println!("{value}");
    } else {
        println!("id: {}", view.id);
        println!("state: {}", format!("{:?}", view.state).to_lowercase());
        println!("attempts: {}", view.attempts);
        if let Some(r) = result {
            println!("result: {r}");
        }
        if let Some(e) = error {
            println!("error: {e}");
        }
    }
    Ok(())
}
