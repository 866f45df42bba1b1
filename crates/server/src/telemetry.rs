//! Prometheus metrics for a whole process: [`install`] puts one recorder in place (before any
//! component starts, so that their counters register with it), [`upkeep`] keeps its
//! histograms bounded, and [`serve`] answers `GET /metrics` on an address of the operator's
//! choosing (`--metrics ADDR`); the router's HTTP API serves the same text through
//! [`render`]. Components record through the `metrics` macros, which cost next to nothing
//! in a process that installed no recorder (the tests, a library user).

use crate::net::{HttpGuard, HttpLimits, serve_http};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use dtc_proto::credentials::Credentials;
use metrics::{describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The buckets of every `_seconds` histogram: 100 µs to 60 s.
const BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 60.0,
];

/// The content type of Prometheus' text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the metrics recorder: {0}")]
pub struct TelemetryError(String);

/// Installs this process's recorder; a second call does nothing.
pub fn install() -> Result<(), TelemetryError> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
        .map_err(|e| TelemetryError(e.to_string()))?
        .install_recorder()
        .map_err(|e| TelemetryError(e.to_string()))?;
    describe();
    HANDLE.set(handle).ok();
    Ok(())
}

/// Whether a recorder is installed.
pub fn installed() -> bool {
    HANDLE.get().is_some()
}

/// Every series in Prometheus' text format, or `None` without a recorder.
pub fn render() -> Option<String> {
    HANDLE.get().map(PrometheusHandle::render)
}

/// Drains the recorder's histogram buffers every few seconds, so that they stay bounded
/// whether or not anyone scrapes; returns when `cancel` fires.
pub async fn upkeep(cancel: CancellationToken) {
    let Some(handle) = HANDLE.get() else {
        return;
    };
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = every.tick() => handle.run_upkeep(),
            () = cancel.cancelled() => return,
        }
    }
}

/// `GET /metrics`: the text, or 404 when no recorder is installed.
pub async fn metrics_handler() -> axum::response::Response {
    match render() {
        Some(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not enabled in this process\n",
        )
            .into_response(),
    }
}

/// Serves `GET /metrics` on `listener` until `cancel` fires: inside TLS, for the admin token,
/// when `credentials` hold the member certificate; plain otherwise.
pub async fn serve(
    listener: TcpListener,
    credentials: Arc<Credentials>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let guard = HttpGuard::new(Arc::clone(&credentials), loopback);
    let tls = credentials.tls.as_ref().and_then(|t| t.acceptor()).cloned();
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_handler))
        .layer(axum::middleware::from_fn_with_state(
            guard,
            crate::net::guard,
        ));
    serve_http(listener, app, tls, HttpLimits::default(), cancel).await
}

fn describe() {
    describe_counter!(
        "dtc_tasks_submitted_total",
        "New tasks accepted by a shard's leader."
    );
    describe_counter!("dtc_tasks_completed_total", "Tasks finished with a result.");
    describe_counter!("dtc_tasks_failed_total", "Tasks finished as failed.");
    describe_counter!(
        "dtc_tasks_cancelled_total",
        "Tasks cancelled before they ran."
    );
    describe_counter!(
        "dtc_tasks_retried_total",
        "Attempts that failed or were lost and went back to the queue."
    );
    describe_histogram!(
        "dtc_task_duration_seconds",
        metrics::Unit::Seconds,
        "Time from a task's arrival at its leader to its end."
    );
    describe_gauge!("dtc_queue_depth", "Unfinished tasks in the shard's table.");
    describe_gauge!(
        "dtc_tasks_running",
        "Attempts running on workers (leader only)."
    );
    describe_gauge!("dtc_raft_term", "The replica's current Raft term.");
    describe_gauge!(
        "dtc_raft_commit_index",
        "The last log index known committed."
    );
    describe_gauge!(
        "dtc_raft_applied_index",
        "The last log index applied to the table."
    );
    describe_gauge!(
        "dtc_raft_is_leader",
        "1 on the replica that leads its shard, else 0."
    );
    describe_counter!(
        "dtc_raft_leader_changes_total",
        "How often this replica has seen a new leader."
    );
    describe_gauge!(
        "dtc_slots_busy",
        "Worker slots in use, as the shard's leader sees them."
    );
    describe_gauge!(
        "dtc_slots_total",
        "Worker slots attached to the shard's leader."
    );
    describe_gauge!(
        "dtc_worker_slots_busy",
        "This worker's slots running a task."
    );
    describe_gauge!("dtc_worker_slots", "This worker's slots.");
    describe_counter!(
        "dtc_worker_tasks_total",
        "Attempts this worker has finished, by outcome."
    );
    describe_counter!(
        "dtc_router_requests_total",
        "Requests the router has forwarded."
    );
    describe_counter!(
        "dtc_router_errors_total",
        "Requests the router answered with an error, by kind."
    );
}
