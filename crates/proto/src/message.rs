//! The typed messages of each role. Every connection starts with [`Hello`] from the side that
//! connected and a [`HelloReply`] from the side that accepted; after that each direction
//! carries one message type:
//!
//! | connection | connector sends | acceptor sends |
//! |---|---|---|
//! | client or router → router or coordinator | [`Request`] | [`Response`] |
//! | worker → coordinator | [`WorkerMsg`] | [`CoordMsg`] |

use crate::{Outcome, TaskId, TaskSpec, TaskView, WireError};
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

/// The first frame on every connection, from the side that connected.
///
/// Its layout must never change: an old or new peer must still read the version in it.
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
}

impl Hello {
    /// A hello of this build's version.
    pub fn new(role: Role, name: impl Into<String>) -> Self {
        Self {
            magic: MAGIC,
            version: crate::PROTOCOL_VERSION,
            role,
            name: name.into(),
        }
    }
}

/// The acceptor's answer to [`Hello`]: its own version and name, or why it refuses.
pub type HelloReply = Result<Welcome, WireError>;

/// The acceptor accepted the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version the acceptor speaks.
    pub version: u32,
    /// The acceptor's name for logs (e.g. `coordinator 127.0.0.1:5000`).
    pub node: String,
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
    /// Cancel a queued task.
    Cancel {
        /// The task's id.
        id: TaskId,
    },
}

impl RequestBody {
    /// The id of the task the request is about.
    pub fn task_id(&self) -> TaskId {
        match self {
            Self::Submit { task, .. } => task.id,
            Self::Get { id, .. } | Self::Cancel { id } => *id,
        }
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

/// What a worker sends its coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerMsg {
    /// Sent once, first: the worker's capacity and the tasks it is still running (after a
    /// reconnect), which the coordinator does not run again.
    Register {
        /// How many tasks it runs at once.
        slots: u32,
        /// How many more it takes ahead, to start as soon as a slot frees.
        prefetch: u32,
        /// The task types it has handlers for.
        kinds: Vec<String>,
        /// Tasks still running on it from before a reconnect.
        running: Vec<TaskId>,
    },
    /// Liveness, sent every heartbeat interval.
    Heartbeat,
    /// An attempt finished.
    Completed(Completion),
    /// The worker is shutting down: assign it nothing more.
    Draining,
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
