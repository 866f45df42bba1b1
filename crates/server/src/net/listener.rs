//! Accepting connections: [`accept_loop`] owns a [`Listener`]; every connection is taken
//! through TLS (when the node serves it), its hello read and judged by the node's [`Gate`],
//! each in its own task, and handed, with the peer's role, to the caller's handler.
//!
//! Connections are bounded in total and per remote address, with the last places of the
//! total kept for the cluster's members ([`Places`]); what is refused is counted and logged
//! through the gate's [`Noise`](super::noise::Noise), at most once a minute per address.
//! On shutdown the loop waits for every connection's task to end.

use super::gate::Gate;
use super::noise::Refused;
use super::places::{MAX_TELLING, NoPlace, Place, PlaceBounds, PlaceKind, Places, member_reserve};
use super::shares::AddressShares;
use dtc_proto::connection::{FrameReader, HANDSHAKE_TIMEOUT, HELLO_MAX_FRAME, accept_handshake};
use dtc_proto::message::{Hello, HelloFrame, Role, Welcome};
use dtc_proto::tls::{AcceptError, SecureRead, SecureWrite};
use dtc_proto::transport::Listener;
use dtc_proto::{DEFAULT_MAX_FRAME, DEFAULT_MAX_INFLIGHT, ProtoError, WireError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The default bound on a node's connections (handshakes included).
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;

/// The default bound on one remote address's connections.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;

/// The default bound on the bytes of requests in flight on one connection (64 MiB).
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 64 * 1024 * 1024;

/// The default bound on the bytes of requests in flight on all of a node's connections
/// together (1 GiB).
pub const DEFAULT_MAX_INFLIGHT_BYTES_TOTAL: usize = 1024 * 1024 * 1024;

/// The default bound on one client connection's waiting requests.
pub const DEFAULT_MAX_WAITS: usize = 4096;

/// How long a client or operator connection may stay idle by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Bounds that every connection of a node obeys.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest frame read or written, in bytes.
    pub max_frame: usize,
    /// The most requests in flight on one connection.
    pub max_inflight: usize,
    /// The most connections at once, handshakes included; past it a new one is closed.
    pub max_connections: usize,
    /// The most connections at once from one remote address; past it a new one is refused
    /// in its handshake.
    pub max_connections_per_ip: usize,
    /// How long the TLS handshake and the hello may take together.
    pub handshake_timeout: Duration,
    /// The most bytes of requests (payloads and type names) in flight on one connection;
    /// past it the connection is not read until answers free some (at least one frame).
    pub max_inflight_bytes: usize,
    /// The same over all the node's client connections together.
    pub max_inflight_bytes_total: usize,
    /// The most requests that wait for a task to finish, from one remote address's client
    /// connections together.
    pub max_waits: usize,
    /// A client or operator connection with nothing in flight for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            max_inflight_bytes_total: DEFAULT_MAX_INFLIGHT_BYTES_TOTAL,
            max_waits: DEFAULT_MAX_WAITS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// A connection that completed the handshake, as its two halves.
pub struct Accepted<R, W> {
    /// What the peer said about itself.
    pub hello: Hello,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Whether the connector proved itself a member of the cluster with a certificate
    /// signed by the cluster CA (always true without secrets, where every connection, on
    /// loopback, is trusted alike).
    pub member: bool,
    /// The reading half, positioned after the handshake.
    pub reader: FrameReader<R, HelloFrame>,
    /// The writing half.
    pub writer: W,
    /// What the connection draws on with others.
    pub shares: Shares,
}

/// What a connection draws on together with others: its remote address's share of
/// waiting requests ([`Limits::max_waits`]) and the node's budget of request bytes in
/// flight ([`Limits::max_inflight_bytes_total`]).
#[derive(Clone, Debug)]
pub struct Shares {
    /// The address's waits.
    pub waits: Arc<Semaphore>,
    /// The node's bytes.
    pub bytes: Arc<Semaphore>,
}

/// What a listener's handler is given: an admitted connection, plain or inside TLS.
pub type Conn<L> = Accepted<
    SecureRead<<L as Listener>::Read, <L as Listener>::Write>,
    SecureWrite<<L as Listener>::Read, <L as Listener>::Write>,
>;

/// Accepts connections from `listener` until `cancel` fires, then waits for every
/// connection's task to end. Each connection's TLS handshake, hello and handler run in
/// their own task; a refused or failed handshake closes only that connection. The handler
/// is given the admitted connection and must itself stop when `cancel` fires.
pub async fn accept_loop<L, F, Fut>(
    mut listener: L,
    node: String,
    limits: Limits,
    gate: Arc<Gate>,
    cancel: CancellationToken,
    handler: F,
) where
    L: Listener,
    F: Fn(Conn<L>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handler = Arc::new(handler);
    let places = Places::new(PlaceBounds {
        total: limits.max_connections,
        per_address: limits.max_connections_per_ip,
        reserve: member_reserve(limits.max_connections),
        telling: MAX_TELLING,
    });
    let waits = AddressShares::new(limits.max_waits);
    let bytes = Arc::new(Semaphore::new(
        limits
            .max_inflight_bytes_total
            .max(limits.max_frame)
            .min(Semaphore::MAX_PERMITS)
            .min(u32::MAX as usize),
    ));
    let listening = Arc::new(Listening {
        welcome: gate.welcome(&node),
        limits,
        gate: Arc::clone(&gate),
    });
    let tasks = TaskTracker::new();
    loop {
        let (read, writer, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = cancel.cancelled() => break,
        };
        let place = match places.take(peer.ip()) {
            Ok(place) => place,
            Err(NoPlace::NodeFull) => {
                let detail = format!(
                    "the node holds its most connections ({}); closed",
                    limits.max_connections
                );
                gate.noise().refused(peer.ip(), Refused::NodeBound, &detail);
                continue;
            }
            Err(NoPlace::AddressFull) => {
                let detail = format!(
                    "this address holds its most connections ({}); closed",
                    limits.max_connections_per_ip
                );
                gate.noise()
                    .refused(peer.ip(), Refused::AddressBound, &detail);
                continue;
            }
        };
        let cancel = cancel.clone();
        let handler = Arc::clone(&handler);
        let listening = Arc::clone(&listening);
        let shares = Shares {
            waits: waits.of(peer.ip()),
            bytes: Arc::clone(&bytes),
        };
        tasks.spawn(async move {
            let gate = &listening.gate;
            let opening = open_connection(read, writer, peer, &listening, &place, shares);
            let opened = tokio::select! {
                o = tokio::time::timeout(limits.handshake_timeout, opening) => o,
                () = cancel.cancelled() => return,
            };
            match opened {
                Ok(Some(accepted)) => handler(accepted).await,
                Ok(None) => {}
                Err(_) => gate.noise().refused(
                    peer.ip(),
                    Refused::HandshakeTimeout,
                    "closed a connection whose handshake took too long",
                ),
            }
            drop(place);
        });
    }
    tasks.close();
    tasks.wait().await;
}

/// What every connection of one listener is opened with.
struct Listening {
    /// What an admitted connector is answered with.
    welcome: Welcome,
    limits: Limits,
    gate: Arc<Gate>,
}

/// TLS (when the node serves it), then the hello, judged by the gate. `None` when the
/// connection is refused or fails; refusals are recorded with the gate.
async fn open_connection<R, W>(
    read: R,
    write: W,
    peer: SocketAddr,
    listening: &Listening,
    place: &Place,
    shares: Shares,
) -> Option<Accepted<SecureRead<R, W>, SecureWrite<R, W>>>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let Listening {
        welcome,
        limits,
        gate,
    } = listening;
    let serving = gate.tls().filter(|t| t.is_member());
    let (read, mut writer, member) = match serving {
        None => (SecureRead::Plain(read), SecureWrite::Plain(write), false),
        Some(tls) => match tls.accept(read, write).await? {
            Ok(a) => (a.read, a.write, a.member),
            Err(AcceptError::Io(e)) => {
                tracing::debug!(%peer, error = %e, "connection closed before its TLS handshake");
                return None;
            }
            Err(e) => {
                gate.noise()
                    .refused(peer.ip(), Refused::Tls, &e.to_string());
                return None;
            }
        },
    };
    let mut reader = FrameReader::new(read, HELLO_MAX_FRAME);
    // Why the hello was refused, when it was, and the role it asked for.
    let mut refusal: Option<(Refused, Role)> = None;
    let admit = |hello: &Hello| {
        admit_to_place(hello, member, place, peer, limits, gate).map_err(|(why, err)| {
            refusal = Some((why, hello.role));
            err
        })
    };
    match accept_handshake(&mut reader, &mut writer, welcome, limits.max_frame, admit).await {
        Ok(hello) => {
            reader.set_max_frame(limits.max_frame);
            Some(Accepted {
                hello,
                peer,
                member: member || gate.tls().is_none(),
                reader,
                writer,
                shares,
            })
        }
        Err(ProtoError::Handshake(reason)) => {
            match refusal {
                Some((Refused::Auth, role)) => gate.refused(peer.ip(), Some(role), &reason),
                Some((why, _)) => gate.noise().refused(peer.ip(), why, &reason),
                // Not a dtc hello of this version: it was told so.
                None => gate.noise().refused(peer.ip(), Refused::BadHello, &reason),
            }
            None
        }
        Err(e @ (ProtoError::Io(_) | ProtoError::Closed | ProtoError::Truncated)) => {
            tracing::debug!(%peer, error = %e, "connection closed during its handshake");
            None
        }
        Err(e) => {
            gate.noise()
                .refused(peer.ip(), Refused::BadHello, &e.to_string());
            None
        }
    }
}

/// Whether a hello may keep the place its socket took: a socket past its address's share
/// is refused; one in the members' reserve only if it is a replica or router proved a
/// member; any other as the gate decides. A refusal says why, to the log and to the peer.
fn admit_to_place(
    hello: &Hello,
    member: bool,
    place: &Place,
    peer: SocketAddr,
    limits: &Limits,
    gate: &Gate,
) -> Result<(), (Refused, WireError)> {
    let bound = |why, reason| Err((why, WireError::Auth { reason }));
    match place.kind() {
        PlaceKind::Telling => {
            return bound(
                Refused::AddressBound,
                format!(
                    "too many connections from {}: at most {} at once (--max-connections-per-ip)",
                    peer.ip(),
                    limits.max_connections_per_ip
                ),
            );
        }
        PlaceKind::Reserve => {
            let proved = member || gate.tls().is_none();
            if !(proved && matches!(hello.role, Role::Peer | Role::Router)) {
                return bound(
                    Refused::NodeBound,
                    format!(
                        "the node holds its most connections for clients, workers and tools ({} of {}, the rest kept for the cluster's replicas and routers): try again later, or raise --max-connections",
                        limits.max_connections - member_reserve(limits.max_connections),
                        limits.max_connections
                    ),
                );
            }
        }
        PlaceKind::General => {}
    }
    gate.admit(hello, member).map_err(|e| (Refused::Auth, e))
}
