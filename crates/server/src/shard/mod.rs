//! The replicated part of a shard: the commands that change its task table and the
//! deterministic state machine that applies them. The coordinator proposes commands; today
//! they are applied directly, with consensus they become log entries applied on every replica.

mod command;
mod state_machine;

pub use command::{Applied, Command, SubmitOutcome};
pub use state_machine::{Retention, TaskTable};
