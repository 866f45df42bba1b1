//! The coordinator: one replica of one shard. It accepts clients, routers, workers and its
//! fellow replicas on one port. The shard's task table is replicated by Raft (openraft, with
//! the durable log and state machine of `crate::shard`); the replica that leads also runs
//! the scheduler, through a single actor loop (`actor.rs`) that connection tasks talk to
//! through one bounded channel: the leader's runtime of its term (`leader/`, one file per
//! concern and one per operator family in `leader/ops/`, with the tasks it knows before the
//! table does in `early.rs`) decides, group commit
//! (`proposer.rs`) gathers its commands into Raft entries, and the actor performs both.
//! Replicas that do not lead answer `NotLeader` with the leader's address. Beside the actor,
//! each replica watches that its storage still writes and that its elections do not keep
//! splitting (`split_votes.rs`).

mod actor;
mod admin;
mod clock;
mod data_dir;
mod early;
mod leader;
mod proposer;
mod queue_rates;
mod split_votes;
mod stats;
mod timers;
mod worker_session;

pub use data_dir::DataDirError;
pub use worker_session::DEFAULT_MAX_WORKER_SLOTS;

use crate::net::{
    Conn, Gate, GateError, Limits, Reply, RequestSink, accept_loop, check_exposure, serve_admin,
    serve_client,
};
use crate::shard::peer::{self, PeerNetwork};
use crate::shard::{
    Durability, LeaderWrites, LogStore, MemDisk, MemLogStore, Node, NodeId, Retention, ShardRaft,
    SharedTable, TableStore,
};
use actor::{Actor, Event};
use dtc_proto::WireError;
use dtc_proto::credentials::Credentials;
use dtc_proto::message::{RequestBody, Role, ShardId};
use dtc_proto::transport::{Listener, Secure, Tcp, Transport};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Raft's timing and log compaction.
#[derive(Clone, Copy, Debug)]
pub struct RaftTiming {
    /// How often the leader sends heartbeats.
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time in this range starts an election.
    pub election_timeout: (Duration, Duration),
    /// A snapshot is taken, and the log before it purged, every this many entries, plus up
    /// to half as many more, which differs per replica (so that replicas snapshot apart).
    pub snapshot_every: u64,
    /// How many entries before the last snapshot are kept, so that a replica that lags by
    /// fewer catches up from the log rather than from a whole snapshot.
    pub keep_before_snapshot: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(150), Duration::from_millis(300)),
            snapshot_every: 10_000,
            keep_before_snapshot: 1000,
        }
    }
}

/// How a coordinator runs.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Where to listen for clients, routers, workers and replicas.
    pub listen: SocketAddr,
    /// This replica's id in its shard.
    pub id: NodeId,
    /// Every replica of the shard, this one included: id → the address it serves on. Empty
    /// means a shard of one: this replica, at its listening address.
    pub replicas: BTreeMap<NodeId, String>,
    /// Where the Raft log and snapshots live. `None` keeps them on `mem_disk` instead.
    pub data_dir: Option<PathBuf>,
    /// Without a data directory, the in-memory disk to use (`None`: a fresh one, so nothing
    /// survives a restart). A simulation hands a replica the same disk on every restart.
    pub mem_disk: Option<MemDisk>,
    /// Raft's timing.
    pub raft: RaftTiming,
    /// A worker silent for this long is declared dead and its tasks run elsewhere.
    pub heartbeat_timeout: Duration,
    /// After an election, unfinished tasks wait this long before they are scheduled again,
    /// so that reconnecting workers can report the ones they still run.
    pub reclaim_grace: Duration,
    /// How often the actor checks heartbeats and expires old results.
    pub tick: Duration,
    /// How many log entries the leader keeps on their way at once; commands that arrive
    /// meanwhile gather into the next entry (group commit). One is best when every entry
    /// waits for fsyncs (measured in docs/benchmarks.md); with logs in memory, more keep a
    /// fast commit path busy.
    pub entries_in_flight: usize,
    /// Under load (several tasks running on the shard's workers), the least time between two
    /// entries' proposals: commands wait that long after the previous proposal, so that one
    /// replication round carries the completions about to arrive. A round costs far more CPU
    /// than a task (three fsyncs, four RPCs, the wake-ups), so fewer, fuller rounds leave
    /// more CPU for the tasks (docs/benchmarks.md, "Under load, entries linger"). Zero
    /// proposes at once; with logs in memory the rounds are cheap and it is zero.
    pub commit_linger: Duration,
    /// The shard's settings (retention of results, the queue bound) if this replica is the
    /// shard's first leader; they are then kept in the shard's log, where an operator
    /// changes them (`dtc configure`), and every replica applies the logged ones.
    pub retention: Retention,
    /// Frame, in-flight and connection bounds.
    pub limits: Limits,
    /// What this replica proves itself with and checks others against (plain by default).
    pub credentials: Arc<Credentials>,
    /// Serve on a non-loopback address without secrets (`--insecure`).
    pub insecure: bool,
    /// The most slots one worker gets, whatever it registers.
    pub max_worker_slots: u32,
    /// The largest task payload accepted, in bytes.
    pub max_payload: usize,
    /// Reads the wall clock (ms since the Unix epoch) when this replica starts to lead: the
    /// system's clock, or a fixed time in a simulation (where only tokio's clock moves).
    pub wall_clock: fn() -> u64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            id: 1,
            replicas: BTreeMap::new(),
            data_dir: None,
            mem_disk: None,
            raft: RaftTiming::default(),
            heartbeat_timeout: Duration::from_secs(1),
            reclaim_grace: Duration::from_millis(150),
            tick: Duration::from_millis(100),
            entries_in_flight: 1,
            commit_linger: Duration::from_millis(1),
            retention: Retention::default(),
            limits: Limits::default(),
            credentials: Arc::new(Credentials::plain()),
            insecure: false,
            max_worker_slots: worker_session::DEFAULT_MAX_WORKER_SLOTS,
            max_payload: dtc_proto::TaskSpec::DEFAULT_MAX_PAYLOAD,
            wall_clock: clock::system_ms,
        }
    }
}

/// Why a coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory cannot be used.
    #[error("data directory {}: {source}", dir.display())]
    DataDir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        source: DataDirError,
    },
    /// The replica list does not name this replica.
    #[error("replica id {id} is not among the shard's replicas ({replicas})")]
    NotAMember {
        /// This replica's id.
        id: NodeId,
        /// The replicas given.
        replicas: String,
    },
    /// Raft refused its configuration or failed to start.
    #[error("raft: {0}")]
    Raft(String),
    /// The credentials cannot serve.
    #[error(transparent)]
    Credentials(#[from] GateError),
    /// A setting is out of its range.
    #[error("{0}")]
    Config(String),
}

/// A started coordinator, ready to [`run`](Coordinator::run).
pub struct Coordinator<L = TcpListener> {
    listener: L,
    config: CoordinatorConfig,
    gate: Arc<Gate>,
    raft: ShardRaft,
    table: SharedTable,
    durability: Durability,
}

impl Coordinator {
    /// Binds a TCP listening socket at `config.listen` (port 0 picks a free port) and starts
    /// the replica's Raft node over TCP.
    pub async fn bind(config: CoordinatorConfig) -> Result<Self, StartError> {
        check_exposure(
            "a coordinator",
            config.listen,
            &config.credentials,
            config.insecure,
        )?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let transport = Secure::new(Tcp, Arc::clone(&config.credentials));
        Self::start(listener, transport, config).await
    }
}

impl<L: Listener> Coordinator<L> {
    /// A coordinator that serves the connections of `listener` and dials its fellow replicas
    /// over `transport` (TCP, or a simulated network; `config.listen` is then unused).
    /// Opens the data directory, starts Raft, and — on a fresh shard, in the replica with the
    /// lowest id — initialises the group.
    pub async fn start<T: Transport>(
        listener: L,
        transport: T,
        config: CoordinatorConfig,
    ) -> Result<Self, StartError> {
        let local = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let mut members = config.replicas.clone();
        if members.is_empty() {
            members.insert(config.id, local.to_string());
        }
        if !members.contains_key(&config.id) {
            return Err(StartError::NotAMember {
                id: config.id,
                replicas: members
                    .iter()
                    .map(|(id, a)| format!("{id}={a}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let shard = ShardId::derive(members.iter().map(|(id, a)| (*id, a.as_str())));
        if config.limits.max_frame > peer::PEER_MAX_FRAME / 2 {
            return Err(StartError::Config(format!(
                "--max-frame is {} bytes; a coordinator takes at most {} (half its replicas' frame)",
                config.limits.max_frame,
                peer::PEER_MAX_FRAME / 2
            )));
        }
        let raft_config = raft_config(&config.raft, shard.0 ^ config.id)?;
        let writes = LeaderWrites {
            replica: config.id,
            parallel: members.len() > 1,
        };
        let name = format!("replica {}", config.id);
        let (raft, table, durability, shard) = match &config.data_dir {
            Some(dir) => {
                let data_err = |source: DataDirError| StartError::DataDir {
                    dir: dir.clone(),
                    source,
                };
                data_dir::check_format(dir).map_err(data_err)?;
                let shard = data_dir::shard_identity(dir, shard).map_err(data_err)?;
                let log = LogStore::open(&dir.join("raft-log"), writes)
                    .map_err(|e| data_err(DataDirError::Store(e.to_string())))?;
                let durability = log.durability().clone();
                let network = PeerNetwork::new(transport, &name, shard, durability.clone());
                let sm = TableStore::open(dir)
                    .map_err(|e| data_err(DataDirError::Store(e.to_string())))?;
                let table = sm.shared();
                let raft = ShardRaft::new(config.id, raft_config, network, log, sm)
                    .await
                    .map_err(|e| StartError::Raft(e.to_string()))?;
                (raft, table, durability, shard)
            }
            None => {
                let disk = config.mem_disk.clone().unwrap_or_default();
                let sm =
                    TableStore::on_mem_disk(&disk).map_err(|e| StartError::Raft(e.to_string()))?;
                let table = sm.shared();
                let log = MemLogStore::open(&disk, writes)
                    .map_err(|e| StartError::Raft(format!("the in-memory disk: {e}")))?;
                let durability = log.durability().clone();
                let network = PeerNetwork::new(transport, &name, shard, durability.clone());
                let raft = ShardRaft::new(config.id, raft_config, network, log, sm)
                    .await
                    .map_err(|e| StartError::Raft(e.to_string()))?;
                (raft, table, durability, shard)
            }
        };
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let first = members.keys().next().copied();
        if !initialized && first == Some(config.id) {
            let nodes: BTreeMap<NodeId, Node> = members
                .iter()
                .map(|(id, addr)| (*id, Node::new(addr.clone())))
                .collect();
            tracing::info!(id = config.id, ?members, "initialising a new shard group");
            if let Err(e) = raft.initialize(nodes).await {
                tracing::info!(error = %e, "the shard group was already initialised");
            }
        }
        let gate = Gate::new(
            Arc::clone(&config.credentials),
            "coordinator",
            &Role::ALL,
            Some(shard),
        )?;
        Ok(Self {
            listener,
            gate: Arc::new(gate),
            config: CoordinatorConfig {
                replicas: members,
                ..config
            },
            raft,
            table,
            durability,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The replica's Raft handle (its metrics tell who leads, the term, the log's progress).
    pub fn raft(&self) -> &ShardRaft {
        &self.raft
    }

    /// The replica's task table (what it has applied).
    pub fn table(&self) -> &SharedTable {
        &self.table
    }

    /// Serves until `cancel` fires, then closes every connection, stops Raft and returns.
    /// When the replica's storage fails (its log or a snapshot cannot be written: a full
    /// disk, an I/O error), it stops the same way by itself and returns the failure, so that
    /// its process can exit non-zero and be restarted by its supervisor rather than serve
    /// without a disk.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), StorageFailed> {
        let outer = cancel;
        let cancel = outer.child_token();
        let addr = self.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let (events_tx, events_rx) = mpsc::channel(4096);
        // The replica's name in its metrics: its address in the shard's membership.
        let replica = self.config.replicas.get(&self.config.id).cloned();
        let replica = replica.unwrap_or_else(|| addr.clone());
        let abandoned = Arc::new(AtomicBool::new(false));
        let actor = Actor::new(
            &self.config,
            &replica,
            self.raft.clone(),
            self.table.clone(),
            events_rx,
            Arc::clone(&abandoned),
        );
        let actor_task = tokio::spawn(actor.run(cancel.clone()));
        let storage_guard = tokio::spawn(stop_on_storage_failure(
            self.durability.clone(),
            self.raft.clone(),
            cancel.clone(),
        ));
        let split_votes = tokio::spawn(split_votes::run(
            self.raft.clone(),
            self.config.raft.election_timeout.1,
            cancel.clone(),
        ));
        let limits = self.config.limits;
        let max_worker_slots = self.config.max_worker_slots;
        let snapshots = peer::SnapshotProgress::default();
        let sink = Arc::new(ActorSink {
            events: events_tx.clone(),
            abandoned,
        });
        let conn_cancel = cancel.clone();
        let sources = admin::Sources {
            raft: self.raft.clone(),
            table: self.table.clone(),
            events: events_tx.clone(),
        };
        let export = crate::telemetry::installed()
            .then(|| tokio::spawn(admin::export(sources.clone(), replica, cancel.clone())));
        let worker_ids = worker_session::WorkerIds::default();
        let handler = move |a: Conn<L>| {
            let sink = Arc::clone(&sink);
            let events = events_tx.clone();
            let worker_ids = worker_ids.clone();
            let cancel = conn_cancel.clone();
            let sources = sources.clone();
            let snapshots = snapshots.clone();
            async move {
                match a.hello.role {
                    Role::Client | Role::Router => {
                        serve_client(a, sink, limits, cancel).await;
                    }
                    Role::Admin => {
                        serve_admin(a, limits.max_frame, limits.idle_timeout, cancel, |req| {
                            let sources = sources.clone();
                            async move { admin::answer(&sources, req).await }
                        })
                        .await;
                    }
                    Role::Worker => {
                        worker_session::serve(
                            a,
                            events,
                            worker_ids,
                            limits.max_frame,
                            max_worker_slots,
                            cancel,
                        )
                        .await;
                    }
                    Role::Peer => {
                        peer::serve(a.reader, a.writer, sources.raft, snapshots, a.peer, cancel)
                            .await;
                    }
                }
            }
        };
        tracing::info!(%addr, id = self.config.id, replicas = ?self.config.replicas, "coordinator listening");
        accept_loop(
            self.listener,
            format!("coordinator {addr}"),
            limits,
            self.gate,
            cancel.clone(),
            handler,
        )
        .await;
        actor_task.await.ok();
        let failed = storage_guard.await.ok().flatten();
        split_votes.await.ok();
        if let Some(export) = export {
            export.await.ok();
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not stop cleanly");
        }
        tracing::info!(%addr, "coordinator stopped");
        match failed {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }
}

/// The replica's storage failed: it stopped rather than serve without a disk.
#[derive(Debug, thiserror::Error)]
#[error(
    "this replica's storage failed ({0}); it stopped. Free or repair the disk of its data directory, then restart it: it rejoins its shard from what it had synced"
)]
pub struct StorageFailed(pub String);

/// Stops the replica when its storage fails: its log can no longer be written (a leader's
/// own appends are not waited for by openraft, see `crate::shard::durability`, so this is
/// watched here), or openraft stopped on a storage error of its own (a snapshot that could
/// not be written, a log write it waited for). Cancels `cancel`, which stops the whole
/// coordinator; the other replicas elect a leader among themselves. Returns the failure,
/// or `None` if the coordinator was stopped for another reason.
async fn stop_on_storage_failure(
    durability: Durability,
    raft: ShardRaft,
    cancel: CancellationToken,
) -> Option<StorageFailed> {
    // openraft records a fatal error in its full metrics, then its core ends and drops the
    // metrics' senders. The server metrics change only per election (the full ones with
    // every entry), so waiting on them for the end wakes this task rarely.
    let mut server = raft.server_metrics();
    let fatal = async {
        while server.changed().await.is_ok() {}
        match &raft.metrics().borrow().running_state {
            Err(fatal) => fatal.to_string(),
            Ok(()) => "raft stopped".to_owned(),
        }
    };
    let failure = tokio::select! {
        () = durability.failure() => "the raft log can no longer be written".to_owned(),
        reason = fatal => reason,
        () = cancel.cancelled() => return None,
    };
    tracing::error!(%failure, "this replica's storage failed; stopping it");
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft did not stop cleanly");
    }
    cancel.cancel();
    Some(StorageFailed(failure))
}

/// openraft's configuration. Each replica snapshots every `snapshot_every` entries plus a
/// share of up to half of that drawn from `spread` (its shard and id): replicas that carry
/// the same load then snapshot at different moments instead of all at once, which stalled
/// every shard of a loaded machine together.
fn raft_config(t: &RaftTiming, spread: u64) -> Result<Arc<openraft::Config>, StartError> {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let mixed = spread.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    let snapshot_every = t
        .snapshot_every
        .saturating_add(t.snapshot_every.saturating_mul(mixed % 500) / 1000);
    let config = openraft::Config {
        cluster_name: "dtc-shard".into(),
        heartbeat_interval: ms(t.heartbeat),
        election_timeout_min: ms(t.election_timeout.0),
        election_timeout_max: ms(t.election_timeout.1),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: t.keep_before_snapshot,
        max_payload_entries: 64,
        ..openraft::Config::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| StartError::Raft(e.to_string()))
}

/// Client sessions' way to the actor.
struct ActorSink {
    events: mpsc::Sender<Event>,
    /// Set when some waiting requests were abandoned; the actor drops them on its next
    /// tick (so a burst of departures costs one sweep).
    abandoned: Arc<AtomicBool>,
}

impl RequestSink for ActorSink {
    async fn request(&self, body: RequestBody, reply: Reply) {
        if let Err(mpsc::error::SendError(Event::Request { reply, .. })) =
            self.events.send(Event::Request { body, reply }).await
        {
            reply.send(Err(WireError::ShuttingDown));
        }
    }

    fn abandoned(&self) {
        self.abandoned.store(true, Ordering::Relaxed);
    }
}
