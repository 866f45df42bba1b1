//! Asking a node an operator's question: one exchange with one node ([`ask_admin`]), a
//! shard's leader found by following the replicas ([`ask_leader`]), and the [`Ask`] trait
//! that ties each question to the type of its answer, so that a caller names what it asks
//! and gets back exactly that (the CLI, `dtc top`, the SDK, the router and the tests all ask
//! through here).

use crate::message::Role;
use crate::schedule::{ScheduleOp, ScheduleSpec, ScheduleStatus};
use crate::status::{
    AdminRequest, AdminResponse, QueueOp, QueueStatus, ReplicaStatus, SettingsChange,
    ShardSettings, TaskPage, TaskQuery,
};
use crate::transport::Transport;
use crate::{ProtoError, TaskOptions, TaskState, WireError};
use std::net::SocketAddr;
use std::time::Duration;

/// How long an admin exchange may take before the node counts as unresponsive.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an operator's request waits for a shard that has no leader yet (just started,
/// or electing one) before it is answered `NotLeader`.
const ELECTION_WAIT: Duration = Duration::from_secs(5);

/// An operator's question whose answer has one type.
pub trait Ask {
    /// What a good answer carries.
    type Answer;
    /// The request on the wire.
    fn request(&self) -> AdminRequest;
    /// This question's answer out of a response; `None` if the response answers another
    /// question.
    fn answer(response: AdminResponse) -> Option<Result<Self::Answer, WireError>>;
}

impl Ask for TaskQuery {
    type Answer = TaskPage;
    fn request(&self) -> AdminRequest {
        AdminRequest::Tasks(self.clone())
    }
    fn answer(response: AdminResponse) -> Option<Result<TaskPage, WireError>> {
        match response {
            AdminResponse::Tasks(r) => Some(r),
            _ => None,
        }
    }
}

impl Ask for QueueOp {
    type Answer = Vec<QueueStatus>;
    fn request(&self) -> AdminRequest {
        AdminRequest::Queues(self.clone())
    }
    fn answer(response: AdminResponse) -> Option<Result<Vec<QueueStatus>, WireError>> {
        match response {
            AdminResponse::Queues(r) => Some(r),
            _ => None,
        }
    }
}

impl Ask for ScheduleOp {
    type Answer = Vec<ScheduleStatus>;
    fn request(&self) -> AdminRequest {
        AdminRequest::Schedules(self.clone())
    }
    fn answer(response: AdminResponse) -> Option<Result<Vec<ScheduleStatus>, WireError>> {
        match response {
            AdminResponse::Schedules(r) => Some(r),
            _ => None,
        }
    }
}

impl Ask for SettingsChange {
    type Answer = ShardSettings;
    fn request(&self) -> AdminRequest {
        AdminRequest::Configure(*self)
    }
    fn answer(response: AdminResponse) -> Option<Result<ShardSettings, WireError>> {
        match response {
            AdminResponse::Configured(r) => Some(r),
            _ => None,
        }
    }
}

/// Forget every finished task in this state; answered with how many went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Purge(pub TaskState);

impl Ask for Purge {
    type Answer = u64;
    fn request(&self) -> AdminRequest {
        AdminRequest::Purge(self.0)
    }
    fn answer(response: AdminResponse) -> Option<Result<u64, WireError>> {
        match response {
            AdminResponse::Purged(r) => Some(r),
            _ => None,
        }
    }
}

/// Set (or with `None` clear) a task type's defaults; answered with every type's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetTypeDefaults {
    /// The task type.
    pub kind: String,
    /// Its defaults.
    pub options: Option<TaskOptions>,
}

impl Ask for SetTypeDefaults {
    type Answer = Vec<(String, TaskOptions)>;
    fn request(&self) -> AdminRequest {
        AdminRequest::TypeDefaults {
            kind: self.kind.clone(),
            options: self.options.clone(),
        }
    }
    fn answer(response: AdminResponse) -> Option<Result<Self::Answer, WireError>> {
        match response {
            AdminResponse::TypeDefaults(r) => Some(r),
            _ => None,
        }
    }
}

/// Asks the coordinator replica at `addr` for its status; the error as text (unreachable,
/// or a router answering instead).
pub async fn ask_replica<T: Transport>(
    transport: &T,
    addr: SocketAddr,
    name: &str,
) -> Result<ReplicaStatus, String> {
    match ask_status(transport, addr, name).await {
        Ok(AdminResponse::Replica(r)) => Ok(r),
        Ok(AdminResponse::Cluster(_)) => Err("a router, not a coordinator".to_string()),
        Ok(AdminResponse::Failed(e)) => Err(e.to_string()),
        Ok(_) => Err("an answer to another question".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Every schedule of the cluster (or shard) at `addrs`, page by page.
pub async fn ask_all_schedules<T: Transport>(
    transport: &T,
    addrs: &[SocketAddr],
    name: &str,
) -> Result<Vec<ScheduleStatus>, WireError> {
    let mut all: Vec<ScheduleStatus> = Vec::new();
    loop {
        let after = all.last().map(|s| s.spec.name.clone());
        let page = ask_leader(transport, addrs, name, &ScheduleOp::List { after }).await?;
        let full = page.len() >= ScheduleSpec::MAX_LISTED;
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

/// Asks `question` of a shard's leader (or of a router, which answers for every shard),
/// trying the nodes at `addrs` in turn and following the one a follower names; while none
/// names a leader, asks again for up to 5 s (an election under way).
pub async fn ask_leader<T: Transport, A: Ask>(
    transport: &T,
    addrs: &[SocketAddr],
    name: &str,
    question: &A,
) -> Result<A::Answer, WireError> {
    let request = question.request();
    let deadline = tokio::time::Instant::now() + ELECTION_WAIT;
    loop {
        match ask_leader_once::<T, A>(transport, addrs, name, &request).await {
            Err(WireError::NotLeader { leader: None })
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answer => return answer,
        }
    }
}

/// One round of [`ask_leader`]: each node once, and at most as many leaders as nodes named.
async fn ask_leader_once<T: Transport, A: Ask>(
    transport: &T,
    addrs: &[SocketAddr],
    name: &str,
    request: &AdminRequest,
) -> Result<A::Answer, WireError> {
    let mut last = WireError::Unavailable {
        reason: "the shard has no replica".into(),
    };
    let mut order: Vec<SocketAddr> = addrs.to_vec();
    let mut i = 0;
    while i < order.len() && i < 2 * addrs.len() {
        let addr = order[i];
        i += 1;
        let answer =
            ask_admin(transport, addr, name, request)
                .await
                .map(|response| match response {
                    AdminResponse::Failed(e) => Some(Err(e)),
                    response => A::answer(response),
                });
        match answer {
            Ok(Some(Ok(answer))) => return Ok(answer),
            Ok(Some(Err(WireError::NotLeader { leader }))) => {
                if let Some(leader) = leader.and_then(|l| l.parse().ok()) {
                    order.insert(i, leader);
                }
                last = WireError::NotLeader { leader: None };
            }
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => {
                last = WireError::Unavailable {
                    reason: format!("{addr} answered another question"),
                };
            }
            Err(e) => {
                last = WireError::Unavailable {
                    reason: format!("{addr}: {e}"),
                };
            }
        }
    }
    Err(last)
}

/// Asks the node at `addr` (a coordinator or a router) for its status over `transport`.
pub async fn ask_status<T: Transport>(
    transport: &T,
    addr: SocketAddr,
    name: &str,
) -> Result<AdminResponse, ProtoError> {
    ask_admin(transport, addr, name, &AdminRequest::Status).await
}

/// Sends one operator's request to the node at `addr` over `transport`; its answer.
pub async fn ask_admin<T: Transport>(
    transport: &T,
    addr: SocketAddr,
    name: &str,
    request: &AdminRequest,
) -> Result<AdminResponse, ProtoError> {
    let exchange = async {
        let (reader, mut writer, _) = crate::mux::dial(
            transport,
            addr,
            &transport.hello(Role::Admin, name),
            crate::DEFAULT_MAX_FRAME,
        )
        .await?;
        crate::connection::write_one(&mut writer, request, crate::DEFAULT_MAX_FRAME).await?;
        let mut reader = reader.retype::<AdminResponse>();
        reader.expect().await
    };
    tokio::time::timeout(ADMIN_TIMEOUT, exchange)
        .await
        .map_err(|_| ProtoError::Timeout)?
}
