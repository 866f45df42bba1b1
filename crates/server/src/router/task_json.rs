//! A task as JSON, the one form both the HTTP API (`GET /v1/tasks/{id}` and its lists) and
//! `dtc get --json` print: its id, type, state and attempts, its times in RFC 3339, its
//! queue, priority and key, its progress while it runs, and its result as text (or base64
//! when it is not UTF-8) or its error. Fields with nothing to say are left out.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use dtc_proto::{Outcome, TaskSpec, TaskView};
use serde::Serialize;
use std::time::{Duration, UNIX_EPOCH};

/// A task as JSON.
#[derive(Debug, Serialize)]
pub struct TaskJson {
    id: String,
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    kind: String,
    state: &'static str,
    attempts: u32,
    /// When it was accepted (RFC 3339).
    created: String,
    /// While scheduled or retrying: when it may run next (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    due: Option<String>,
    /// Each failed attempt's error, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<String>,
    /// Unfinished, and no worker of its shard has a handler for its type.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    no_handler: bool,
    /// Its queue.
    queue: String,
    /// Its priority.
    priority: u8,
    /// Its concurrency key and limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_limit: Option<u32>,
    /// While it runs: its handler's last progress report.
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<ProgressJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A running task's last progress report.
#[derive(Debug, Serialize)]
struct ProgressJson {
    /// Done, from 0 to 1.
    fraction: f64,
    message: String,
}

impl From<TaskView> for TaskJson {
    fn from(view: TaskView) -> Self {
        let (mut result, mut result_base64, mut error) = (None, None, None);
        match view.outcome {
            Some(Outcome::Succeeded(bytes)) => match std::str::from_utf8(&bytes) {
                Ok(text) => result = Some(text.to_owned()),
                Err(_) => result_base64 = Some(BASE64.encode(&bytes)),
            },
            Some(Outcome::Failed(reason)) => error = Some(reason),
            Some(Outcome::Cancelled) | None => {}
        }
        Self {
            id: view.id.to_string(),
            kind: view.kind.to_string(),
            state: view.state.name(),
            attempts: view.attempts,
            created: rfc3339(view.created_ms),
            due: view.due_ms.map(rfc3339),
            errors: view.errors,
            no_handler: view.no_handler,
            queue: view
                .queue
                .unwrap_or_else(|| TaskSpec::DEFAULT_QUEUE.to_owned()),
            priority: view.priority,
            key_limit: view.concurrency.as_ref().map(|c| c.limit),
            key: view.concurrency.map(|c| c.key),
            progress: view.progress.map(|p| ProgressJson {
                fraction: f64::from(p.permille) / 1000.0,
                message: p.message,
            }),
            result,
            result_base64,
            error,
        }
    }
}

/// A time (ms since the Unix epoch) as RFC 3339, UTC.
pub fn rfc3339(ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{ms} ms after the epoch"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use dtc_proto::{TaskId, TaskState};

    fn view(outcome: Option<Outcome>) -> TaskView {
        TaskView {
            id: TaskId(1),
            kind: "wordcount".into(),
            state: TaskState::Succeeded,
            attempts: 1,
            created_ms: 1_795_953_600_000,
            outcome,
            due_ms: None,
            finished_ms: None,
            errors: Vec::new(),
            no_handler: false,
            queue: None,
            priority: 0,
            concurrency: None,
            progress: None,
        }
    }

    #[test]
    fn a_result_is_text_when_it_can_be_and_base64_when_not() -> Result<(), serde_json::Error> {
        let text = serde_json::to_value(TaskJson::from(view(Some(Outcome::Succeeded(
            Bytes::from_static(b"3"),
        )))))?;
        assert_eq!(text["result"], "3");
        assert_eq!(text["created"], "2026-11-29T12:00:00Z");
        assert_eq!(text["queue"], TaskSpec::DEFAULT_QUEUE);
        assert!(
            text.get("due").is_none() && text.get("error").is_none(),
            "{text}"
        );
        let binary = serde_json::to_value(TaskJson::from(view(Some(Outcome::Succeeded(
            Bytes::from_static(&[0xff, 0x00]),
        )))))?;
        assert_eq!(binary["result_base64"], "/wA=");
        assert!(binary.get("result").is_none(), "{binary}");
        Ok(())
    }
}
