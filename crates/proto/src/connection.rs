//! Connections: the handshake, a framed reader, and the batched writer loop.
//!
//! A connection is split in two halves. The reading half is a [`FrameReader`]; the writing
//! half is owned by [`write_loop`], which drains its channel in batches and writes every
//! frame of a batch with one syscall. Both are generic over `AsyncRead`/`AsyncWrite`.

use crate::codec::{FrameCodec, encode_frame};
use crate::message::{Hello, HelloFrame, HelloReply, MAGIC, Role, Welcome};
use crate::{PROTOCOL_VERSION, ProtoError, WireError};
use bytes::BytesMut;
use futures_util::{FutureExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

/// How long a peer may take to complete the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest [`Hello`] frame accepted: a peer that announces more is not speaking dtc.
pub const HELLO_MAX_FRAME: usize = 1024;

/// How many times [`write_loop`] yields, at most, to gather more messages into one write.
const COALESCE_ROUNDS: usize = 3;

/// The most messages [`write_loop`] takes from its channel for one write.
const WRITE_BATCH: usize = 512;

/// Past this many encoded bytes [`write_loop`] writes what it has before encoding more, so
/// that a batch of large messages is never all encoded at once.
const WRITE_BUFFER: usize = 1024 * 1024;

/// The reading half of a connection: a stream of decoded messages of type `In`.
pub struct FrameReader<R, In> {
    inner: FramedRead<R, FrameCodec<In>>,
}

impl<R: AsyncRead + Unpin, In: DeserializeOwned> FrameReader<R, In> {
    /// Reads frames of at most `max_frame` bytes from `io`.
    pub fn new(io: R, max_frame: usize) -> Self {
        Self {
            inner: FramedRead::with_capacity(io, FrameCodec::new(max_frame), 16 * 1024),
        }
    }

    /// The next message; `Ok(None)` when the peer closed cleanly between frames. A TLS
    /// peer that closes its socket between frames without TLS's close notice counts as a
    /// clean close too: nothing was cut short.
    pub async fn next(&mut self) -> Result<Option<In>, ProtoError> {
        match self.inner.next().await.transpose() {
            Err(ProtoError::Io(e))
                if e.kind() == std::io::ErrorKind::UnexpectedEof
                    && self.inner.read_buffer().is_empty() =>
            {
                Ok(None)
            }
            other => other,
        }
    }

    /// The next message, or [`ProtoError::Closed`] if the peer closed.
    pub async fn expect(&mut self) -> Result<In, ProtoError> {
        self.next().await?.ok_or(ProtoError::Closed)
    }

    /// Changes the largest frame accepted from here on.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.inner.decoder_mut().set_max_frame(max_frame);
    }

    /// Changes the type of message read from here on, keeping buffered bytes.
    pub fn retype<In2: DeserializeOwned>(self) -> FrameReader<R, In2> {
        // map_decoder keeps the buffer and the read state, so bytes that arrived with the
        // handshake are decoded without waiting for more to arrive.
        FrameReader {
            inner: self.inner.map_decoder(|c| FrameCodec::new(c.max_frame())),
        }
    }
}

/// A message travelling with a semaphore permit: the permit is released once the writer has
/// taken the message out of its channel, so the permits bound what is queued plus what is
/// still being worked on. Serializes as the message alone.
#[derive(Debug)]
pub struct WithPermit<T>(pub T, pub OwnedSemaphorePermit);

impl<T: Serialize> Serialize for WithPermit<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Writes one message as a frame and flushes it (for handshakes and error answers).
pub async fn write_one<W: AsyncWrite + Unpin, T: Serialize>(
    io: &mut W,
    msg: &T,
    max_frame: usize,
) -> Result<(), ProtoError> {
    let mut buf = BytesMut::new();
    encode_frame(msg, &mut buf, max_frame)?;
    io.write_all(&buf).await?;
    io.flush().await?;
    Ok(())
}

/// Owns the writing half of a connection: takes messages from `rx` in batches, encodes a
/// whole batch into one buffer and writes it with one call. Returns when `rx` is closed and
/// drained, when `cancel` fires, or on a write error.
pub async fn write_loop<W, Out>(
    mut io: W,
    mut rx: mpsc::Receiver<Out>,
    max_frame: usize,
    cancel: CancellationToken,
) -> Result<(), ProtoError>
where
    W: AsyncWrite + Unpin,
    Out: Serialize,
{
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let stop = cancel.cancelled();
    tokio::pin!(stop);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, WRITE_BATCH) => n,
            () = &mut stop => break,
        };
        if n == 0 {
            break;
        }
        encode_all(&mut io, &mut batch, &mut buf, max_frame).await?;
        // Let the tasks that are ready to run add to this write before it is made: yielding
        // turns a burst of single-message writes into one syscall. Keep yielding while
        // each round brings more (a busy node), a few rounds at most.
        for _ in 0..COALESCE_ROUNDS {
            tokio::task::yield_now().await;
            let mut more = 0;
            while let Some(n) = rx.recv_many(&mut batch, WRITE_BATCH).now_or_never() {
                if n == 0 {
                    break;
                }
                more += n;
                encode_all(&mut io, &mut batch, &mut buf, max_frame).await?;
            }
            if more == 0 {
                break;
            }
        }
        io.write_all(&buf).await?;
        io.flush().await?;
        buf.clear();
        if buf.capacity() > 4 * 1024 * 1024 {
            buf = BytesMut::with_capacity(64 * 1024);
        }
    }
    io.shutdown().await.ok();
    Ok(())
}

/// Encodes `batch` into `buf`, writing `buf` out whenever it passes [`WRITE_BUFFER`].
async fn encode_all<W: AsyncWrite + Unpin, Out: Serialize>(
    io: &mut W,
    batch: &mut Vec<Out>,
    buf: &mut BytesMut,
    max_frame: usize,
) -> Result<(), ProtoError> {
    for msg in batch.drain(..) {
        encode_frame(&msg, buf, max_frame)?;
        if buf.len() >= WRITE_BUFFER {
            io.write_all(buf).await?;
            buf.clear();
        }
    }
    Ok(())
}

/// The connecting side of the handshake: sends `hello`, waits for the [`Welcome`].
pub async fn connect_handshake<R, W>(
    reader: &mut FrameReader<R, HelloReply>,
    writer: &mut W,
    hello: &Hello,
    max_frame: usize,
) -> Result<Welcome, ProtoError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let exchange = async {
        write_one(writer, hello, max_frame).await?;
        match reader.expect().await? {
            Ok(welcome) if welcome.cluster != hello.cluster => Err(ProtoError::Handshake(format!(
                "{} belongs to cluster {:?}, not {:?}: check the address",
                welcome.node, welcome.cluster, hello.cluster
            ))),
            Ok(welcome) if hello.role == Role::Peer && welcome.shard != hello.shard => {
                Err(ProtoError::Handshake(format!(
                    "{} is not a replica of this shard: check the address",
                    welcome.node
                )))
            }
            Ok(welcome) => Ok(welcome),
            Err(e) => Err(ProtoError::Refused(e)),
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| ProtoError::Timeout)?
}

/// The accepting side of the handshake: reads the [`Hello`], checks magic and version, asks
/// `admit` whether the connector may come in, and answers. A refused connector is told why
/// before the error is returned.
pub async fn accept_handshake<R, W>(
    reader: &mut FrameReader<R, HelloFrame>,
    writer: &mut W,
    welcome: &Welcome,
    max_frame: usize,
    admit: impl FnOnce(&Hello) -> Result<(), WireError>,
) -> Result<Hello, ProtoError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let frame = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.expect())
        .await
        .map_err(|_| ProtoError::Timeout)??;
    let verdict = match frame {
        HelloFrame::Other { magic, .. } if magic != MAGIC => Err(WireError::BadRequest {
            reason: "not a dtc connection (bad magic)".into(),
        }),
        HelloFrame::Other { version, .. } => Err(WireError::VersionMismatch {
            got: version,
            want: PROTOCOL_VERSION,
        }),
        HelloFrame::Current(hello) => admit(&hello).map(|()| hello),
    };
    match verdict {
        Ok(hello) => {
            write_one(writer, &HelloReply::Ok(welcome.clone()), max_frame).await?;
            Ok(hello)
        }
        Err(err) => {
            write_one(writer, &HelloReply::Err(err.clone()), max_frame)
                .await
                .ok();
            Err(ProtoError::Handshake(err.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TaskId;
    use crate::message::{Request, RequestBody, Role, ShardId};

    #[tokio::test]
    async fn handshake_then_batched_messages() -> Result<(), ProtoError> {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (cr, mut cw) = tokio::io::split(client);
        let (sr, mut sw) = tokio::io::split(server);
        let server_side = tokio::spawn(async move {
            let mut reader = FrameReader::<_, HelloFrame>::new(sr, 1 << 20);
            let hello = accept_handshake(
                &mut reader,
                &mut sw,
                &Welcome::new("test", crate::message::DEFAULT_CLUSTER, None),
                1 << 20,
                |_| Ok(()),
            )
            .await?;
            let mut reader = reader.retype::<Request>();
            let mut got = Vec::new();
            while let Some(req) = reader.next().await? {
                got.push(req);
            }
            Ok::<_, ProtoError>((hello, got))
        });
        let mut reader = FrameReader::<_, HelloReply>::new(cr, 1 << 20);
        let hello = Hello::new(Role::Client, "c");
        let welcome = connect_handshake(&mut reader, &mut cw, &hello, 1 << 20).await?;
        assert_eq!(welcome.node, "test");
        let (tx, rx) = mpsc::channel(16);
        for req in 0..10 {
            let body = RequestBody::Get {
                id: TaskId(req as u128),
                wait: false,
            };
            tx.send(Request { req, body }).await.ok();
        }
        drop(tx);
        write_loop(cw, rx, 1 << 20, CancellationToken::new()).await?;
        let (hello, got) = server_side
            .await
            .map_err(|e| ProtoError::Handshake(e.to_string()))??;
        assert_eq!(hello.role, Role::Client);
        assert_eq!(got.len(), 10);
        assert_eq!(got[9].req, 9);
        Ok(())
    }

    #[tokio::test]
    async fn bytes_sent_with_the_hello_are_read_at_once() -> Result<(), ProtoError> {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (_cr, mut cw) = tokio::io::split(client);
        let (sr, mut sw) = tokio::io::split(server);
        let mut both = BytesMut::new();
        encode_frame(&Hello::new(Role::Client, "eager"), &mut both, 1 << 20)?;
        let req = Request {
            req: 1,
            body: RequestBody::Get {
                id: TaskId(5),
                wait: false,
            },
        };
        encode_frame(&req, &mut both, 1 << 20)?;
        cw.write_all(&both).await?;
        let mut reader = FrameReader::<_, HelloFrame>::new(sr, 1 << 20);
        accept_handshake(
            &mut reader,
            &mut sw,
            &Welcome::new("test", crate::message::DEFAULT_CLUSTER, None),
            1 << 20,
            |_| Ok(()),
        )
        .await?;
        let mut reader = reader.retype::<Request>();
        // The client keeps its side open: the request must come from the buffer alone.
        let got = tokio::time::timeout(Duration::from_secs(5), reader.expect()).await;
        assert_eq!(got.map_err(|_| ProtoError::Timeout)??, req);
        Ok(())
    }

    #[tokio::test]
    async fn a_connector_refuses_a_node_of_another_cluster_or_shard() -> Result<(), ProtoError> {
        // Acceptors that admit anyone, and say who they are.
        let answered_by = |welcome: Welcome, hello: Hello| async move {
            let (client, server) = tokio::io::duplex(1 << 16);
            let (cr, mut cw) = tokio::io::split(client);
            let (sr, mut sw) = tokio::io::split(server);
            let acceptor = tokio::spawn(async move {
                let mut reader = FrameReader::<_, HelloFrame>::new(sr, 1 << 20);
                accept_handshake(&mut reader, &mut sw, &welcome, 1 << 20, |_| Ok(())).await
            });
            let mut reader = FrameReader::<_, HelloReply>::new(cr, 1 << 20);
            let got = connect_handshake(&mut reader, &mut cw, &hello, 1 << 20).await;
            acceptor.await.ok();
            got.map(|w| w.node).map_err(|e| e.to_string())
        };
        let peer = Hello::new(Role::Peer, "p").of_shard(ShardId(1));
        let ours = Welcome::new("ours", crate::message::DEFAULT_CLUSTER, Some(ShardId(1)));
        assert_eq!(
            answered_by(ours.clone(), peer.clone()).await,
            Ok("ours".into())
        );
        let other_cluster = Welcome::new("theirs", "prod", Some(ShardId(1)));
        let refused = answered_by(other_cluster, peer.clone()).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("cluster")),
            "{refused:?}"
        );
        let other_shard = Welcome::new("theirs", crate::message::DEFAULT_CLUSTER, Some(ShardId(2)));
        let refused = answered_by(other_shard.clone(), peer).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("shard")),
            "{refused:?}"
        );
        // A client only cares about the cluster.
        let client = Hello::new(Role::Client, "c");
        assert!(answered_by(other_shard, client).await.is_ok());
        Ok(())
    }

    #[tokio::test]
    async fn wrong_version_is_refused_with_a_reason() -> Result<(), ProtoError> {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (cr, mut cw) = tokio::io::split(client);
        let (sr, mut sw) = tokio::io::split(server);
        let server_side = tokio::spawn(async move {
            let mut reader = FrameReader::<_, HelloFrame>::new(sr, 1 << 20);
            accept_handshake(
                &mut reader,
                &mut sw,
                &Welcome::new("test", crate::message::DEFAULT_CLUSTER, None),
                1 << 20,
                |_| Ok(()),
            )
            .await
        });
        let mut hello = Hello::new(Role::Client, "old");
        hello.version = 99;
        write_one(&mut cw, &hello, 1 << 20).await?;
        let mut reader = FrameReader::<_, HelloReply>::new(cr, 1 << 20);
        let reply = reader.expect().await?;
        assert!(matches!(
            reply,
            Err(WireError::VersionMismatch { got: 99, .. })
        ));
        assert!(
            server_side
                .await
                .map_err(|e| ProtoError::Handshake(e.to_string()))?
                .is_err()
        );
        Ok(())
    }
}
