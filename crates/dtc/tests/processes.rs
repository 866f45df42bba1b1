//! Failure tests with real `dtc` processes on loopback: a worker killed with SIGKILL mid-run,
//! a coordinator killed and restarted, and hostile bytes sent to every listening port.

mod common;

use anyhow::Context;
use bytes::{BufMut, BytesMut};
use common::{Proc, Rig, TEST_LIMIT, TempDir, free_port, until};
use dtc_proto::codec::encode_frame;
use dtc_proto::message::RequestBody;
use dtc_proto::message::{Hello, Role};
use dtc_sdk::{Client, ClientConfig, ClientError, Outcome, TaskSpec, TaskState, WireError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_tasks_run_elsewhere() -> anyhow::Result<()> {
    common::bounded(async {
        let rig = Rig::start(&[]).await?;
        let client = &rig.client;
        let port = rig.port()?;
        let mut doomed = rig.worker_process(&["-w", "4", "--name", "doomed"])?;
        let specs: Vec<TaskSpec> = (0..300).map(|_| TaskSpec::new("sleep", "10000")).collect();
        let ids: Vec<_> = specs.iter().map(|s| s.id).collect();
        // Submitted all at once: each submit is a replicated, fsynced log entry.
        let mut submits = tokio::task::JoinSet::new();
        for spec in specs {
            let client = client.clone();
            submits.spawn(async move { client.submit(spec).await });
        }
        while let Some(r) = submits.join_next().await {
            r??;
        }
        // The doomed worker is alone at first, so it surely holds tasks; then a second one
        // joins, and once the run is well under way the first is killed.
        let first = ids[0];
        until(|| async {
            Ok(client
                .get(first)
                .await
                .is_ok_and(|v| v.state != TaskState::Queued))
        })
        .await?;
        let _survivor = Proc::start(&["worker", "-p", &port, "-w", "4", "--name", "survivor"])?;
        let done = Arc::new(AtomicU64::new(0));
        let mut waits = Vec::new();
        for &id in &ids {
            let client = client.clone();
            let done = Arc::clone(&done);
            waits.push(tokio::spawn(async move {
                let view = client.wait(id).await;
                done.fetch_add(1, Ordering::Relaxed);
                view
            }));
        }
        until(|| async { Ok(done.load(Ordering::Relaxed) >= 40) }).await?;
        doomed.kill9()?;
        let mut rerun = 0;
        for w in waits {
            let view = tokio::time::timeout(TEST_LIMIT, w)
                .await
                .context("timed out")???;
            assert_eq!(view.state, TaskState::Succeeded, "{view:?}");
            if view.attempts >= 2 {
                rerun += 1;
            }
        }
        assert!(
            rerun >= 1,
            "the killed worker's running tasks must have run again elsewhere"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_is_rejoined_and_the_run_completes() -> anyhow::Result<()> {
    common::bounded(async {
        let port = free_port()?.to_string();
        let data = TempDir::new("restarted")?;
        let mut coord = Proc::start(&["coordinator", "-p", &port, "--data-dir", &data.arg()])?;
        let shard = format!("127.0.0.1:{port}");
        let _w1 = Proc::start(&["worker", "-p", &port, "-w", "4"])?;
        let _w2 = Proc::start(&["worker", "-p", &port, "-w", "4"])?;
        let router = Proc::start(&["router", "-p", "0", "--http", "off", "-s", &shard])?;
        let mut config = ClientConfig::new(vec![router.addr()?]);
        config.retry_for = Duration::from_secs(60);
        let client = Client::with_config(config).await?;
        let done = Arc::new(AtomicU64::new(0));
        let mut loops = Vec::new();
        for _ in 0..16 {
            let client = client.clone();
            let done = Arc::clone(&done);
            loops.push(tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for _ in 0..60 {
                    let view = client
                        .run(TaskSpec::new("wordcount", "one two three"))
                        .await;
                    done.fetch_add(1, Ordering::Relaxed);
                    outcomes.push(view.map(|v| v.outcome));
                }
                outcomes
            }));
        }
        until(|| async { Ok(done.load(Ordering::Relaxed) >= 200) }).await?;
        coord.kill9()?;
        let before_restart = done.load(Ordering::Relaxed);
        // While the shard is down, a request without retries gets a clear error at once.
        let probe = RequestBody::Submit {
            task: TaskSpec::new("noop", ""),
            wait: true,
        };
        match client.call(probe).await {
            Err(ClientError::Wire(WireError::Unavailable { reason })) => {
                assert!(
                    reason.contains("shard 0"),
                    "the error names the shard: {reason}"
                )
            }
            other => panic!("expected Unavailable while the coordinator is down, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _coord = Proc::start(&["coordinator", "-p", &port, "--data-dir", &data.arg()])?;
        let mut ok = 0;
        for l in loops {
            for outcome in tokio::time::timeout(TEST_LIMIT, l)
                .await
                .context("timed out")??
            {
                assert_eq!(outcome?, Some(Outcome::Succeeded(bytes::Bytes::from("3"))));
                ok += 1;
            }
        }
        assert_eq!(ok, 16 * 60);
        assert!(
            before_restart < 16 * 60,
            "the coordinator went away mid-run"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_told_to_stop_finishes_its_tasks_first() -> anyhow::Result<()> {
    common::bounded(async {
        let rig = Rig::start(&[]).await?;
        let client = &rig.client;
        let mut worker = rig.worker_process(&["-w", "2", "--prefetch", "0"])?;
        let mut ids = Vec::new();
        for _ in 0..2 {
            let spec = TaskSpec::new("sleep", "400000");
            ids.push(spec.id);
            client.submit(spec).await?;
        }
        until(|| async {
            let mut running = 0;
            for id in &ids {
                if client
                    .get(*id)
                    .await
                    .map(|v| v.state == TaskState::Running)
                    .unwrap_or(false)
                {
                    running += 1;
                }
            }
            Ok(running == ids.len())
        })
        .await?;
        worker.signal("TERM")?;
        // The worker drains: both tasks finish on their first attempt, then it exits cleanly.
        for id in &ids {
            let view = client.wait(*id).await?;
            assert_eq!(view.state, TaskState::Succeeded);
            assert_eq!(
                view.attempts, 1,
                "a draining worker's tasks are not run again"
            );
        }
        assert!(
            worker.wait_success()?,
            "the worker exits with success after draining"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_is_declared_dead_by_heartbeat() -> anyhow::Result<()> {
    common::bounded(async {
        let coord = Proc::coordinator(&["-p", "0", "--heartbeat-timeout-ms", "500"])?;
        let port = coord.addr()?.port().to_string();
        let frozen = Proc::start(&["worker", "-p", &port, "-w", "1", "--prefetch", "0"])?;
        let client = Client::connect(coord.addr()?).await?;
        let spec = TaskSpec::new("sleep", "300000");
        client.submit(spec.clone()).await?;
        until(|| async {
            Ok(client
                .get(spec.id)
                .await
                .is_ok_and(|v| v.state == TaskState::Running))
        })
        .await?;
        // Freeze the worker: its connection stays open, but it no longer heartbeats.
        frozen.signal("STOP")?;
        let _rescuer = Proc::start(&["worker", "-p", &port, "-w", "1"])?;
        let view = client.wait(spec.id).await?;
        assert_eq!(view.state, TaskState::Succeeded);
        assert!(
            view.attempts >= 2,
            "the frozen worker's attempt was given up and run again: {view:?}"
        );
        frozen.signal("CONT")?;
        Ok(())
    })
    .await
}

/// Sends `bytes` on a fresh connection, then reads until the server closes it; returns what
/// the server sent. Fails if the server keeps the connection open.
async fn send_and_expect_close(
    addr: SocketAddr,
    bytes: &[u8],
    half_close: bool,
) -> anyhow::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(bytes).await?;
    if half_close {
        s.shutdown().await?;
    }
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got)).await;
    match read {
        Ok(Ok(_)) => Ok(got),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(got),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => anyhow::bail!(
            "{addr} kept a bad connection open after {} bytes",
            bytes.len()
        ),
    }
}

fn frame<T: serde::Serialize>(msg: &T) -> anyhow::Result<BytesMut> {
    let mut buf = BytesMut::new();
    encode_frame(msg, &mut buf, 1 << 20)?;
    Ok(buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_everyone_else_is_served() -> anyhow::Result<()> {
    common::bounded(async {
        let coord = Proc::coordinator(&["-p", "0"])?;
        let caddr = coord.addr()?;
        let port = caddr.port().to_string();
        let _worker = Proc::start(&["worker", "-p", &port, "-w", "4"])?;
        let router = Proc::start(&[
            "router",
            "-p",
            "0",
            "--http",
            "off",
            "-s",
            &caddr.to_string(),
        ])?;
        let raddr = router.addr()?;
        let client = Client::connect(raddr).await?;
        assert!(client.run(TaskSpec::new("noop", "")).await?.state == TaskState::Succeeded);

        let hello = frame(&Hello::new(Role::Client, "fuzz"))?;
        for addr in [raddr, caddr] {
            // Random bytes.
            let noise: Vec<u8> = (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            send_and_expect_close(addr, &noise, false).await?;
            // A huge length prefix.
            send_and_expect_close(addr, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3], false).await?;
            // A wrong protocol version: answered with the reason, then closed.
            let mut old = Hello::new(Role::Client, "old");
            old.version = 99;
            let answer = send_and_expect_close(addr, &frame(&old)?, false).await?;
            let reply: dtc_proto::message::HelloReply =
                postcard::from_bytes(answer.get(4..).unwrap_or_default())?;
            assert!(
                matches!(
                    reply,
                    Err(dtc_proto::WireError::VersionMismatch { got: 99, .. })
                ),
                "{reply:?}"
            );
            // A truncated frame after a good handshake.
            let mut truncated = hello.clone();
            truncated.put_u32(100);
            truncated.extend_from_slice(&[0, 0, 1]);
            send_and_expect_close(addr, &truncated, true).await?;
            // An unknown message: a frame whose body is no valid request.
            let mut unknown = hello.clone();
            unknown.put_u32(3);
            unknown.extend_from_slice(&[1, 0xee, 0xff]);
            let answer = send_and_expect_close(addr, &unknown, false).await?;
            assert!(
                answer.len() > 4,
                "the unknown message gets an error answer before the close"
            );
        }

        // Many connections each announcing a maximal frame and sending part of it: memory grows
        // with the bytes sent, not with the lengths announced.
        for (addr, proc) in [(raddr, &router), (caddr, &coord)] {
            let rss_before = proc.rss_kib()?;
            let mut held = Vec::new();
            for _ in 0..64 {
                let mut s = TcpStream::connect(addr).await?;
                let mut bytes = hello.to_vec();
                bytes.extend_from_slice(&(16u32 * 1024 * 1024).to_be_bytes());
                bytes.extend_from_slice(&[0u8; 16 * 1024]);
                s.write_all(&bytes).await?;
                held.push(s);
            }
            // Each connection's bytes have been read once a fresh request is answered after them.
            assert_eq!(
                client.run(TaskSpec::new("noop", "")).await?.state,
                TaskState::Succeeded
            );
            let grown_kib = proc.rss_kib()?.saturating_sub(rss_before);
            assert!(
                grown_kib < 64 * 1024,
                "64 connections announcing 16 MiB frames grew RSS by {grown_kib} KiB"
            );
            drop(held);
        }

        // Every process is still up and serving.
        let view = client
            .run(TaskSpec::new("wordcount", "still serving"))
            .await?;
        assert_eq!(
            view.outcome,
            Some(Outcome::Succeeded(bytes::Bytes::from("2")))
        );
        let direct = Client::connect(caddr).await?;
        assert_eq!(
            direct.run(TaskSpec::new("noop", "")).await?.state,
            TaskState::Succeeded
        );
        Ok(())
    })
    .await
}

/// Runs `dtc ARGS…` to completion and returns its exit status and standard output.
fn dtc(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dtc"))
        .args(args)
        .output()?;
    Ok((out.status.success(), String::from_utf8(out.stdout)?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_off_commands_submit_get_and_cancel() -> anyhow::Result<()> {
    common::bounded(async {
        let coord = Proc::coordinator(&["-p", "0"])?;
        let port = coord.addr()?.port().to_string();
        let _worker = Proc::start(&["worker", "-p", &port, "-w", "1"])?;
        let (ok, out) = tokio::task::spawn_blocking({
            let port = port.clone();
            move || {
                dtc(&[
                    "submit",
                    "-p",
                    &port,
                    "--json",
                    "wordcount",
                    "one two three",
                ])
            }
        })
        .await??;
        assert!(ok, "{out}");
        let task: serde_json::Value = serde_json::from_str(out.trim())?;
        assert_eq!(task["state"], "succeeded");
        assert_eq!(task["result"], "3");
        // A task of a type nobody handles stays queued; it can be looked up and cancelled.
        let port2 = port.clone();
        let (ok, out) = tokio::task::spawn_blocking(move || {
            dtc(&["submit", "-p", &port2, "--json", "--no-wait", "render"])
        })
        .await??;
        assert!(ok, "{out}");
        let queued: serde_json::Value = serde_json::from_str(out.trim())?;
        let id = queued["id"].as_str().context("no id")?.to_string();
        assert_eq!(queued["state"], "queued");
        assert_eq!(
            queued["no_handler"], true,
            "the answer says nobody can run it"
        );
        // `dtc submit` says so on stderr; a task that expires stops waiting.
        let port4 = port.clone();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_dtc"))
                .args(["submit", "-p", &port4, "--expires", "300ms", "render"])
                .output()
        })
        .await??;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(stderr.contains("no worker connected"), "{stderr}");
        assert!(stdout.contains("expired"), "{stdout}");
        assert!(!out.status.success(), "an expired task fails");
        let (port3, id3) = (port.clone(), id.clone());
        let (ok, out) =
            tokio::task::spawn_blocking(move || dtc(&["cancel", "-p", &port3, &id3])).await??;
        assert!(ok && out.contains("state: cancelled"), "{out}");
        let (ok, out) =
            tokio::task::spawn_blocking(move || dtc(&["get", "-p", &port, "--json", &id]))
                .await??;
        assert!(ok, "{out}");
        let cancelled: serde_json::Value = serde_json::from_str(out.trim())?;
        assert_eq!(cancelled["state"], "cancelled");
        // Unknown ids and unreachable ports fail with a message, not a panic.
        let (ok, _) = tokio::task::spawn_blocking(|| {
            dtc(&["get", "-p", "1", "00000000-0000-0000-0000-000000000000"])
        })
        .await??;
        assert!(!ok);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_uses_the_next_address_of_a_shard_when_the_first_is_down() -> anyhow::Result<()> {
    common::bounded(async {
        // The seed's form: one shard listed as two coordinators; the first is not running.
        let down = format!("127.0.0.1:{}", free_port()?);
        let coord = Proc::coordinator(&["-p", "0"])?;
        let port = coord.addr()?.port().to_string();
        let _worker = Proc::start(&["worker", "-p", &port, "-w", "2"])?;
        let shard = format!("{down},{}", coord.addr()?);
        let router = Proc::start(&["router", "-p", "0", "--http", "off", "-s", &shard])?;
        let client = Client::connect(router.addr()?).await?;
        let view = client
            .run(TaskSpec::new("wordcount", "served by the second"))
            .await?;
        assert_eq!(
            view.outcome,
            Some(Outcome::Succeeded(bytes::Bytes::from("4")))
        );
        Ok(())
    })
    .await
}
