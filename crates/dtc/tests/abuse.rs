//! One remote address, or one client, attacking real `dtc` processes on loopback: sockets
//! past an address's share (binary protocol and HTTP), floods of bad hellos, waits left
//! behind by clients that disconnect, and task ids planted ahead of a schedule's ticks.
//! Each test fails on a node that lets one address or client take what belongs to all.
//! Other loopback addresses (127.0.0.2, …) stand for other hosts.

mod common;

use anyhow::Context;
use common::{Proc, Shard, TempDir, idle_sockets, raise_open_files_limit};
use dtc_proto::codec::encode_frame;
use dtc_proto::message::{Hello, Role, ShardId};
use dtc_proto::mux::dial;
use dtc_proto::status::{AdminResponse, ask_status};
use dtc_proto::transport::{Tcp, Transport};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// Dials `addr` from 127.0.0.1 as `role` (of `shard`, for a peer): the handshake's outcome.
async fn handshake(addr: SocketAddr, role: Role, shard: Option<ShardId>) -> Result<(), String> {
    let mut hello = Tcp.hello(role, "abuse test");
    hello.shard = shard;
    dial(&Tcp, addr, &hello, 1 << 20)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The sum of a Prometheus counter's samples whose labels include every pair of `labels`,
/// scraped from `url`.
fn counter(url: &str, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let text = agent.get(url).call()?.body_mut().read_to_string()?;
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).context("parsing /metrics")?;
    Ok(scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_past_one_addresss_share_leave_other_addresses_and_members_served()
-> anyhow::Result<()> {
    common::bounded(async {
        raise_open_files_limit()?;
        let shard = Shard::start(
            3,
            &["--max-connections", "300", "--max-connections-per-ip", "50"],
        )?;
        let target = shard.addrs[0];
        let shard_id: ShardId =
            std::fs::read_to_string(shard.dirs[0].path().join("SHARD"))?.parse()?;
        // Wait until the replica serves, then flood it from one address.
        while ask_status(&Tcp, target, "abuse test").await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut flood = idle_sockets(loopback(2), target, 400).await?;
        // Another address is served: its place is not taken by sockets past .2's share.
        match ask_status(&Tcp, target, "abuse test").await? {
            AdminResponse::Replica(_) => {}
            other => anyhow::bail!("{target} answered {other:?}"),
        }
        // Now fill every place but the members' reserve (300 - 300/16 = 282) from five
        // more addresses: .2 holds its 50, four more 50 each, a fifth 32. (The replica's
        // own peer connections take a few places of the reserve.)
        for (last, n) in [(3, 50), (4, 50), (5, 50), (6, 50), (7, 32)] {
            flood.extend(idle_sockets(loopback(last), target, n).await?);
        }
        // A client or tool is now refused, with what to do …
        let refused = handshake(target, Role::Admin, None).await;
        let Err(reason) = refused else {
            anyhow::bail!("a tool was admitted into the members' reserve");
        };
        assert!(
            reason.contains("kept for the cluster's replicas and routers")
                && reason.contains("--max-connections"),
            "{reason}"
        );
        // … while a replica of the shard re-dialling is admitted.
        handshake(target, Role::Peer, Some(shard_id))
            .await
            .map_err(|e| anyhow::anyhow!("a peer was refused: {e}"))?;
        drop(flood);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_past_one_addresss_share_leave_other_addresses_served()
-> anyhow::Result<()> {
    common::bounded(async {
        raise_open_files_limit()?;
        let shard = Proc::coordinator(&["-p", "0"])?;
        let list = shard.addr()?.to_string();
        let (router, lines) = Proc::start_lines(
            &["router", "-p", "0", "--http", "127.0.0.1:0", "-s", &list],
            2,
        )?;
        let http: SocketAddr = lines
            .get(1)
            .and_then(|l| l.split("http://").nth(1))
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("no HTTP address in {lines:?}"))?;
        // More idle sockets from one address than the whole HTTP bound (1,024).
        let flood = idle_sockets(loopback(2), http, 1_100).await?;
        let status = tokio::task::spawn_blocking(move || -> anyhow::Result<u16> {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(20)))
                .build()
                .into();
            Ok(agent
                .get(format!("http://{http}/v1/cluster"))
                .call()?
                .status()
                .as_u16())
        })
        .await??;
        assert_eq!(status, 200);
        drop((flood, router));
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_hellos_is_counted_and_logged_once_per_address() -> anyhow::Result<()> {
    common::bounded(async {
        let dir = TempDir::new("noise")?;
        let log = dir.path().join("coordinator.log");
        let metrics = SocketAddr::from(([127, 0, 0, 1], common::free_port()?));
        let data = dir.path().join("data").display().to_string();
        let metrics_arg = metrics.to_string();
        let coordinator = Proc::start_logging(
            &[
                "coordinator",
                "-p",
                "0",
                "--data-dir",
                &data,
                "--metrics",
                &metrics_arg,
            ],
            &log,
        )?;
        let addr = coordinator.addr()?;
        // 120 bad hellos from 127.0.0.1 (a stranger's magic, then another version) and 40
        // from 127.0.0.2, each on its own connection, each read to its end.
        let bad = |magic: [u8; 4], version: u32| -> anyhow::Result<bytes::BytesMut> {
            let mut hello = Hello::new(Role::Client, "flood");
            hello.magic = magic;
            hello.version = version;
            let mut frame = bytes::BytesMut::new();
            encode_frame(&hello, &mut frame, 1 << 20)?;
            Ok(frame)
        };
        let strangers = bad(*b"HTTP", 1)?;
        let old = bad(dtc_proto::message::MAGIC, 1)?;
        for (from, frame, n) in [
            (loopback(1), &strangers, 60),
            (loopback(1), &old, 60),
            (loopback(2), &old, 40),
        ] {
            for _ in 0..n {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(from, 0))?;
                let mut stream = socket.connect(addr).await?;
                stream.write_all(frame).await?;
                let mut answer = Vec::new();
                stream.read_to_end(&mut answer).await.ok();
            }
        }
        let url = format!("http://{metrics}/metrics");
        let counted = tokio::task::spawn_blocking(move || {
            counter(
                &url,
                "dtc_connections_refused_total",
                &[("reason", "bad_hello")],
            )
        })
        .await??;
        assert_eq!(counted, 160.0);
        let text = std::fs::read_to_string(&log)?;
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("refused a connection"))
            .collect();
        assert_eq!(lines.len(), 2, "one line per address: {lines:#?}");
        assert!(lines.iter().any(|l| l.contains("127.0.0.1")));
        assert!(lines.iter().any(|l| l.contains("127.0.0.2")));
        Ok(())
    })
    .await
}
