//! TLS on dtc's connections (rustls with the ring provider).
//!
//! [`Tls`] is a process's TLS material: the cluster CA it trusts and, for the cluster's own
//! members (coordinators and routers), the certificate and key it proves itself with —
//! as a server to everyone, and as a client to the coordinators it dials (mutual TLS).
//! Servers ask connectors for a certificate but do not require one: workers, clients and
//! operator tools prove their role with a token inside TLS instead.
//!
//! A TLS connection is split into a [`SecureRead`] and a [`SecureWrite`] half (plain
//! connections pass through the same types untouched), so every session above works on
//! either. [`Tls::accept`] is the server's side: it tells a TLS client from one speaking plain
//! dtc by its first byte, answers the latter with what to do, and reports whether the client
//! proved membership with a certificate.

use crate::connection::write_one;
use crate::message::HelloReply;
use crate::{ProtoError, WireError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, Join, ReadBuf, ReadHalf, WriteHalf};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

/// The first byte of a TLS handshake record; a plain dtc hello starts with a zero byte.
const TLS_HANDSHAKE: u8 = 0x16;

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or held no usable PEM item.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the material.
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// Where a process's TLS material is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA's certificate (PEM).
    pub ca: PathBuf,
    /// This node's certificate chain (PEM), for members.
    pub cert: Option<PathBuf>,
    /// This node's private key (PEM), with `cert`.
    pub key: Option<PathBuf>,
}

/// A process's TLS configuration: what it trusts and, for members, what it presents.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    acceptor: Option<TlsAcceptor>,
    server_name: Option<ServerName<'static>>,
    /// When not empty, a client's certificate proves membership only if it is valid for
    /// one of these names (`--tls-member-name`); otherwise any the CA signed does.
    member_names: Vec<ServerName<'static>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("member", &self.is_member())
            .field("server_name", &self.server_name)
            .finish()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn setup_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Setup(e.to_string())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

impl Tls {
    /// Loads the files. `server_name`, when given, is the name the servers' certificates are
    /// checked against instead of the address dialled (for certificates issued to a DNS
    /// name).
    pub fn load(files: &TlsFiles, server_name: Option<&str>) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in read_certs(&files.ca)? {
            roots
                .add(cert)
                .map_err(|e| file_err(&files.ca, format!("not a usable CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let identity = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
                Some((chain, key))
            }
            (None, None) => None,
            (Some(_), None) => return Err(setup_err("a certificate needs its key (--tls-key)")),
            (None, Some(_)) => {
                return Err(setup_err("a key needs its certificate (--tls-cert)"));
            }
        };
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(setup_err)?
            .with_root_certificates(Arc::clone(&roots));
        let client = match &identity {
            Some((chain, key)) => client
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(setup_err)?,
            None => client.with_no_client_auth(),
        };
        let acceptor = match identity {
            Some((chain, key)) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(setup_err)?;
                let server = ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(setup_err)?
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(chain, key)
                    .map_err(setup_err)?;
                Some(TlsAcceptor::from(Arc::new(server)))
            }
            None => None,
        };
        let server_name = server_name
            .map(|n| ServerName::try_from(n.to_owned()))
            .transpose()
            .map_err(|e| setup_err(format!("server name: {e}")))?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor,
            server_name,
            member_names: Vec::new(),
        })
    }

    /// The same TLS, taking a client's certificate for a member's only if it is valid for
    /// one of `names` (DNS names or IP addresses in its subject alternative names): for a CA
    /// that signs other certificates than the cluster's members'.
    pub fn with_member_names(mut self, names: &[String]) -> Result<Self, TlsError> {
        self.member_names = names
            .iter()
            .map(|n| {
                ServerName::try_from(n.clone())
                    .map_err(|e| setup_err(format!("member name {n:?}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(self)
    }

    /// Whether a verified client certificate proves membership (see
    /// [`Tls::with_member_names`]).
    fn is_member_certificate(&self, cert: &CertificateDer<'_>) -> bool {
        if self.member_names.is_empty() {
            return true;
        }
        webpki::EndEntityCert::try_from(cert).is_ok_and(|cert| {
            self.member_names
                .iter()
                .any(|name| cert.verify_is_valid_for_subject_name(name).is_ok())
        })
    }

    /// Whether this process holds a member certificate (it can serve, and prove itself a
    /// coordinator or router).
    pub fn is_member(&self) -> bool {
        self.acceptor.is_some()
    }

    /// The server side, for members.
    pub fn acceptor(&self) -> Option<&TlsAcceptor> {
        self.acceptor.as_ref()
    }

    /// Wraps a dialled connection to `addr` in TLS.
    pub async fn connect<R, W>(
        &self,
        addr: SocketAddr,
        read: R,
        write: W,
    ) -> io::Result<(SecureRead<R, W>, SecureWrite<R, W>)>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        let io = tokio::io::join(Rewind::new(read), write);
        let stream = self.connector.connect(name, io).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "TLS handshake with {addr} failed ({e}); does it serve TLS with this cluster's CA?"
                ),
            )
        })?;
        let (r, w) = tokio::io::split(TlsStream::Client(stream));
        Ok((SecureRead::Tls(r), SecureWrite::Tls(w)))
    }
}

/// A connection's reading half: plain, or inside TLS.
pub enum SecureRead<R, W> {
    /// A plain connection.
    Plain(R),
    /// A TLS connection's reading half.
    Tls(ReadHalf<TlsStream<Join<Rewind<R>, W>>>),
}

/// A connection's writing half: plain, or inside TLS.
pub enum SecureWrite<R, W> {
    /// A plain connection.
    Plain(W),
    /// A TLS connection's writing half.
    Tls(WriteHalf<TlsStream<Join<Rewind<R>, W>>>),
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> AsyncRead for SecureRead<R, W> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(r) => Pin::new(r).poll_read(cx, buf),
            Self::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> AsyncWrite for SecureWrite<R, W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(w) => Pin::new(w).poll_write(cx, buf),
            Self::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(w) => Pin::new(w).poll_flush(cx),
            Self::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(w) => Pin::new(w).poll_shutdown(cx),
            Self::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// A reading half that first gives back a byte already read from it.
pub struct Rewind<R> {
    first: Option<u8>,
    inner: R,
}

impl<R> Rewind<R> {
    fn new(inner: R) -> Self {
        Self { first: None, inner }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Rewind<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() > 0
            && let Some(byte) = this.first.take()
        {
            buf.put_slice(&[byte]);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

/// A connection accepted by a TLS server.
pub struct TlsAccepted<R, W> {
    /// The reading half.
    pub read: SecureRead<R, W>,
    /// The writing half.
    pub write: SecureWrite<R, W>,
    /// Whether the client proved itself a member of the cluster with a certificate signed
    /// by the cluster CA (and valid for a member name, when the node requires one).
    pub member: bool,
    /// The client's certificate, verified against the cluster CA, if it sent one.
    certificate: Option<CertificateDer<'static>>,
}

/// Why a TLS server did not accept a connection.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The client speaks plain dtc; it was told that TLS is required.
    #[error("the client does not use TLS")]
    Plain,
    /// The connection failed or closed before the handshake ended.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The TLS handshake failed (e.g. a certificate not signed by the cluster CA).
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
}

impl Tls {
    /// The server's side of a connection. A client that speaks plain dtc instead is
    /// answered (in plain dtc) that this node requires TLS, and refused. `None` on a
    /// process without a member certificate, which cannot serve TLS.
    pub async fn accept<R, W>(
        &self,
        read: R,
        write: W,
    ) -> Option<Result<TlsAccepted<R, W>, AcceptError>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let acceptor = self.acceptor.as_ref()?;
        let accepted = accept(acceptor, read, write).await.map(|mut a| {
            a.member = a
                .certificate
                .as_ref()
                .is_some_and(|c| self.is_member_certificate(c));
            a
        });
        Some(accepted)
    }
}

/// The server's side of a connection: TLS with `acceptor`.
async fn accept<R, W>(
    acceptor: &TlsAcceptor,
    mut read: R,
    mut write: W,
) -> Result<TlsAccepted<R, W>, AcceptError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let first = read.read_u8().await?;
    if first != TLS_HANDSHAKE {
        let reply: HelloReply = Err(WireError::Auth {
            reason: "authentication required: this node serves TLS only; connect with the \
                     cluster's credentials (--secrets DIR, or --tls-ca and --token-file)"
                .into(),
        });
        write_one(&mut write, &reply, 1024)
            .await
            .map_err(|e| match e {
                ProtoError::Io(e) => AcceptError::Io(e),
                other => AcceptError::Io(io::Error::other(other.to_string())),
            })?;
        return Err(AcceptError::Plain);
    }
    let rewound = Rewind {
        first: Some(first),
        inner: read,
    };
    let stream = acceptor
        .accept(tokio::io::join(rewound, write))
        .await
        .map_err(AcceptError::Handshake)?;
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    let (r, w) = tokio::io::split(TlsStream::Server(stream));
    Ok(TlsAccepted {
        read: SecureRead::Tls(r),
        write: SecureWrite::Tls(w),
        member: certificate.is_some(),
        certificate,
    })
}
