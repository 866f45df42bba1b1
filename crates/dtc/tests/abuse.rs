//! One remote address, or one client, attacking real `dtc` processes on loopback: sockets
//! past an address's share (binary protocol and HTTP), floods of bad hellos, waits left
//! behind by clients that disconnect, and task ids planted ahead of a schedule's ticks.
//! Each test fails on a node that lets one address or client take what belongs to all.
//! Other loopback addresses (127.0.0.2, …) stand for other hosts.

mod common;

use anyhow::Context;
use common::{
    FromAddress, Proc, Shard, TempDir, dtc_ok, idle_sockets, raise_open_files_limit,
    schedule_status, until_tick,
};
use dtc_proto::ask::ask_status;
use dtc_proto::codec::encode_frame;
use dtc_proto::message::{Hello, Role, ShardId};
use dtc_proto::mux::dial;
use dtc_proto::schedule::schedule_task_id;
use dtc_proto::status::AdminResponse;
use dtc_proto::transport::{Tcp, Transport};
use dtc_sdk::{Client, ClientConfig, ClientError, Outcome, TaskId, TaskSpec, TaskState, WireError};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

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
        let cluster = Routed::start()?;
        let http = cluster.http;
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
        drop(flood);
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

/// A coordinator with a worker for `wordcount`, and a router in front of it serving HTTP.
struct Routed {
    router: SocketAddr,
    http: SocketAddr,
    _procs: [Proc; 3],
}

impl Routed {
    fn start() -> anyhow::Result<Self> {
        let coordinator = Proc::coordinator(&["-p", "0"])?;
        let list = coordinator.addr()?.to_string();
        let worker = Proc::start(&["worker", "-s", &list, "-w", "4"])?;
        let (router, lines) = Proc::start_lines(
            &["router", "-p", "0", "--http", "127.0.0.1:0", "-s", &list],
            2,
        )?;
        let http = lines
            .get(1)
            .and_then(|l| l.split("http://").nth(1))
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("no HTTP address in {lines:?}"))?;
        Ok(Self {
            router: router.addr()?,
            http,
            _procs: [coordinator, worker, router],
        })
    }

    /// A client of the router from `from`, that never retries.
    async fn client(&self, from: IpAddr) -> anyhow::Result<Client> {
        let mut config = ClientConfig::new(vec![self.router]);
        config.max_inflight = 20_000;
        config.retry_for = Duration::ZERO;
        Ok(Client::with_transport(config, FromAddress(from)).await?)
    }
}

/// Clients from `from`, one per connection, each parking `per_connection` waits on `id`;
/// counts the waits refused for a limit.
struct Parked {
    clients: Vec<Client>,
    waits: JoinSet<()>,
    refused: Arc<AtomicUsize>,
}

impl Parked {
    async fn start(
        cluster: &Routed,
        from: IpAddr,
        connections: usize,
        per_connection: usize,
        id: TaskId,
    ) -> anyhow::Result<Self> {
        let refused = Arc::new(AtomicUsize::new(0));
        let mut waits = JoinSet::new();
        let mut clients = Vec::new();
        for _ in 0..connections {
            let client = cluster.client(from).await?;
            for _ in 0..per_connection {
                let client = client.clone();
                let refused = Arc::clone(&refused);
                waits.spawn(async move {
                    if let Err(ClientError::Wire(WireError::LimitReached { .. })) =
                        client.wait(id).await
                    {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            clients.push(client);
        }
        Ok(Self {
            clients,
            waits,
            refused,
        })
    }

    /// Waits until `n` of its waits have been refused.
    async fn refused(&self, n: usize) {
        while self.refused.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The client goes away: every wait and connection dropped.
    async fn leave(mut self) {
        self.waits.abort_all();
        while self.waits.join_next().await.is_some() {}
        self.clients.clear();
    }
}

/// Submits a wordcount task with wait from `client`: its state, or the error.
async fn waiting_submit(client: &Client, n: usize) -> Result<TaskState, ClientError> {
    client
        .run(TaskSpec::new("wordcount", format!("round {n}")))
        .await
        .map(|view| view.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_are_shared_per_address_and_given_back_when_their_client_leaves() -> anyhow::Result<()>
{
    common::bounded(async {
        let max_waits = dtc_server::net::DEFAULT_MAX_WAITS;
        let cluster = Routed::start()?;
        let other = cluster.client(loopback(1)).await?;
        // A task nobody runs, for everyone to wait on.
        let stuck = TaskSpec::new("nobody-runs-this", "");
        let id = stuck.id;
        other.submit(stuck).await?;
        // Three rounds: the router's connection to the shard carries 16,384 requests, so
        // waits left on the coordinator by the first two rounds would stop the third.
        for round in 0..3 {
            // One client from .2 on three connections holds one address's share at most.
            let greedy = Parked::start(&cluster, loopback(2), 3, max_waits, id).await?;
            greedy.refused(2 * max_waits).await;
            assert_eq!(
                waiting_submit(&other, round).await?,
                TaskState::Succeeded,
                "round {round}: a client holding its address's share leaves room for others"
            );
            // A second address fills the router's waits towards the shard (two shares): a
            // connection's requests are taken in order, so once its waits past the share
            // are refused, the share's are all held …
            let second = Parked::start(&cluster, loopback(3), 1, max_waits + 100, id).await?;
            second.refused(100).await;
            match waiting_submit(&other, round).await {
                Err(ClientError::Wire(WireError::LimitReached { reason })) => {
                    assert!(reason.contains("shard 0"), "{reason}");
                }
                other => anyhow::bail!("round {round}: the shard's waits are full, yet {other:?}"),
            }
            // … until both leave: then another client's waiting submit goes through.
            greedy.leave().await;
            second.leave().await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                match waiting_submit(&other, round).await {
                    Ok(state) => {
                        assert_eq!(state, TaskState::Succeeded);
                        break;
                    }
                    Err(ClientError::Wire(WireError::LimitReached { .. }))
                        if tokio::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => anyhow::bail!("round {round}: the waits were not given back: {e}"),
                }
            }
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_waits_that_time_out_are_given_back() -> anyhow::Result<()> {
    common::bounded(async {
        let cluster = Routed::start()?;
        let http = cluster.http;
        let stuck = TaskSpec::new("nobody-runs-this", "");
        let id = stuck.id;
        cluster.client(loopback(1)).await?.submit(stuck).await?;
        // 5,000 waits of 10 ms on a task that never ends, 50 at a time from one address:
        // more than the API's 4,096 waits, so each must be given back when it times out.
        let statuses = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u16>> {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(20)))
                .build()
                .into();
            let url = format!("http://{http}/v1/tasks/{id}?wait=true&timeout_ms=10");
            std::thread::scope(|s| {
                let threads: Vec<_> = (0..50)
                    .map(|_| {
                        s.spawn(|| -> anyhow::Result<Vec<u16>> {
                            (0..100)
                                .map(|_| Ok(agent.get(&url).call()?.status().as_u16()))
                                .collect()
                        })
                    })
                    .collect();
                let mut all = Vec::new();
                for t in threads {
                    all.extend(
                        t.join()
                            .map_err(|_| anyhow::anyhow!("a thread panicked"))??,
                    );
                }
                Ok(all)
            })
        })
        .await??;
        let refused = statuses.iter().filter(|s| !matches!(s, 200 | 202)).count();
        assert_eq!(refused, 0, "{refused} of {} waits refused", statuses.len());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_planted_ahead_of_a_schedules_ticks_are_refused_and_each_tick_fires_once()
-> anyhow::Result<()> {
    common::bounded(async {
        let cluster = Routed::start()?;
        let port = cluster.router.port().to_string();
        common::add_every_second(&port, "planted", "wordcount", "one two three")?;
        let start = schedule_status(cluster.router, "planted")
            .await?
            .last_tick_ms;
        // A client with only the client role submits the next ten ticks' ids with a payload
        // of its own, ahead of time: every one is refused.
        let attacker = cluster.client(loopback(2)).await?;
        for second in start / 1000 + 1..=start / 1000 + 10 {
            let id = schedule_task_id("planted", second * 1000);
            let planted = TaskSpec::new("wordcount", "planted").with_id(id);
            match attacker.submit(planted).await {
                Err(ClientError::Wire(WireError::BadRequest { reason })) => {
                    assert!(reason.contains("submits itself"), "{reason}");
                }
                other => anyhow::bail!("a planted tick id was taken: {other:?}"),
            }
        }
        until_tick(cluster.router, "planted", start + 4_000).await?;
        dtc_ok(&["schedule", "pause", "planted", "-p", &port])?;
        let end = schedule_status(cluster.router, "planted").await?;
        // One task per tick, each the schedule's own.
        let (first, last) = (start / 1000 + 1, end.last_tick_ms / 1000);
        let ticks = last + 1 - first;
        assert_eq!((end.fired, end.skipped), (ticks, 0), "{end:?}");
        let mut config = ClientConfig::new(vec![cluster.router]);
        config.retry_for = Duration::from_secs(30);
        let client = Client::with_config(config).await?;
        for second in first..=last {
            let view = client
                .wait(schedule_task_id("planted", second * 1000))
                .await?;
            assert_eq!(view.state, TaskState::Succeeded, "tick {second}");
            assert_eq!(
                view.outcome,
                Some(Outcome::Succeeded("3".into())),
                "tick {second} ran the schedule's payload"
            );
        }
        Ok(())
    })
    .await
}
