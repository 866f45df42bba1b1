//! What a coordinator tells an operator (`Role::Admin`, through `net::serve_admin`): this
//! replica's [`ReplicaStatus`] — its Raft state from openraft, its table's size from the
//! shared table, and the scheduler's state from the actor (which has one only while it
//! leads). The same status, read once a second, sets this replica's Prometheus gauges
//! ([`export`]) where the process has a metrics recorder.

use super::actor::{Event, Runtime};
use super::leader::shown_settings;
use crate::shard::{NodeId, ShardRaft, SharedTable};
use dtc_proto::status::{AdminRequest, AdminResponse, RaftRole, ReplicaStatus};
use dtc_proto::{TaskState, WireError};
use openraft::ServerState;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What the admin session reads from.
#[derive(Clone)]
pub(super) struct Sources {
    pub raft: ShardRaft,
    pub table: SharedTable,
    pub events: mpsc::Sender<Event>,
}

/// The answer to an operator's request: this replica's status, or whatever the actor (as
/// leader, through the request's family) answers.
pub(super) async fn answer(sources: &Sources, request: AdminRequest) -> AdminResponse {
    if request == AdminRequest::Status {
        return AdminResponse::Replica(status(sources).await);
    }
    let (reply, rx) = oneshot::channel();
    let failed = request.failed(WireError::ShuttingDown);
    if sources
        .events
        .send(Event::Admin { request, reply })
        .await
        .is_err()
    {
        return failed;
    }
    rx.await.unwrap_or(failed)
}

/// This replica's status.
pub(super) async fn status(sources: &Sources) -> ReplicaStatus {
    let m = sources.raft.metrics().borrow().clone();
    let committed = sources
        .raft
        .with_raft_state(|st| st.committed.map(|l| l.index))
        .await
        .ok()
        .flatten()
        .unwrap_or(0);
    let (queued, tasks, retention, table_states) = {
        let t = sources.table.lock();
        (
            t.table.unfinished_len() as u64,
            t.table.len() as u64,
            t.table.retention(),
            t.table.state_counts(),
        )
    };
    let (tx, rx) = oneshot::channel();
    let runtime = if sources.events.send(Event::Status(tx)).await.is_ok() {
        rx.await.unwrap_or_default()
    } else {
        Runtime::default()
    };
    let membership = m.membership_config.membership();
    let replicas: Vec<(NodeId, String)> = membership
        .nodes()
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect();
    let addr = membership
        .get_node(&m.id)
        .map(|n| n.addr.clone())
        .unwrap_or_default();
    ReplicaStatus {
        id: m.id,
        addr,
        role: match m.state {
            ServerState::Leader => RaftRole::Leader,
            ServerState::Follower => RaftRole::Follower,
            ServerState::Candidate => RaftRole::Candidate,
            ServerState::Learner => RaftRole::Learner,
            ServerState::Shutdown => RaftRole::Shutdown,
        },
        leader: m.current_leader,
        term: m.current_term,
        last_log: m.last_log_index.unwrap_or(0),
        committed,
        applied: m.last_applied.map_or(0, |l| l.index),
        replicas,
        queued,
        tasks,
        states: runtime.states.unwrap_or(table_states),
        running: runtime.running,
        workers: runtime.workers,
        settings: shown_settings(&retention),
        stats: runtime.stats,
    }
}

/// Sets this replica's gauges from its status once a second until `cancel` fires.
pub(super) async fn export(sources: Sources, replica: String, cancel: CancellationToken) {
    let label = [("replica", replica)];
    let queue = metrics::gauge!("dtc_queue_depth", &label);
    let running = metrics::gauge!("dtc_tasks_running", &label);
    let commit = metrics::gauge!("dtc_raft_commit_index", &label);
    let applied = metrics::gauge!("dtc_raft_applied_index", &label);
    let leader = metrics::gauge!("dtc_raft_is_leader", &label);
    let term = metrics::gauge!("dtc_raft_term", &label);
    let busy = metrics::gauge!("dtc_slots_busy", &label);
    let slots = metrics::gauge!("dtc_slots_total", &label);
    let states: Vec<(TaskState, metrics::Gauge)> = TaskState::ALL
        .into_iter()
        .map(|state| {
            let labels = [
                ("replica", label[0].1.clone()),
                ("state", state.name().to_owned()),
            ];
            (state, metrics::gauge!("dtc_tasks", &labels))
        })
        .collect();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = cancel.cancelled() => return,
        }
        let s = status(&sources).await;
        queue.set(s.queued as f64);
        running.set(s.running as f64);
        commit.set(s.committed as f64);
        applied.set(s.applied as f64);
        leader.set(if s.role == RaftRole::Leader { 1.0 } else { 0.0 });
        term.set(s.term as f64);
        busy.set(
            s.workers
                .iter()
                .map(|w| u64::from(w.running()))
                .sum::<u64>() as f64,
        );
        slots.set(s.workers.iter().map(|w| u64::from(w.slots)).sum::<u64>() as f64);
        for (state, gauge) in &states {
            gauge.set(s.states.get(*state) as f64);
        }
    }
}
