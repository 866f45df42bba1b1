//! An operator's connection to a router (`Role::Admin`): answers each
//! [`AdminRequest::Status`] with a [`ClusterStatus`], gathered by asking every replica of
//! every shard at once (each within `ADMIN_TIMEOUT`). Nothing is cached: the answer is as
//! fresh as the question.

use crate::net::Accepted;
use dtc_proto::connection::write_one;
use dtc_proto::status::{AdminRequest, AdminResponse, ClusterStatus, ShardStatus, ask_status};
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
    let Accepted {
        peer,
        reader,
        mut writer,
        ..
    } = a;
    let mut reader = reader.retype::<AdminRequest>();
    loop {
        let req = tokio::select! {
            r = reader.next() => r,
            () = cancel.cancelled() => return,
        };
        match req {
            Ok(Some(AdminRequest::Status)) => {
                let status = gather(&transport, &shards).await;
                if write_one(&mut writer, &AdminResponse::Cluster(status), max_frame)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                tracing::info!(%peer, error = %e, "dropping an admin connection after a bad frame");
                return;
            }
        }
    }
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
