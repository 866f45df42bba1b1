//! An operator's connection (`Role::Admin`), on a coordinator or a router: reads each
//! [`AdminRequest`] and writes the answer its owner gives, until the connection closes, sends
//! a bad frame, stays idle past its idle timeout, or the node stops.

use super::Accepted;
use dtc_proto::connection::write_one;
use dtc_proto::status::{AdminRequest, AdminResponse};
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

/// Serves one admin connection; `answer` answers each request (the node's or the
/// cluster's status, a change of settings). A request that changes anything
/// ([`AdminRequest::refusal_if_read_only`]) from a connection that did not prove itself a
/// member of the cluster is refused here: the admin token is read-only.
/// A connection that asks nothing for `idle` is closed.
pub async fn serve_admin<R, W, F, Fut>(
    a: Accepted<R, W>,
    max_frame: usize,
    idle: std::time::Duration,
    cancel: CancellationToken,
    mut answer: F,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    F: FnMut(AdminRequest) -> Fut,
    Fut: Future<Output = AdminResponse>,
{
    let Accepted {
        peer,
        member,
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
            Ok(Some(request)) => {
                let refused = (!member).then(|| request.refusal_if_read_only()).flatten();
                let answer = match refused {
                    Some(refused) => refused,
                    None => answer(request).await,
                };
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
