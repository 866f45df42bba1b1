//! The schedules over HTTP: `GET /v1/schedules` lists them (what `dtc schedule list
//! --json` prints: [`schedule_json`]); `POST /v1/schedules` adds one,
//! `POST /v1/schedules/{name}/pause|resume|trigger` and `DELETE /v1/schedules/{name}`
//! change one. Changes are refused when secrets are on (they need the cluster's member
//! certificate, which HTTP does not carry: the guard says so); the router sends them to
//! the shard the schedule's name routes to.

use super::http::{Api, bad_request, error, wire_error};
use super::task_json::rfc3339;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dtc_proto::schedule::{CatchUp, Overlap, ScheduleOp, ScheduleSpec, ScheduleStatus};
use dtc_proto::{TaskOptions, TaskSpec};
use serde::Deserialize;

/// A schedule as the API (and `dtc schedule list --json`) shows it.
pub fn schedule_json(s: &ScheduleStatus) -> serde_json::Value {
    let o = s.spec.options.as_deref();
    serde_json::json!({
        "name": s.spec.name,
        "cron": s.spec.cron,
        "tz": s.spec.tz.as_deref().unwrap_or("UTC"),
        "overlap": match s.spec.overlap { Overlap::Skip => "skip", Overlap::Allow => "allow" },
        "catch_up": match s.spec.catch_up { CatchUp::None => "none", CatchUp::One => "one", CatchUp::All => "all" },
        "type": s.spec.kind,
        "payload": String::from_utf8_lossy(&s.spec.payload),
        "max_attempts": s.spec.max_attempts,
        "queue": o.and_then(|o| o.queue.as_deref()).unwrap_or(TaskSpec::DEFAULT_QUEUE),
        "priority": o.map_or(0, |o| o.priority),
        "paused": s.paused,
        "next": s.next_ms.filter(|_| !s.paused).map(rfc3339),
        "last_tick": rfc3339(s.last_tick_ms),
        "last_task": s.last_task.map(|id| id.to_string()),
        "fired": s.fired,
        "skipped": s.skipped,
    })
}

/// `POST /v1/schedules`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    name: String,
    cron: String,
    tz: Option<String>,
    #[serde(default)]
    overlap: Option<String>,
    #[serde(default)]
    catch_up: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: String,
    max_attempts: Option<u32>,
    queue: Option<String>,
    #[serde(default)]
    priority: u8,
    attempt_timeout_ms: Option<u64>,
}

impl AddBody {
    fn spec(self) -> Result<ScheduleSpec, String> {
        let overlap = match self.overlap.as_deref() {
            None | Some("skip") => Overlap::Skip,
            Some("allow") => Overlap::Allow,
            Some(other) => return Err(format!("\"overlap\" is skip or allow, not {other:?}")),
        };
        let catch_up = match self.catch_up.as_deref() {
            None | Some("one") => CatchUp::One,
            Some("none") => CatchUp::None,
            Some("all") => CatchUp::All,
            Some(other) => return Err(format!("\"catch_up\" is none, one or all, not {other:?}")),
        };
        let options = TaskOptions {
            queue: self.queue.filter(|q| q != TaskSpec::DEFAULT_QUEUE),
            priority: self.priority,
            timeout_ms: self.attempt_timeout_ms,
            ..TaskOptions::default()
        };
        Ok(ScheduleSpec {
            name: self.name,
            cron: self.cron,
            tz: self.tz,
            overlap,
            catch_up,
            kind: self.kind,
            payload: Bytes::from(self.payload),
            max_attempts: self.max_attempts.unwrap_or(TaskSpec::DEFAULT_MAX_ATTEMPTS),
            options: (options != TaskOptions::default()).then(|| Box::new(options)),
        })
    }
}

/// Asks the schedules' shards and answers with the schedules (`{"schedules": [...]}`).
async fn answer(api: &Api, op: ScheduleOp, created: bool) -> Response {
    match api.operator(&op).await {
        Ok(all) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let next = (all.len() >= ScheduleSpec::MAX_LISTED)
                .then(|| all.last().map(|s| s.spec.name.clone()))
                .flatten();
            let list: Vec<serde_json::Value> = all.iter().map(schedule_json).collect();
            let body = serde_json::json!({ "schedules": list, "next": next });
            (status, axum::Json(body)).into_response()
        }
        Err(e) => wire_error(&e),
    }
}

/// `GET /v1/schedules?after=NAME`: a page.
pub(super) async fn list(
    State(api): State<Api>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let after = match query {
        Ok(Query(q)) => q.after,
        Err(e) => return bad_request(e.body_text()),
    };
    answer(&api, ScheduleOp::List { after }, false).await
}

/// `GET /v1/schedules`'s query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// The page starts after this name.
    after: Option<String>,
}

/// `POST /v1/schedules`.
pub(super) async fn add(State(api): State<Api>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => return error(rejection.status(), "bad_request", rejection.body_text()),
    };
    let spec = match serde_json::from_slice::<AddBody>(&body).map_err(|e| e.to_string()) {
        Ok(b) => b.spec(),
        Err(e) => Err(format!("the body is not a schedule: {e}")),
    };
    match spec {
        Ok(spec) => answer(&api, ScheduleOp::Add(spec), true).await,
        Err(message) => bad_request(message),
    }
}

/// `POST /v1/schedules/{name}/{pause|resume|trigger}`.
pub(super) async fn act(
    State(api): State<Api>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let Ok(Path((name, action))) = path else {
        return bad_request("the path is /v1/schedules/NAME/pause, resume or trigger");
    };
    let op = match action.as_str() {
        "pause" => ScheduleOp::Pause(name),
        "resume" => ScheduleOp::Resume(name),
        "trigger" => ScheduleOp::Trigger(name),
        other => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no action {other:?}: pause, resume or trigger"),
            );
        }
    };
    answer(&api, op, false).await
}

/// `DELETE /v1/schedules/{name}`.
pub(super) async fn delete(
    State(api): State<Api>,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    match name {
        Ok(Path(name)) => answer(&api, ScheduleOp::Delete(name), false).await,
        Err(e) => bad_request(e.body_text()),
    }
}
