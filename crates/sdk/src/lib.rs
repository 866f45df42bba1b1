//! `dtc-sdk`: what a program links to use dtc. [`Client`] submits tasks and waits for their
//! results (following reconnects and retrying with the same task id); [`Worker`] runs
//! handlers (plain async functions) for the tasks a coordinator assigns; [`handlers`] holds
//! the built-in task types (`noop`, `sleep`, `wordcount`).
//!
//! It depends on the protocol crate only: no Raft, no server, no terminal UI.

mod client;
pub mod handlers;
pub mod timer;
mod worker;

pub use client::{Client, ClientConfig, ClientError};
pub use dtc_proto::message::Assignment as Task;
pub use dtc_proto::{Outcome, TaskId, TaskSpec, TaskState, TaskView, WireError};
pub use worker::{Worker, WorkerBuilder, WorkerError};
