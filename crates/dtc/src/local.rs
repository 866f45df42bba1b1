//! `dtc local`: a whole cluster on 127.0.0.1 inside one process — each shard a Raft group
//! of coordinator replicas with their data directories, workers attached to each shard, and
//! a router in front — all on real loopback sockets, all stopped in order (router, workers,
//! coordinators) by cancellation tokens. With `secure`, credentials are made for it and
//! every connection uses TLS and tokens.

use crate::cli::{SecretsInitArgs, SecurityArgs};
use anyhow::Context;
use dtc_proto::credentials::Credentials;
use dtc_proto::transport::{Secure, Tcp};
use dtc_sdk::Worker;
use dtc_server::coordinator::{Coordinator, CoordinatorConfig};
use dtc_server::net::Limits;
use dtc_server::router::http::HttpConfig;
use dtc_server::router::{Router, RouterConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Log entries a leader keeps in flight when logs are kept in memory (`--in-memory`):
/// commits are fast, so gathering commands behind one entry only slows them (measured in
/// docs/benchmarks.md, "entries in flight in memory").
pub const IN_MEMORY_ENTRIES_IN_FLIGHT: usize = 8;

/// What to start.
#[derive(Clone, Debug)]
pub struct LocalSpec {
    /// Shards (one coordinator each).
    pub shards: usize,
    /// Workers per shard.
    pub workers: usize,
    /// Slots per worker.
    pub slots: u32,
    /// The router's port (0: any free port).
    pub router_port: u16,
    /// Replicas per shard.
    pub replicas: u64,
    /// Where the replicas keep their logs (`<dir>/shard<S>/replica<N>`); `None`: a fresh
    /// directory under the system's temporary directory, removed at the end.
    pub data_dir: Option<PathBuf>,
    /// Keep the logs in memory instead (no fsync; nothing survives).
    pub in_memory: bool,
    /// The router's HTTP API, if served.
    pub http: Option<HttpConfig>,
    /// Make credentials and use TLS and tokens on every connection.
    pub secure: bool,
}

/// A running local cluster.
pub struct LocalCluster {
    /// Where clients connect.
    pub router: SocketAddr,
    /// The router's HTTP API, if served.
    pub http: Option<SocketAddr>,
    /// Each shard's replicas.
    pub coordinators: Vec<Vec<SocketAddr>>,
    /// The data directory, with whether to remove it at the end.
    pub data_dir: Option<(PathBuf, bool)>,
    /// The credentials every component uses (plain unless `secure`).
    pub credentials: Arc<Credentials>,
    /// Where the credentials were made, with `secure`.
    pub secrets_dir: Option<PathBuf>,
    /// The components in the order they stop: router, workers, coordinators.
    tiers: [Tier; 3],
}

/// Components that stop together.
#[derive(Default)]
struct Tier {
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl LocalCluster {
    /// Starts every component and returns once all listen.
    pub async fn start(spec: &LocalSpec) -> anyhow::Result<Self> {
        anyhow::ensure!(spec.shards > 0, "--shards must be at least 1");
        anyhow::ensure!(spec.slots > 0, "--slots must be at least 1");
        anyhow::ensure!(spec.replicas > 0, "--replicas must be at least 1");
        let fresh = std::env::temp_dir().join(format!(
            "dtc-local-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        // Logs in memory with --secure still need a directory for the credentials.
        let data_dir = match (&spec.data_dir, spec.in_memory && !spec.secure) {
            (_, true) => None,
            (Some(dir), false) => Some((dir.clone(), false)),
            (None, false) => Some((fresh, true)),
        };
        let (credentials, secrets_dir) = match (&data_dir, spec.secure) {
            (Some((dir, _)), true) => {
                let secrets = dir.join("secrets");
                if !secrets.join(dtc_proto::credentials::SECRETS_FILE).exists() {
                    crate::secrets::init(&SecretsInitArgs {
                        dir: secrets.clone(),
                        hosts: Vec::new(),
                        cluster: dtc_proto::message::DEFAULT_CLUSTER.to_owned(),
                        force: false,
                    })?;
                }
                let credentials = SecurityArgs::from_dir(&secrets).credentials()?;
                (credentials, Some(secrets))
            }
            _ => (Arc::new(Credentials::plain()), None),
        };
        let log_dir = data_dir.as_ref().filter(|_| !spec.in_memory);
        let [mut routers, mut workers, mut coordinators] = <[Tier; 3]>::default();
        let mut addrs: Vec<Vec<SocketAddr>> = Vec::new();
        for shard in 0..spec.shards {
            let mut listeners = Vec::new();
            let mut members = BTreeMap::new();
            for id in 1..=spec.replicas {
                let l = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
                members.insert(id, l.local_addr()?.to_string());
                listeners.push((id, l));
            }
            let mut shard_addrs = Vec::new();
            for (id, listener) in listeners {
                shard_addrs.push(listener.local_addr()?);
                let config = CoordinatorConfig {
                    id,
                    replicas: members.clone(),
                    data_dir: log_dir
                        .map(|(d, _)| d.join(format!("shard{shard}")).join(format!("replica{id}"))),
                    entries_in_flight: if spec.in_memory {
                        IN_MEMORY_ENTRIES_IN_FLIGHT
                    } else {
                        1
                    },
                    commit_linger: if spec.in_memory {
                        Duration::ZERO
                    } else {
                        CoordinatorConfig::default().commit_linger
                    },
                    credentials: Arc::clone(&credentials),
                    ..CoordinatorConfig::default()
                };
                let transport = Secure::new(Tcp, Arc::clone(&credentials));
                let coordinator = Coordinator::start(listener, transport, config)
                    .await
                    .with_context(|| format!("starting shard {shard} replica {id}"))?;
                coordinators.tasks.push(tokio::spawn(stopped_on_failure(
                    coordinator.run(coordinators.cancel.clone()),
                )));
            }
            addrs.push(shard_addrs);
        }
        for (shard, shard_addrs) in addrs.iter().enumerate() {
            for w in 0..spec.workers {
                let worker = Worker::builder()
                    .builtins()
                    .slots(spec.slots)
                    .name(format!("local-shard{shard}-worker{w}"))
                    .credentials(Arc::clone(&credentials))
                    .build()?;
                let cancel = workers.cancel.clone();
                let shard_addrs = shard_addrs.clone();
                workers.tasks.push(tokio::spawn(async move {
                    if let Err(e) = worker.run(shard_addrs, cancel).await {
                        tracing::error!(error = %e, "worker stopped");
                    }
                }));
            }
        }
        let router = Router::bind(RouterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], spec.router_port)),
            shards: addrs.clone(),
            limits: Limits::default(),
            http: spec.http.clone(),
            credentials: Arc::clone(&credentials),
            insecure: false,
        })
        .await?;
        let router_addr = router.local_addr()?;
        let http = router.http_addr();
        routers
            .tasks
            .push(tokio::spawn(router.run(routers.cancel.clone())));
        Ok(Self {
            router: router_addr,
            http,
            coordinators: addrs,
            data_dir,
            credentials,
            secrets_dir,
            tiers: [routers, workers, coordinators],
        })
    }

    /// Stops the router, then the workers (they finish the tasks they hold), then the
    /// coordinators, and waits for each.
    pub async fn stop(self) {
        for tier in self.tiers {
            tier.cancel.cancel();
            for t in tier.tasks {
                t.await.ok();
            }
        }
        if let Some((dir, true)) = self.data_dir {
            std::fs::remove_dir_all(&dir).ok();
        }
    }
}

/// Logs a replica's storage failure (the rest of the local cluster carries on without it).
async fn stopped_on_failure(
    run: impl std::future::Future<Output = Result<(), dtc_server::coordinator::StorageFailed>>,
) {
    if let Err(e) = run.await {
        tracing::error!(error = %e, "a replica stopped");
    }
}
