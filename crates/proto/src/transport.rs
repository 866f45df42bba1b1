//! The transport seam: how a node dials another ([`Transport`]) and accepts connections
//! ([`Listener`]). Every connection above this module — handshakes, sessions, the
//! multiplexer, the worker runtime — works on the two halves these return, so the same code
//! runs on real TCP ([`Tcp`], `tokio::net::TcpListener`) and on a simulated network.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// How long a TCP connect may take before the address counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Dials addresses.
pub trait Transport: Clone + Send + Sync + 'static {
    /// The reading half of a connection.
    type Read: AsyncRead + Unpin + Send + Sync + 'static;
    /// The writing half of a connection.
    type Write: AsyncWrite + Unpin + Send + Sync + 'static;

    /// Opens a connection to `addr`.
    fn connect(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<(Self::Read, Self::Write)>> + Send;
}

/// Accepts connections.
pub trait Listener: Send + 'static {
    /// The reading half of a connection.
    type Read: AsyncRead + Unpin + Send + 'static;
    /// The writing half of a connection.
    type Write: AsyncWrite + Unpin + Send + 'static;

    /// Waits for the next connection; returns its halves and the peer's address.
    fn accept(
        &mut self,
    ) -> impl Future<Output = io::Result<(Self::Read, Self::Write, SocketAddr)>> + Send;

    /// The address it listens on.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// TCP, with `TCP_NODELAY` and a [`CONNECT_TIMEOUT`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Tcp;

impl Transport for Tcp {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;

    async fn connect(&self, addr: SocketAddr) -> io::Result<(OwnedReadHalf, OwnedWriteHalf)> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {addr} timed out"),
                )
            })??;
        stream.set_nodelay(true).ok();
        Ok(stream.into_split())
    }
}

impl Listener for TcpListener {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;

    async fn accept(&mut self) -> io::Result<(OwnedReadHalf, OwnedWriteHalf, SocketAddr)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        stream.set_nodelay(true).ok();
        let (read, write) = stream.into_split();
        Ok((read, write, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }
}
