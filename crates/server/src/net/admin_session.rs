//! An operator's connection (`Role::Admin`), on a coordinator or a router: reads each
//! [`AdminRequest`] and writes the answer its owner gives, until the connection closes, sends
//! a bad frame, stays idle past its idle timeout, or the node stops.

use super::Accepted;
use dtc_proto::connection::write_one;
use dtc_proto::status::{AdminRequest, AdminResponse};
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

/// Serves one admin connection; `status` describes the node (or the cluster) when asked.
/// A connection that asks nothing for `idle` is closed.
pub async fn serve_admin<R, W, F, Fut>(
    a: Accepted<R, W>,
    max_frame: usize,
    idle: std::time::Duration,
    cancel: CancellationToken,
    mut status: F,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    F: FnMut() -> Fut,
    Fut: Future<Output = AdminResponse>,
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
            () = tokio::time::sleep(idle) => {
                tracing::debug!(%peer, "closing an idle admin connection");
                return;
            }
            () = cancel.cancelled() => return,
        };
        match req {
            Ok(Some(AdminRequest::Status)) => {
                let answer = status().await;
                if write_one(&mut writer, &answer, max_frame).await.is_err() {
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
