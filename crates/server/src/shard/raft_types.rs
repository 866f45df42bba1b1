//! The shard's Raft vocabulary: what a log entry carries (a [`Batch`] of table commands),
//! what applying it yields, node ids and addresses. Everything that names openraft's type
//! parameters goes through [`TypeConfig`].

use super::{Applied, Command};
use serde::{Deserialize, Serialize};
use std::io::Cursor;

/// A replica's id within its shard.
pub type NodeId = u64;

/// A replica's address, as the other replicas, routers and workers reach it.
pub type Node = openraft::BasicNode;

/// One log entry's payload: the commands a leader gathered in one turn, applied in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch(pub Vec<Command>);

/// What applying a [`Batch`] yielded, one result per command.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchApplied(pub Vec<Applied>);

openraft::declare_raft_types!(
    /// The shard's openraft type configuration.
    pub TypeConfig:
        D = Batch,
        R = BatchApplied,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
                SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = super::runtime::Runtime,
);

/// A shard replica's Raft handle.
pub type ShardRaft = openraft::Raft<TypeConfig>;

/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;

/// A position in the log.
pub type LogId = openraft::LogId<NodeId>;

/// A vote.
pub type Vote = openraft::Vote<NodeId>;

/// A storage failure as openraft takes it.
pub type StorageError = openraft::StorageError<NodeId>;
