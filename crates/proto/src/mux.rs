//! The requesting side of a client connection, multiplexed: a [`Mux`] task owns one
//! connection to the first reachable of a list of addresses (a router, or a shard's
//! coordinators), numbers the requests it is handed onto it, and routes each answer back to
//! that request's [`Answer`] handle, in whatever order answers come. When the connection goes
//! away, every request in flight is answered `Unavailable` (callers retry with the same task
//! id) and the task reconnects with backoff.
//!
//! The router uses one per shard; the SDK's `Client` uses one per client.

use crate::connection::{FrameReader, connect_handshake, write_loop};
use crate::message::{HelloReply, Request, RequestBody, Response, Role, Welcome};
use crate::transport::{Tcp, Transport};
use crate::{ProtoError, TaskView, WireError};
use foldhash::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Where an answer goes: anything that can take one, once.
pub trait Answer: Send + 'static {
    /// Delivers the answer.
    fn answer(self, body: Result<TaskView, WireError>);
}

impl Answer for oneshot::Sender<Result<TaskView, WireError>> {
    fn answer(self, body: Result<TaskView, WireError>) {
        self.send(body).ok();
    }
}

/// Dials `addr` over `transport`, handshakes as `role` and returns the connection's halves.
pub async fn dial<T: Transport>(
    transport: &T,
    addr: SocketAddr,
    role: Role,
    name: &str,
    max_frame: usize,
) -> Result<(FrameReader<T::Read, HelloReply>, T::Write, Welcome), ProtoError> {
    let (read, mut writer) = transport.connect(addr).await?;
    let mut reader = FrameReader::new(read, max_frame);
    let welcome = connect_handshake(&mut reader, &mut writer, role, name, max_frame).await?;
    Ok((reader, writer, welcome))
}

const BATCH: usize = 512;
const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A multiplexed connection to one of `addrs`, as a task fed by a channel of requests.
#[derive(Clone, Debug)]
pub struct Mux<T = Tcp> {
    /// How to reach the addresses.
    pub transport: T,
    /// What the connection serves, for errors and logs (e.g. `shard 1`).
    pub label: String,
    /// The addresses to try, in order.
    pub addrs: Vec<SocketAddr>,
    /// The role to handshake as.
    pub role: Role,
    /// The name to handshake with.
    pub name: String,
    /// The largest frame.
    pub max_frame: usize,
    /// The most requests in flight; past it, the channel is not read (backpressure).
    pub max_inflight: usize,
}

impl<T: Transport> Mux<T> {
    /// Runs until `cancel` fires or every sender of `rx` is gone.
    pub async fn run<A: Answer>(
        self,
        mut rx: mpsc::Receiver<(RequestBody, A)>,
        cancel: CancellationToken,
    ) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let connected = tokio::select! {
                c = self.connect_any() => c,
                () = cancel.cancelled() => return,
            };
            match connected {
                Ok((reader, writer, addr)) => {
                    backoff = MIN_BACKOFF;
                    if !self.serve(reader, writer, addr, &mut rx, &cancel).await {
                        return;
                    }
                }
                Err(reason) => {
                    let pause = tokio::time::sleep(backoff);
                    tokio::pin!(pause);
                    loop {
                        tokio::select! {
                            () = &mut pause => break,
                            got = rx.recv() => match got {
                                Some((_, reply)) => reply.answer(Err(WireError::Unavailable { reason: reason.clone() })),
                                None => return,
                            },
                            () = cancel.cancelled() => return,
                        }
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn connect_any(
        &self,
    ) -> Result<(FrameReader<T::Read, Response>, T::Write, SocketAddr), String> {
        let mut errors = Vec::new();
        for &addr in &self.addrs {
            match dial(&self.transport, addr, self.role, &self.name, self.max_frame).await {
                Ok((reader, writer, _)) => return Ok((reader.retype(), writer, addr)),
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        Err(format!(
            "{}: nothing reachable ({})",
            self.label,
            errors.join("; ")
        ))
    }

    /// Forwards requests and answers until the connection fails (returns true: reconnect)
    /// or the mux is told to stop (returns false).
    async fn serve<A: Answer>(
        &self,
        mut reader: FrameReader<T::Read, Response>,
        writer: T::Write,
        addr: SocketAddr,
        rx: &mut mpsc::Receiver<(RequestBody, A)>,
        cancel: &CancellationToken,
    ) -> bool {
        let max = self.max_inflight;
        let (tx, wrx) = mpsc::channel::<Request>(max + BATCH);
        let conn_cancel = cancel.child_token();
        let writer_task =
            tokio::spawn(write_loop(writer, wrx, self.max_frame, conn_cancel.clone()));
        let mut pending: HashMap<u64, A> = HashMap::default();
        let mut stopping = false;
        let mut next_req: u64 = 0;
        let mut incoming = Vec::with_capacity(BATCH);
        let stop = cancel.cancelled();
        tokio::pin!(stop);
        let reason = loop {
            tokio::select! {
                n = rx.recv_many(&mut incoming, BATCH), if pending.len() < max => {
                    if n == 0 {
                        stopping = true;
                        break "stopping".to_string();
                    }
                    for (body, reply) in incoming.drain(..) {
                        next_req = next_req.wrapping_add(1);
                        if tx.try_send(Request { req: next_req, body }).is_err() {
                            reply.answer(Err(WireError::Unavailable { reason: format!("connection to {addr} is closing") }));
                            continue;
                        }
                        pending.insert(next_req, reply);
                    }
                }
                answer = reader.next() => match answer {
                    Ok(Some(resp)) => {
                        if let Some(reply) = pending.remove(&resp.req) {
                            reply.answer(resp.body);
                        }
                    }
                    Ok(None) => break format!("{addr} closed the connection"),
                    Err(e) => break format!("the connection to {addr} failed: {e}"),
                },
                () = &mut stop => {
                    stopping = true;
                    break "stopping".to_string();
                }
            }
        };
        conn_cancel.cancel();
        writer_task.await.ok();
        stopping |= cancel.is_cancelled();
        if !stopping {
            tracing::warn!(label = %self.label, %reason, "connection lost; reconnecting");
        }
        let err = WireError::Unavailable {
            reason: format!("{}: {reason}", self.label),
        };
        for (_, reply) in pending.drain() {
            reply.answer(Err(err.clone()));
        }
        !stopping
    }
}
