//! The router's HTTP face (`dtc router --http ADDR`): a JSON API over the same shard
//! connections the binary protocol uses — submit, look up and cancel tasks, read the
//! cluster's status — plus `/metrics` (Prometheus) and the dashboard at `/`. Each API
//! request becomes one [`RequestBody`] handed to the router's shard sink with a one-shot
//! answer; nothing here holds state of its own. `docs/http-api.md` documents it.

use super::task_json::TaskJson;
use super::{Answerer, ShardSink};
use crate::net::{AddressShares, RequestSink};
use crate::net::{HttpGuard, HttpLimits, serve_http};
use axum::extract::ConnectInfo;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use dtc_proto::ask::Ask;
use dtc_proto::message::RequestBody;
use dtc_proto::status::{AdminRequest, AdminResponse, Cursor, QueueOp, TaskQuery};
use dtc_proto::{Backoff, Start, TaskId, TaskSpec, TaskState, TaskView, WireError};
use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The largest request body accepted by default.
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

/// How long a request with `wait` waits by default, and at most.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Waiting requests the API keeps open towards the shards at most, by default; past the
/// bound a wait is answered 503. A wait is given back as soon as its request ends
/// (answered, timed out, or its client gone).
pub const MAX_WAITS: usize = 4096;

/// How many of the API's `max_waits` one client address may hold at once: a quarter.
pub fn per_address_waits(max_waits: usize) -> usize {
    (max_waits / 4).max(1)
}

/// Where and how the HTTP API listens.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Its address.
    pub listen: SocketAddr,
    /// The largest request body it reads; bigger ones get 413.
    pub max_body: usize,
    /// How many waiting requests it keeps open towards the shards ([`MAX_WAITS`]).
    pub max_waits: usize,
}

/// Answers an operator's request across the shards, as a router answers `dtc`.
pub(super) type AdminSource =
    Arc<dyn Fn(AdminRequest) -> BoxFuture<'static, AdminResponse> + Send + Sync>;

/// What the handlers share.
#[derive(Clone)]
pub(super) struct Api {
    pub sink: Arc<ShardSink>,
    pub admin: AdminSource,
    /// Permits for waiting requests ([`MAX_WAITS`]).
    pub waits: Arc<Semaphore>,
    /// Each client address's share of them ([`per_address_waits`]).
    pub wait_shares: Arc<AddressShares>,
    /// The router's shutdown: ends the waits still open.
    pub cancel: CancellationToken,
}

impl Api {
    /// Asks an operator's question across the shards.
    pub(super) async fn operator<A: Ask>(&self, question: &A) -> Result<A::Answer, WireError> {
        match (self.admin)(question.request()).await {
            AdminResponse::Failed(e) => Err(e),
            response => A::answer(response).unwrap_or_else(|| {
                Err(WireError::Unavailable {
                    reason: "the router answered another question".into(),
                })
            }),
        }
    }

    /// Asks the task's shard, as a client connection would.
    async fn ask(&self, body: RequestBody) -> Result<TaskView, WireError> {
        let (tx, rx) = oneshot::channel();
        self.sink.forward(body, Answerer::http(tx)).await;
        rx.await.unwrap_or(Err(WireError::ShuttingDown))
    }

    /// Asks with `wait` for at most `limit`, on behalf of a client at `from`; `None` when
    /// the limit ran out first. The wait holds a place among the API's waits and in its
    /// client address's share until this request ends (answered, out of time, or dropped
    /// with its connection); then the shard's connection is told to take it back.
    async fn ask_waiting(
        &self,
        body: RequestBody,
        limit: Duration,
        from: IpAddr,
    ) -> Option<Result<TaskView, WireError>> {
        let Ok(_mine) = self.wait_shares.of(from).try_acquire_owned() else {
            return Some(Err(WireError::LimitReached {
                reason: format!(
                    "{from} already holds its share of the API's requests waiting for tasks to finish"
                ),
            }));
        };
        let Ok(_place) = Arc::clone(&self.waits).try_acquire_owned() else {
            return Some(Err(WireError::Overloaded));
        };
        let (tx, rx) = oneshot::channel();
        self.sink.forward(body, Answerer::http(tx)).await;
        let mut pending = Pending {
            sink: &self.sink,
            answered: false,
        };
        let result = tokio::select! {
            r = tokio::time::timeout(limit, rx) => r.ok(),
            () = self.cancel.cancelled() => Some(Ok(Err(WireError::ShuttingDown))),
        };
        let result = result.map(|r| r.unwrap_or(Err(WireError::ShuttingDown)));
        pending.answered = result.is_some();
        result
    }
}

/// A wait forwarded to a shard; if it ends unanswered (out of time, or its request
/// dropped), the shard's connection is told to take it back at once.
struct Pending<'a> {
    sink: &'a ShardSink,
    answered: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.sink.abandoned();
        }
    }
}

/// Serves the API on `listener` (inside TLS with `tls`) until `cancel` fires; `guard` says
/// who may do what.
pub(super) async fn serve(
    listener: TcpListener,
    api: Api,
    max_body: usize,
    guard: HttpGuard,
    tls: Option<TlsAcceptor>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/", get(dashboard))
        .route("/v1/tasks", axum::routing::post(submit).get(list))
        .route("/v1/tasks/{id}", get(lookup).delete(cancel_task))
        .route("/v1/tasks/{id}/retry", axum::routing::post(retry_task))
        .route("/v1/cluster", get(cluster))
        .route("/v1/queues", get(queues))
        .route(
            "/v1/schedules",
            get(super::http_schedules::list).post(super::http_schedules::add),
        )
        .route(
            "/v1/schedules/{name}",
            axum::routing::delete(super::http_schedules::delete),
        )
        .route(
            "/v1/schedules/{name}/{action}",
            axum::routing::post(super::http_schedules::act),
        )
        .route("/metrics", get(crate::telemetry::metrics_handler))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            guard,
            crate::net::guard,
        ))
        .with_state(api);
    let limits = HttpLimits {
        max_body,
        ..HttpLimits::default()
    };
    serve_http(listener, app, tls, limits, cancel).await
}

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

/// `POST /v1/tasks`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    /// The handler's name.
    #[serde(rename = "type")]
    kind: String,
    /// The input as UTF-8 text…
    payload: Option<String>,
    /// …or as base64.
    payload_base64: Option<String>,
    /// The task's id (a UUID); a fresh one when absent.
    id: Option<String>,
    max_attempts: Option<u32>,
    /// Start this many ms after the shard accepts it…
    delay_ms: Option<u64>,
    /// …or at this RFC 3339 time.
    run_at: Option<String>,
    /// How long one attempt may run.
    attempt_timeout_ms: Option<u64>,
    /// Fail as expired if not started this many ms after it was accepted.
    expires_ms: Option<u64>,
    /// How failed attempts are retried.
    backoff: Option<BackoffJson>,
    /// The queue it waits in.
    queue: Option<String>,
    /// 0 to 9, higher first.
    #[serde(default)]
    priority: u8,
    /// A concurrency key: at most `key_limit` (default 1) of its tasks run at once. The id
    /// is routed by the key.
    key: Option<String>,
    key_limit: Option<u32>,
    #[serde(default)]
    wait: bool,
    /// How long this request waits (with `wait`).
    timeout_ms: Option<u64>,
}

/// A submit's `backoff`; what is left out takes the default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackoffJson {
    initial_ms: Option<u64>,
    multiplier: Option<f64>,
    max_ms: Option<u64>,
    jitter_pct: Option<u8>,
}

impl BackoffJson {
    fn backoff(self) -> Result<Backoff, String> {
        let default = Backoff::default();
        let multiplier = self.multiplier.unwrap_or(2.0);
        if !(1.0..=100.0).contains(&multiplier) {
            return Err(format!(
                "\"backoff.multiplier\" must be from 1 to 100, not {multiplier}"
            ));
        }
        Ok(Backoff {
            initial_ms: self.initial_ms.unwrap_or(default.initial_ms),
            // In 100..=10_000 after the check above.
            multiplier_pct: (multiplier * 100.0).round() as u32,
            max_ms: self.max_ms.unwrap_or(default.max_ms),
            jitter_pct: self.jitter_pct.unwrap_or(default.jitter_pct),
        })
    }
}

/// 200 with a finished task, 202 with one that has not finished.
fn task_response(view: TaskView) -> Response {
    let status = if view.state.is_finished() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (status, axum::Json(TaskJson::from(view))).into_response()
}

/// The JSON error every failure is answered with.
pub(super) fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message.to_string() } });
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A shard's error answer as an HTTP status: retryable ones are 503 with `Retry-After`.
pub(super) fn wire_error(e: &WireError) -> Response {
    let (status, code) = match e {
        WireError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        WireError::BadRequest { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
        WireError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        WireError::NotLeader { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
        WireError::Unavailable { .. } | WireError::ShuttingDown => {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        WireError::VersionMismatch { .. } => (StatusCode::BAD_GATEWAY, "version_mismatch"),
        // The router's own credentials were refused by the shard: a configuration error.
        WireError::Auth { .. } => (StatusCode::BAD_GATEWAY, "shard_refused_router"),
        WireError::LimitReached { .. } => (StatusCode::SERVICE_UNAVAILABLE, "limit_reached"),
    };
    error(status, code, e)
}

pub(super) fn bad_request(message: impl std::fmt::Display) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// A task id from its text, or what to tell the user.
fn parse_id(text: &str) -> Result<TaskId, String> {
    text.parse::<TaskId>()
        .map_err(|e| format!("{text:?} is not a task id: {e}"))
}

/// The task id of a `/v1/tasks/{id}` path.
fn path_id(path: Result<Path<String>, PathRejection>) -> Result<TaskId, String> {
    let Path(text) = path.map_err(|rejection| rejection.body_text())?;
    parse_id(&text)
}

fn wait_for(timeout_ms: Option<u64>) -> Duration {
    timeout_ms
        .map_or(DEFAULT_WAIT, Duration::from_millis)
        .min(MAX_WAIT)
}

/// `POST /v1/tasks`.
async fn submit(
    State(api): State<Api>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "bad_request"
            };
            return error(status, code, rejection.body_text());
        }
    };
    let req: SubmitBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format_args!("the body is not a task: {e}")),
    };
    if req.kind.is_empty() {
        return bad_request("\"type\" must name a task type, e.g. \"wordcount\"");
    }
    let payload = match (req.payload, req.payload_base64) {
        (Some(_), Some(_)) => {
            return bad_request("give the payload as \"payload\" or \"payload_base64\", not both");
        }
        (Some(text), None) => Bytes::from(text),
        (None, Some(b64)) => match BASE64.decode(b64.as_bytes()) {
            Ok(bytes) => Bytes::from(bytes),
            Err(e) => return bad_request(format_args!("\"payload_base64\" is not base64: {e}")),
        },
        (None, None) => Bytes::new(),
    };
    let mut spec = TaskSpec::new(req.kind, payload);
    if let Some(id) = req.id {
        match parse_id(&id) {
            Ok(id) => spec.id = id,
            Err(message) => return bad_request(message),
        }
    }
    if let Some(n) = req.max_attempts {
        if n == 0 {
            return bad_request("\"max_attempts\" must be at least 1");
        }
        spec.max_attempts = n;
    }
    match (req.delay_ms, req.run_at) {
        (Some(_), Some(_)) => return bad_request("give \"delay_ms\" or \"run_at\", not both"),
        (Some(ms), None) => spec.options_mut().start = Start::After(ms),
        (None, Some(at)) => {
            match time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339) {
                Ok(t) => spec = spec.with_start_at(t.into()),
                Err(e) => {
                    return bad_request(format_args!(
                        "\"run_at\" must be an RFC 3339 time such as 2026-12-01T09:00:00Z: {e}"
                    ));
                }
            }
        }
        (None, None) => {}
    }
    spec.options_mut().timeout_ms = req.attempt_timeout_ms;
    spec.options_mut().expires_ms = req.expires_ms;
    spec.options_mut().queue = req.queue;
    spec.options_mut().priority = req.priority;
    match (req.key, req.key_limit) {
        (Some(key), limit) => spec = spec.with_concurrency(key, limit.unwrap_or(1)),
        (None, Some(_)) => return bad_request("\"key_limit\" needs a \"key\""),
        (None, None) => {}
    }
    if let Some(b) = req.backoff {
        match b.backoff() {
            Ok(b) => spec.options_mut().backoff = Some(b),
            Err(message) => return bad_request(message),
        }
    }
    let id = spec.id;
    let body = RequestBody::Submit {
        task: spec,
        wait: req.wait,
    };
    let wait = req.wait.then(|| wait_for(req.timeout_ms));
    answer(&api, client.ip(), id, body, wait).await
}

/// Asks the shard for a client at `from` (waiting up to `wait`, if given) and answers with
/// its result, or, when the wait runs out first, with the task as it stands.
async fn answer(
    api: &Api,
    from: IpAddr,
    id: TaskId,
    body: RequestBody,
    wait: Option<Duration>,
) -> Response {
    let result = match wait {
        None => api.ask(body).await,
        Some(limit) => match api.ask_waiting(body, limit, from).await {
            Some(r) => r,
            None => api.ask(RequestBody::Get { id, wait: false }).await,
        },
    };
    match result {
        Ok(view) => task_response(view),
        Err(e) => wire_error(&e),
    }
}

/// `GET /v1/tasks/{id}`'s query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupQuery {
    #[serde(default)]
    wait: bool,
    timeout_ms: Option<u64>,
}

/// `GET /v1/tasks/{id}`.
async fn lookup(
    State(api): State<Api>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<LookupQuery>, QueryRejection>,
) -> Response {
    let id = match path_id(id) {
        Ok(id) => id,
        Err(message) => return bad_request(message),
    };
    let Query(query) = match query {
        Ok(q) => q,
        Err(rejection) => return bad_request(rejection.body_text()),
    };
    let body = RequestBody::Get {
        id,
        wait: query.wait,
    };
    let wait = query.wait.then(|| wait_for(query.timeout_ms));
    answer(&api, client.ip(), id, body, wait).await
}

/// `DELETE /v1/tasks/{id}`: cancels an unfinished task (a running one's handler is told to
/// stop); a finished one is 409.
async fn cancel_task(State(api): State<Api>, id: Result<Path<String>, PathRejection>) -> Response {
    change(&api, id, |id| RequestBody::Cancel { id }).await
}

/// `POST /v1/tasks/{id}/retry`: runs a failed task again; a task that has not failed is 409.
async fn retry_task(State(api): State<Api>, id: Result<Path<String>, PathRejection>) -> Response {
    change(&api, id, |id| RequestBody::Retry { id }).await
}

/// Asks for a change of state of the task at `id`; one the task's state forbids is 409.
async fn change(
    api: &Api,
    id: Result<Path<String>, PathRejection>,
    body: impl FnOnce(TaskId) -> RequestBody,
) -> Response {
    let id = match path_id(id) {
        Ok(id) => id,
        Err(message) => return bad_request(message),
    };
    match api.ask(body(id)).await {
        Ok(view) => task_response(view),
        Err(WireError::BadRequest { reason }) => error(StatusCode::CONFLICT, "conflict", reason),
        Err(e) => wire_error(&e),
    }
}

/// `GET /v1/tasks`'s query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `GET /v1/tasks`: a page of tasks across the shards, newest first.
async fn list(State(api): State<Api>, query: Result<Query<ListQuery>, QueryRejection>) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(rejection) => return bad_request(rejection.body_text()),
    };
    let state = match q.state.as_deref().map(|s| (s, TaskState::from_name(s))) {
        None => None,
        Some((_, Some(state))) => Some(state),
        Some((name, None)) => {
            let names: Vec<&str> = TaskState::ALL.iter().map(|s| s.name()).collect();
            return bad_request(format_args!(
                "\"state\" is {name:?}; it must be one of {}",
                names.join(", ")
            ));
        }
    };
    let before = match q.cursor.map(|c| c.parse::<Cursor>()).transpose() {
        Ok(c) => c,
        Err(message) => return bad_request(message),
    };
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > TaskQuery::MAX_LIMIT {
        return bad_request(format_args!(
            "\"limit\" must be 1 to {}",
            TaskQuery::MAX_LIMIT
        ));
    }
    let query = TaskQuery {
        state,
        kind: q.kind,
        limit,
        before,
    };
    match api.operator(&query).await {
        Ok(page) => {
            let tasks: Vec<TaskJson> = page.tasks.into_iter().map(TaskJson::from).collect();
            let body = serde_json::json!({
                "tasks": tasks,
                "next": page.next.map(|c| c.to_string()),
            });
            axum::Json(body).into_response()
        }
        Err(e) => wire_error(&e),
    }
}

/// `GET /v1/queues`: every named queue across the shards.
async fn queues(State(api): State<Api>) -> Response {
    match api.operator(&QueueOp::List).await {
        Ok(queues) => axum::Json(serde_json::json!({ "queues": queues })).into_response(),
        Err(e) => wire_error(&e),
    }
}

/// `GET /v1/cluster`: every replica of every shard.
async fn cluster(State(api): State<Api>) -> Response {
    match (api.admin)(AdminRequest::Status).await {
        AdminResponse::Cluster(status) => axum::Json(status).into_response(),
        AdminResponse::Failed(e) => wire_error(&e),
        _ => wire_error(&WireError::Unavailable {
            reason: "the router answered another question".into(),
        }),
    }
}
