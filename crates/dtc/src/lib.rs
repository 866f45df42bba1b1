//! The `dtc` binary's parts, as a library so that integration tests drive the same code:
//! the command line ([`cli`]), the benchmark client ([`bench`]) and the in-process local
//! cluster ([`local`]).

pub mod bench;
pub mod cli;
pub mod local;
