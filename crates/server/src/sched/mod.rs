//! The leader's runtime scheduling state and its decisions, as a pure data structure: no
//! sockets, no clocks, no channels. The coordinator feeds it events (a worker joined, a task
//! became ready, an attempt completed, time passed) and performs what it returns.

mod firings;
mod keys;
mod rate_limits;
mod scheduler;

pub use firings::{Fire, Firings};
pub use scheduler::{Assign, Ready, Scheduler, WorkerId};
