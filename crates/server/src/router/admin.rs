//! What a router tells an operator (`Role::Admin`, through `net::serve_admin`): a
//! [`ClusterStatus`], gathered by asking every replica of every shard at once (each within
//! `ADMIN_TIMEOUT`). Nothing is cached: the answer is as fresh as the question.

use dtc_proto::status::{ClusterStatus, ShardStatus, ask_replica};
use dtc_proto::transport::Transport;
use futures_util::future::join_all;
use std::net::SocketAddr;

/// Asks every replica of every shard.
pub(super) async fn gather<T: Transport>(
    transport: &T,
    shards: &[Vec<SocketAddr>],
) -> ClusterStatus {
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
