//! Accepting connections: [`accept_loop`] owns a [`Listener`]; every connection is
//! handshaken in its own task and handed, with the peer's role, to the caller's handler.

use dtc_proto::connection::{FrameReader, HELLO_MAX_FRAME, accept_handshake};
use dtc_proto::message::Hello;
use dtc_proto::transport::Listener;
use dtc_proto::{DEFAULT_MAX_FRAME, DEFAULT_MAX_INFLIGHT};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Bounds that every connection of a node obeys.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest frame read or written, in bytes.
    pub max_frame: usize,
    /// The most requests in flight on one connection.
    pub max_inflight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            max_inflight: DEFAULT_MAX_INFLIGHT,
        }
    }
}

/// A connection that completed the handshake, as its two halves.
pub struct Accepted<R, W> {
    /// What the peer said about itself.
    pub hello: Hello,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The reading half, positioned after the handshake.
    pub reader: FrameReader<R, Hello>,
    /// The writing half.
    pub writer: W,
}

/// Accepts connections from `listener` until `cancel` fires. Each connection's handshake and
/// handler run in their own task; a failed handshake is logged and closes only that
/// connection. The handler is given the connection and must itself stop when `cancel` fires.
pub async fn accept_loop<L, F, Fut>(
    mut listener: L,
    node: String,
    limits: Limits,
    cancel: CancellationToken,
    handler: F,
) where
    L: Listener,
    F: Fn(Accepted<L::Read, L::Write>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handler = Arc::new(handler);
    loop {
        let (read, mut writer, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = cancel.cancelled() => break,
        };
        let node = node.clone();
        let cancel = cancel.clone();
        let handler = Arc::clone(&handler);
        tokio::spawn(async move {
            let mut reader = FrameReader::new(read, HELLO_MAX_FRAME);
            let handshake = accept_handshake(&mut reader, &mut writer, &node, limits.max_frame);
            let hello = tokio::select! {
                h = handshake => h,
                () = cancel.cancelled() => return,
            };
            match hello {
                Ok(hello) => {
                    reader.set_max_frame(limits.max_frame);
                    handler(Accepted {
                        hello,
                        peer,
                        reader,
                        writer,
                    })
                    .await;
                }
                Err(e) => tracing::info!(%peer, error = %e, "refused a connection"),
            }
        });
    }
}
