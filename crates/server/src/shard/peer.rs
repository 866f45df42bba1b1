//! The replicas' RPCs: openraft's append-entries, vote and snapshot messages carried as dtc
//! frames on a connection that handshook as `Role::Peer`.
//!
//! [`PeerNetwork`] is openraft's network factory: one [`PeerClient`] per target replica, each
//! owning one connection over the coordinator's [`Transport`] (dialled on first use, dropped
//! on a failure and dialled again on the next call). A call whose answer comes late (past
//! openraft's deadline) keeps the connection: its answer is read and dropped before the
//! next one, so that a slow moment does not cost a new connection and TLS handshake. openraft sends one RPC at a time per
//! target and batches entries into it, so a connection carries one request at a time.
//! A follower's acknowledgement of entries is handed to openraft only once the leader's own
//! copy of them is durable (see `shard::durability`): the leader writes its log while the
//! entries travel, and counts toward a majority only what is durable everywhere counted.
//! [`serve`] is the other end: the coordinator hands it every `Peer` connection.

use super::durability::Durability;
use super::raft_types::{Node, NodeId, ShardRaft, TypeConfig};
use bytes::BytesMut;
use dtc_proto::ProtoError;
use dtc_proto::codec::encode_frame;
use dtc_proto::connection::{FrameReader, write_one};
use dtc_proto::message::{Hello, HelloFrame, Role, ShardId};
use dtc_proto::mux::dial;
use dtc_proto::transport::Transport;
use openraft::SnapshotSegmentId;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    SnapshotMismatch, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

/// The largest frame between replicas. An append-entries request that would be larger is
/// not sent: openraft is told `PayloadTooLarge` and sends fewer entries at once. One entry
/// is at most a sealed batch plus one command, well under half of this (a coordinator
/// refuses a `--max-frame` that would allow more).
pub const PEER_MAX_FRAME: usize = 64 * 1024 * 1024;

/// The largest snapshot a replica receives.
pub const MAX_SNAPSHOT_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// A request from one replica to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Replicate entries (or a heartbeat).
    Append(AppendEntriesRequest<TypeConfig>),
    /// Ask for a vote.
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot.
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to a [`PeerRequest`], of the same kind.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// To [`PeerRequest::Append`].
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To [`PeerRequest::Vote`].
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To [`PeerRequest::Snapshot`].
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
}

/// openraft's network factory over a transport.
#[derive(Clone, Debug)]
pub struct PeerNetwork<T> {
    transport: T,
    /// This replica's hello: its name, cluster, shard and credential.
    hello: Hello,
    /// How far this replica's own log is durable.
    durability: Durability,
}

impl<T: Transport> PeerNetwork<T> {
    /// Dials peers over `transport`, introducing itself as `name`, a replica of `shard`;
    /// followers' acknowledgements wait on `durability`, this replica's own log.
    pub fn new(transport: T, name: &str, shard: ShardId, durability: Durability) -> Self {
        let hello = transport.hello(Role::Peer, name).of_shard(shard);
        Self {
            transport,
            hello,
            durability,
        }
    }
}

impl<T: Transport> RaftNetworkFactory<TypeConfig> for PeerNetwork<T> {
    type Network = PeerClient<T>;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerClient<T> {
        PeerClient {
            transport: self.transport.clone(),
            hello: self.hello.clone(),
            target,
            addr: node.addr.parse().ok(),
            label: node.addr.clone(),
            conn: None,
            stage: Stage::Idle,
            owed: 0,
            durability: self.durability.clone(),
        }
    }
}

type Conn<T> = (
    FrameReader<<T as Transport>::Read, PeerResponse>,
    <T as Transport>::Write,
);

/// The connection to one target replica.
pub struct PeerClient<T: Transport> {
    transport: T,
    hello: Hello,
    target: NodeId,
    addr: Option<SocketAddr>,
    label: String,
    conn: Option<Conn<T>>,
    /// Where the exchange on `conn` stands. Not `Idle` when a call begins: the previous one
    /// was cut off (openraft drops an RPC that outlives its deadline).
    stage: Stage,
    /// Answers still to come on `conn` for requests whose callers stopped waiting: read and
    /// dropped before the next answer, so the connection (and its TLS session) is kept
    /// across a late answer instead of being dialled again.
    owed: u32,
    durability: Durability,
}

/// Where one exchange on a peer connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Nothing under way.
    Idle,
    /// The request is being written: cut off here, the stream holds half a frame.
    Writing,
    /// The request is written; its answer is awaited.
    Awaiting,
}

/// The most late answers a connection may owe before it is given up and dialled again.
const MAX_OWED: u32 = 4;

/// Why a call failed, before it is shaped into openraft's error type.
enum CallError {
    Unreachable(std::io::Error),
    Network(std::io::Error),
    /// The request does not fit in a frame; nothing was sent.
    TooLarge(std::io::Error),
}

impl CallError {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<NodeId, Node, E> {
        match self {
            Self::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            Self::Network(e) | Self::TooLarge(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

impl<T: Transport> PeerClient<T> {
    async fn call(&mut self, req: &PeerRequest, ttl: Duration) -> Result<PeerResponse, CallError> {
        self.settle_cut_off();
        match tokio::time::timeout(ttl, self.exchange(req)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(CallError::TooLarge(e))) => Err(CallError::TooLarge(e)),
            Ok(Err(e)) => {
                self.conn = None;
                self.stage = Stage::Idle;
                self.owed = 0;
                Err(e)
            }
            Err(_) => {
                // Late: its answer is owed and the connection kept (or given up if the
                // request was cut off while being written).
                self.settle_cut_off();
                Err(CallError::Network(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "replica {} at {} did not answer in {ttl:?}",
                        self.target, self.label
                    ),
                )))
            }
        }
    }

    /// Accounts for an exchange that stopped before its end: a request cut off while its
    /// answer was awaited leaves that answer owed; one cut off while being written (or too
    /// many owed answers) gives the connection up.
    fn settle_cut_off(&mut self) {
        match std::mem::replace(&mut self.stage, Stage::Idle) {
            Stage::Idle => {}
            Stage::Awaiting if self.owed < MAX_OWED => self.owed += 1,
            Stage::Awaiting | Stage::Writing => {
                self.conn = None;
                self.owed = 0;
            }
        }
    }

    async fn exchange(&mut self, req: &PeerRequest) -> Result<PeerResponse, CallError> {
        let network = |e: ProtoError| CallError::Network(std::io::Error::other(e.to_string()));
        let mut frame = BytesMut::new();
        encode_frame(req, &mut frame, PEER_MAX_FRAME).map_err(|e| match e {
            ProtoError::FrameTooLarge { .. } => {
                CallError::TooLarge(std::io::Error::other(e.to_string()))
            }
            e => network(e),
        })?;
        if self.conn.is_none() {
            let Some(addr) = self.addr else {
                return Err(CallError::Unreachable(std::io::Error::other(format!(
                    "replica {} has an unusable address {:?}",
                    self.target, self.label
                ))));
            };
            let (reader, writer, _) = dial(&self.transport, addr, &self.hello, PEER_MAX_FRAME)
                .await
                .map_err(|e| CallError::Unreachable(std::io::Error::other(e.to_string())))?;
            self.conn = Some((reader.retype(), writer));
            self.owed = 0;
        }
        let Some((reader, writer)) = self.conn.as_mut() else {
            return Err(CallError::Network(std::io::Error::other("no connection")));
        };
        self.stage = Stage::Writing;
        writer
            .write_all(&frame)
            .await
            .map_err(|e| network(e.into()))?;
        writer.flush().await.map_err(|e| network(e.into()))?;
        self.stage = Stage::Awaiting;
        loop {
            let answer = reader.expect().await.map_err(network)?;
            // Answers come in the order of the requests: first those owed to callers that
            // stopped waiting.
            if self.owed > 0 {
                self.owed -= 1;
                continue;
            }
            self.stage = Stage::Idle;
            return Ok(answer);
        }
    }

    fn unexpected<E: std::error::Error>(
        &mut self,
        got: &PeerResponse,
    ) -> RPCError<NodeId, Node, E> {
        self.conn = None;
        let e = std::io::Error::other(format!(
            "replica {} answered out of kind: {got:?}",
            self.target
        ));
        RPCError::Network(NetworkError::new(&e))
    }
}

impl<T: Transport> RaftNetwork<TypeConfig> for PeerClient<T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        // What a success claims the follower holds: the last entry sent, or without entries
        // (a heartbeat, or a probe for where the logs match) the entry before them.
        let claimed = rpc
            .entries
            .last()
            .map(|e| e.log_id.index)
            .or(rpc.prev_log_id.map(|p| p.index));
        let ttl = option.hard_ttl();
        let entries = rpc.entries.len() as u64;
        let answer = match self.call(&PeerRequest::Append(rpc), ttl).await {
            Ok(PeerResponse::Append(r)) => r.map_err(|e| RemoteError::new(self.target, e))?,
            Ok(other) => return Err(self.unexpected(&other)),
            // Too many entries for one frame: openraft sends fewer at once.
            Err(CallError::TooLarge(_)) if entries > 1 => {
                return Err(PayloadTooLarge::new_entries_hint(entries / 2).into());
            }
            Err(e) => return Err(e.into_rpc()),
        };
        // The follower holds those entries; they count once the leader's copy is durable too.
        let held = match &answer {
            AppendEntriesResponse::Success => claimed,
            AppendEntriesResponse::PartialSuccess(matching) => matching.map(|m| m.index),
            _ => None,
        };
        if let Some(index) = held {
            let own = tokio::time::timeout(ttl, self.durability.wait(index)).await;
            let err = match own {
                Ok(Ok(())) => return Ok(answer),
                Ok(Err(failed)) => std::io::Error::other(failed),
                Err(_) => std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("this replica's log did not sync entry {index} in {ttl:?}"),
                ),
            };
            return Err(RPCError::Network(NetworkError::new(&err)));
        }
        Ok(answer)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .call(&PeerRequest::Snapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(PeerResponse::Snapshot(r)) => r.map_err(|e| RemoteError::new(self.target, e).into()),
            Ok(other) => Err(self.unexpected(&other)),
            Err(e) => Err(e.into_rpc()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        match self.call(&PeerRequest::Vote(rpc), option.hard_ttl()).await {
            Ok(PeerResponse::Vote(r)) => r.map_err(|e| RemoteError::new(self.target, e).into()),
            Ok(other) => Err(self.unexpected(&other)),
            Err(e) => Err(e.into_rpc()),
        }
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(100)))
    }
}

/// How far the snapshot a replica is receiving has come: its id and the end of the bytes
/// received. Shared by the replica's peer connections (a leader may redial mid-snapshot).
#[derive(Clone, Debug, Default)]
pub struct SnapshotProgress(Arc<Mutex<Option<(String, u64)>>>);

impl SnapshotProgress {
    /// Whether a chunk of `len` bytes at `offset` of snapshot `id` may be taken: a snapshot
    /// starts at offset 0, and a chunk may repeat bytes already received but not leave a
    /// gap, nor pass [`MAX_SNAPSHOT_BYTES`]. A refusal names the offset expected.
    pub fn admit(&self, id: &str, offset: u64, len: u64) -> Result<(), SnapshotMismatch> {
        let Ok(mut progress) = self.0.lock() else {
            return Err(mismatch(id, 0, offset));
        };
        let end = offset.saturating_add(len);
        if end > MAX_SNAPSHOT_BYTES {
            let next = progress
                .as_ref()
                .filter(|(i, _)| i == id)
                .map_or(0, |p| p.1);
            return Err(mismatch(id, next, offset));
        }
        match progress.as_mut() {
            _ if offset == 0 => *progress = Some((id.to_owned(), end)),
            Some((current, next)) if current == id && offset <= *next => *next = (*next).max(end),
            Some((current, next)) if current == id => return Err(mismatch(id, *next, offset)),
            _ => return Err(mismatch(id, 0, offset)),
        }
        Ok(())
    }
}

fn mismatch(id: &str, expect: u64, got: u64) -> SnapshotMismatch {
    SnapshotMismatch {
        expect: SnapshotSegmentId {
            id: id.to_owned(),
            offset: expect,
        },
        got: SnapshotSegmentId {
            id: id.to_owned(),
            offset: got,
        },
    }
}

/// Serves one replica's connection: answers each request through `raft` until the
/// connection closes, sends a bad frame, or `cancel` fires. Snapshot chunks are checked
/// against `snapshots` before openraft sees them.
pub async fn serve<R, W>(
    reader: FrameReader<R, HelloFrame>,
    mut writer: W,
    raft: ShardRaft,
    snapshots: SnapshotProgress,
    peer: SocketAddr,
    cancel: CancellationToken,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = reader.retype::<PeerRequest>();
    reader.set_max_frame(PEER_MAX_FRAME);
    loop {
        let req = tokio::select! {
            r = reader.next() => r,
            () = cancel.cancelled() => return,
        };
        let resp = match req {
            Ok(Some(PeerRequest::Append(r))) => PeerResponse::Append(raft.append_entries(r).await),
            Ok(Some(PeerRequest::Vote(r))) => PeerResponse::Vote(raft.vote(r).await),
            Ok(Some(PeerRequest::Snapshot(r))) => {
                let id = &r.meta.snapshot_id;
                match snapshots.admit(id, r.offset, r.data.len() as u64) {
                    Ok(()) => PeerResponse::Snapshot(raft.install_snapshot(r).await),
                    Err(refused) => {
                        tracing::warn!(%peer, offset = r.offset, len = r.data.len(), "refusing a snapshot chunk that leaves a gap or passes the snapshot bound");
                        PeerResponse::Snapshot(Err(RaftError::APIError(refused.into())))
                    }
                }
            }
            Ok(None) => return,
            Err(e) => {
                tracing::info!(%peer, error = %e, "dropping a replica connection after a bad frame");
                return;
            }
        };
        if let Err(e) = write_one(&mut writer, &resp, PEER_MAX_FRAME).await {
            tracing::debug!(%peer, error = %e, "replica connection closed");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtc_proto::connection::accept_handshake;
    use dtc_proto::message::Welcome;
    use dtc_proto::transport::Tcp;
    use openraft::Vote;
    use tokio::net::TcpListener;

    fn heartbeat() -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: Vec::new(),
        }
    }

    /// A follower that holds the first answer on its first connection until a second
    /// request arrives, then answers the first `Conflict` and the second `Success`; it
    /// answers `Success` to everything else. Counts the connections it accepts.
    async fn follower(listener: TcpListener, accepted: Arc<std::sync::atomic::AtomicUsize>) {
        let mut first = true;
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (read, mut write) = stream.into_split();
            let mut reader = FrameReader::<_, HelloFrame>::new(read, PEER_MAX_FRAME);
            let welcome = Welcome::new(
                "follower",
                dtc_proto::message::DEFAULT_CLUSTER,
                Some(ShardId(1)),
            );
            if accept_handshake(
                &mut reader,
                &mut write,
                &welcome,
                PEER_MAX_FRAME,
                |_| Ok(()),
            )
            .await
            .is_err()
            {
                continue;
            }
            let mut reader = reader.retype::<PeerRequest>();
            let held = std::mem::take(&mut first);
            tokio::spawn(async move {
                let mut seen = 0;
                while let Ok(Some(_)) = reader.next().await {
                    seen += 1;
                    let answers = match (held, seen) {
                        (true, 1) => continue,
                        (true, 2) => vec![
                            AppendEntriesResponse::Conflict,
                            AppendEntriesResponse::Success,
                        ],
                        _ => vec![AppendEntriesResponse::Success],
                    };
                    for answer in answers {
                        let resp = PeerResponse::Append(Ok(answer));
                        if write_one(&mut write, &resp, PEER_MAX_FRAME).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    }

    #[test]
    fn snapshot_chunks_must_follow_on_from_what_was_received() {
        let p = SnapshotProgress::default();
        assert!(
            p.admit("a", 1 << 40, 10).is_err(),
            "no snapshot starts mid-way"
        );
        assert!(p.admit("a", 0, 100).is_ok());
        assert!(p.admit("a", 100, 50).is_ok());
        assert!(p.admit("a", 100, 50).is_ok(), "a chunk sent again");
        assert!(p.admit("a", 151, 10).is_err(), "a gap");
        assert!(p.admit("a", 1 << 40, 10).is_err(), "a huge offset");
        assert!(p.admit("b", 150, 10).is_err(), "another snapshot mid-way");
        assert!(
            p.admit("b", 0, 10).is_ok(),
            "another snapshot from its start"
        );
        assert!(
            p.admit("b", 10, MAX_SNAPSHOT_BYTES).is_err(),
            "past the bound"
        );
    }

    #[tokio::test]
    async fn an_rpc_cut_off_mid_exchange_does_not_hand_its_answer_to_the_next()
    -> std::io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn(follower(listener, Arc::clone(&accepted)));
        let mut network = PeerNetwork::new(Tcp, "leader", ShardId(1), Durability::new(None));
        let mut client = network.new_client(2, &Node::new(addr.to_string())).await;
        let option = RPCOption::new(Duration::from_secs(5));
        // openraft drops an RPC past its deadline: here, one the follower holds.
        let cut = tokio::time::timeout(
            Duration::from_millis(20),
            client.append_entries(heartbeat(), option.clone()),
        )
        .await;
        assert!(cut.is_err(), "the follower holds the first answer");
        let next = client.append_entries(heartbeat(), option.clone()).await;
        assert!(
            matches!(next, Ok(AppendEntriesResponse::Success)),
            "the next RPC got {next:?}, not its own answer"
        );
        let again = client.append_entries(heartbeat(), option).await;
        assert!(
            matches!(again, Ok(AppendEntriesResponse::Success)),
            "{again:?}"
        );
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "the connection is kept across the late answer"
        );
        Ok(())
    }
}
