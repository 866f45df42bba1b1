//! Serving one client connection: requests are read as they come, each with a permit from
//! the connection's in-flight bound, and handed to a [`RequestSink`] with a [`Reply`] handle
//! that answers it later, in any order. Used by the coordinator (the sink is its actor) and
//! by the router (the sink picks a shard).

use super::{Accepted, Limits};
use dtc_proto::ProtoError;
use dtc_proto::connection::{WithPermit, write_loop};
use dtc_proto::message::{CONNECTION_ERROR, Request, RequestBody, Response};
use dtc_proto::mux::Answer;
use dtc_proto::{TaskView, WireError};
use std::future::Future;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// How long a connection whose client has stopped sending still delivers owed answers.
const FLUSH_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// The way back to the client that sent one request. Dropping it unanswered is allowed (the
/// client then times out); answering never blocks: the connection's in-flight permit this
/// reply carries guarantees room in the writer's queue.
#[derive(Debug)]
pub struct Reply {
    tx: mpsc::Sender<WithPermit<Response>>,
    req: u64,
    permit: tokio::sync::OwnedSemaphorePermit,
}

impl Answer for Reply {
    fn answer(self, body: Result<TaskView, WireError>) {
        self.send(body);
    }
}

impl Reply {
    /// Whether the client's connection has gone (its answer would be dropped).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
    /// Sends the answer. If the client has gone, the answer is dropped.
    pub fn send(self, body: Result<TaskView, WireError>) {
        let msg = WithPermit(
            Response {
                req: self.req,
                body,
            },
            self.permit,
        );
        if self.tx.try_send(msg).is_err() {
            tracing::debug!(req = self.req, "client gone before its answer");
        }
    }
}

/// Where a client session hands its requests.
pub trait RequestSink: Send + Sync + 'static {
    /// Takes one request; must eventually answer through `reply` (or drop it if the node is
    /// stopping). Waiting here holds back the client's connection (backpressure).
    fn request(&self, body: RequestBody, reply: Reply) -> impl Future<Output = ()> + Send;
}

/// Serves one client (or router) connection until it closes, it sends something malformed,
/// or `cancel` fires. A malformed frame is answered with `BadRequest` where it can be and
/// closes the connection; the node and its other connections carry on.
pub async fn serve_client<R, W, S>(
    conn: Accepted<R, W>,
    sink: Arc<S>,
    limits: Limits,
    cancel: CancellationToken,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
    S: RequestSink,
{
    let Accepted {
        hello,
        peer,
        reader,
        writer,
    } = conn;
    let Limits {
        max_frame,
        max_inflight,
        ..
    } = limits;
    let mut reader = reader.retype::<Request>();
    let (tx, rx) = mpsc::channel::<WithPermit<Response>>(max_inflight);
    let permits = Arc::new(Semaphore::new(max_inflight));
    let conn_cancel = cancel.child_token();
    let writer_task = tokio::spawn(write_loop(writer, rx, max_frame, conn_cancel.clone()));
    tracing::debug!(%peer, name = %hello.name, role = ?hello.role, "client connected");
    let stop = conn_cancel.cancelled();
    tokio::pin!(stop);
    loop {
        let next = tokio::select! {
            n = reader.next() => n,
            () = &mut stop => break,
        };
        let request = match next {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                tracing::info!(%peer, error = %e, "closing a client connection after a bad frame");
                if let (Ok(permit), false) = (
                    Arc::clone(&permits).try_acquire_owned(),
                    matches!(e, ProtoError::Io(_)),
                ) {
                    let reason = format!("closing the connection: {e}");
                    let body = Err(WireError::BadRequest { reason });
                    tx.try_send(WithPermit(
                        Response {
                            req: CONNECTION_ERROR,
                            body,
                        },
                        permit,
                    ))
                    .ok();
                }
                break;
            }
        };
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let reply = Reply {
            tx: tx.clone(),
            req: request.req,
            permit,
        };
        sink.request(request.body, reply).await;
    }
    drop(tx);
    // The client has stopped sending. Answers already queued, and those that come within
    // a short grace, still go out; then the writer stops, so that answers owed to a client
    // that has left (say, waits on tasks that never end) are dropped instead of kept.
    let mut writer_task = writer_task;
    if tokio::time::timeout(FLUSH_GRACE, &mut writer_task)
        .await
        .is_err()
    {
        conn_cancel.cancel();
        writer_task.await.ok();
    }
    tracing::debug!(%peer, "client disconnected");
}
