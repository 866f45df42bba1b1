//! `dtc-sdk`: what a program links to use dtc. [`Client`] submits tasks and waits for their
//! results (following reconnects and retrying with the same task id); [`Worker`] runs
//! handlers (plain async functions) for the tasks a coordinator assigns; [`handlers`] holds
//! the built-in task types (`noop`, `sleep`, `wordcount`, `fail`); [`schedule`] manages
//! cron schedules.
//!
//! It depends on the protocol crate only: no Raft, no server, no terminal UI.

mod client;
pub mod handlers;
pub mod schedule;
mod task;
pub mod timer;
mod worker;

pub use client::{Client, ClientConfig, ClientError};
pub use dtc_proto::{
    Backoff, Outcome, Retry, Start, TaskId, TaskOptions, TaskSpec, TaskState, TaskView, WireError,
};
pub use task::{Task, TaskError};
pub use worker::{Worker, WorkerBuilder, WorkerError};
