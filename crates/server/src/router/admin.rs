//! What a router tells an operator (`Role::Admin`, through `net::serve_admin`): a
//! [`ClusterStatus`], gathered by asking every replica of every shard at once (each within
//! `ADMIN_TIMEOUT`), and pages of tasks merged from every shard's leader. Nothing is
//! cached: the answer is as fresh as the question. A purge goes to every shard's leader; a
//! schedule's change to the shard its name routes to.

use dtc_proto::ask::{Purge, ask_leader, ask_replica};
use dtc_proto::schedule::{ScheduleOp, ScheduleStatus};
use dtc_proto::status::{
    AdminRequest, AdminResponse, ClusterStatus, Cursor, QueueOp, QueueStatus, ShardStatus,
    TaskPage, TaskQuery, merge_queues,
};
use dtc_proto::transport::Transport;
use dtc_proto::{TaskState, WireError};
use futures_util::future::join_all;
use std::net::SocketAddr;

/// The router's answer to an operator's request: a status gathered from every replica,
/// tasks, queues and purges from every shard's leader, a schedule's change from its own
/// shard's; a shard's settings are not the router's to change.
pub(super) async fn answer<T: Transport>(
    transport: &T,
    shards: &[Vec<SocketAddr>],
    request: AdminRequest,
) -> AdminResponse {
    match request {
        AdminRequest::Status => AdminResponse::Cluster(gather(transport, shards).await),
        AdminRequest::Tasks(query) => AdminResponse::Tasks(tasks(transport, shards, &query).await),
        AdminRequest::Purge(state) => AdminResponse::Purged(purge(transport, shards, state).await),
        AdminRequest::Queues(op) => AdminResponse::Queues(queues(transport, shards, &op).await),
        AdminRequest::Schedules(op) => {
            AdminResponse::Schedules(schedules(transport, shards, &op).await)
        }
        settings @ (AdminRequest::TypeDefaults { .. } | AdminRequest::Configure(_)) => settings
            .failed(WireError::BadRequest {
                reason: "a router keeps no settings: ask a coordinator of the shard".into(),
            }),
    }
}

/// Asks every replica of every shard.
async fn gather<T: Transport>(transport: &T, shards: &[Vec<SocketAddr>]) -> ClusterStatus {
    let asks = shards.iter().enumerate().map(|(index, addrs)| async move {
        let replicas = join_all(addrs.iter().map(|&addr| async move {
            (
                addr.to_string(),
                ask_replica(transport, addr, "router").await,
            )
        }))
        .await;
        ShardStatus {
            shard: u32::try_from(index).unwrap_or(u32::MAX),
            replicas,
        }
    });
    ClusterStatus {
        shards: join_all(asks).await,
    }
}

/// A page of every shard's tasks, newest first: each shard's leader gives its own page from
/// the same cursor, and the newest `limit` of them all make this page. Since every shard
/// orders its tasks the same way (creation time, then id), pages never repeat or skip a
/// task. Any shard that cannot answer fails the page.
async fn tasks<T: Transport>(
    transport: &T,
    shards: &[Vec<SocketAddr>],
    query: &TaskQuery,
) -> Result<TaskPage, WireError> {
    let limit = query.limit.clamp(1, TaskQuery::MAX_LIMIT) as usize;
    let pages = join_all(
        shards
            .iter()
            .map(|addrs| ask_leader(transport, addrs, "router", query)),
    )
    .await;
    let mut tasks = Vec::new();
    let mut more = false;
    for page in pages {
        let page = page?;
        more |= page.next.is_some();
        tasks.extend(page.tasks);
    }
    tasks.sort_unstable_by(|a, b| Cursor::of(b).cmp(&Cursor::of(a)));
    more |= tasks.len() > limit;
    tasks.truncate(limit);
    let next = if more {
        tasks.last().map(Cursor::of)
    } else {
        None
    };
    Ok(TaskPage { tasks, next })
}

/// Purges the finished tasks in `state` on every shard; how many went in all. The shards
/// that answered have purged even when another fails the answer.
/// Lists, pauses or resumes the queues of every shard (a pause holds the queue on every
/// shard); the queues merged by name.
async fn queues<T: Transport>(
    transport: &T,
    shards: &[Vec<SocketAddr>],
    op: &QueueOp,
) -> Result<Vec<QueueStatus>, WireError> {
    // Tasks spread evenly over the shards by id, and so does a rate limit.
    let op = match op {
        QueueOp::Limit(queue, Some(per_hour)) => {
            let shards = u64::try_from(shards.len().max(1)).unwrap_or(1);
            QueueOp::Limit(queue.clone(), Some(per_hour.div_ceil(shards)))
        }
        other => other.clone(),
    };
    let lists = join_all(
        shards
            .iter()
            .map(|addrs| ask_leader(transport, addrs, "router", &op)),
    )
    .await;
    Ok(merge_queues(
        lists.into_iter().collect::<Result<Vec<_>, _>>()?,
    ))
}

/// A schedule's change goes to the shard its name routes to; a list gathers every shard's.
async fn schedules<T: Transport>(
    transport: &T,
    shards: &[Vec<SocketAddr>],
    op: &ScheduleOp,
) -> Result<Vec<ScheduleStatus>, WireError> {
    if let Some(name) = op.name() {
        let shard = super::shard_map::ShardMap::new(shards.len()).shard_of_key(name);
        let addrs = shards.get(shard).ok_or(WireError::Unavailable {
            reason: "the router has no shards".into(),
        })?;
        return ask_leader(transport, addrs, "router", op).await;
    }
    let lists = join_all(
        shards
            .iter()
            .map(|addrs| ask_leader(transport, addrs, "router", op)),
    )
    .await;
    // Each shard's page starts at the same name: their first MAX_LISTED together are the
    // cluster's page.
    let mut all = Vec::new();
    for list in lists {
        all.extend(list?);
    }
    all.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    all.truncate(dtc_proto::schedule::ScheduleSpec::MAX_LISTED);
    Ok(all)
}

async fn purge<T: Transport>(
    transport: &T,
    shards: &[Vec<SocketAddr>],
    state: TaskState,
) -> Result<u64, WireError> {
    let purge = Purge(state);
    let purged = join_all(
        shards
            .iter()
            .map(|addrs| ask_leader(transport, addrs, "router", &purge)),
    )
    .await;
    purged.into_iter().sum()
}
