//! One shard as the router sees it: a task that owns one multiplexed connection to the
//! shard's coordinator, renumbers requests onto it, and routes each answer back to the
//! client's [`Reply`]. When the coordinator goes away, every request in flight fails with
//! `Unavailable` (clients retry with the same task id) and the task reconnects with backoff,
//! trying the shard's addresses in order.

use crate::net::{Limits, Reply, connect};
use dtc_proto::connection::{FrameReader, write_loop};
use dtc_proto::message::{Request, RequestBody, Response, Role};
use dtc_proto::WireError;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const BATCH: usize = 512;
const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

pub(super) struct Upstream {
    index: usize,
    addrs: Vec<SocketAddr>,
    limits: Limits,
    name: String,
}

impl Upstream {
    pub(super) fn new(index: usize, addrs: Vec<SocketAddr>, limits: Limits, name: String) -> Self {
        Self { index, addrs, limits, name }
    }

    pub(super) async fn run(self, mut rx: mpsc::Receiver<(RequestBody, Reply)>, cancel: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let connected = tokio::select! {
                c = self.connect_any() => c,
                () = cancel.cancelled() => return,
            };
            match connected {
                Ok((reader, writer, addr)) => {
                    tracing::info!(shard = self.index, %addr, "router connected to coordinator");
                    backoff = MIN_BACKOFF;
                    let lost = self.serve(reader, writer, addr, &mut rx, &cancel).await;
                    if cancel.is_cancelled() {
                        return;
                    }
                    tracing::warn!(shard = self.index, %addr, reason = %lost, "lost the coordinator; reconnecting");
                }
                Err(reason) => {
                    tracing::debug!(shard = self.index, %reason, "no coordinator reachable");
                    let pause = tokio::time::sleep(backoff);
                    tokio::pin!(pause);
                    loop {
                        tokio::select! {
                            () = &mut pause => break,
                            got = rx.recv() => match got {
                                Some((_, reply)) => reply.send(Err(WireError::Unavailable { reason: reason.clone() })),
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

    async fn connect_any(&self) -> Result<(FrameReader<OwnedReadHalf, Response>, OwnedWriteHalf, SocketAddr), String> {
        let mut errors = Vec::new();
        for &addr in &self.addrs {
            match connect(addr, Role::Router, &self.name, self.limits.max_frame).await {
                Ok((reader, writer, _)) => return Ok((reader.retype(), writer, addr)),
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        Err(format!("shard {} has no reachable coordinator ({})", self.index, errors.join("; ")))
    }

    /// Forwards requests and answers until the connection fails; returns why.
    async fn serve(
        &self,
        mut reader: FrameReader<OwnedReadHalf, Response>,
        writer: OwnedWriteHalf,
        addr: SocketAddr,
        rx: &mut mpsc::Receiver<(RequestBody, Reply)>,
        cancel: &CancellationToken,
    ) -> String {
        let max = self.limits.max_inflight;
        let (tx, wrx) = mpsc::channel::<Request>(max + BATCH);
        let conn_cancel = cancel.child_token();
        let writer_task = tokio::spawn(write_loop(writer, wrx, self.limits.max_frame, conn_cancel.clone()));
        let mut pending: HashMap<u64, Reply> = HashMap::new();
        let mut next_req: u64 = 0;
        let mut incoming = Vec::with_capacity(BATCH);
        let reason = loop {
            tokio::select! {
                n = rx.recv_many(&mut incoming, BATCH), if pending.len() < max => {
                    if n == 0 {
                        break "router stopping".to_string();
                    }
                    for (body, reply) in incoming.drain(..) {
                        next_req = next_req.wrapping_add(1);
                        if tx.try_send(Request { req: next_req, body }).is_err() {
                            reply.send(Err(WireError::Unavailable { reason: format!("connection to {addr} is closing") }));
                            continue;
                        }
                        pending.insert(next_req, reply);
                    }
                }
                answer = reader.next() => match answer {
                    Ok(Some(resp)) => {
                        if let Some(reply) = pending.remove(&resp.req) {
                            reply.send(resp.body);
                        }
                    }
                    Ok(None) => break format!("coordinator {addr} closed the connection"),
                    Err(e) => break format!("connection to coordinator {addr} failed: {e}"),
                },
                () = cancel.cancelled() => break "router stopping".to_string(),
            }
        };
        conn_cancel.cancel();
        writer_task.await.ok();
        let err = WireError::Unavailable { reason: format!("shard {}: {reason}", self.index) };
        for (_, reply) in pending.drain() {
            reply.send(Err(err.clone()));
        }
        reason
    }
}
