//! `dtc-proto`: the wire protocol every dtc process speaks.
//!
//! It owns task ids ([`TaskId`]), the task model ([`TaskSpec`], [`Outcome`], [`TaskView`]),
//! the typed messages of each role ([`message`]), the length-delimited frame codec
//! ([`codec::FrameCodec`]), the handshake and the batched writer ([`connection`]), the
//! multiplexed requesting side that follows a shard's leader ([`mux`]), the operator's status
//! messages ([`status`]) and how they are asked ([`ask`]), and the errors that cross the wire ([`WireError`]) or stay local
//! ([`ProtoError`]).
//!
//! Everything here is generic over `AsyncRead + AsyncWrite`, and connections are made through
//! the [`transport`] seam, so the same code runs on TCP and inside a network simulator.

pub mod ask;
mod calendar;
pub mod codec;
pub mod connection;
pub mod credentials;
mod error;
pub mod follow;
pub mod hash;
mod id;
pub mod message;
pub mod mux;
pub mod schedule;
pub mod status;
mod task;
pub mod tls;
pub mod token;
pub mod transport;

pub use error::{ProtoError, WireError};
pub use id::{ParseTaskIdError, TaskId, key_route_hash};
pub use task::{
    Backoff, Concurrency, Outcome, Retry, Start, TaskOptions, TaskProgress, TaskSpec, TaskState,
    TaskView, check_queue_name,
};

/// The protocol version this build speaks; the handshake refuses any other. Version 2 added
/// the cluster, shard and token to the hello; version 3 the task lifecycle (options,
/// retrying and scheduled states, cancelling running tasks); version 4 queues and
/// priorities; version 5 concurrency keys, queue rate limits, schedules and progress
/// reports; version 6 a router's taking back of a departed client's wait (`Unwait`); version 7
/// an operator's answer that only carries an error (`AdminResponse::Failed`).
pub const PROTOCOL_VERSION: u32 = 7;

/// The default bound on one frame's length (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// The default bound on requests in flight on one connection.
pub const DEFAULT_MAX_INFLIGHT: usize = 16 * 1024;
