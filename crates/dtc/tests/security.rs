//! A secured cluster of real `dtc` processes (`dtc secrets init`, then a shard of three
//! replicas, a router and a worker, all with `--secrets`): every role is refused without its
//! own credential, a coordinator of another shard is refused even with a valid certificate,
//! forged Raft messages from unauthenticated connections change nothing, and servers
//! refuse to listen beyond loopback without secrets.

mod common;

use anyhow::Context;
use bytes::BytesMut;
use common::secured::{Secured, https};
use common::{Proc, TempDir};
use dtc_proto::codec::encode_frame;
use dtc_proto::credentials::{CredentialSources, Credentials};
use dtc_proto::message::{Hello, HelloReply, Role, ShardId};
use dtc_proto::mux::dial;
use dtc_proto::status::AdminResponse;
use dtc_proto::token::{RoleTokens, Token};
use dtc_proto::transport::{Secure, Tcp, Transport};
use dtc_sdk::{Client, ClientConfig, ClientError, TaskSpec};
use dtc_server::shard::TypeConfig;
use dtc_server::shard::peer::PeerRequest;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connects to `addr` as `role` with `credentials` (as a replica of `shard`, for peers);
/// the handshake's outcome, as text.
async fn try_dial(
    credentials: Arc<Credentials>,
    addr: SocketAddr,
    role: Role,
    shard: Option<ShardId>,
) -> Result<(), String> {
    let transport = Secure::new(Tcp, credentials);
    let mut hello = transport.hello(role, "security test");
    hello.shard = shard;
    dial(&transport, addr, &hello, 1 << 20)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

fn tokens_with(role: Role, token: Token) -> RoleTokens {
    let mut t = RoleTokens::default();
    match role {
        Role::Peer => t.peer = Some(token),
        Role::Router => t.router = Some(token),
        Role::Worker => t.worker = Some(token),
        Role::Client => t.client = Some(token),
        Role::Admin => t.admin = Some(token),
    }
    t
}

fn expect_refused(what: &str, got: Result<(), String>, says: &str) {
    match got {
        Ok(()) => panic!("{what}: admitted"),
        Err(e) => assert!(e.contains(says), "{what}: refused with {e:?}, not {says:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_is_refused_without_its_own_credential() -> anyhow::Result<()> {
    common::bounded(async {
        let c = Secured::start()?;
        let full = c.full()?;
        let shard = Some(c.shard_id()?);
        let coordinator = c.shard.addrs[0];
        for role in Role::ALL {
            let peer_shard = shard.filter(|_| role == Role::Peer);
            let plain = Arc::new(Credentials::plain());
            let what = format!("{role} without TLS");
            let got = try_dial(plain, coordinator, role, peer_shard).await;
            expect_refused(&what, got, "serves TLS only");

            let what = format!("{role} with TLS but no token");
            let got = try_dial(c.ca_only(RoleTokens::default())?, coordinator, role, peer_shard);
            expect_refused(&what, got.await, "authentication required");

            // Another role's token, presented as this role's.
            let other = Role::ALL
                .into_iter()
                .find(|r| *r != role)
                .and_then(|r| full.tokens.get(r).cloned())
                .context("no other token")?;
            let borrowed = c.ca_only(tokens_with(role, other))?;
            let what = format!("{role} with another role's token");
            let got = try_dial(borrowed, coordinator, role, peer_shard).await;
            if matches!(role, Role::Peer | Role::Router) {
                expect_refused(&what, got, "certificate");
            } else {
                expect_refused(&what, got, "role not allowed for this credential");
            }

            let own = full.tokens.get(role).cloned().context("no token")?;
            let got = try_dial(c.ca_only(tokens_with(role, own))?, coordinator, role, peer_shard);
            if matches!(role, Role::Peer | Role::Router) {
                let what = format!("{role} with its token but no certificate");
                expect_refused(&what, got.await, "certificate");
            } else {
                assert_eq!(got.await, Ok(()), "{role} with its own token");
            }
            let got = try_dial(Arc::clone(&full), coordinator, role, peer_shard).await;
            assert_eq!(got, Ok(()), "{role} with the full credentials");
        }
        // A member certificate with another role's token is still refused.
        let mut wrong = (*full).clone();
        wrong.tokens.peer = full.tokens.router.clone();
        let got = try_dial(Arc::new(wrong), coordinator, Role::Peer, shard).await;
        expect_refused("a peer with the router's token", got, "role not allowed");

        // The router serves clients and operators, not workers or peers.
        let router = c.router.addr()?;
        let got = try_dial(Arc::clone(&full), router, Role::Worker, None).await;
        expect_refused("a worker at the router", got, "not served");

        // With its credentials a client's task runs through the secured router; without,
        // the client is told what is missing.
        let config = ClientConfig::new(vec![router]).with_credentials(Arc::clone(&full));
        let client = Client::with_config(config).await?;
        let view = client.run(TaskSpec::new("wordcount", "one two three")).await?;
        assert_eq!(view.outcome, Some(dtc_sdk::Outcome::Succeeded("3".into())));
        let refused = Client::connect(router).await;
        assert!(
            matches!(&refused, Err(ClientError::Refused { reason, .. }) if reason.contains("authentication required")),
            "{:?}",
            refused.err()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_of_another_shard_is_refused_even_with_a_valid_certificate()
-> anyhow::Result<()> {
    common::bounded(async {
        let c = Secured::start()?;
        let full = c.full()?;
        let ours = c.shard_id()?;
        let theirs = ShardId(ours.0 ^ 1);
        let got = try_dial(
            Arc::clone(&full),
            c.shard.addrs[1],
            Role::Peer,
            Some(theirs),
        )
        .await;
        expect_refused("a replica of another shard", got, "wrong shard");
        let mut elsewhere = (*full).clone();
        elsewhere.cluster = "another-cluster".into();
        let got = try_dial(
            Arc::new(elsewhere),
            c.shard.addrs[1],
            Role::Peer,
            Some(ours),
        )
        .await;
        expect_refused("a replica of another cluster", got, "wrong cluster");
        Ok(())
    })
    .await
}

/// A hello as `role` followed at once by forged Raft RPCs from a leader of a far later
/// term, as frames.
fn forged_frames(shard: ShardId) -> anyhow::Result<BytesMut> {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
    let term = 1_000;
    let mut buf = BytesMut::new();
    let hello = Hello::new(Role::Peer, "forger").of_shard(shard);
    encode_frame(&hello, &mut buf, 1 << 20)?;
    let append = PeerRequest::Append(openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(term, 9),
        prev_log_id: None,
        leader_commit: Some(LogId::new(CommittedLeaderId::new(term, 9), 1)),
        entries: vec![Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 9), 1),
            payload: EntryPayload::Blank,
        }],
    });
    encode_frame(&append, &mut buf, 1 << 20)?;
    let vote = PeerRequest::Vote(openraft::raft::VoteRequest {
        vote: Vote::new(u64::MAX, 9),
        last_log_id: Some(LogId::new(CommittedLeaderId::new(u64::MAX, 9), u64::MAX)),
    });
    encode_frame(&vote, &mut buf, 1 << 20)?;
    Ok(buf)
}

/// Sends `frames` in one write over a connection made by `transport`, then reads what
/// comes back until the server closes; returns the handshake's answer.
async fn send_forged<T: Transport>(
    transport: &T,
    addr: SocketAddr,
    frames: &[u8],
) -> anyhow::Result<Option<HelloReply>> {
    let (mut read, mut write) = transport.connect(addr).await?;
    write.write_all(frames).await?;
    write.flush().await?;
    let mut got = Vec::new();
    tokio::time::timeout(common::TEST_LIMIT, read.read_to_end(&mut got))
        .await
        .context("the server kept a refused connection open")?
        .ok();
    let reply = (got.len() > 4).then(|| postcard::from_bytes::<HelloReply>(&got[4..]).ok());
    Ok(reply.flatten())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_raft_messages_from_unauthenticated_connections_change_nothing() -> anyhow::Result<()>
{
    common::bounded(async {
        let c = Secured::start()?;
        // A task first, so that the log holds more than the election's entries.
        let config = ClientConfig::new(vec![c.router.addr()?]).with_credentials(c.full()?);
        let client = Client::with_config(config).await?;
        client.run(TaskSpec::new("wordcount", "a b")).await?;
        c.settled_leader().await?;
        let before = c.replicas().await?;
        let frames = forged_frames(c.shard_id()?)?;
        let full = c.full()?;
        let peer_token = tokens_with(
            Role::Peer,
            full.tokens.peer.clone().context("no peer token")?,
        );
        for &addr in &c.shard.addrs {
            // Plain TCP: told to use TLS before any frame is read.
            let reply = send_forged(&Tcp, addr, &frames).await?;
            assert!(
                matches!(&reply, Some(Err(e)) if e.to_string().contains("TLS only")),
                "{reply:?}"
            );
            // TLS and the peer token, but no member certificate: refused at the hello.
            let tls = Secure::new(Tcp, c.ca_only(peer_token.clone())?);
            let reply = send_forged(&tls, addr, &frames).await?;
            assert!(
                matches!(&reply, Some(Err(e)) if e.to_string().contains("certificate")),
                "{reply:?}"
            );
        }
        let after = c.replicas().await?;
        for (b, a) in before.iter().zip(&after) {
            // The forged term was not taken, and nothing was truncated or appended by it.
            assert!(
                a.term < 1_000,
                "replica {} took the forged term: {a:?}",
                b.id
            );
            assert!(
                a.last_log >= b.last_log && a.committed >= b.committed,
                "replica {} lost entries: {b:?} -> {a:?}",
                b.id
            );
            // Unless an ordinary election happened meanwhile (a loaded machine), nothing
            // changed at all.
            if (a.term, a.leader) == (b.term, b.leader) {
                assert_eq!(
                    (b.last_log, b.committed),
                    (a.last_log, a.committed),
                    "replica {}",
                    b.id
                );
            }
        }
        // The same with `dtc status`, as an operator sees it.
        let out = Command::new(env!("CARGO_BIN_EXE_dtc"))
            .args(["status", "--json", "--secrets"])
            .arg(&c.secrets)
            .arg(c.shard.addrs[0].to_string())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let term = status["Replica"]["term"].as_u64().context("no term")?;
        assert!(
            (before[0].term..1_000).contains(&term),
            "dtc status shows term {term}"
        );
        // And the shard still serves.
        client
            .run(TaskSpec::new("wordcount", "still serving"))
            .await?;
        Ok(())
    })
    .await
}

/// Runs `dtc ARGS…` expecting it to refuse to start; returns what it printed on stderr.
fn refused_start(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_dtc"))
        .args(args)
        .output()?;
    anyhow::ensure!(!out.status.success(), "dtc {args:?} started");
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn listening_beyond_loopback_without_secrets_is_refused_with_the_fix() -> anyhow::Result<()> {
    let dir = TempDir::new("exposed")?;
    let data = dir.arg();
    for args in [
        vec![
            "coordinator",
            "--bind",
            "0.0.0.0",
            "-p",
            "0",
            "--data-dir",
            &data,
        ],
        vec![
            "router",
            "--bind",
            "0.0.0.0",
            "-p",
            "0",
            "-s",
            "127.0.0.1:1",
        ],
        vec![
            "router",
            "-p",
            "0",
            "-s",
            "127.0.0.1:1",
            "--http",
            "0.0.0.0:0",
        ],
        vec!["worker", "-p", "1", "--metrics", "0.0.0.0:0"],
    ] {
        let stderr = refused_start(&args)?;
        assert!(
            stderr.contains("dtc secrets init") && stderr.contains("--insecure"),
            "{args:?}: {stderr}"
        );
    }
    assert!(
        !Path::new(&data).join("raft-log").exists(),
        "nothing was started"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cannot_complete_or_claim_a_task_it_does_not_hold() -> anyhow::Result<()> {
    use dtc_proto::connection::{FrameReader, write_one};
    use dtc_proto::message::{Completion, CoordMsg, WorkerMsg};
    use dtc_proto::status::RaftRole;
    use dtc_sdk::{Outcome, TaskState};
    common::bounded(async {
        let c = Secured::start()?;
        let full = c.full()?;
        let config = ClientConfig::new(vec![c.router.addr()?]).with_credentials(Arc::clone(&full));
        let client = Client::with_config(config).await?;
        // No worker has a handler for this type: the task waits in the queue.
        let spec = TaskSpec::new("nobody-runs-this", "x");
        let id = spec.id;
        client.submit(spec).await?;
        let leader = loop {
            let replicas = c.replicas().await?;
            if let Some(l) = replicas.iter().find(|r| r.role == RaftRole::Leader) {
                break l.addr.parse::<SocketAddr>()?;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        // A worker with a valid worker token that claims the task at registration, asks for
        // a million slots, then reports the task done.
        let transport = Secure::new(Tcp, Arc::clone(&full));
        let hello = transport.hello(Role::Worker, "rogue");
        let (reader, mut writer, _) = dial(&transport, leader, &hello, 1 << 20).await?;
        let mut reader: FrameReader<_, CoordMsg> = reader.retype();
        let register = WorkerMsg::Register {
            slots: 1_000_000,
            prefetch: 1_000_000,
            kinds: vec!["noop".into()],
            queues: Vec::new(),
            weights: Vec::new(),
            running: vec![(id, 1)],
        };
        write_one(&mut writer, &register, 1 << 20).await?;
        let forged = Completion {
            id,
            attempt: 1,
            outcome: Outcome::Succeeded("forged".into()),
            retry: dtc_proto::Retry::Policy,
        };
        write_one(&mut writer, &WorkerMsg::Completed(forged), 1 << 20).await?;
        // The answer to a heartbeat comes after the actor handled the completion.
        write_one(&mut writer, &WorkerMsg::Heartbeat, 1 << 20).await?;
        loop {
            match reader.expect().await? {
                CoordMsg::Alive => break,
                CoordMsg::Assign(_) | CoordMsg::Cancel { .. } => {}
                CoordMsg::Error(e) => anyhow::bail!("the leader refused the worker: {e}"),
            }
        }
        // A task run after it goes through a later log entry: once it is done, anything the
        // forged completion could have proposed has been applied.
        client.run(TaskSpec::new("wordcount", "a b")).await?;
        let view = client.get(id).await?;
        assert_eq!(view.state, TaskState::Queued, "{view:?}");
        assert_eq!(view.outcome, None);
        let status = c.replicas().await?;
        let me = status
            .iter()
            .find(|r| r.role == RaftRole::Leader)
            .and_then(|r| r.workers.iter().find(|w| w.name == "rogue"))
            .context("the rogue worker is not listed")?;
        assert_eq!(me.slots, dtc_server::coordinator::DEFAULT_MAX_WORKER_SLOTS);
        assert_eq!(
            me.capacity,
            2 * dtc_server::coordinator::DEFAULT_MAX_WORKER_SLOTS
        );
        assert_eq!(me.busy, 0, "the claimed task is not counted as held");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_parking_16384_waits_does_not_stop_another_clients_tasks() -> anyhow::Result<()> {
    use dtc_sdk::WireError;
    common::bounded(async {
        let c = Secured::start()?;
        let full = c.full()?;
        let router = c.router.addr()?;
        let mut greedy = ClientConfig::new(vec![router]).with_credentials(Arc::clone(&full));
        greedy.max_inflight = 20_000;
        greedy.retry_for = std::time::Duration::ZERO;
        // The greedy client runs on another host (waits are shared per client address).
        let from = common::FromAddress(std::net::IpAddr::from([127, 0, 0, 2]));
        let greedy = Client::with_transport(greedy, Secure::new(from, Arc::clone(&full))).await?;
        // A task nobody runs, and 16,384 waits for it on one connection.
        let stuck = TaskSpec::new("nobody-runs-this", "");
        let id = stuck.id;
        greedy.submit(stuck).await?;
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut waits = tokio::task::JoinSet::new();
        for _ in 0..16_384 {
            let greedy = greedy.clone();
            let refused = Arc::clone(&refused);
            waits.spawn(async move {
                if let Err(ClientError::Wire(WireError::LimitReached { .. })) =
                    greedy.wait(id).await
                {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        // Once the bound has turned the excess away, the rest are parked at the router.
        let excess = 16_384 - dtc_server::net::DEFAULT_MAX_WAITS;
        while refused.load(std::sync::atomic::Ordering::Relaxed) < excess {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let other = ClientConfig::new(vec![router]).with_credentials(Arc::clone(&full));
        let other = Client::with_config(other).await?;
        let mut runs = tokio::task::JoinSet::new();
        for i in 0..200 {
            let other = other.clone();
            runs.spawn(async move {
                other
                    .run(TaskSpec::new("wordcount", format!("a b {i}")))
                    .await
            });
        }
        while let Some(r) = runs.join_next().await {
            let view = r??;
            assert_eq!(view.state, dtc_sdk::TaskState::Succeeded, "{view:?}");
        }
        assert_eq!(refused.load(std::sync::atomic::Ordering::Relaxed), excess);
        waits.abort_all();
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_chunk_at_a_huge_offset_is_refused_and_the_replica_keeps_serving()
-> anyhow::Result<()> {
    use dtc_proto::connection::write_one;
    use dtc_server::shard::peer::{PEER_MAX_FRAME, PeerResponse};
    use openraft::{SnapshotMeta, StoredMembership, Vote};
    common::bounded(async {
        let mut c = Secured::start()?;
        let full = c.full()?;
        // A chunk from the current leader's term, so that openraft takes the first one.
        let (leader, term) = c.settled_leader().await?;
        let target = c.shard.addrs[2];
        let transport = Secure::new(Tcp, Arc::clone(&full));
        // A peer with every credential: only the chunk itself is wrong.
        let hello = transport
            .hello(Role::Peer, "snapshot test")
            .of_shard(c.shard_id()?);
        let (reader, mut writer, _) = dial(&transport, target, &hello, PEER_MAX_FRAME).await?;
        let mut reader = reader.retype::<PeerResponse>();
        let chunk = |offset: u64| {
            PeerRequest::Snapshot(openraft::raft::InstallSnapshotRequest::<TypeConfig> {
                vote: Vote::new_committed(term, leader),
                meta: SnapshotMeta {
                    last_log_id: None,
                    last_membership: StoredMembership::default(),
                    snapshot_id: "forged".into(),
                },
                offset,
                data: vec![0; 16],
                done: false,
            })
        };
        // A snapshot begins; its next chunk claims to lie a terabyte further on.
        write_one(&mut writer, &chunk(0), PEER_MAX_FRAME).await?;
        let first = reader.expect().await?;
        assert!(matches!(first, PeerResponse::Snapshot(Ok(_))), "{first:?}");
        write_one(&mut writer, &chunk(1 << 40), PEER_MAX_FRAME).await?;
        let answer = reader.expect().await?;
        assert!(
            matches!(answer, PeerResponse::Snapshot(Err(_))),
            "{answer:?}"
        );
        assert!(c.shard.procs[2].alive(), "the replica is still running");
        c.replicas().await?;
        let config = ClientConfig::new(vec![c.router.addr()?]).with_credentials(full);
        Client::with_config(config)
            .await?
            .run(TaskSpec::new("wordcount", "still here"))
            .await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secured_http_api_wants_tls_a_token_json_and_its_own_origin() -> anyhow::Result<()> {
    common::bounded(async {
        let c = Secured::start_with(true)?;
        let full = c.full()?;
        let client = format!(
            "Bearer {}",
            full.tokens.client.as_ref().context("no token")?.expose()
        );
        let admin = format!(
            "Bearer {}",
            full.tokens.admin.as_ref().context("no token")?.expose()
        );
        let json = ("Content-Type", "application/json");
        let task = r#"{"type":"wordcount","payload":"one two","wait":true}"#;

        let (status, body) = https(&c, "POST", "/v1/tasks", &[json], task).await?;
        assert_eq!(status, 401, "{body}");
        let (status, _) = https(&c, "GET", "/v1/cluster", &[], "").await?;
        assert_eq!(status, 401);
        let auth = ("Authorization", client.as_str());
        let (status, body) = https(&c, "POST", "/v1/tasks", &[auth], task).await?;
        assert_eq!(status, 415, "{body}");
        let form = ("Content-Type", "application/x-www-form-urlencoded");
        let (status, _) = https(&c, "POST", "/v1/tasks", &[auth, form], task).await?;
        assert_eq!(status, 415);
        let evil = ("Origin", "https://evil.example");
        let (status, body) = https(&c, "POST", "/v1/tasks", &[auth, json, evil], task).await?;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("cross_origin"), "{body}");
        let (status, body) = https(&c, "POST", "/v1/tasks", &[auth, json], task).await?;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(r#""result":"2""#), "{body}");
        // The admin token reads the cluster and cannot submit; the client token the reverse.
        let as_admin = ("Authorization", admin.as_str());
        let (status, body) = https(&c, "GET", "/v1/cluster", &[as_admin], "").await?;
        assert_eq!(status, 200, "{body}");
        let (status, _) = https(&c, "POST", "/v1/tasks", &[as_admin, json], task).await?;
        assert_eq!(status, 403);
        let (status, _) = https(&c, "GET", "/v1/cluster", &[auth], "").await?;
        assert_eq!(status, 403);
        let (status, _) = https(&c, "GET", "/metrics", &[as_admin], "").await?;
        assert_eq!(status, 200);
        // Schedules: the admin token lists them; no token changes one over HTTP (that
        // needs the member certificate).
        let (status, body) = https(&c, "GET", "/v1/schedules", &[as_admin], "").await?;
        assert_eq!(status, 200, "{body}");
        let schedule = r#"{"name":"s","cron":"* * * * *","type":"wordcount"}"#;
        for who in [auth, as_admin] {
            let (status, body) = https(&c, "POST", "/v1/schedules", &[who, json], schedule).await?;
            assert_eq!(status, 403, "{body}");
            assert!(body.contains("member certificate"), "{body}");
        }
        // The dashboard page itself needs no token (it asks for one).
        let (status, _) = https(&c, "GET", "/", &[], "").await?;
        assert_eq!(status, 200);
        // Plain HTTP to the TLS port gets no answer.
        let addr = c.http.context("no HTTP")?;
        let mut plain = tokio::net::TcpStream::connect(addr).await?;
        plain
            .write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut got = Vec::new();
        plain.read_to_end(&mut got).await.ok();
        assert!(!String::from_utf8_lossy(&got).contains("200 OK"));
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_reads_but_only_a_member_changes_a_shards_settings() -> anyhow::Result<()> {
    use dtc_proto::ask::ask_admin;
    use dtc_proto::status::{AdminRequest, QueueOp, SettingsChange};
    common::bounded(async {
        let c = Secured::start()?;
        let full = c.full()?;
        let admin_only = tokens_with(Role::Admin, full.tokens.admin.clone().context("no token")?);
        let request = AdminRequest::Configure(SettingsChange {
            max_results: Some(7),
            ..SettingsChange::default()
        });
        let reader = Secure::new(Tcp, c.ca_only(admin_only)?);
        let addr = c.shard.addrs[0];
        let status = ask_admin(&reader, addr, "test", &dtc_proto::status::AdminRequest::Status).await?;
        assert!(matches!(status, AdminResponse::Replica(_)), "{status:?}");
        let refused = ask_admin(&reader, addr, "test", &request).await?;
        assert!(
            matches!(&refused, AdminResponse::Configured(Err(e)) if e.to_string().contains("read-only")),
            "{refused:?}"
        );
        let purge = AdminRequest::Purge(dtc_proto::TaskState::Failed);
        let refused = ask_admin(&reader, addr, "test", &purge).await?;
        assert!(
            matches!(&refused, AdminResponse::Purged(Err(e)) if e.to_string().contains("read-only")),
            "{refused:?}"
        );
        for op in [
            QueueOp::Pause("q".into()),
            QueueOp::Limit("q".into(), Some(3600)),
        ] {
            let refused = ask_admin(&reader, addr, "test", &AdminRequest::Queues(op)).await?;
            assert!(
                matches!(&refused, AdminResponse::Queues(Err(e)) if e.to_string().contains("read-only")),
                "{refused:?}"
            );
        }
        let trigger = AdminRequest::Schedules(dtc_proto::schedule::ScheduleOp::Trigger("s".into()));
        let refused = ask_admin(&reader, addr, "test", &trigger).await?;
        assert!(
            matches!(&refused, AdminResponse::Schedules(Err(e)) if e.to_string().contains("read-only")),
            "{refused:?}"
        );
        // With the member certificate, through whichever replica leads.
        let member = Secure::new(Tcp, full);
        c.settled_leader().await?;
        let mut done = None;
        for &addr in &c.shard.addrs {
            if let AdminResponse::Configured(Ok(s)) = ask_admin(&member, addr, "test", &request).await? {
                done = Some(s);
            }
        }
        assert_eq!(done.map(|s| s.max_results), Some(7));
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_name_restricts_which_certificates_prove_membership() -> anyhow::Result<()> {
    common::bounded(async {
        let (_dir, secrets) = common::secured::init_secrets()?;
        let s = secrets.display().to_string();
        let sources = CredentialSources {
            secrets: Some(secrets.clone()),
            ..CredentialSources::default()
        };
        let full = Arc::new(Credentials::load(&sources)?);
        // The members' certificate of `dtc secrets init` is valid for 127.0.0.1 and
        // localhost: a node that wants another name takes it for no member's.
        let strict = Proc::coordinator(&[
            "-p",
            "0",
            "--secrets",
            &s,
            "--tls-member-name",
            "members.example",
        ])?;
        let refused = try_dial(Arc::clone(&full), strict.addr()?, Role::Router, None).await;
        expect_refused("a router with another name", refused, "certificate");
        let named =
            Proc::coordinator(&["-p", "0", "--secrets", &s, "--tls-member-name", "localhost"])?;
        try_dial(full, named.addr()?, Role::Router, None)
            .await
            .map_err(|e| anyhow::anyhow!("a member with the name was refused: {e}"))?;
        Ok(())
    })
    .await
}
