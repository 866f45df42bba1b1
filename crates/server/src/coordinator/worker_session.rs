//! One worker's connection to the coordinator: reads its `Register`, then forwards every
//! message to the actor, and writes the actor's assignments back through a batched writer.

use super::actor::Event;
use super::leader::NewWorker;
use crate::net::Accepted;
use dtc_proto::WireError;
use dtc_proto::connection::{write_loop, write_one};
use dtc_proto::message::{CoordMsg, WorkerMsg};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The default bound on one worker's slots (`--max-worker-slots`); a worker that registers
/// more gets this many.
pub const DEFAULT_MAX_WORKER_SLOTS: u32 = 1024;

/// The most task types one worker may register.
const MAX_KINDS: usize = 1024;

/// How long a worker may take to send its `Register` after the handshake.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest `Register` read: room for [`MAX_KINDS`] type names and as many queues of
/// the longest names, and the attempts of the most slots.
const MAX_REGISTER_FRAME: usize = 2 * 1024 * 1024;

/// The numbers a coordinator gives its workers' connections, from 1; one counter per
/// coordinator, so that a replica's numbering depends on nothing outside it.
#[derive(Clone, Debug)]
pub(super) struct WorkerIds(Arc<AtomicU64>);

impl Default for WorkerIds {
    fn default() -> Self {
        Self(Arc::new(AtomicU64::new(1)))
    }
}

/// Serves a worker connection until it closes, misbehaves, or the actor drops it. A worker
/// gets at most `max_slots` slots, and takes ahead at most as many tasks as it has slots.
pub(super) async fn serve<R, W>(
    a: Accepted<R, W>,
    events: mpsc::Sender<Event>,
    ids: WorkerIds,
    max_frame: usize,
    max_slots: u32,
    cancel: CancellationToken,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let Accepted {
        hello,
        peer,
        reader,
        mut writer,
        ..
    } = a;
    let mut reader = reader.retype::<WorkerMsg>();
    reader.set_max_frame(MAX_REGISTER_FRAME.min(max_frame));
    let first = tokio::select! {
        first = tokio::time::timeout(REGISTER_TIMEOUT, reader.expect()) => first,
        () = cancel.cancelled() => return,
    };
    let Ok(first) = first else {
        tracing::info!(%peer, "closing a worker connection that sent no Register in {REGISTER_TIMEOUT:?}");
        return;
    };
    reader.set_max_frame(max_frame);
    // A worker takes up to `slots + prefetch` tasks at once (bounded, whatever it claims).
    let (slots, capacity, kinds, queues, weights, running) = match first {
        Ok(WorkerMsg::Register {
            slots,
            prefetch,
            kinds,
            queues,
            weights,
            running,
        }) if slots > 0 => {
            let max_slots = max_slots.max(1);
            if slots > max_slots {
                tracing::warn!(%peer, name = %hello.name, slots, max_slots, "a worker asked for more slots than allowed (--max-worker-slots); it gets the bound");
            }
            let slots = slots.min(max_slots);
            let capacity = slots + prefetch.min(slots);
            (slots, capacity, kinds, queues, weights, running)
        }
        Ok(other) => {
            let sent = match other {
                WorkerMsg::Register { .. } => "Register with no slot",
                WorkerMsg::Heartbeat => "Heartbeat",
                WorkerMsg::Completed(_) => "Completed",
                WorkerMsg::Draining => "Draining",
                WorkerMsg::Progress { .. } => "Progress",
            };
            let reason =
                format!("a worker must first send Register with at least one slot, not {sent}");
            tracing::info!(%peer, %reason, "refusing a worker");
            write_one(
                &mut writer,
                &CoordMsg::Error(WireError::BadRequest { reason }),
                max_frame,
            )
            .await
            .ok();
            return;
        }
        Err(e) => {
            tracing::info!(%peer, error = %e, "worker closed before registering");
            return;
        }
    };
    let id = ids.0.fetch_add(1, Ordering::Relaxed);
    let worker_cancel = cancel.child_token();
    let (tx, rx) = mpsc::channel(capacity as usize + 64);
    let writer_task = tokio::spawn(write_loop(writer, rx, max_frame, worker_cancel.clone()));
    let kinds: Vec<String> = kinds
        .into_iter()
        .filter(|k| k.len() <= dtc_proto::TaskSpec::MAX_KIND_LEN)
        .take(MAX_KINDS)
        .collect();
    tracing::info!(
        %peer,
        worker = id,
        name = %hello.name.chars().take(64).collect::<String>(),
        capacity,
        kinds = kinds.len(),
        "worker registered"
    );
    let (queues, weights): (Vec<String>, Vec<u32>) = queues
        .into_iter()
        .zip(weights.into_iter().chain(std::iter::repeat(1)))
        .filter(|(q, _)| dtc_proto::check_queue_name(q).is_ok())
        .map(|(q, w)| (q, w.clamp(1, dtc_proto::message::MAX_QUEUE_WEIGHT)))
        .take(MAX_KINDS)
        .unzip();
    let running = running.into_iter().take(capacity as usize).collect();
    let up = Event::WorkerUp(NewWorker {
        worker: id,
        name: hello.name.clone(),
        peer,
        tx,
        slots,
        capacity,
        kinds,
        queues,
        weights,
        running,
        cancel: worker_cancel.clone(),
    });
    if events.send(up).await.is_err() {
        return;
    }
    let stop = worker_cancel.cancelled();
    tokio::pin!(stop);
    loop {
        let msg = tokio::select! {
            m = reader.next() => m,
            () = &mut stop => break,
        };
        match msg {
            Ok(Some(msg)) => {
                if events
                    .send(Event::Worker { worker: id, msg })
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::info!(%peer, worker = id, error = %e, "dropping a worker after a bad frame");
                break;
            }
        }
    }
    worker_cancel.cancel();
    events.send(Event::WorkerDown { worker: id }).await.ok();
    writer_task.await.ok();
    tracing::info!(%peer, worker = id, "worker disconnected");
}
