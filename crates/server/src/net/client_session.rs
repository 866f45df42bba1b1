//! Serving one client connection: requests are read as they come, each with permits from
//! the connection's bounds — requests in flight, their bytes (of the connection's budget
//! and the node's), and (from the remote address's share) requests that wait for a task
//! to finish — and handed to a [`RequestSink`] with a [`Reply`] handle that answers it
//! later, in any order. A client connection that stays idle (nothing in flight) past its
//! idle timeout is closed. Used by the coordinator (the sink is its actor) and by the
//! router (the sink picks a shard).
//!
//! A wait is given back as soon as nobody wants it: when its client stops sending (the
//! connection's waits are all marked abandoned at once), or, on a router's connection,
//! when the router sends `Unwait` for it because the client it forwarded for has gone.
//! Either way the sink is told ([`RequestSink::abandoned`]) so that it drops them.

use super::{Accepted, Limits};
use dtc_proto::ProtoError;
use dtc_proto::connection::{WithPermit, write_loop};
use dtc_proto::message::{CONNECTION_ERROR, Request, RequestBody, Response, Role};
use dtc_proto::mux::Answer;
use dtc_proto::{TaskView, WireError};
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// How long a connection whose client has stopped sending still delivers owed answers.
const FLUSH_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// The way back to the client that sent one request. Dropping it unanswered is allowed (the
/// client then times out); answering never blocks: the connection's in-flight permit this
/// reply carries guarantees room in the writer's queue. The request's byte and wait permits
/// are released with the answer.
#[derive(Debug)]
pub struct Reply {
    tx: mpsc::Sender<WithPermit<Response>>,
    req: u64,
    permit: OwnedSemaphorePermit,
    held: Held,
}

/// What a request holds of its connection's bounds besides its place in flight.
#[derive(Debug)]
struct Held {
    /// Its bytes, of the connection's budget and of the node's.
    _bytes: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
    _wait: Option<OwnedSemaphorePermit>,
    /// For a waiting request: how to tell that nobody wants its answer any more.
    gone: Option<Gone>,
}

/// How a waiting request learns that nobody wants its answer.
#[derive(Debug)]
enum Gone {
    /// A client's: its connection's flag, set when the client stops sending.
    Left(Arc<AtomicBool>),
    /// A router's: whether the router took this request (by number) back.
    TakenBack(Arc<TakenBack>, u64),
}

/// The waits a router has taken back on its connection, by request number, kept until the
/// request is dropped. Rare: a request only looks here once something was taken back.
#[derive(Debug, Default)]
struct TakenBack {
    any: AtomicBool,
    reqs: Mutex<HashSet<u64>>,
}

impl TakenBack {
    /// The router takes request `req` back. At most `bound` are remembered: past it (after
    /// many `Unwait`s for requests already answered), all are forgotten, and the waits
    /// still held among them last until their tasks end.
    fn take(&self, req: u64, bound: usize) {
        if let Ok(mut reqs) = self.reqs.lock() {
            if reqs.len() >= bound {
                reqs.clear();
            }
            reqs.insert(req);
            self.any.store(true, Ordering::Relaxed);
        }
    }

    fn contains(&self, req: u64) -> bool {
        self.any.load(Ordering::Relaxed) && self.reqs.lock().is_ok_and(|r| r.contains(&req))
    }

    fn forget(&self, req: u64) {
        if self.any.load(Ordering::Relaxed)
            && let Ok(mut reqs) = self.reqs.lock()
        {
            reqs.remove(&req);
            self.any.store(!reqs.is_empty(), Ordering::Relaxed);
        }
    }
}

impl Drop for Gone {
    fn drop(&mut self) {
        if let Self::TakenBack(taken, req) = self {
            taken.forget(*req);
        }
    }
}

impl Answer for Reply {
    fn answer(self, body: Result<TaskView, WireError>) {
        self.send(body);
    }
}

impl Reply {
    /// A reply to request `req` on a connection of its own, and that connection's queue of
    /// answers.
    #[cfg(test)]
    pub(crate) fn for_test(req: u64) -> (Self, mpsc::Receiver<WithPermit<Response>>) {
        let (tx, rx) = mpsc::channel(16);
        let permit = || {
            Arc::new(Semaphore::new(1))
                .try_acquire_owned()
                .unwrap_or_else(|_| unreachable!("a new semaphore has a permit"))
        };
        let reply = Self {
            tx,
            req,
            permit: permit(),
            held: Held {
                _bytes: (permit(), None),
                _wait: None,
                gone: None,
            },
        };
        (reply, rx)
    }

    /// The request this reply answers.
    #[cfg(test)]
    pub(crate) fn req(&self) -> u64 {
        self.req
    }

    /// Whether nobody wants the answer any more: the client's connection has gone, the
    /// client stopped sending, or (through a router) the client it was forwarded for left.
    pub fn is_abandoned(&self) -> bool {
        self.tx.is_closed()
            || match &self.held.gone {
                None => false,
                Some(Gone::Left(left)) => left.load(Ordering::Relaxed),
                Some(Gone::TakenBack(taken, req)) => taken.contains(*req),
            }
    }
    /// Sends the answer. If the client has gone, the answer is dropped.
    pub fn send(self, body: Result<TaskView, WireError>) {
        drop(self.held);
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

    /// Some waiting requests handed over earlier are abandoned ([`Reply::is_abandoned`]):
    /// the sink should drop them soon, giving back what they hold.
    fn abandoned(&self);
}

/// Serves one client (or router) connection until it closes, it sends something malformed,
/// it stays idle past `limits.idle_timeout`, or `cancel` fires. A malformed frame is
/// answered with `BadRequest` where it can be and closes the connection; the node and its
/// other connections carry on. A client address may have `limits.max_waits` waiting requests
/// at once over all its connections (past it, a waiting request is answered
/// `LimitReached`); a router's connection carries the waits of all its clients and has no
/// bound but its requests in flight.
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
        shares,
        ..
    } = conn;
    let Limits {
        max_frame,
        max_inflight,
        max_inflight_bytes,
        max_waits,
        idle_timeout,
        ..
    } = limits;
    let from_router = hello.role == Role::Router;
    let mut reader = reader.retype::<Request>();
    let (tx, rx) = mpsc::channel::<WithPermit<Response>>(max_inflight);
    let permits = Arc::new(Semaphore::new(max_inflight));
    let byte_budget = max_inflight_bytes.max(max_frame).min(u32::MAX as usize);
    let bytes = Arc::new(Semaphore::new(byte_budget));
    let waits = (!from_router).then_some(shares.waits);
    let node_bytes = shares.bytes;
    // A client's waits are all abandoned at once, when it stops sending; a router's one by
    // one, as it takes each back.
    let left = Arc::new(AtomicBool::new(false));
    let taken_back = Arc::new(TakenBack::default());
    let mut forwarded_waits = false;
    let conn_cancel = cancel.child_token();
    let writer_task = tokio::spawn(write_loop(writer, rx, max_frame, conn_cancel.clone()));
    tracing::debug!(%peer, name = %hello.name, role = ?hello.role, "client connected");
    let stop = conn_cancel.cancelled();
    tokio::pin!(stop);
    // The idle timer is not touched per request (a timer-wheel update each time costs on the
    // hot path): when it fires, a connection that read a request since, or has some in
    // flight, gets another round.
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let mut requests: u64 = 0;
    let mut requests_at_last_check: u64 = 0;
    loop {
        let next = tokio::select! {
            n = reader.next() => n,
            () = &mut idle, if !from_router => {
                let quiet = requests == requests_at_last_check
                    && permits.available_permits() == max_inflight;
                if quiet {
                    tracing::debug!(%peer, "closing an idle client connection");
                    break;
                }
                requests_at_last_check = requests;
                idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
                continue;
            }
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
        requests += 1;
        if let RequestBody::Unwait { req, .. } = request.body
            && from_router
        {
            taken_back.take(req, max_inflight);
            sink.abandoned();
            continue;
        }
        let size = request_bytes(&request.body).clamp(1, byte_budget);
        let (permit, bytes) = tokio::select! {
            p = async {
                let size = u32::try_from(size).unwrap_or(u32::MAX);
                let permit = Arc::clone(&permits).acquire_owned().await;
                let mine = Arc::clone(&bytes).acquire_many_owned(size).await;
                let node = Arc::clone(&node_bytes).acquire_many_owned(size).await;
                (permit, mine, node)
            } => match p {
                (Ok(p), Ok(mine), Ok(node)) => (p, (mine, Some(node))),
                _ => break,
            },
            () = &mut stop => break,
        };
        let mut reply = Reply {
            tx: tx.clone(),
            req: request.req,
            permit,
            held: Held {
                _bytes: bytes,
                _wait: None,
                gone: None,
            },
        };
        if let RequestBody::Unwait { .. } = request.body {
            reply.send(Err(WireError::BadRequest {
                reason: "only a router takes waits back".into(),
            }));
            continue;
        }
        if request.body.waits_for_end() {
            forwarded_waits = true;
            if let Some(waits) = &waits {
                match Arc::clone(waits).try_acquire_owned() {
                    Ok(w) => reply.held._wait = Some(w),
                    Err(_) => {
                        reply.send(Err(WireError::LimitReached {
                            reason: format!(
                                "{} already has {max_waits} requests waiting for tasks to finish (--max-waits)",
                                peer.ip()
                            ),
                        }));
                        continue;
                    }
                }
                reply.held.gone = Some(Gone::Left(Arc::clone(&left)));
            } else {
                reply.held.gone = Some(Gone::TakenBack(Arc::clone(&taken_back), request.req));
            }
        }
        sink.request(request.body, reply).await;
    }
    left.store(true, Ordering::Relaxed);
    if forwarded_waits {
        sink.abandoned();
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

/// What a request weighs against its connection's byte bound: its payload and type name.
fn request_bytes(body: &RequestBody) -> usize {
    match body {
        RequestBody::Submit { task, .. } => task.payload.len() + task.kind.len() + 64,
        RequestBody::Get { .. }
        | RequestBody::Cancel { .. }
        | RequestBody::Retry { .. }
        | RequestBody::Unwait { .. } => 64,
    }
}
