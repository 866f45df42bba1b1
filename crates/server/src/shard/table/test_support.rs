//! What the table's tests share: specs, commands and a backoff without jitter.

use super::TaskTable;
use crate::shard::{Applied, Command};
use bytes::Bytes;
use dtc_proto::{Backoff, Outcome, Retry, TaskId, TaskSpec, TaskState};

pub(super) fn spec(n: u128, max_attempts: u32) -> TaskSpec {
    TaskSpec {
        id: TaskId(n),
        kind: "noop".into(),
        payload: Bytes::from_static(b"x"),
        max_attempts,
        options: None,
    }
}

pub(super) fn submit(t: &mut TaskTable, n: u128, max_attempts: u32) -> Applied {
    t.apply(Command::Submit {
        spec: spec(n, max_attempts),
        at_ms: 0,
    })
}

pub(super) fn ok(bytes: &'static [u8]) -> Outcome {
    Outcome::Succeeded(Bytes::from_static(bytes))
}

pub(super) fn complete(
    n: u128,
    attempt: u32,
    outcome: Outcome,
    retry: Retry,
    at_ms: u64,
) -> Command {
    Command::Complete {
        id: TaskId(n),
        attempt,
        outcome,
        retry,
        at_ms,
    }
}

pub(super) fn fail(n: u128, attempt: u32, at_ms: u64) -> Command {
    complete(
        n,
        attempt,
        Outcome::Failed(format!("boom {attempt}")),
        Retry::Policy,
        at_ms,
    )
}

pub(super) fn state(t: &TaskTable, n: u128) -> Option<TaskState> {
    t.view(TaskId(n)).map(|v| v.state)
}

/// Exact waits: 100 ms, doubling, no jitter.
pub(super) const EXACT: Backoff = Backoff {
    initial_ms: 100,
    multiplier_pct: 200,
    max_ms: 10_000,
    jitter_pct: 0,
};
