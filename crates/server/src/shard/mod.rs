//! The replicated part of a shard: the commands that change its task table, the
//! deterministic state machine that applies them, and the Raft plumbing that replicates
//! them: log entries carrying batches of commands (`raft_types`), the durable log
//! (`log_store`, which `log_tail` checks for damage before it opens, or `mem_log_store`
//! on an in-memory disk) and how far it is durable (`durability`, which lets a leader
//! write its log in parallel with replicating it), the state-machine store with its
//! snapshots (`table_store`; the table's tasks sit in a `cow_map` so that a snapshot
//! copies them in constant time), the replicas' RPCs (`peer`) and the runtime openraft runs
//! on, with its seedable random numbers (`runtime`).

/// The version of what a replica keeps on disk: its data directory's format (its `FORMAT`
/// file) and its snapshot files. A replica refuses a directory or a snapshot of another
/// version rather than misread it; the commit that raises it says what changed.
pub const FORMAT_VERSION: u32 = 5;

mod command;
mod cow_map;
mod durability;
mod log_store;
mod log_tail;
mod mem_log_store;
pub mod peer;
mod raft_types;
mod runtime;
mod table;
mod table_store;

pub use command::{Applied, Command, SubmitOutcome};
pub use durability::{Durability, LeaderWrites};
pub use log_store::{LogStore, read_log_payload};
pub use mem_log_store::{DiskFault, MemDisk, MemLogStore};
pub use openraft::ServerState;
pub use raft_types::{Batch, BatchApplied, Entry, Node, NodeId, ShardRaft, TypeConfig};
pub use runtime::{ThreadRng, seed_thread_rng};
pub use table::{
    CorruptSnapshot, Input, Listed, Retention, Schedule, Schedules, TableImage, TaskTable, Timing,
    check_schedule,
};
pub use table_store::{
    SharedTable, SnapshotDecodeError, SnapshotFileError, TableStore, read_snapshot_file,
};
