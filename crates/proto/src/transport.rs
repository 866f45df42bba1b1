//! The transport seam: how a node dials another ([`Transport`]) and accepts connections
//! ([`Listener`]). Every connection above this module — handshakes, sessions, the
//! multiplexer, the worker runtime — works on the two halves these return, so the same code
//! runs on real TCP ([`Tcp`], `tokio::net::TcpListener`) and on a simulated network.
//! [`Secure`] wraps any transport in TLS and introduces the process with its credentials.

use crate::credentials::Credentials;
use crate::message::{Hello, Role};
use crate::tls::{SecureRead, SecureWrite};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
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

    /// The hello a connection made as `role` opens with: a plain transport introduces
    /// itself in the default cluster without a token.
    fn hello(&self, role: Role, name: &str) -> Hello {
        Hello::new(role, name)
    }
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

/// A transport whose connections use the process's [`Credentials`]: TLS when they hold the
/// cluster's CA, and hellos that carry the cluster's name and the role's token. Without
/// TLS it passes connections through untouched.
#[derive(Clone, Debug)]
pub struct Secure<T = Tcp> {
    inner: T,
    credentials: Arc<Credentials>,
}

impl<T> Secure<T> {
    /// Dials over `inner` with `credentials`.
    pub fn new(inner: T, credentials: Arc<Credentials>) -> Self {
        Self { inner, credentials }
    }
}

impl Secure<Tcp> {
    /// Plain TCP in the default cluster: what a process without secrets uses.
    pub fn plain() -> Self {
        Self::new(Tcp, Arc::new(Credentials::plain()))
    }
}

impl<T: Transport> Transport for Secure<T> {
    type Read = SecureRead<T::Read, T::Write>;
    type Write = SecureWrite<T::Read, T::Write>;

    async fn connect(&self, addr: SocketAddr) -> io::Result<(Self::Read, Self::Write)> {
        let (read, write) = self.inner.connect(addr).await?;
        match &self.credentials.tls {
            Some(tls) => tls.connect(addr, read, write).await,
            None => Ok((SecureRead::Plain(read), SecureWrite::Plain(write))),
        }
    }

    fn hello(&self, role: Role, name: &str) -> Hello {
        self.credentials.hello(role, name)
    }
}
