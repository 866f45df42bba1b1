//! Serving HTTP — the router's API and dashboard, and `/metrics` — with dtc's rules for a
//! port: TLS when the node holds the cluster's member certificate, a bound on connections
//! (past it a new one is closed at once), a time limit on reading a request's head and on
//! answering a whole request, and a shutdown that waits for every connection to end.
//! Which requests are allowed is the app's business (the router's guard).

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The bounds of an HTTP listener.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// The most connections at once; past it a new one is closed.
    pub max_connections: usize,
    /// How long the TLS handshake and a request's head may take.
    pub header_timeout: Duration,
    /// How long a whole request may take to be answered (waits included).
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(330),
        }
    }
}

/// Serves `app` on `listener` (inside TLS with `tls`) until `cancel` fires; then lets each
/// connection finish its request in flight and waits for all of them.
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<TlsAcceptor>,
    limits: HttpLimits,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let request_timeout = limits.request_timeout;
    let app = app.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| time_limit(request_timeout, req, next),
    ));
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let tasks = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = cancel.cancelled() => break,
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            tracing::warn!(%peer, max = limits.max_connections, "HTTP connection bound reached; closing a new connection");
            continue;
        };
        stream.set_nodelay(true).ok();
        let app = app.clone();
        let tls = tls.clone();
        let cancel = cancel.clone();
        tasks.spawn(async move {
            let service = TowerToHyperService::new(app);
            match tls {
                None => serve_one(TokioIo::new(stream), service, limits, cancel).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_timeout, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls)) => serve_one(TokioIo::new(tls), service, limits, cancel).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "HTTP TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "HTTP TLS handshake took too long"),
                    }
                }
            }
            drop(permit);
        });
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// One connection, HTTP/1.1, until it closes or `cancel` fires (then gracefully).
async fn serve_one<I>(
    io: TokioIo<I>,
    service: TowerToHyperService<axum::Router>,
    limits: HttpLimits,
    cancel: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        }
        () = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await.ok();
        }
    }
}

/// Answers 408 when a request takes longer than `limit`.
async fn time_limit(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            axum::Json(serde_json::json!({
                "error": {
                    "code": "timeout",
                    "message": format!("the request took longer than {limit:?}"),
                }
            })),
        )
            .into_response(),
    }
}
