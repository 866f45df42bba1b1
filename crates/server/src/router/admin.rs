//! An operator's connection to a router (`Role::Admin`): answers each
//! [`AdminRequest::Status`] with a [`ClusterStatus`], gathered by asking every replica of
//! every shard at once (each within `ADMIN_TIMEOUT`). Nothing is cached: the answer is as
//! fresh as the question.

use crate::net::{Accepted, serve_admin};
use dtc_proto::status::{AdminResponse, ClusterStatus, ShardStatus, ask_status};
use dtc_proto::transport::Transport;
use futures_util::future::join_all;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

/// Serves one admin connection until it closes or `cancel` fires.
pub(super) async fn serve<R, W, T: Transport>(
    a: Accepted<R, W>,
    transport: T,
    shards: Vec<Vec<SocketAddr>>,
    max_frame: usize,
    cancel: CancellationToken,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    serve_admin(a, max_frame, cancel, || async {
        AdminResponse::Cluster(gather(&transport, &shards).await)
    })
    .await;
}

/// Asks every replica of every shard.
async fn gather<T: Transport>(transport: &T, shards: &[Vec<SocketAddr>]) -> ClusterStatus {
    let asks = shards.iter().enumerate().map(|(index, addrs)| async move {
        let replicas = join_all(addrs.iter().map(|&addr| async move {
            let answer = match ask_status(transport, addr, "router").await {
                Ok(AdminResponse::Replica(r)) => Ok(r),
                Ok(AdminResponse::Cluster(_)) => Err("a router, not a coordinator".to_string()),
                Err(e) => Err(e.to_string()),
            };
            (addr.to_string(), answer)
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
