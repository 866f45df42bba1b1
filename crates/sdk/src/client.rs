//! The client: submit tasks, wait for results, look tasks up, cancel them. One `Client` is
//! one multiplexed connection (to a router, or straight to a coordinator) that any number of
//! tasks may share by cloning it; requests are answered in any order. Transient failures
//! (the connection lost, `Overloaded`, `Unavailable`) are retried with the same task id, so a
//! retry never runs a task twice.

use dtc_proto::credentials::Credentials;
use dtc_proto::message::{RequestBody, Role};
use dtc_proto::mux::{Mux, dial};
use dtc_proto::transport::{Secure, Tcp, Transport};
use dtc_proto::{DEFAULT_MAX_FRAME, ProtoError, TaskId, TaskSpec, TaskView, WireError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How a [`Client`] connects and retries.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Addresses to try in order (a router, or a shard's coordinators).
    pub addrs: Vec<SocketAddr>,
    /// A name for the server's logs.
    pub name: String,
    /// How long transient failures are retried before the error is returned.
    pub retry_for: Duration,
    /// The most requests in flight on the connection.
    pub max_inflight: usize,
    /// The largest frame.
    pub max_frame: usize,
    /// What the client proves itself with (TLS and the client token, when the cluster has
    /// secrets); plain by default.
    pub credentials: Arc<Credentials>,
}

impl ClientConfig {
    /// Defaults for connecting to `addrs`.
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        Self {
            addrs,
            name: "dtc-sdk client".into(),
            retry_for: Duration::from_secs(60),
            max_inflight: 4096,
            max_frame: DEFAULT_MAX_FRAME,
            credentials: Arc::new(Credentials::plain()),
        }
    }

    /// The same, with `credentials`.
    pub fn with_credentials(mut self, credentials: Arc<Credentials>) -> Self {
        self.credentials = credentials;
        self
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error that retrying does not cure (or retries ran out).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// No address could be reached at start.
    #[error("cannot connect to {addrs} ({reason}); is a dtc router or coordinator running there?")]
    Connect {
        /// The addresses tried.
        addrs: String,
        /// The last failure.
        reason: String,
    },
    /// A server refused the client's credentials (or its cluster).
    #[error("{addr} refused this client: {reason}")]
    Refused {
        /// The server.
        addr: SocketAddr,
        /// What it said is missing or wrong.
        reason: String,
    },
    /// The client was shut down.
    #[error("the client has shut down")]
    Closed,
    /// The task does not fit in one frame.
    #[error("the task is {size} bytes, more than the frame limit of {max} bytes")]
    TooLarge {
        /// The task's payload and type name, in bytes.
        size: usize,
        /// The frame limit.
        max: usize,
    },
}

type Call = (RequestBody, oneshot::Sender<Result<TaskView, WireError>>);

/// A connection to dtc. Cheap to clone; the connection closes when the last clone drops.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Call>,
    retry_for: Duration,
    max_frame: usize,
    _stop: Arc<DropGuard>,
}

/// Room in a frame for everything but the payload and the type name.
const FRAME_OVERHEAD: usize = 128;

impl Client {
    /// Connects with default settings to `addr` (a router or a coordinator).
    pub async fn connect(addr: SocketAddr) -> Result<Self, ClientError> {
        Self::with_config(ClientConfig::new(vec![addr])).await
    }

    /// Connects over TCP (with TLS when `config.credentials` have it) as `config` says.
    /// Fails at once if no address answers or the server refuses the credentials; after
    /// that, a lost connection is re-established by itself.
    pub async fn with_config(config: ClientConfig) -> Result<Self, ClientError> {
        let transport = Secure::new(Tcp, Arc::clone(&config.credentials));
        Self::with_transport(config, transport).await
    }

    /// Connects as `config` says, over `transport` (TCP, or a simulated network).
    pub async fn with_transport<T: Transport>(
        config: ClientConfig,
        transport: T,
    ) -> Result<Self, ClientError> {
        let mut last = String::from("no address given");
        let mut reachable = false;
        for &addr in &config.addrs {
            let hello = transport.hello(Role::Client, &config.name);
            match dial(&transport, addr, &hello, config.max_frame).await {
                Ok(_) => {
                    reachable = true;
                    break;
                }
                Err(ProtoError::Refused(WireError::Auth { reason })) => {
                    return Err(ClientError::Refused { addr, reason });
                }
                Err(e) => last = e.to_string(),
            }
        }
        if !reachable {
            let addrs = config
                .addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ClientError::Connect {
                addrs,
                reason: last,
            });
        }
        let (tx, rx) = mpsc::channel(config.max_inflight);
        let cancel = CancellationToken::new();
        let mux = Mux {
            transport,
            label: config
                .addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            addrs: config.addrs,
            role: Role::Client,
            name: config.name,
            max_frame: config.max_frame,
            max_inflight: config.max_inflight,
            hold: config.retry_for.min(dtc_proto::mux::DEFAULT_HOLD),
            abandon: Default::default(),
        };
        tokio::spawn(mux.run(rx, cancel.clone()));
        Ok(Self {
            tx,
            retry_for: config.retry_for,
            max_frame: config.max_frame,
            _stop: Arc::new(cancel.drop_guard()),
        })
    }

    /// One request, one answer, no retry.
    pub async fn call(&self, body: RequestBody) -> Result<TaskView, ClientError> {
        if let RequestBody::Submit { task, .. } = &body {
            let size = task.payload.len() + task.kind.len();
            if size + FRAME_OVERHEAD > self.max_frame {
                return Err(ClientError::TooLarge {
                    size,
                    max: self.max_frame,
                });
            }
        }
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((body, tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        match rx.await {
            Ok(answer) => answer.map_err(ClientError::Wire),
            Err(_) => Err(ClientError::Closed),
        }
    }

    /// A request retried while it fails transiently, for up to `retry_for`.
    async fn call_retrying(&self, body: RequestBody) -> Result<TaskView, ClientError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            match self.call(body.clone()).await {
                Err(ClientError::Wire(e))
                    if e.is_retryable() && start.elapsed() < self.retry_for =>
                {
                    tracing::debug!(error = %e, "retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }

    /// Submits a task and returns once it is accepted (queued, or already known).
    pub async fn submit(&self, task: TaskSpec) -> Result<TaskView, ClientError> {
        self.call_retrying(RequestBody::Submit { task, wait: false })
            .await
    }

    /// Submits a task and returns when it has finished, with its outcome. Submitting an id
    /// that exists waits for (or returns) that task instead of running it again.
    pub async fn run(&self, task: TaskSpec) -> Result<TaskView, ClientError> {
        self.call_retrying(RequestBody::Submit { task, wait: true })
            .await
    }

    /// The task as it stands.
    pub async fn get(&self, id: TaskId) -> Result<TaskView, ClientError> {
        self.call_retrying(RequestBody::Get { id, wait: false })
            .await
    }

    /// Waits until the task has finished.
    pub async fn wait(&self, id: TaskId) -> Result<TaskView, ClientError> {
        self.call_retrying(RequestBody::Get { id, wait: true })
            .await
    }

    /// Cancels an unfinished task; a running one's handler is told to stop.
    pub async fn cancel(&self, id: TaskId) -> Result<TaskView, ClientError> {
        self.call_retrying(RequestBody::Cancel { id }).await
    }

    /// Runs a failed task again with fresh attempts.
    pub async fn retry(&self, id: TaskId) -> Result<TaskView, ClientError> {
        self.call_retrying(RequestBody::Retry { id }).await
    }
}
