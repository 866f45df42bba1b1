//! Connection plumbing shared by the coordinator and the router: the accept loop with its
//! handshake, the session that serves a client's multiplexed requests, and the operator's
//! (admin) session.

mod admin_session;
mod client_session;
mod listener;

pub use admin_session::serve_admin;
pub use client_session::{Reply, RequestSink, serve_client};
pub use listener::{Accepted, Limits, accept_loop};
