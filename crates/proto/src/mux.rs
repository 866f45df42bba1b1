//! The requesting side of a client connection, multiplexed: a [`Mux`] task owns one
//! connection to one of a list of addresses (a router, or a shard's replicas — the leader,
//! once a `NotLeader` answer has named it), numbers the requests it is handed onto it, and
//! routes each answer back to that request's [`Answer`] handle, in whatever order answers
//! come. Requests answered `NotLeader`, or in flight when the connection breaks, are resent
//! with the same task ids to the (new) leader for up to [`Mux::hold`]; when no address can
//! be reached they are answered `Unavailable` at once. A connection that stays silent while
//! requests wait is probed, then replaced. When told that some of its askers have gone
//! ([`Mux::abandon`]), it drops their requests ([`Answer::abandoned`]) and takes back
//! their waits on the server (`Unwait`), so a departed client holds nothing.
//!
//! The router uses one per shard; the SDK's `Client` uses one per client.

use crate::connection::{FrameReader, connect_handshake, write_loop};
use crate::follow::{LeaderTrail, Step};
use crate::hash::HashMap;
use crate::message::{Hello, HelloReply, Request, RequestBody, Response, Role, Welcome};
use crate::transport::{Tcp, Transport};
use crate::{ProtoError, TaskId, TaskView, WireError};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Where an answer goes: anything that can take one, once.
pub trait Answer: Send + 'static {
    /// Delivers the answer.
    fn answer(self, body: Result<TaskView, WireError>);

    /// Whether nobody waits for the answer any more (its asker has gone). Asked only of
    /// requests that wait for their task to finish, when the mux is told to sweep.
    fn abandoned(&self) -> bool {
        false
    }
}

impl Answer for oneshot::Sender<Result<TaskView, WireError>> {
    fn answer(self, body: Result<TaskView, WireError>) {
        self.send(body).ok();
    }
}

/// Dials `addr` over `transport`, handshakes with `hello` and returns the connection's
/// halves.
pub async fn dial<T: Transport>(
    transport: &T,
    addr: SocketAddr,
    hello: &Hello,
    max_frame: usize,
) -> Result<(FrameReader<T::Read, HelloReply>, T::Write, Welcome), ProtoError> {
    let (read, mut writer) = transport.connect(addr).await?;
    let mut reader = FrameReader::new(read, max_frame);
    let welcome = connect_handshake(&mut reader, &mut writer, hello, max_frame).await?;
    Ok((reader, writer, welcome))
}

const BATCH: usize = 512;

/// While requests wait and the connection has been quiet this long, it is probed (a lookup
/// of task 0 under request number 0, whose answer only shows the path is alive).
const PROBE_AFTER: Duration = Duration::from_secs(1);

/// A connection that stays silent this long while requests wait is taken for dead (its
/// peer vanished without closing it, or the network lost it); its requests are resent.
const DEAD_AFTER: Duration = Duration::from_secs(5);

/// The request number of probes and `Unwait`s, whose answers nobody waits for; requests
/// are numbered from 1.
const UNTRACKED: u64 = 0;
const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How long requests are held while a shard elects a leader (or the connection to its
/// leader is re-made) before they are answered with the last error.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(10);

/// A multiplexed connection to one of `addrs`, as a task fed by a channel of requests.
#[derive(Clone, Debug)]
pub struct Mux<T = Tcp> {
    /// How to reach the addresses.
    pub transport: T,
    /// What the connection serves, for errors and logs (e.g. `shard 1`).
    pub label: String,
    /// The addresses to try, in order (a shard's replicas).
    pub addrs: Vec<SocketAddr>,
    /// The role to handshake as.
    pub role: Role,
    /// The name to handshake with.
    pub name: String,
    /// The largest frame.
    pub max_frame: usize,
    /// The most requests in flight; past it, the channel is not read (backpressure).
    pub max_inflight: usize,
    /// How long a request is held and resent while the shard fails over.
    pub hold: Duration,
    /// Notified when askers have gone: the mux then drops their waiting requests.
    pub abandon: Arc<Notify>,
}

/// A request and where its answer goes, with the time it stops being resent.
struct Held<A> {
    body: RequestBody,
    answer: A,
    until: Instant,
}

/// How a connection ended.
enum Ended {
    /// The mux is told to stop.
    Stop,
    /// The connection failed or closed.
    Lost(String),
    /// The node does not lead its shard; it named the leader, or nobody is elected yet.
    NotLeader(Option<SocketAddr>),
}

impl<T: Transport> Mux<T> {
    /// Runs until `cancel` fires or every sender of `rx` is gone.
    ///
    /// Requests answered `NotLeader`, and requests in flight on a connection that breaks,
    /// are resent (same task id, so never run twice) to the leader once it is known, for up
    /// to [`Mux::hold`]. When no replica can be reached at all, requests are answered
    /// `Unavailable` at once.
    pub async fn run<A: Answer>(
        self,
        mut rx: mpsc::Receiver<(RequestBody, A)>,
        cancel: CancellationToken,
    ) {
        let mut backoff = MIN_BACKOFF;
        let mut waiting: VecDeque<Held<A>> = VecDeque::new();
        let mut trail = LeaderTrail::default();
        loop {
            let connected = tokio::select! {
                c = self.connect_any(&trail) => c,
                () = cancel.cancelled() => return,
            };
            let (reader, writer, addr, unreachable) = match connected {
                Ok(c) => c,
                Err(reason) => {
                    let err = WireError::Unavailable { reason };
                    for held in waiting.drain(..) {
                        held.answer.answer(Err(err.clone()));
                    }
                    trail.lost();
                    if !self
                        .pause(backoff, &mut rx, None, &cancel, Some(&err))
                        .await
                    {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = MIN_BACKOFF;
            match self
                .serve(reader, writer, addr, &mut rx, &mut waiting, &cancel)
                .await
            {
                Ended::Stop => {
                    for held in waiting.drain(..) {
                        held.answer.answer(Err(WireError::ShuttingDown));
                    }
                    return;
                }
                Ended::Lost(reason) => {
                    tracing::warn!(label = %self.label, %reason, "connection lost; reconnecting");
                    trail.lost();
                }
                Ended::NotLeader(next) => {
                    tracing::debug!(label = %self.label, %addr, ?next, "following the shard's leader");
                    // Waiting a moment (an election under way), requests are held.
                    if trail.not_leader(addr, next, &unreachable) == Step::Pause
                        && !self
                            .pause(MIN_BACKOFF, &mut rx, Some(&mut waiting), &cancel, None)
                            .await
                    {
                        return;
                    }
                }
            }
            let late = WireError::Unavailable {
                reason: format!("{}: no leader took the request in time", self.label),
            };
            expire(&mut waiting, &late);
        }
    }

    /// Waits `pause`, taking requests meanwhile: held in `waiting` when given, otherwise
    /// answered with `fail`. Returns false when the mux must stop.
    async fn pause<A: Answer>(
        &self,
        pause: Duration,
        rx: &mut mpsc::Receiver<(RequestBody, A)>,
        mut waiting: Option<&mut VecDeque<Held<A>>>,
        cancel: &CancellationToken,
        fail: Option<&WireError>,
    ) -> bool {
        let pause = tokio::time::sleep(pause);
        tokio::pin!(pause);
        loop {
            let room = waiting.as_ref().is_none_or(|w| w.len() < self.max_inflight);
            tokio::select! {
                () = &mut pause => return true,
                got = rx.recv(), if room => match got {
                    Some((body, answer)) => match waiting.as_mut() {
                        Some(w) => w.push_back(Held { body, answer, until: Instant::now() + self.hold }),
                        None => answer.answer(Err(fail.cloned().unwrap_or(WireError::Unavailable {
                            reason: format!("{}: reconnecting", self.label),
                        }))),
                    },
                    None => return false,
                },
                () = cancel.cancelled() => return false,
            }
        }
    }

    async fn connect_any(
        &self,
        trail: &LeaderTrail,
    ) -> Result<
        (
            FrameReader<T::Read, Response>,
            T::Write,
            SocketAddr,
            Vec<SocketAddr>,
        ),
        String,
    > {
        let mut errors = Vec::new();
        let mut unreachable = Vec::new();
        for addr in trail.order(&self.addrs) {
            match dial(
                &self.transport,
                addr,
                &self.transport.hello(self.role, &self.name),
                self.max_frame,
            )
            .await
            {
                Ok((reader, writer, _)) => {
                    return Ok((reader.retype(), writer, addr, unreachable));
                }
                Err(e) => {
                    errors.push(format!("{addr}: {e}"));
                    unreachable.push(addr);
                }
            }
        }
        Err(format!(
            "{}: nothing reachable ({})",
            self.label,
            errors.join("; ")
        ))
    }

    /// Sends the held requests, then forwards requests and answers until the connection
    /// ends. Requests that must be resent are left in `waiting`.
    async fn serve<A: Answer>(
        &self,
        mut reader: FrameReader<T::Read, Response>,
        writer: T::Write,
        addr: SocketAddr,
        rx: &mut mpsc::Receiver<(RequestBody, A)>,
        waiting: &mut VecDeque<Held<A>>,
        cancel: &CancellationToken,
    ) -> Ended {
        let max = self.max_inflight;
        // Room for every request in flight and, as many again, the `Unwait`s of a sweep.
        let (tx, wrx) = mpsc::channel::<Request>(2 * max + BATCH + waiting.len());
        let conn_cancel = cancel.child_token();
        let writer_task =
            tokio::spawn(write_loop(writer, wrx, self.max_frame, conn_cancel.clone()));
        let mut pending: HashMap<u64, Held<A>> = HashMap::default();
        let mut next_req: u64 = 0;
        let mut send = |held: Held<A>, pending: &mut HashMap<u64, Held<A>>| {
            next_req = next_req.wrapping_add(1).max(UNTRACKED + 1);
            match tx.try_send(Request {
                req: next_req,
                body: held.body.clone(),
            }) {
                Ok(()) => {
                    pending.insert(next_req, held);
                }
                Err(_) => held.answer.answer(Err(WireError::Unavailable {
                    reason: format!("connection to {addr} is closing"),
                })),
            }
        };
        for held in waiting.drain(..) {
            send(held, &mut pending);
        }
        let mut incoming = Vec::with_capacity(BATCH);
        let stop = cancel.cancelled();
        tokio::pin!(stop);
        let mut heard = Instant::now();
        let mut probe = tokio::time::interval(PROBE_AFTER);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ended = loop {
            tokio::select! {
                () = self.abandon.notified() => {
                    sweep(&mut pending, waiting, |req, id| {
                        let body = RequestBody::Unwait { id, req };
                        tx.try_send(Request { req: UNTRACKED, body }).ok();
                    });
                }
                _ = probe.tick() => {
                    if pending.is_empty() {
                        heard = Instant::now();
                    } else if heard.elapsed() >= DEAD_AFTER {
                        break Ended::Lost(format!("{addr} answered nothing for {DEAD_AFTER:?}"));
                    } else if heard.elapsed() >= PROBE_AFTER {
                        let body = RequestBody::Get { id: TaskId(0), wait: false };
                        tx.try_send(Request { req: UNTRACKED, body }).ok();
                    }
                }
                n = rx.recv_many(&mut incoming, BATCH), if pending.len() < max => {
                    if n == 0 {
                        break Ended::Stop;
                    }
                    let until = Instant::now() + self.hold;
                    for (body, answer) in incoming.drain(..) {
                        send(Held { body, answer, until }, &mut pending);
                    }
                }
                                answer = reader.next() => match answer {
                    Ok(Some(resp)) => {
                        heard = Instant::now();
                        let Some(held) = pending.remove(&resp.req) else { continue };
                        match resp.body {
                            Err(WireError::NotLeader { leader }) if held.until > Instant::now() => {
                                waiting.push_back(held);
                                let next = leader.and_then(|l| l.parse().ok()).filter(|l| *l != addr);
                                break Ended::NotLeader(next);
                            }
                            body => held.answer.answer(body),
                        }
                    }
                    Ok(None) => break Ended::Lost(format!("{addr} closed the connection")),
                    Err(e) => break Ended::Lost(format!("the connection to {addr} failed: {e}")),
                },
                () = &mut stop => break Ended::Stop,
            }
        };
        conn_cancel.cancel();
        writer_task.await.ok();
        let ended = if cancel.is_cancelled() {
            Ended::Stop
        } else {
            ended
        };
        // Whatever is still in flight goes out again on the next connection (same ids).
        let mut rest: Vec<(u64, Held<A>)> = pending.drain().collect();
        rest.sort_unstable_by_key(|(req, _)| *req);
        waiting.extend(rest.into_iter().map(|(_, h)| h));
        if let Ended::Lost(reason) = &ended {
            // Held requests past their time get the error now.
            let err = WireError::Unavailable {
                reason: format!("{}: {reason}", self.label),
            };
            expire(waiting, &err);
        }
        ended
    }
}

/// Drops the waiting requests whose askers have gone: those sent (in `pending`, by
/// request number) are taken back with `unwait(req, task)`, those not yet sent are just
/// dropped. Dropping a request's answer handle gives back whatever its asker held.
fn sweep<A: Answer>(
    pending: &mut HashMap<u64, Held<A>>,
    waiting: &mut VecDeque<Held<A>>,
    mut unwait: impl FnMut(u64, TaskId),
) {
    pending.retain(|req, held| {
        let gone = held.body.waits_for_end() && held.answer.abandoned();
        if gone {
            unwait(*req, held.body.task_id());
        }
        !gone
    });
    waiting.retain(|held| !(held.body.waits_for_end() && held.answer.abandoned()));
}

/// Answers the held requests that have run out of time with `err`.
fn expire<A: Answer>(waiting: &mut VecDeque<Held<A>>, err: &WireError) {
    let now = Instant::now();
    if waiting.iter().all(|h| h.until > now) {
        return;
    }
    let (keep, late): (VecDeque<_>, VecDeque<_>) = waiting.drain(..).partition(|h| h.until > now);
    *waiting = keep;
    for held in late {
        held.answer.answer(Err(err.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// An answer whose asker has gone once `gone` is set.
    struct Asker(Arc<AtomicBool>);

    impl Answer for Asker {
        fn answer(self, _: Result<TaskView, WireError>) {}
        fn abandoned(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }

    fn held(id: u128, wait: bool, gone: &Arc<AtomicBool>) -> Held<Asker> {
        Held {
            body: RequestBody::Get {
                id: TaskId(id),
                wait,
            },
            answer: Asker(Arc::clone(gone)),
            until: Instant::now(),
        }
    }

    #[test]
    fn a_sweep_drops_the_abandoned_waits_and_takes_back_those_sent() {
        let left = Arc::new(AtomicBool::new(true));
        let stays = Arc::new(AtomicBool::new(false));
        let mut pending: HashMap<u64, Held<Asker>> = HashMap::default();
        pending.insert(1, held(10, true, &left));
        pending.insert(2, held(11, true, &stays));
        // A lookup without wait is answered soon anyway: never swept.
        pending.insert(3, held(12, false, &left));
        let mut waiting = VecDeque::from([held(13, true, &left), held(14, true, &stays)]);
        let mut unwaits = Vec::new();
        sweep(&mut pending, &mut waiting, |req, id| {
            unwaits.push((req, id))
        });
        assert_eq!(unwaits, vec![(1, TaskId(10))]);
        let mut left_pending: Vec<u64> = pending.keys().copied().collect();
        left_pending.sort_unstable();
        assert_eq!(left_pending, vec![2, 3]);
        let ids: Vec<TaskId> = waiting.iter().map(|h| h.body.task_id()).collect();
        assert_eq!(ids, vec![TaskId(14)]);
    }
}
