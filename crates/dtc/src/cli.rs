//! The command line: one binary, one subcommand per role. Short flags follow the C++ seed
//! (`-p`, `-w`, `-s`, `-c`, `-n`, `-t`, `--ip`, `--peer`); every flag also has a long form
//! and an environment variable (`DTC_…`).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// dtc — a distributed task coordinator.
///
/// Programs submit tasks (a type name plus a payload); workers run them; the submitter gets
/// the result. A stateless router shards tasks by id; each shard is a Raft group of
/// coordinator replicas (3 survive the loss of one) whose leader schedules its tasks onto
/// the workers attached to it.
///
/// Quick start (one process, a whole cluster, its benchmark):
///
///   dtc local --bench
///
/// One shard of three replicas as separate processes:
///
///   dtc coordinator -p 5000 --peer 127.0.0.1:5001 --peer 127.0.0.1:5002 &
///   dtc coordinator -p 5001 --peer 127.0.0.1:5000 --peer 127.0.0.1:5002 &
///   dtc coordinator -p 5002 --peer 127.0.0.1:5000 --peer 127.0.0.1:5001 &
///   dtc worker -s 127.0.0.1:5000,127.0.0.1:5001,127.0.0.1:5002 -w 4 &
///   dtc router -p 6000 -s 127.0.0.1:5000,127.0.0.1:5001,127.0.0.1:5002 &
///   dtc client -p 6000 -c 64 -n 10000 -t mixed
///   dtc status
///   dtc top
///
/// The router also serves an HTTP API, Prometheus metrics and a dashboard on
/// http://127.0.0.1:8080/ (--http).
#[derive(Debug, Parser)]
#[command(
    name = "dtc",
    version,
    verbatim_doc_comment,
    propagate_version = true,
    args_override_self = true
)]
pub struct Cli {
    /// Settings from a TOML file: one table per subcommand, whose keys are its long flags
    /// (e.g. a worker table with slots = 8). Typed flags override the file.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a coordinator: one replica of a shard. The replicas keep the shard's tasks in a
    /// Raft-replicated log; the leader schedules them onto the shard's workers.
    Coordinator(CoordinatorArgs),
    /// Run a worker: offers slots to a coordinator and runs the built-in task types
    /// (noop, sleep, wordcount, fail).
    Worker(WorkerArgs),
    /// Run a router: stateless; sends each task to its shard by a hash of the task id.
    Router(RouterArgs),
    /// Run the benchmark client: closed-loop clients submit tasks and wait for results,
    /// then a latency and throughput report is printed.
    Client(ClientArgs),
    /// Run a whole cluster on 127.0.0.1 in this process (router, shards, workers);
    /// with --bench, run the benchmark against it and exit.
    Local(LocalArgs),
    /// Submit one task and print its result (or, with --no-wait, its id and state).
    Submit(SubmitArgs),
    /// Look a task up by id and print it (with --wait, once it has finished).
    Get(GetArgs),
    /// Cancel an unfinished task: scheduled, queued, retrying or running (its handler is
    /// told to stop). A finished task cannot be cancelled.
    Cancel(IdArgs),
    /// Run a failed task again, with fresh attempts (its past errors are kept).
    Retry(IdArgs),
    /// List tasks, newest first, through a router (every shard) or a coordinator (its
    /// shard): e.g. dtc tasks --state failed to see what failed and why.
    Tasks(TasksArgs),
    /// Forget every finished task in a state, e.g. dtc purge --state failed, through a
    /// router (every shard) or a coordinator (its shard). With secrets this needs the
    /// member certificate (--secrets DIR of a coordinator or router), not just a token.
    Purge(PurgeArgs),
    /// The named queues, through a router (every shard) or a coordinator (its shard):
    /// dtc queue list shows each queue's waiting and running tasks, workers, throughput
    /// and whether it is paused; dtc queue pause NAME holds its tasks (running ones
    /// finish, new ones are still accepted) until dtc queue resume NAME. Pausing is kept
    /// in each shard's log; with secrets it needs the member certificate.
    Queue(QueueArgs),
    /// Cron schedules, through a router (a schedule lives on the shard its name routes
    /// to) or a coordinator (its shard): dtc schedule add nightly --cron "0 3 * * *"
    /// --tz Europe/Paris report; each tick submits one task, exactly once even across
    /// failovers. list, pause NAME, resume NAME, trigger NAME (run it now), delete NAME.
    /// Kept in each shard's log; with secrets, changes need the member certificate.
    Schedule(ScheduleArgs),
    /// Show the cluster (through a router) or one coordinator replica: each shard's
    /// replicas, leader, term, log/commit/applied indexes, queue, running tasks, workers.
    Status(StatusArgs),
    /// A live monitor of the cluster (through a router) or of one coordinator's shard:
    /// leaders, terms, queues, throughput with a minute of history, latency, workers.
    /// Keys: q quits, Tab or ←/→ switch panes, ↑/↓ move, s sorts the workers.
    Top(TopArgs),
    /// Change a shard's settings — how long and how many results are kept, how many tasks
    /// may queue — through its leader. They live in the shard's log, so every replica
    /// applies the same; `dtc status` shows them. With secrets this needs the member
    /// certificate (--secrets DIR of a coordinator or router), not just the admin token.
    Configure(ConfigureArgs),
    /// Make and manage the cluster's credentials (TLS certificates and role tokens).
    #[command(subcommand)]
    Secrets(SecretsCommand),
}

/// `dtc configure`.
#[derive(Debug, Args)]
pub struct ConfigureArgs {
    /// Any replica of the shard (its leader is found from there).
    #[arg(value_name = "ADDR")]
    pub addr: SocketAddr,
    /// Seconds a finished task's result is kept.
    #[arg(long)]
    pub result_ttl_s: Option<u64>,
    /// The most finished results kept; the oldest are forgotten first.
    #[arg(long)]
    pub max_results: Option<u64>,
    /// The most tasks that may wait in the queue; past it a submit is answered Overloaded.
    #[arg(long)]
    pub max_queue: Option<u64>,
    /// Seconds a failed task is kept.
    #[arg(long)]
    pub failed_ttl_s: Option<u64>,
    /// The most failed tasks kept; the oldest are forgotten first.
    #[arg(long)]
    pub max_failed: Option<u64>,
    /// Set the defaults of this task type instead: what its tasks take where their submit
    /// gives none (--timeout, --expires, the --backoff flags, --queue, --priority). Each
    /// shard keeps its own: configure every shard.
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// With --type: how long one attempt of its tasks may run.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "kind")]
    pub timeout: Option<Duration>,
    /// With --type: its tasks fail as expired if not started this long after they are
    /// accepted.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "kind")]
    pub expires: Option<Duration>,
    /// With --type: how its failed attempts are retried.
    #[command(flatten)]
    pub backoff: BackoffArgs,
    /// With --type: the queue its tasks wait in when their submit names none.
    #[arg(long, value_name = "QUEUE", requires = "kind")]
    pub queue: Option<String>,
    /// With --type: the priority (1 to 9) its tasks take when their submit gives none.
    #[arg(long, requires = "kind", value_parser = clap::value_parser!(u8).range(1..=9))]
    pub priority: Option<u8>,
    /// With --type: clear its defaults.
    #[arg(long, requires = "kind")]
    pub clear: bool,
    /// Credentials.
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// `dtc secrets …`.
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Make a cluster's credentials in DIR: a CA (ca.pem, ca.key), a certificate for the
    /// cluster's members — coordinators and routers — valid for the given hosts (node.pem,
    /// node.key), and one random token per role (secrets.toml: peer, router, worker,
    /// client, admin). Every file is readable by its owner only.
    ///
    /// Then start every process with --secrets DIR. Hand each machine only what its roles
    /// need: coordinators and routers the whole directory but ca.key; a worker ca.pem and a
    /// tokens file with its token (--tls-ca, --token-file); keep ca.key offline.
    #[command(verbatim_doc_comment)]
    Init(SecretsInitArgs),
}

/// `dtc secrets init`.
#[derive(Debug, Args)]
pub struct SecretsInitArgs {
    /// Where to write the credentials (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// A host name or IP address the members' certificate is valid for (repeatable;
    /// default 127.0.0.1 and localhost). Name every address that clients, workers and
    /// replicas dial.
    #[arg(long = "host", value_name = "NAME_OR_IP")]
    pub hosts: Vec<String>,
    /// The cluster's name: nodes of another cluster are refused.
    #[arg(long, default_value = dtc_proto::message::DEFAULT_CLUSTER)]
    pub cluster: String,
    /// Overwrite credentials already in DIR (every process must then get the new ones).
    #[arg(long)]
    pub force: bool,
}

/// How a process proves itself and to which cluster it belongs. Without any of these it
/// runs in plain mode: no TLS, no tokens, servers on loopback only.
#[derive(Debug, Args, Clone, Default)]
pub struct SecurityArgs {
    /// A directory made by `dtc secrets init`: TLS with the cluster's CA, the node
    /// certificate (for coordinators and routers) and the role tokens.
    #[arg(
        long,
        env = "DTC_SECRETS",
        value_name = "DIR",
        help_heading = "Security"
    )]
    pub secrets: Option<PathBuf>,
    /// The cluster CA's certificate (PEM), instead of DIR/ca.pem.
    #[arg(
        long,
        env = "DTC_TLS_CA",
        value_name = "FILE",
        help_heading = "Security"
    )]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), instead of DIR/node.pem (coordinators and routers).
    #[arg(
        long,
        env = "DTC_TLS_CERT",
        value_name = "FILE",
        help_heading = "Security"
    )]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM), instead of DIR/node.key.
    #[arg(
        long,
        env = "DTC_TLS_KEY",
        value_name = "FILE",
        help_heading = "Security"
    )]
    pub tls_key: Option<PathBuf>,
    /// A TOML file of role tokens in the format of DIR/secrets.toml (its tokens table,
    /// with only the roles this process needs), instead of DIR/secrets.toml.
    #[arg(
        long,
        env = "DTC_TOKEN_FILE",
        value_name = "FILE",
        help_heading = "Security"
    )]
    pub token_file: Option<PathBuf>,
    /// The cluster's name (default: the one in the secrets, else dtc); nodes of another
    /// cluster are refused.
    #[arg(
        long,
        env = "DTC_CLUSTER",
        value_name = "NAME",
        help_heading = "Security"
    )]
    pub cluster: Option<String>,
    /// Check servers' certificates against this name instead of the address dialled (for
    /// certificates issued to a DNS name).
    #[arg(
        long,
        env = "DTC_TLS_SERVER_NAME",
        value_name = "NAME",
        help_heading = "Security"
    )]
    pub tls_server_name: Option<String>,
    /// Take a client's certificate for a member's (a replica's or router's) only if it is
    /// valid for this name, a DNS name or IP address (repeat for several). Without it, any
    /// certificate the CA signed proves membership: set it when your CA also signs
    /// certificates for other uses.
    #[arg(
        long = "tls-member-name",
        env = "DTC_TLS_MEMBER_NAME",
        value_name = "NAME",
        value_delimiter = ',',
        help_heading = "Security"
    )]
    pub tls_member_names: Vec<String>,
}

/// `dtc top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// A router (the whole cluster) or a coordinator (its shard), as ADDR.
    #[arg(value_name = "ADDR", conflicts_with_all = ["router", "port"])]
    pub addr: Option<SocketAddr>,
    /// The router to ask.
    #[arg(long, value_name = "ADDR", conflicts_with = "port")]
    pub router: Option<SocketAddr>,
    /// A router's or coordinator's port on --ip (the seed's form; default: the router at
    /// 127.0.0.1:6000).
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// The host, with -p.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub ip: IpAddr,
    /// Credentials (the admin token).
    #[command(flatten)]
    pub security: SecurityArgs,
}

impl TopArgs {
    /// The address to ask.
    pub fn target(&self) -> SocketAddr {
        self.addr
            .or(self.router)
            .unwrap_or_else(|| SocketAddr::new(self.ip, self.port.unwrap_or(6000)))
    }
}

/// `dtc status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A router (the whole cluster) or a coordinator (that replica), as ADDR.
    #[arg(value_name = "ADDR", conflicts_with = "router")]
    pub addr: Option<SocketAddr>,
    /// The router to ask.
    #[arg(
        long,
        env = "DTC_ROUTER",
        value_name = "ADDR",
        default_value = "127.0.0.1:6000"
    )]
    pub router: SocketAddr,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Credentials (the admin token).
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// Flags shared by every server.
#[derive(Debug, Args, Clone)]
pub struct NetArgs {
    /// The address to listen on. Anything but a loopback address needs --secrets (or
    /// --insecure).
    #[arg(long = "bind", env = "DTC_BIND", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,
    /// The largest frame accepted or sent, in bytes.
    #[arg(long, env = "DTC_MAX_FRAME", default_value_t = dtc_proto::DEFAULT_MAX_FRAME)]
    pub max_frame: usize,
    /// The most connections at once (handshakes included); past it new ones are closed.
    #[arg(long, env = "DTC_MAX_CONNECTIONS", default_value_t = dtc_server::net::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// The most connections at once from one remote address; past it new ones are refused.
    #[arg(long, env = "DTC_MAX_CONNECTIONS_PER_IP", default_value_t = dtc_server::net::DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: usize,
    /// The most bytes of requests (payloads) in flight on one connection; past it the
    /// connection is read again once answers free some.
    #[arg(long, env = "DTC_MAX_INFLIGHT_BYTES", value_name = "BYTES", default_value_t = dtc_server::net::DEFAULT_MAX_INFLIGHT_BYTES)]
    pub max_inflight_bytes: usize,
    /// The most requests that wait for their task to finish from one remote address, over
    /// all its connections; past it such requests are answered "limit reached". A router
    /// holds at most half its waits towards a shard for one address, whatever this says.
    #[arg(long, env = "DTC_MAX_WAITS", default_value_t = dtc_server::net::DEFAULT_MAX_WAITS)]
    pub max_waits: usize,
    /// Seconds after which a client or operator connection with nothing in flight is
    /// closed (the SDK reconnects by itself).
    #[arg(long, env = "DTC_IDLE_TIMEOUT_S", default_value_t = dtc_server::net::DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub idle_timeout_s: u64,
    /// Serve without secrets on a non-loopback address: anyone who reaches the port can
    /// act as any role. Prefer `dtc secrets init`.
    #[arg(long, env = "DTC_INSECURE", help_heading = "Security")]
    pub insecure: bool,
    /// Credentials.
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// `dtc coordinator`.
#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// The port to listen on for clients, routers, workers and the other replicas.
    #[arg(short = 'p', long, env = "DTC_PORT", default_value_t = 5000)]
    pub port: u16,
    /// Another replica of this shard (repeatable): `ADDR`, or `ID=ADDR` with --id. Every
    /// replica is started with the others as peers; a fresh set forms one Raft group by
    /// itself. Without ids, replicas are numbered 1, 2, … in the order of their addresses.
    /// Use 3 (or 5) replicas: 2 replicate but cannot lose either one and keep serving.
    #[arg(long, value_name = "[ID=]ADDR")]
    pub peer: Vec<crate::membership::PeerArg>,
    /// This replica's id in its shard (needs every --peer as ID=ADDR).
    #[arg(long, env = "DTC_ID")]
    pub id: Option<u64>,
    /// The address the other replicas, routers and workers reach this one at (default:
    /// --bind and -p).
    #[arg(long, env = "DTC_ADVERTISE", value_name = "ADDR")]
    pub advertise: Option<SocketAddr>,
    /// Where this replica keeps its Raft log and snapshots (default: ./data/ID, ID being
    /// its replica id). A restarted replica rejoins its shard from it.
    #[arg(long, env = "DTC_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Keep the log in memory instead: nothing survives a restart of this replica.
    #[arg(long, conflicts_with = "data_dir")]
    pub in_memory: bool,
    /// Milliseconds between the leader's heartbeats to its followers.
    #[arg(long, env = "DTC_RAFT_HEARTBEAT_MS", default_value_t = 50)]
    pub raft_heartbeat_ms: u64,
    /// A follower that hears no leader for this many ms (randomised up to twice as long)
    /// starts an election.
    #[arg(long, env = "DTC_ELECTION_TIMEOUT_MS", default_value_t = 150)]
    pub election_timeout_ms: u64,
    /// Take a snapshot, and purge the log before it, every this many log entries (plus up
    /// to half as many, different for each replica, so that replicas snapshot apart).
    #[arg(long, env = "DTC_SNAPSHOT_EVERY", default_value_t = 10_000)]
    pub snapshot_every: u64,
    /// Under load (8 or more tasks running on the shard's workers), the leader proposes a
    /// log entry at most once per this many ms, so that each fsynced replication round
    /// carries more tasks; 0 proposes at once. Ignored with --in-memory.
    #[arg(long, env = "DTC_COMMIT_LINGER_MS", default_value_t = 1)]
    pub commit_linger_ms: u64,
    /// Milliseconds without a message after which a worker is declared dead and its tasks
    /// run elsewhere.
    #[arg(long, env = "DTC_HEARTBEAT_TIMEOUT_MS", default_value_t = 1000)]
    pub heartbeat_timeout_ms: u64,
    /// The most tasks that may wait in the queue; past it a submit is answered Overloaded.
    /// Like the two settings below, it takes effect when this replica is a new shard's
    /// first leader; from then on the shard's log holds it (change it with dtc configure).
    #[arg(long, env = "DTC_MAX_QUEUE", default_value_t = 100_000)]
    pub max_queue: usize,
    /// Seconds a finished task's result is kept, for late or retried waiters (a new shard's
    /// setting; see --max-queue).
    #[arg(long, env = "DTC_RESULT_TTL_S", default_value_t = 600)]
    pub result_ttl_s: u64,
    /// The most finished results kept; the oldest are forgotten first (a new shard's
    /// setting; see --max-queue).
    #[arg(long, env = "DTC_MAX_RESULTS", default_value_t = 200_000)]
    pub max_results: usize,
    /// Seconds a failed task is kept (with each attempt's error) to be looked at, retried
    /// with dtc retry or purged (a new shard's setting; see --max-queue).
    #[arg(long, env = "DTC_FAILED_TTL_S", default_value_t = 7 * 24 * 3600)]
    pub failed_ttl_s: u64,
    /// The most failed tasks kept; the oldest are forgotten first (a new shard's setting;
    /// see --max-queue).
    #[arg(long, env = "DTC_MAX_FAILED", default_value_t = 100_000)]
    pub max_failed: usize,
    /// The most slots one worker gets, whatever it asks for (it also takes ahead at most as
    /// many tasks as it has slots).
    #[arg(long, env = "DTC_MAX_WORKER_SLOTS", default_value_t = dtc_server::coordinator::DEFAULT_MAX_WORKER_SLOTS)]
    pub max_worker_slots: u32,
    /// The largest task payload accepted, in bytes (it must also fit in a frame).
    #[arg(long, env = "DTC_MAX_PAYLOAD", value_name = "BYTES", default_value_t = dtc_proto::TaskSpec::DEFAULT_MAX_PAYLOAD)]
    pub max_payload: usize,
    /// Serve Prometheus metrics at http://ADDR/metrics (tasks, queue, Raft term and indexes).
    #[arg(long, env = "DTC_METRICS", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Listening and framing.
    #[command(flatten)]
    pub net: NetArgs,
}

/// `dtc worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The coordinator's port on --ip (the seed's form).
    #[arg(short = 'p', long, env = "DTC_PORT", conflicts_with = "shard")]
    pub port: Option<u16>,
    /// The coordinator's host, with -p.
    #[arg(long, env = "DTC_IP", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub ip: IpAddr,
    /// The replicas of the shard to serve, comma-separated; the worker finds and follows
    /// their leader.
    #[arg(
        short = 's',
        long = "shard",
        value_delimiter = ',',
        value_name = "ADDR,ADDR"
    )]
    pub shard: Vec<SocketAddr>,
    /// How many tasks run at once.
    #[arg(short = 'w', long, env = "DTC_SLOTS", default_value_t = 4)]
    pub slots: u32,
    /// The queues to take tasks from, comma-separated (e.g. critical,default). A task goes
    /// only to workers of its queue; across them, higher priority and longer waiting first.
    /// NAME=WEIGHT shares the slots by weight while several queues have tasks ready
    /// (critical=3,default=1: three of four slots to critical).
    #[arg(
        short = 'q',
        long = "queue",
        env = "DTC_QUEUES",
        value_delimiter = ',',
        value_name = "QUEUE,QUEUE",
        default_value = "default"
    )]
    pub queues: Vec<String>,
    /// Tasks taken ahead beyond the slots, so a freed slot starts the next task at once
    /// (default: as many as the slots; 0 disables).
    #[arg(long, env = "DTC_PREFETCH")]
    pub prefetch: Option<u32>,
    /// Milliseconds between heartbeats.
    #[arg(long, env = "DTC_HEARTBEAT_MS", default_value_t = 200)]
    pub heartbeat_ms: u64,
    /// The worker's name in the coordinator's logs.
    #[arg(long, env = "DTC_WORKER_NAME")]
    pub name: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (slots busy, tasks done).
    #[arg(long, env = "DTC_METRICS", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// The largest frame accepted or sent, in bytes.
    #[arg(long, env = "DTC_MAX_FRAME", default_value_t = dtc_proto::DEFAULT_MAX_FRAME)]
    pub max_frame: usize,
    /// Serve --metrics on a non-loopback address without secrets.
    #[arg(long, env = "DTC_INSECURE", help_heading = "Security")]
    pub insecure: bool,
    /// Credentials (the worker token).
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// `dtc router`.
#[derive(Debug, Args)]
pub struct RouterArgs {
    /// The port to listen on for clients.
    #[arg(short = 'p', long, env = "DTC_PORT", default_value_t = 6000)]
    pub port: u16,
    /// One shard's replica addresses, comma-separated (the router finds and follows their
    /// leader); repeat the flag once per shard: -s 127.0.0.1:5000 -s 127.0.0.1:5001 is two
    /// shards of one replica each.
    #[arg(short = 's', long = "shard", value_name = "ADDR[,ADDR…]", required = true, value_parser = parse_shard)]
    pub shards: Vec<Vec<SocketAddr>>,
    /// Where to serve the HTTP API, /metrics and the dashboard (`off` to serve none).
    #[arg(
        long,
        env = "DTC_HTTP",
        value_name = "ADDR|off",
        default_value = "127.0.0.1:8080"
    )]
    pub http: Listen,
    /// The largest HTTP request body accepted, in bytes (bigger ones get 413).
    #[arg(long, env = "DTC_HTTP_MAX_BODY", value_name = "BYTES", default_value_t = dtc_server::router::http::DEFAULT_MAX_BODY)]
    pub http_max_body: usize,
    /// Also serve Prometheus metrics at http://ADDR/metrics (they are on --http already).
    #[arg(long, env = "DTC_METRICS", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Listening and framing.
    #[command(flatten)]
    pub net: NetArgs,
}

/// A listening address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        s.parse().map(|a| Self(Some(a))).map_err(|e| {
            format!("{s:?} is neither an address (HOST:PORT, e.g. 127.0.0.1:8080) nor off: {e}")
        })
    }
}

/// The workloads of the benchmark client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// `sleep` tasks: 100 µs (70%), 1 ms (20%) or 5 ms (10%).
    Synthetic,
    /// `wordcount` tasks over texts of 10 (70%), 100 (20%) or 1000 (10%) words; every
    /// result is checked.
    Word,
    /// Synthetic or word, 50/50 per task.
    Mixed,
    /// `noop` tasks: measures the system's own overhead.
    Noop,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default();
        f.write_str(&name)
    }
}

/// The benchmark's flags (shared by `dtc client` and `dtc local --bench`).
#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// Concurrent closed-loop clients: each submits a task, waits for its result, repeats.
    #[arg(short = 'c', long, env = "DTC_CLIENTS", default_value_t = 64)]
    pub clients: usize,
    /// Tasks per client.
    #[arg(short = 'n', long, env = "DTC_TASKS", default_value_t = 10_000)]
    pub tasks: u64,
    /// The workload: synthetic (sleep 100 µs / 1 ms / 5 ms, 70/20/10), word (count 10 / 100
    /// / 1000 words, 70/20/10), mixed (synthetic or word, 50/50), noop.
    #[arg(short = 't', long = "type", value_enum, default_value_t = Workload::Mixed)]
    pub workload: Workload,
    /// Connections the clients share, like threads sharing one SDK client (default 1;
    /// `--conns` equal to `-c` gives every client its own connection, as in the C++ seed).
    #[arg(long)]
    pub conns: Option<usize>,
    /// Print one JSON object with the results instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Append a CSV row with the results to this file (a header is written first if new).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Give up on a task after retrying transient errors for this many seconds.
    #[arg(long, default_value_t = 60)]
    pub retry_for_s: u64,
    /// Seed of the workload's random choices (the same seed gives the same task mix).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Instead of closed loops: submit all -c × -n tasks at once, every one delayed to start
    /// at the same moment this many seconds from now (leave time to submit them all), then
    /// report how they drain from that moment: latency is from the start time to each
    /// task's end, throughput is the tasks over the time to the last end.
    #[arg(long, value_name = "SECONDS")]
    pub delayed: Option<u64>,
}

/// `dtc client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The router's (or a coordinator's) port on --ip.
    #[arg(short = 'p', long, env = "DTC_PORT", default_value_t = 6000)]
    pub port: u16,
    /// The router's host.
    #[arg(long, env = "DTC_IP", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub ip: IpAddr,
    /// The benchmark.
    #[command(flatten)]
    pub bench: BenchArgs,
    /// Credentials (the client token).
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// `dtc local`.
#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Shards.
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    /// Workers per shard.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Slots per worker.
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// Coordinator replicas per shard (a Raft group; 3 survives losing any one).
    #[arg(long, default_value_t = 3)]
    pub replicas: u64,
    /// Where the replicas keep their logs and snapshots, kept after exit (default: a fresh
    /// temporary directory, removed at exit).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep the replicas' logs in memory instead (no fsync; nothing survives).
    #[arg(long, conflicts_with = "data_dir")]
    pub in_memory: bool,
    /// The router's port (default 6000; with --bench, any free port).
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// Where the router serves the HTTP API, /metrics and the dashboard, or `off`
    /// (default 127.0.0.1:8080; with --bench, off).
    #[arg(long, value_name = "ADDR|off")]
    pub http: Option<Listen>,
    /// The largest HTTP request body accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = dtc_server::router::http::DEFAULT_MAX_BODY)]
    pub http_max_body: usize,
    /// Run the benchmark against the cluster, print the report and exit.
    #[arg(long)]
    pub bench: bool,
    /// Tokio worker threads for the whole cluster.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Run with TLS and tokens on every connection: credentials are made in the data
    /// directory (DIR/secrets) and the way to connect is printed.
    #[arg(long)]
    pub secure: bool,
    /// The benchmark, with --bench.
    #[command(flatten)]
    pub bench_args: BenchArgs,
}

/// Where a one-off command connects.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The router's (or a coordinator's) port on --ip.
    #[arg(short = 'p', long, env = "DTC_PORT", default_value_t = 6000)]
    pub port: u16,
    /// The router's host.
    #[arg(long, env = "DTC_IP", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub ip: IpAddr,
    /// Print the task as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Credentials (the client token).
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// `dtc submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The task type (a handler's name: noop, sleep, wordcount, fail, or your own).
    #[arg(value_name = "TYPE")]
    pub kind: String,
    /// The payload, as text (e.g. microseconds for sleep, a text for wordcount).
    #[arg(default_value = "")]
    pub payload: String,
    /// The task id (a UUID); submitting an id twice returns the first task's result.
    #[arg(long)]
    pub id: Option<dtc_proto::TaskId>,
    /// Its attempts, queue and priority.
    #[command(flatten)]
    pub shape: TaskShapeArgs,
    /// A concurrency key, e.g. tenant:42: at most --key-limit tasks of the key run at once
    /// across the whole cluster. The task's id is routed by the key (every task of a key
    /// lives on one shard), so an --id given with it is rewritten; the printed id is the
    /// one to look up.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// With --key: how many of the key's tasks may run at once.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "key",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(dtc_proto::TaskSpec::MAX_KEY_LIMIT)))]
    pub key_limit: u32,
    /// Start the task this long after it is accepted, e.g. 30s, 5m, 1h 30m (it is held as
    /// scheduled until then; the shard's log keeps the time, so it survives restarts).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "at")]
    pub delay: Option<Duration>,
    /// Start the task at this time, RFC 3339 (2026-12-01T09:00:00Z, or with an offset).
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    pub at: Option<SystemTime>,
    /// Fail the task as expired if it has not started this long after it was accepted.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub expires: Option<Duration>,
    /// How failed attempts are retried.
    #[command(flatten)]
    pub backoff: BackoffArgs,
    /// Return once the task is accepted instead of waiting for its result.
    #[arg(long)]
    pub no_wait: bool,
    /// Where to connect.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// What a task is allowed and where it waits (`dtc submit`, `dtc schedule add`).
#[derive(Debug, Args)]
pub struct TaskShapeArgs {
    /// How many times the task may run before it fails for good.
    #[arg(long, default_value_t = dtc_proto::TaskSpec::DEFAULT_MAX_ATTEMPTS)]
    pub max_attempts: u32,
    /// The queue it waits in; only workers serving that queue (dtc worker --queue) run it.
    #[arg(short = 'q', long, default_value = dtc_proto::TaskSpec::DEFAULT_QUEUE)]
    pub queue: String,
    /// 0 to 9, higher runs first. Waiting ages a task: it is never passed by one that
    /// became ready more than 1 s per level of priority after it (so a task of priority 0
    /// waits behind a stream of priority 9 for at most about 9 s more).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub priority: u8,
    /// How long one attempt may run; one that runs longer fails (and is retried while
    /// attempts remain) and its handler is told to stop. Default: no limit.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
}

/// `dtc get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The task id.
    pub id: dtc_proto::TaskId,
    /// Wait until the task has finished.
    #[arg(long)]
    pub wait: bool,
    /// Where to connect.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// How failed attempts are retried (`dtc submit`, `dtc configure --type`).
#[derive(Debug, Args)]
pub struct BackoffArgs {
    /// The wait before the second attempt after a failed first; it grows by
    /// --backoff-multiplier with each further failure. Default 1s.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub backoff: Option<Duration>,
    /// How much the wait grows after each failed attempt. Default 2.
    #[arg(long, value_name = "FACTOR")]
    pub backoff_multiplier: Option<f64>,
    /// The longest wait between attempts. Default 10m.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub backoff_max: Option<Duration>,
    /// Up to this percent is added to each wait at random, so that tasks that failed
    /// together do not retry together. Default 20.
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub backoff_jitter: Option<u8>,
}

impl BackoffArgs {
    /// The backoff these flags ask for (the defaults for what they leave out), or `None`
    /// if they ask for none.
    pub fn backoff(&self) -> anyhow::Result<Option<dtc_proto::Backoff>> {
        let asked = self.backoff.is_some()
            || self.backoff_multiplier.is_some()
            || self.backoff_max.is_some()
            || self.backoff_jitter.is_some();
        if !asked {
            return Ok(None);
        }
        let default = dtc_proto::Backoff::default();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let multiplier = self.backoff_multiplier.unwrap_or(2.0);
        anyhow::ensure!(
            (1.0..=100.0).contains(&multiplier),
            "--backoff-multiplier must be from 1 to 100, not {multiplier}"
        );
        Ok(Some(dtc_proto::Backoff {
            initial_ms: self.backoff.map_or(default.initial_ms, ms),
            // In range 100..=10_000 after the check above.
            multiplier_pct: (multiplier * 100.0).round() as u32,
            max_ms: self.backoff_max.map_or(default.max_ms, ms),
            jitter_pct: self.backoff_jitter.unwrap_or(default.jitter_pct),
        }))
    }
}

/// `dtc tasks`.
#[derive(Debug, Args)]
pub struct TasksArgs {
    /// Only tasks in this state: scheduled, queued, running, retrying, succeeded, failed
    /// or cancelled.
    #[arg(long, value_parser = parse_state)]
    pub state: Option<dtc_proto::TaskState>,
    /// Only tasks of this type.
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// At most this many (at most 1000 per page).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Start after this place (the "next" a previous page printed).
    #[arg(long)]
    pub cursor: Option<dtc_proto::status::Cursor>,
    /// Every page, not just the first.
    #[arg(long)]
    pub all: bool,
    /// Where to connect.
    #[command(flatten)]
    pub target: TargetArgs,
}

fn parse_state(s: &str) -> Result<dtc_proto::TaskState, String> {
    dtc_proto::TaskState::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = dtc_proto::TaskState::ALL.iter().map(|s| s.name()).collect();
        format!("{s:?} is not a state; one of {}", names.join(", "))
    })
}

/// `dtc purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Which finished tasks: failed, succeeded or cancelled.
    #[arg(long, value_parser = parse_state)]
    pub state: dtc_proto::TaskState,
    /// Where to connect.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `dtc queue`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: QueueAction,
}

/// What `dtc queue` does.
#[derive(Debug, clap::Subcommand)]
pub enum QueueAction {
    /// Every queue: waiting and running tasks, workers serving it, tasks finished per
    /// second over the last 10 s, paused or not.
    List {
        /// Where to connect.
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Hold a queue's tasks: running ones finish, new ones are accepted and wait.
    Pause {
        /// The queue.
        name: String,
        /// Where to connect.
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Let a paused queue's tasks run again.
    Resume {
        /// The queue.
        name: String,
        /// Where to connect.
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Limit how fast a queue's tasks start, e.g. `dtc queue limit emails 100/s`, or lift
    /// the limit with `off`. The limit is in each shard's log, so it outlives failovers;
    /// through a router it is split evenly among the shards (tasks spread evenly by id).
    /// Waiting tasks keep their order; at most one second's worth starts at once.
    Limit {
        /// The queue.
        name: String,
        /// Starts per second, minute or hour (100/s, 30/m, 5/h), or `off`.
        rate: String,
        /// Where to connect.
        #[command(flatten)]
        target: TargetArgs,
    },
}

/// `dtc schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ScheduleAction,
}

/// What `dtc schedule` does.
#[derive(Debug, clap::Subcommand)]
pub enum ScheduleAction {
    /// Add a schedule: at each tick of its cron expression it submits a task of TYPE with
    /// PAYLOAD, whose id is derived from the schedule and the tick (so a tick never runs
    /// twice, even across failovers).
    Add(ScheduleAddArgs),
    /// Every schedule: its calendar, next tick, last task, ticks fired and skipped.
    List {
        /// Where to connect.
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Let a schedule's ticks pass without firing.
    Pause(ScheduleNameArgs),
    /// Fire again from the next tick on (ticks while paused are not caught up).
    Resume(ScheduleNameArgs),
    /// Submit the schedule's task now, outside its calendar.
    Trigger(ScheduleNameArgs),
    /// Remove a schedule (tasks it submitted are not touched).
    Delete(ScheduleNameArgs),
}

/// `dtc schedule pause|resume|trigger|delete NAME`.
#[derive(Debug, Args)]
pub struct ScheduleNameArgs {
    /// The schedule.
    pub name: String,
    /// Where to connect.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `dtc schedule add`.
#[derive(Debug, Args)]
pub struct ScheduleAddArgs {
    /// The schedule's name: 1 to 64 letters, digits, '_', '-', '.' or ':'.
    pub name: String,
    /// The task type each tick submits.
    #[arg(value_name = "TYPE")]
    pub kind: String,
    /// The payload, as text.
    #[arg(default_value = "")]
    pub payload: String,
    /// When it ticks: five fields, minute hour day-of-month month day-of-week
    /// ("*/5 * * * *": every five minutes), or six with seconds first ("*/10 * * * * *").
    #[arg(long, value_name = "EXPR")]
    pub cron: String,
    /// The IANA time zone the expression is read in (Europe/Paris). Default: UTC.
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
    /// At a tick while the last tick's task is unfinished: skip the tick, or allow
    /// overlapping runs.
    #[arg(long, value_enum, default_value_t = OverlapArg::Skip)]
    pub overlap: OverlapArg,
    /// Ticks missed while the shard had no leader (or over 1 s late): none are run, one
    /// task runs for them, or all run in order.
    #[arg(long, value_enum, default_value_t = CatchUpArg::One)]
    pub catch_up: CatchUpArg,
    /// Its tasks' attempts, queue, priority and timeout.
    #[command(flatten)]
    pub shape: TaskShapeArgs,
    /// Where to connect.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `--overlap`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum OverlapArg {
    /// Skip the tick.
    Skip,
    /// Submit it anyway.
    Allow,
}

/// `--catch-up`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CatchUpArg {
    /// Skip the missed ticks.
    None,
    /// One task for all of them.
    One,
    /// One task each, in order.
    All,
}

/// `dtc cancel`, `dtc retry`: one task, by id.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The task id.
    pub id: dtc_proto::TaskId,
    /// Where to connect.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// A time in RFC 3339, e.g. `2026-12-01T09:00:00Z`.
fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2026-12-01T09:00:00Z: {e}"))
}

fn parse_shard(s: &str) -> Result<Vec<SocketAddr>, String> {
    let addrs: Result<Vec<SocketAddr>, _> = s
        .split(',')
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect();
    match addrs {
        Ok(a) if !a.is_empty() => Ok(a),
        Ok(_) => Err("a shard needs at least one address".into()),
        Err(e) => Err(format!(
            "{e} (expected HOST:PORT[,HOST:PORT…], e.g. 127.0.0.1:5000,127.0.0.1:5001)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seed_command_lines_parse() -> Result<(), clap::Error> {
        Cli::try_parse_from([
            "dtc",
            "coordinator",
            "-p",
            "5000",
            "--peer",
            "127.0.0.1:5001",
        ])?;
        Cli::try_parse_from(["dtc", "worker", "-p", "5000", "-w", "4"])?;
        let r = Cli::try_parse_from([
            "dtc",
            "router",
            "-p",
            "6000",
            "-s",
            "127.0.0.1:5000,127.0.0.1:5001",
        ])?;
        match r.command {
            Command::Router(r) => assert_eq!(r.shards.len(), 1),
            other => panic!("parsed as {other:?}"),
        }
        Cli::try_parse_from([
            "dtc", "client", "-p", "6000", "-c", "64", "-n", "10000", "-t", "mixed",
        ])?;
        Ok(())
    }

    #[test]
    fn bad_shard_lists_are_explained() {
        let err = Cli::try_parse_from(["dtc", "router", "-s", "localhost"])
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("HOST:PORT")));
    }
}
