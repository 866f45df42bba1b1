//! The `dtc` binary's parts, as a library so that integration tests drive the same code:
//! the command line ([`cli`]), the benchmark client ([`mod@bench`]), the in-process local
//! cluster ([`local`]), the one-request commands ([`task_cmd`]), the operator's views
//! ([`status_cmd`], [`top`]) and the cluster's credentials ([`secrets`]).

pub mod bench;
pub mod cli;
pub mod config;
pub mod local;
pub mod membership;
pub mod schedule_cmd;
pub mod secrets;
pub mod status_cmd;
pub mod task_cmd;
pub mod top;
