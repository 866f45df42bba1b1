//! Connection plumbing shared by the coordinator and the router: the accept loop with its
//! handshake, and the session that serves a client's multiplexed requests.

mod client_session;
mod listener;

pub use client_session::{Reply, RequestSink, serve_client};
pub use listener::{Accepted, Limits, accept_loop};
