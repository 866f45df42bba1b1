//! Errors: [`WireError`] crosses the wire as an answer; [`ProtoError`] is a local failure of
//! a connection (I/O, a bad frame, a refused handshake).

use serde::{Deserialize, Serialize};

/// An error answer, sent to the peer instead of a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WireError {
    /// This node does not lead its shard; ask `leader` (when known).
    #[error("not the leader of this shard{}", leader.as_deref().map(|l| format!("; the leader is {l}")).unwrap_or_default())]
    NotLeader {
        /// The leader's client address, when this node knows it.
        leader: Option<String>,
    },
    /// A queue is full; retry later with the same task id.
    #[error("overloaded: the queue is full; retry later with the same task id")]
    Overloaded,
    /// No task has this id (never submitted, or its result expired).
    #[error("no such task (never submitted, or its result has expired)")]
    NotFound,
    /// The request was malformed or not allowed.
    #[error("bad request: {reason}")]
    BadRequest {
        /// What was wrong.
        reason: String,
    },
    /// The shard cannot serve now (its coordinator is unreachable); retry with the same id.
    #[error("unavailable: {reason}; retry with the same task id")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The handshake was refused: wrong protocol version.
    #[error("protocol version {got} is not supported (this node speaks {want})")]
    VersionMismatch {
        /// The version the peer offered.
        got: u32,
        /// The version this node speaks.
        want: u32,
    },
    /// The node is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// A bound of the connection or the node was reached (say, requests waiting for tasks
    /// to finish); retry once earlier requests are answered.
    #[error("limit reached: {reason}; retry when earlier requests are answered")]
    LimitReached {
        /// Which bound, and its value.
        reason: String,
    },
    /// The connection was refused: a credential is missing or does not admit the role, or
    /// the connector belongs to another cluster or shard. The connection closes.
    #[error("{reason}")]
    Auth {
        /// What is missing or wrong, and what to do.
        reason: String,
    },
}

impl WireError {
    /// Whether retrying the same request (same task id) later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::NotLeader { .. }
                | Self::Overloaded
                | Self::LimitReached { .. }
                | Self::Unavailable { .. }
                | Self::ShuttingDown
        )
    }
}

/// A connection-level failure.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// Reading or writing the socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A frame announced more bytes than the limit allows.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame's bytes did not decode as the expected message.
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The peer closed the connection (or sent nothing) where a message was expected.
    #[error("connection closed")]
    Closed,
    /// The handshake was refused or malformed.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The peer answered with an error.
    #[error("peer refused: {0}")]
    Refused(WireError),
    /// Nothing arrived in time.
    #[error("timed out")]
    Timeout,
}
