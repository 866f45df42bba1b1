//! What input from anyone may cost a node's logs. Before a connection has proved anything,
//! whatever it does wrong — a refused credential, a bad magic, version or hello, a
//! handshake that takes too long, a socket past a connection bound — is counted in
//! `dtc_connections_refused_total{reason}` and logged at most once a minute per remote
//! address, so a flood of bad connections writes a line per address, not a line per
//! socket. One [`Noise`] belongs to each listener (the gate's for the binary protocol, the
//! HTTP server's own); the accept loops report to it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often something from one remote address is logged, at most.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// How many remote addresses the throttle remembers; past it, addresses it does not
/// remember are counted but not logged until the oldest entries age out.
const LOG_MEMORY: usize = 1024;

/// Why a connection was refused or dropped before it proved anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its credentials do not admit it (the gate said no).
    Auth,
    /// Its first frame was not a readable dtc hello, or of another version.
    BadHello,
    /// Its TLS handshake failed.
    Tls,
    /// The TLS handshake and hello took longer than the handshake deadline.
    HandshakeTimeout,
    /// Its remote address already holds its share of connections.
    AddressBound,
    /// The node already holds its most connections.
    NodeBound,
}

impl Refused {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::BadHello => "bad_hello",
            Self::Tls => "tls",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::AddressBound => "address_bound",
            Self::NodeBound => "node_bound",
        }
    }
}

/// A listener's throttled record of refused connections.
#[derive(Debug)]
pub struct Noise {
    /// What the listener serves, for the log line (`router`, `HTTP API`).
    listener: &'static str,
    logged: Mutex<HashMap<IpAddr, Instant>>,
}

impl Noise {
    /// The record of `listener`'s refusals.
    pub fn new(listener: &'static str) -> Self {
        Self {
            listener,
            logged: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a refusal of a connection from `remote`, and logs it with `detail` unless
    /// something from that address was logged less than a minute ago.
    pub fn refused(&self, remote: IpAddr, why: Refused, detail: &str) {
        metrics::counter!(
            "dtc_connections_refused_total",
            "listener" => self.listener,
            "reason" => why.label()
        )
        .increment(1);
        if self.first_in_a_while(remote, Instant::now()) {
            tracing::warn!(
                %remote,
                listener = self.listener,
                reason = why.label(),
                detail,
                "refused a connection (what else this address does wrong is counted in dtc_connections_refused_total, and logged at most once a minute)"
            );
        }
    }

    /// Whether `remote` may be logged at `now`; if so, the time is noted.
    fn first_in_a_while(&self, remote: IpAddr, now: Instant) -> bool {
        let Ok(mut logged) = self.logged.lock() else {
            return false;
        };
        if logged.len() >= LOG_MEMORY {
            logged.retain(|_, at| now.duration_since(*at) < LOG_EVERY);
        }
        match logged.get(&remote) {
            Some(at) if now.duration_since(*at) < LOG_EVERY => false,
            _ if logged.len() >= LOG_MEMORY => false,
            _ => {
                logged.insert(remote, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_logged_once_a_minute_and_the_memory_is_bounded() {
        let noise = Noise::new("test");
        let start = Instant::now();
        let a = IpAddr::from([127, 0, 0, 2]);
        let b = IpAddr::from([127, 0, 0, 3]);
        assert!(noise.first_in_a_while(a, start));
        assert!(!noise.first_in_a_while(a, start + Duration::from_secs(59)));
        assert!(
            noise.first_in_a_while(b, start),
            "another address has its own line"
        );
        assert!(noise.first_in_a_while(a, start + LOG_EVERY));
        // A flood of distinct addresses fills the memory; past it, new ones are not logged
        // until old ones age out.
        for i in 0..LOG_MEMORY as u32 {
            noise.first_in_a_while(IpAddr::from(((i + 1) << 8).to_be_bytes()), start);
        }
        let late = IpAddr::from([10, 9, 9, 9]);
        assert!(!noise.first_in_a_while(late, start + Duration::from_secs(1)));
        assert!(noise.first_in_a_while(late, start + LOG_EVERY * 2));
        assert!(noise.logged.lock().map(|l| l.len()).unwrap_or(0) <= LOG_MEMORY);
    }
}
