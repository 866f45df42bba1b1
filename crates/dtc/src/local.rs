//! `dtc local`: a whole cluster on 127.0.0.1 inside one process — one coordinator per shard,
//! workers attached to each, and a router in front — all on real loopback sockets, all
//! stopped in order (router, workers, coordinators) by cancellation tokens.

use anyhow::Context;
use dtc_sdk::Worker;
use dtc_server::coordinator::{Coordinator, CoordinatorConfig};
use dtc_server::net::Limits;
use dtc_server::router::{Router, RouterConfig};
use std::net::SocketAddr;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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
}

/// A running local cluster.
pub struct LocalCluster {
    /// Where clients connect.
    pub router: SocketAddr,
    /// Each shard's coordinator.
    pub coordinators: Vec<SocketAddr>,
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
        let [mut routers, mut workers, mut coordinators] = <[Tier; 3]>::default();
        let mut addrs = Vec::new();
        for _ in 0..spec.shards {
            let config = CoordinatorConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                ..CoordinatorConfig::default()
            };
            let coordinator = Coordinator::bind(config)
                .await
                .context("starting a coordinator")?;
            addrs.push(coordinator.local_addr()?);
            coordinators
                .tasks
                .push(tokio::spawn(coordinator.run(coordinators.cancel.clone())));
        }
        for (shard, &addr) in addrs.iter().enumerate() {
            for w in 0..spec.workers {
                let worker = Worker::builder()
                    .builtins()
                    .slots(spec.slots)
                    .name(format!("local-shard{shard}-worker{w}"))
                    .build()?;
                let cancel = workers.cancel.clone();
                workers.tasks.push(tokio::spawn(async move {
                    if let Err(e) = worker.run(vec![addr], cancel).await {
                        tracing::error!(error = %e, "worker stopped");
                    }
                }));
            }
        }
        let router = Router::bind(RouterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], spec.router_port)),
            shards: addrs.iter().map(|a| vec![*a]).collect(),
            limits: Limits::default(),
        })
        .await?;
        let router_addr = router.local_addr()?;
        routers
            .tasks
            .push(tokio::spawn(router.run(routers.cancel.clone())));
        Ok(Self {
            router: router_addr,
            coordinators: addrs,
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
    }
}
