//! The typed messages of each role. Every connection starts with [`Hello`] from the side that
//! connected and a [`HelloReply`] from the side that accepted; after that each direction
//! carries one message type:
//!
//! | connection | connector sends | acceptor sends |
//! |---|---|---|
//! | client or router → router or coordinator | [`Request`] | [`Response`] |
//! | worker → coordinator | [`WorkerMsg`] | [`CoordMsg`] |

use crate::token::Token;
use crate::{Outcome, Retry, TaskId, TaskProgress, TaskSpec, TaskView, WireError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The bytes every [`Hello`] starts with, so that a stray connection is told apart at once.
pub const MAGIC: [u8; 4] = *b"DTC\0";

/// Who is connecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A program submitting tasks (the SDK's `Client`, `dtc client`).
    Client,
    /// A worker offering slots.
    Worker,
    /// A router forwarding clients' requests.
    Router,
    /// Another coordinator of the same shard.
    Peer,
    /// An operator tool (`dtc status`, `dtc top`).
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Role::Client,
        Role::Worker,
        Role::Router,
        Role::Peer,
        Role::Admin,
    ];

    /// The role's name, as in `secrets.toml` and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Worker => "worker",
            Self::Router => "router",
            Self::Peer => "peer",
            Self::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The cluster name a node uses unless told another (`--cluster`).
pub const DEFAULT_CLUSTER: &str = "dtc";

/// A shard's identity: fixed when the shard is initialised (derived from its first
/// membership) and kept in each replica's data directory, so that a coordinator of another
/// shard is refused as a peer even when it holds a valid certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShardId(pub u64);

impl ShardId {
    /// The identity of a shard first formed by `members` (each replica's id and address):
    /// every replica given the same list derives the same identity. FNV-1a over the list
    /// in id order: stable across builds and platforms.
    pub fn derive<'a>(members: impl IntoIterator<Item = (u64, &'a str)>) -> Self {
        let mut members: Vec<(u64, &str)> = members.into_iter().collect();
        members.sort_unstable();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for (id, addr) in members {
            for byte in id
                .to_be_bytes()
                .iter()
                .chain(addr.as_bytes())
                .chain(std::iter::once(&0u8))
            {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        Self(hash)
    }
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for ShardId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s.trim(), 16).map(Self)
    }
}

/// The first frame on every connection, from the side that connected.
///
/// Its first four fields must never change: an old or new peer must still read the version
/// in it (fields after them may change with the version).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// The protocol version the connector speaks.
    pub version: u32,
    /// The connector's role.
    pub role: Role,
    /// A name for logs (a worker's name, a client's program name).
    pub name: String,
    /// The cluster the connector belongs to; a node of another cluster refuses it.
    pub cluster: String,
    /// For [`Role::Peer`]: the shard of the connecting replica, which must be the
    /// acceptor's.
    pub shard: Option<ShardId>,
    /// The role's token, sent only inside TLS.
    pub token: Option<Token>,
}

/// A hello as the acceptor reads it: the fields every version has first, the rest only
/// when the version is this build's, so that a hello of another version is answered with
/// the version needed rather than a decoding error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelloFrame {
    /// A hello of this build's version and magic.
    Current(Hello),
    /// Another version, or not dtc at all.
    Other {
        /// The magic sent.
        magic: [u8; 4],
        /// The version sent.
        version: u32,
    },
}

impl<'de> Deserialize<'de> for HelloFrame {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, SeqAccess, Visitor};
        struct Fields;
        fn next<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
            seq: &mut A,
            at: usize,
        ) -> Result<T, A::Error> {
            seq.next_element()?
                .ok_or_else(|| A::Error::invalid_length(at, &"the fields of a hello"))
        }
        impl<'de> Visitor<'de> for Fields {
            type Value = HelloFrame;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a dtc hello")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HelloFrame, A::Error> {
                let magic: [u8; 4] = next(&mut seq, 0)?;
                let version: u32 = next(&mut seq, 1)?;
                if magic != MAGIC || version != crate::PROTOCOL_VERSION {
                    return Ok(HelloFrame::Other { magic, version });
                }
                Ok(HelloFrame::Current(Hello {
                    magic,
                    version,
                    role: next(&mut seq, 2)?,
                    name: next(&mut seq, 3)?,
                    cluster: next(&mut seq, 4)?,
                    shard: next(&mut seq, 5)?,
                    token: next(&mut seq, 6)?,
                }))
            }
        }
        d.deserialize_tuple(7, Fields)
    }
}

impl Hello {
    /// A hello of this build's version, in the default cluster, without a token.
    pub fn new(role: Role, name: impl Into<String>) -> Self {
        Self {
            magic: MAGIC,
            version: crate::PROTOCOL_VERSION,
            role,
            name: name.into(),
            cluster: DEFAULT_CLUSTER.to_owned(),
            shard: None,
            token: None,
        }
    }

    /// The same hello for a replica of `shard`.
    pub fn of_shard(mut self, shard: ShardId) -> Self {
        self.shard = Some(shard);
        self
    }
}

/// The acceptor's answer to [`Hello`]: its own version and name, or why it refuses.
pub type HelloReply = Result<Welcome, WireError>;

/// The acceptor accepted the handshake, and says who it is: the connector checks that it
/// reached a node of its own cluster (and, dialling a peer, of its own shard).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version the acceptor speaks.
    pub version: u32,
    /// The acceptor's name for logs (e.g. `coordinator 127.0.0.1:5000`).
    pub node: String,
    /// The acceptor's cluster.
    pub cluster: String,
    /// The acceptor's shard, for a coordinator.
    pub shard: Option<ShardId>,
}

impl Welcome {
    /// The welcome of node `node`, of `cluster` (and `shard`), at this build's version.
    pub fn new(
        node: impl Into<String>,
        cluster: impl Into<String>,
        shard: Option<ShardId>,
    ) -> Self {
        Self {
            version: crate::PROTOCOL_VERSION,
            node: node.into(),
            cluster: cluster.into(),
            shard,
        }
    }
}

/// A client's request; `req` is chosen by the client and echoed in the [`Response`], so one
/// connection carries many requests at once, answered in any order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The client's tag for this request.
    pub req: u64,
    /// What is asked.
    pub body: RequestBody,
}

/// What a client can ask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestBody {
    /// Submit a task. With `wait`, the answer comes when the task has finished; without, as
    /// soon as the task is accepted. An id that exists answers with the existing task.
    Submit {
        /// The task.
        task: TaskSpec,
        /// Answer only when the task has finished.
        wait: bool,
    },
    /// Look a task up; with `wait`, answer when it has finished.
    Get {
        /// The task's id.
        id: TaskId,
        /// Answer only when the task has finished.
        wait: bool,
    },
    /// Cancel an unfinished task (a running one's worker is told to stop it).
    Cancel {
        /// The task's id.
        id: TaskId,
    },
    /// Run a failed task again, with fresh attempts.
    Retry {
        /// The task's id.
        id: TaskId,
    },
    /// Take back a wait: request `req` of this connection, which waits for task `id` to
    /// finish, is no longer wanted (the client a router forwarded it for has gone). It is
    /// dropped unanswered, and this request is not answered either. Only routers send it;
    /// from anyone else it is refused.
    Unwait {
        /// The task the wait is on.
        id: TaskId,
        /// The waiting request's number on this connection.
        req: u64,
    },
}

impl RequestBody {
    /// The id of the task the request is about.
    pub fn task_id(&self) -> TaskId {
        match self {
            Self::Submit { task, .. } => task.id,
            Self::Get { id, .. }
            | Self::Cancel { id }
            | Self::Retry { id }
            | Self::Unwait { id, .. } => *id,
        }
    }

    /// Whether the request is answered only when its task has finished.
    pub fn waits_for_end(&self) -> bool {
        matches!(
            self,
            Self::Submit { wait: true, .. } | Self::Get { wait: true, .. }
        )
    }
}

/// The `req` of a [`Response`] that is about the connection itself (a malformed frame), not
/// about one request; the connection closes after it.
pub const CONNECTION_ERROR: u64 = u64::MAX;

/// The answer to the [`Request`] with the same `req`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The request's tag.
    pub req: u64,
    /// The task as it stands, or why not.
    pub body: Result<TaskView, WireError>,
}

/// The highest weight a worker may give one of its queues.
pub const MAX_QUEUE_WEIGHT: u32 = 1_000;

/// What a worker sends its coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerMsg {
    /// Sent once, first: the worker's capacity and the attempts it still holds (after a
    /// reconnect: running, or finished with their completion not yet sent), which a newly
    /// elected coordinator does not run again.
    Register {
        /// How many tasks it runs at once.
        slots: u32,
        /// How many more it takes ahead, to start as soon as a slot frees.
        prefetch: u32,
        /// The task types it has handlers for.
        kinds: Vec<String>,
        /// The queues it serves (none: [`crate::TaskSpec::DEFAULT_QUEUE`] only).
        queues: Vec<String>,
        /// Each queue's weight, in the order of `queues` (empty: all 1): while several of
        /// its queues have tasks ready, its slots go to them in proportion to their weights.
        weights: Vec<u32>,
        /// Attempts it still holds from before a reconnect: task and attempt number.
        running: Vec<(TaskId, u32)>,
    },
    /// Liveness, sent every heartbeat interval.
    Heartbeat,
    /// An attempt finished.
    Completed(Completion),
    /// The worker is shutting down: assign it nothing more.
    Draining,
    /// A running attempt's handler reported how far it has come.
    Progress {
        /// The task.
        id: TaskId,
        /// The attempt.
        attempt: u32,
        /// How far.
        progress: TaskProgress,
    },
}

/// The end of one attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The task.
    pub id: TaskId,
    /// The attempt number from the [`Assignment`].
    pub attempt: u32,
    /// What the handler returned.
    pub outcome: Outcome,
    /// If it failed: how to retry.
    pub retry: Retry,
}

/// What a coordinator sends a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordMsg {
    /// Run this task in a free slot.
    Assign(Assignment),
    /// The coordinator refuses the worker (e.g. it is not the leader); the connection closes.
    Error(WireError),
    /// The answer to a heartbeat: the coordinator still leads and holds this worker. A worker
    /// that hears nothing for a while reconnects.
    Alive,
    /// Stop running this attempt (it timed out or the task was cancelled); its result will
    /// not count.
    Cancel {
        /// The task.
        id: TaskId,
        /// The attempt to stop.
        attempt: u32,
    },
}

/// One attempt of a task, given to a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The task.
    pub id: TaskId,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// The handler's name.
    pub kind: String,
    /// The handler's input.
    pub payload: Bytes,
}
