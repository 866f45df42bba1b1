//! Serving HTTP — the router's API and dashboard, and `/metrics` — with dtc's rules for a
//! port: TLS when the node holds the cluster's member certificate, a bound on connections
//! in total and per remote address ([`Places`]: past either a new one is closed at once,
//! counted and logged at most once a minute per address), time limits on reading a
//! request's head, on reading its body and on answering it, and a shutdown that waits for
//! every connection to end. Which requests are allowed is the app's business (the
//! router's guard).

use super::noise::{Noise, Refused};
use super::places::{NoPlace, PlaceBounds, Places};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The bounds of an HTTP listener.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// The most connections at once; past it a new one is closed.
    pub max_connections: usize,
    /// The most connections at once from one remote address; past it a new one is closed.
    pub max_connections_per_ip: usize,
    /// How long the TLS handshake and a request's head may take.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive, and its largest size.
    pub body_timeout: Duration,
    /// The largest request body read; a bigger one is answered 413.
    pub max_body: usize,
    /// How long a whole request may take to be answered (waits included).
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_ip: 128,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_body: 4 * 1024 * 1024,
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
    let app = app
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                read_body(limits.body_timeout, limits.max_body, req, next)
            },
        ))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| time_limit(request_timeout, req, next),
        ));
    let places = Places::new(PlaceBounds {
        total: limits.max_connections,
        per_address: limits.max_connections_per_ip,
        reserve: 0,
        telling: 0,
    });
    let noise = Noise::new("HTTP API");
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
        let place = match places.take(peer.ip()) {
            Ok(place) => place,
            Err(full) => {
                let (why, detail) = match full {
                    NoPlace::AddressFull => (
                        Refused::AddressBound,
                        "this address holds its most HTTP connections; closed",
                    ),
                    NoPlace::NodeFull => (
                        Refused::NodeBound,
                        "the HTTP connection bound is reached; closed",
                    ),
                };
                noise.refused(peer.ip(), why, detail);
                continue;
            }
        };
        stream.set_nodelay(true).ok();
        // Handlers learn who asks (a client address's share of waits).
        let app = app.clone().layer(axum::Extension(ConnectInfo(peer)));
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
            drop(place);
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
        Err(_) => error_json(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the request took longer than {limit:?}"),
        ),
    }
}

/// Reads a request's whole body within `limit` (at most `max` bytes) before the handler
/// runs, so that a client sending its body slowly holds its connection for seconds, not
/// for the request's whole time limit: 408 when it takes longer, 413 when it is bigger.
async fn read_body(limit: Duration, max: usize, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(limit, axum::body::to_bytes(body, max)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return error_json(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the request body is larger than {max} bytes, or was cut short"),
            );
        }
        Err(_) => {
            return error_json(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("the request body took longer than {limit:?} to arrive"),
            );
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// An error answer in the API's JSON shape.
fn error_json(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}
