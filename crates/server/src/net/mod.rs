//! Connection plumbing shared by the coordinator and the router: the accept loop with its
//! TLS and handshake, the gate that admits each role, the session that serves a client's
//! multiplexed requests, and the operator's (admin) session.

mod admin_session;
mod client_session;
mod gate;
mod http;
mod http_guard;
mod listener;
mod noise;
mod places;
mod shares;

pub use admin_session::serve_admin;
pub use client_session::{Reply, RequestSink, serve_client};
pub use gate::{Gate, GateError, check_exposure};
pub use http::{HttpLimits, serve_http};
pub use http_guard::{HttpGuard, Refusal, guard};
pub use listener::{
    Accepted, Conn, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP,
    DEFAULT_MAX_INFLIGHT_BYTES, DEFAULT_MAX_INFLIGHT_BYTES_TOTAL, DEFAULT_MAX_WAITS, Limits,
    Shares, accept_loop,
};
pub use noise::{Noise, Refused};
pub use places::{NoPlace, Place, PlaceBounds, PlaceKind, Places, member_reserve};
pub use shares::AddressShares;
