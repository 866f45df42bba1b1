//! `dtc-server`: the control plane. A shard's replicated task table ([`shard`]), the leader's
//! pure scheduler ([`sched`]), the coordinator that serves a shard ([`coordinator`]), the
//! stateless router ([`router`]) and the connection plumbing they share ([`net`]).

pub mod coordinator;
pub mod net;
pub mod router;
pub mod sched;
pub mod shard;
pub mod telemetry;
