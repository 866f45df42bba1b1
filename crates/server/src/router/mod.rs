//! The router: stateless. It accepts clients, picks each request's shard by a stable hash of
//! the task id ([`shard_map`]), and forwards it over one multiplexed connection per shard
//! (a [`Mux`]), returning every answer to the client that asked. With `--http` it also
//! serves the JSON API, `/metrics` and the dashboard ([`http`]) over the same shard
//! connections.

mod admin;
pub mod http;
pub mod http_schedules;
pub mod shard_map;
pub mod task_json;

use crate::net::{
    Conn, Gate, GateError, HttpGuard, Limits, Reply, RequestSink, accept_loop, check_exposure,
    serve_admin, serve_client,
};
use dtc_proto::credentials::Credentials;
use dtc_proto::message::{RequestBody, Role};
use dtc_proto::mux::Answer;
use dtc_proto::mux::Mux;
use dtc_proto::transport::{Listener, Secure, Tcp, Transport};
use dtc_proto::{TaskView, WireError};
use shard_map::ShardMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How a router runs.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// Where to listen for clients.
    pub listen: SocketAddr,
    /// For each shard, its coordinators' addresses in order of preference.
    pub shards: Vec<Vec<SocketAddr>>,
    /// Frame, in-flight and connection bounds.
    pub limits: Limits,
    /// The HTTP API's address and body bound, if it is served.
    pub http: Option<http::HttpConfig>,
    /// What the router proves itself with to coordinators, and checks clients against.
    pub credentials: Arc<Credentials>,
    /// Serve on a non-loopback address without secrets (`--insecure`).
    pub insecure: bool,
}

/// The roles a router serves: programs submitting tasks, operator tools, other routers.
const ROUTER_ROLES: &[Role] = &[Role::Client, Role::Admin, Role::Router];

/// A bound router, ready to [`run`](Router::run).
pub struct Router<L = TcpListener, T = Secure<Tcp>> {
    listener: L,
    gate: Arc<Gate>,
    /// The HTTP API's bound socket and its settings.
    http: Option<(TcpListener, http::HttpConfig)>,
    transport: T,
    config: RouterConfig,
}

/// Why a router could not start.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// No shard was given.
    #[error("a router needs at least one shard (-s ADDR[,ADDR…])")]
    NoShards,
    /// A shard was given with no address.
    #[error("shard {0} has no coordinator address")]
    EmptyShard(usize),
    /// Binding the HTTP API's socket failed.
    #[error(
        "cannot serve HTTP on {addr}: {source} (choose another with --http ADDR, or --http off)"
    )]
    BindHttp {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The credentials cannot serve.
    #[error(transparent)]
    Credentials(#[from] GateError),
}

impl Router {
    /// Checks the shard list and binds a TCP listening socket at `config.listen` (and the
    /// HTTP API's, when configured).
    pub async fn bind(config: RouterConfig) -> Result<Self, RouterError> {
        let gate = gate(&config)?;
        check_exposure(
            "a router",
            config.listen,
            &config.credentials,
            config.insecure,
        )?;
        if let Some(h) = &config.http {
            check_exposure(
                "the HTTP API",
                h.listen,
                &config.credentials,
                config.insecure,
            )?;
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| RouterError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let http = match &config.http {
            None => None,
            Some(h) => Some((
                TcpListener::bind(h.listen)
                    .await
                    .map_err(|source| RouterError::BindHttp {
                        addr: h.listen,
                        source,
                    })?,
                h.clone(),
            )),
        };
        Ok(Self {
            listener,
            gate,
            http,
            transport: Secure::new(Tcp, Arc::clone(&config.credentials)),
            config,
        })
    }
}

/// Checks the shard list and makes the router's gate.
fn gate(config: &RouterConfig) -> Result<Arc<Gate>, RouterError> {
    if config.shards.is_empty() {
        return Err(RouterError::NoShards);
    }
    if let Some(i) = config.shards.iter().position(Vec::is_empty) {
        return Err(RouterError::EmptyShard(i));
    }
    let gate = Gate::new(
        Arc::clone(&config.credentials),
        "router",
        ROUTER_ROLES,
        None,
    )?;
    Ok(Arc::new(gate))
}

impl<L: Listener, T: Transport> Router<L, T> {
    /// A router that serves the connections of `listener` and reaches coordinators over
    /// `transport` (TCP, or a simulated network; `config.listen` and `config.http` are then
    /// unused).
    pub fn with_transport(
        listener: L,
        transport: T,
        config: RouterConfig,
    ) -> Result<Self, RouterError> {
        let gate = gate(&config)?;
        Ok(Self {
            listener,
            gate,
            http: None,
            transport,
            config,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The HTTP API's address, when it is served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|(l, ..)| l.local_addr().ok())
    }

    /// Serves until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let addr = self.local_addr().map(|a| a.to_string()).unwrap_or_default();
        // Each shard connection carries at most this many waits; one address may hold at
        // most half of them, so that it cannot take every other client's.
        let shard_waits = self.config.limits.max_inflight / 2;
        let limits = Limits {
            max_waits: self.config.limits.max_waits.min(shard_waits / 2),
            ..self.config.limits
        };
        let mut senders = Vec::new();
        let mut abandon = Vec::new();
        let mut tasks = Vec::new();
        for (index, addrs) in self.config.shards.iter().enumerate() {
            let (tx, rx) = mpsc::channel(limits.max_inflight);
            let notify = Arc::new(Notify::new());
            let mux = Mux {
                transport: self.transport.clone(),
                label: format!("shard {index}"),
                addrs: addrs.clone(),
                role: Role::Router,
                name: format!("router {addr}"),
                max_frame: limits.max_frame,
                max_inflight: limits.max_inflight,
                hold: dtc_proto::mux::DEFAULT_HOLD,
                abandon: Arc::clone(&notify),
            };
            tasks.push(tokio::spawn(mux.run::<Answerer>(rx, cancel.clone())));
            senders.push(tx);
            abandon.push(notify);
        }
        let counter =
            |kind: &'static str| metrics::counter!("dtc_router_requests_total", "kind" => kind);
        let sink = Arc::new(ShardSink {
            map: ShardMap::new(senders.len()),
            waits: (0..senders.len())
                .map(|_| Arc::new(Semaphore::new(shard_waits)))
                .collect(),
            shards: senders,
            abandon,
            requests: [
                counter("submit"),
                counter("get"),
                counter("cancel"),
                counter("retry"),
            ],
        });
        if let Some((listener, http_config)) = self.http {
            let transport = self.transport.clone();
            let shards = self.config.shards.clone();
            let api = http::Api {
                sink: Arc::clone(&sink),
                admin: Arc::new(move |request| {
                    let transport = transport.clone();
                    let shards = shards.clone();
                    Box::pin(async move { admin::answer(&transport, &shards, request).await })
                }),
                waits: Arc::new(tokio::sync::Semaphore::new(http_config.max_waits)),
                wait_shares: Arc::new(crate::net::AddressShares::new(http::per_address_waits(
                    http_config.max_waits,
                ))),
                cancel: cancel.clone(),
            };
            let http_addr = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let cancel = cancel.clone();
            let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
            let guard = HttpGuard::new(Arc::clone(&self.config.credentials), loopback);
            let tls = self.gate.tls().and_then(|t| t.acceptor()).cloned();
            tasks.push(tokio::spawn(async move {
                let max_body = http_config.max_body;
                if let Err(e) = http::serve(listener, api, max_body, guard, tls, cancel).await {
                    tracing::error!(addr = %http_addr, error = %e, "the HTTP API stopped");
                }
            }));
        }
        let conn_cancel = cancel.clone();
        let transport = self.transport.clone();
        let shards = self.config.shards.clone();
        let handler = move |a: Conn<L>| {
            let sink = Arc::clone(&sink);
            let cancel = conn_cancel.clone();
            let transport = transport.clone();
            let shards = shards.clone();
            async move {
                match a.hello.role {
                    // Not among ROUTER_ROLES: the gate refused them in the handshake.
                    Role::Worker | Role::Peer => {}
                    Role::Admin => {
                        serve_admin(a, limits.max_frame, limits.idle_timeout, cancel, |req| {
                            let transport = transport.clone();
                            let shards = shards.clone();
                            async move { admin::answer(&transport, &shards, req).await }
                        })
                        .await;
                    }
                    Role::Client | Role::Router => serve_client(a, sink, limits, cancel).await,
                }
            }
        };
        tracing::info!(%addr, shards = self.config.shards.len(), "router listening");
        accept_loop(
            self.listener,
            format!("router {addr}"),
            limits,
            self.gate,
            cancel,
            handler,
        )
        .await;
        for t in tasks {
            t.await.ok();
        }
        tracing::info!(%addr, "router stopped");
    }
}

/// Who waits for a forwarded request's answer: a binary-protocol client's connection, or
/// an HTTP request; a request that waits for its task to finish also holds a place in its
/// shard connection's wait budget until answered.
#[derive(Debug)]
pub(crate) struct Answerer {
    to: AnswerTo,
    wait: Option<OwnedSemaphorePermit>,
}

#[derive(Debug)]
enum AnswerTo {
    /// A client (or router) connection.
    Conn(Reply),
    /// An HTTP API request.
    Http(oneshot::Sender<Result<TaskView, WireError>>),
}

impl Answerer {
    /// Answers go back over a client's connection.
    pub(crate) fn conn(reply: Reply) -> Self {
        Self {
            to: AnswerTo::Conn(reply),
            wait: None,
        }
    }

    /// Answers go to an HTTP request.
    pub(crate) fn http(tx: oneshot::Sender<Result<TaskView, WireError>>) -> Self {
        Self {
            to: AnswerTo::Http(tx),
            wait: None,
        }
    }
}

impl Answer for Answerer {
    fn abandoned(&self) -> bool {
        match &self.to {
            AnswerTo::Conn(reply) => reply.is_abandoned(),
            AnswerTo::Http(tx) => tx.is_closed(),
        }
    }

    fn answer(self, body: Result<TaskView, WireError>) {
        if let Err(e) = &body {
            let kind = match e {
                WireError::NotLeader { .. } => "not_leader",
                WireError::Overloaded => "overloaded",
                WireError::NotFound => "not_found",
                WireError::BadRequest { .. } => "bad_request",
                WireError::Unavailable { .. } => "unavailable",
                WireError::VersionMismatch { .. } => "version_mismatch",
                WireError::ShuttingDown => "shutting_down",
                WireError::Auth { .. } => "auth",
                WireError::LimitReached { .. } => "limit_reached",
            };
            metrics::counter!("dtc_router_errors_total", "kind" => kind).increment(1);
        }
        drop(self.wait);
        match self.to {
            AnswerTo::Conn(reply) => reply.send(body),
            AnswerTo::Http(tx) => {
                tx.send(body).ok();
            }
        }
    }
}

/// Hands each request to its shard's connection.
pub(crate) struct ShardSink {
    map: ShardMap,
    shards: Vec<mpsc::Sender<(RequestBody, Answerer)>>,
    /// Per shard, the places for requests that wait for their task to finish: at most half
    /// of the shard connection's requests in flight, so that waits parked on tasks that
    /// never end cannot stall everyone's other requests.
    waits: Vec<Arc<Semaphore>>,
    /// Per shard, what tells its connection that some askers have gone.
    abandon: Vec<Arc<Notify>>,
    /// Requests forwarded: submits, lookups, cancels, retries.
    requests: [metrics::Counter; 4],
}

impl RequestSink for ShardSink {
    async fn request(&self, body: RequestBody, reply: Reply) {
        self.forward(body, Answerer::conn(reply)).await;
    }

    fn abandoned(&self) {
        for shard in &self.abandon {
            shard.notify_one();
        }
    }
}

impl ShardSink {
    /// Sends `body` to its task's shard; the answer goes to `reply`.
    pub(crate) async fn forward(&self, body: RequestBody, mut reply: Answerer) {
        let kind = match body {
            RequestBody::Submit { .. } => 0,
            RequestBody::Get { .. } => 1,
            RequestBody::Cancel { .. } => 2,
            RequestBody::Retry { .. } => 3,
            // Client sessions take waits back themselves; none is forwarded.
            RequestBody::Unwait { .. } => {
                reply.answer(Err(WireError::BadRequest {
                    reason: "only a router's connection takes waits back".into(),
                }));
                return;
            }
        };
        self.requests[kind].increment(1);
        let shard = self.map.shard_of(body.task_id());
        let (Some(tx), Some(waits)) = (self.shards.get(shard), self.waits.get(shard)) else {
            reply.answer(Err(WireError::Unavailable {
                reason: format!("no shard {shard}"),
            }));
            return;
        };
        if body.waits_for_end() {
            match Arc::clone(waits).try_acquire_owned() {
                Ok(permit) => reply.wait = Some(permit),
                Err(_) => {
                    reply.answer(Err(WireError::LimitReached {
                        reason: format!(
                            "the router's connection to shard {shard} already carries its most waiting requests"
                        ),
                    }));
                    return;
                }
            }
        }
        if let Err(mpsc::error::SendError((_, reply))) = tx.send((body, reply)).await {
            reply.answer(Err(WireError::ShuttingDown));
        }
    }
}
