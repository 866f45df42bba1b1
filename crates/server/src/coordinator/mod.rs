//! The coordinator: serves one shard. It accepts clients, routers and workers on one port,
//! and owns the shard's task table and scheduler through a single actor loop
//! (`actor.rs`); connection tasks talk to the actor through one bounded channel.

mod actor;
mod worker_session;

use crate::net::{Accepted, Limits, Reply, RequestSink, accept_loop, serve_client};
use crate::shard::Retention;
use actor::{Actor, Event};
use dtc_proto::WireError;
use dtc_proto::message::{RequestBody, Role};
use dtc_proto::transport::Listener;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How a coordinator runs.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Where to listen for clients, routers and workers.
    pub listen: SocketAddr,
    /// A worker silent for this long is declared dead and its tasks run elsewhere.
    pub heartbeat_timeout: Duration,
    /// How often the actor checks heartbeats and expires old results.
    pub tick: Duration,
    /// Retention of results and the queue bound.
    pub retention: Retention,
    /// Frame and in-flight bounds per connection.
    pub limits: Limits,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            heartbeat_timeout: Duration::from_secs(1),
            tick: Duration::from_millis(100),
            retention: Retention::default(),
            limits: Limits::default(),
        }
    }
}

/// A bound coordinator, ready to [`run`](Coordinator::run).
pub struct Coordinator<L = TcpListener> {
    listener: L,
    config: CoordinatorConfig,
}

impl Coordinator {
    /// Binds a TCP listening socket at `config.listen` (port 0 picks a free port).
    pub async fn bind(config: CoordinatorConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Self { listener, config })
    }
}

impl<L: Listener> Coordinator<L> {
    /// A coordinator that serves the connections of `listener` (TCP, or a simulated network;
    /// `config.listen` is then unused).
    pub fn with_listener(listener: L, config: CoordinatorConfig) -> Self {
        Self { listener, config }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `cancel` fires, then closes every connection and returns.
    pub async fn run(self, cancel: CancellationToken) {
        let addr = self.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let (events_tx, events_rx) = mpsc::channel(4096);
        let actor = Actor::new(&self.config, events_rx);
        let actor_task = tokio::spawn(actor.run(cancel.clone()));
        let limits = self.config.limits;
        let sink = Arc::new(ActorSink(events_tx.clone()));
        let conn_cancel = cancel.clone();
        let handler = move |a: Accepted<L::Read, L::Write>| {
            let sink = Arc::clone(&sink);
            let events = events_tx.clone();
            let cancel = conn_cancel.clone();
            async move {
                match a.hello.role {
                    Role::Client | Role::Router | Role::Admin => {
                        serve_client(a, sink, limits, cancel).await;
                    }
                    Role::Worker => {
                        worker_session::serve(a, events, limits.max_frame, cancel).await;
                    }
                    Role::Peer => {
                        let reason =
                            "coordinator peers are not served yet (replication is not built)";
                        worker_session::refuse(
                            a,
                            WireError::BadRequest {
                                reason: reason.into(),
                            },
                            limits.max_frame,
                        )
                        .await;
                    }
                }
            }
        };
        tracing::info!(%addr, "coordinator listening");
        accept_loop(
            self.listener,
            format!("coordinator {addr}"),
            limits,
            cancel.clone(),
            handler,
        )
        .await;
        actor_task.await.ok();
        tracing::info!(%addr, "coordinator stopped");
    }
}

struct ActorSink(mpsc::Sender<Event>);

impl RequestSink for ActorSink {
    async fn request(&self, body: RequestBody, reply: Reply) {
        if let Err(mpsc::error::SendError(Event::Request { reply, .. })) =
            self.0.send(Event::Request { body, reply }).await
        {
            reply.send(Err(WireError::ShuttingDown));
        }
    }
}
