//! A worker with a handler of your own, and a client that uses it.
//!
//! Start a coordinator, then run this example against it:
//!
//! ```text
//! dtc coordinator -p 5000 &
//! cargo run -p dtc-sdk --example custom_handler -- 127.0.0.1:5000
//! ```
//!
//! The worker registers `reverse` (a plain async function) next to the built-in handlers;
//! the client submits a few tasks, waits for their results and prints them.

use dtc_sdk::{Client, Outcome, Task, TaskSpec, Worker};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// Reverses the text it is given.
async fn reverse(task: Task) -> Result<String, String> {
    let text = std::str::from_utf8(&task.payload).map_err(|e| format!("not text: {e}"))?;
    Ok(text.chars().rev().collect())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:5000")
        .parse()?;

    let stop = CancellationToken::new();
    let worker = Worker::builder()
        .slots(2)
        .builtins()
        .handler("reverse", reverse)
        .build()?;
    let worker = tokio::spawn(worker.run(vec![addr], stop.clone()));

    let client = Client::connect(addr).await?;
    for (kind, payload) in [
        ("reverse", "hello, dtc"),
        ("wordcount", "one two three"),
        ("sleep", "1500"),
    ] {
        let view = client.run(TaskSpec::new(kind, payload)).await?;
        match view.outcome {
            Some(Outcome::Succeeded(out)) => {
                println!("{kind}({payload:?}) = {:?}", String::from_utf8_lossy(&out))
            }
            other => println!("{kind}({payload:?}) ended as {other:?}"),
        }
    }

    stop.cancel();
    worker.await??;
    Ok(())
}
