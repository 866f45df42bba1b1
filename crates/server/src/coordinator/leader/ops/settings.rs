//! The settings family: an operator's change of the shard's retention and queue bound,
//! checked, proposed as a `Configure`, and answered once applied.

use super::AdminReply;
use crate::coordinator::leader::{Effects, Leader, Then};
use crate::shard::{Command, Retention, TaskTable};
use dtc_proto::WireError;
use dtc_proto::status::{AdminResponse, SettingsChange, ShardSettings};

impl Leader {
    /// An operator's change of the shard's settings.
    pub(super) fn configure(
        change: SettingsChange,
        reply: AdminReply,
        table: &TaskTable,
        out: &mut Effects,
    ) {
        match changed(table.retention(), change) {
            Ok(retention) => out
                .propose
                .push((Command::Configure { retention }, Then::Admin(reply))),
            Err(e) => reply.fail(e),
        }
    }

    /// The shard's settings are applied.
    pub(in crate::coordinator::leader) fn configured(
        retention: Retention,
        reply: Option<AdminReply>,
    ) {
        tracing::info!(?retention, "the shard's settings are set");
        if let Some(reply) = reply {
            answer(reply, retention);
        }
    }
}

/// Answers a change with the settings applied.
pub(super) fn answer(reply: AdminReply, retention: Retention) {
    reply.send(AdminResponse::Configured(Ok(shown_settings(&retention))));
}

/// A table's settings as the operator sees them.
pub(in crate::coordinator) fn shown_settings(r: &Retention) -> ShardSettings {
    ShardSettings {
        result_ttl_ms: r.result_ttl_ms,
        max_results: r.max_results as u64,
        max_queued: r.max_queued as u64,
        failed_ttl_ms: r.failed_ttl_ms,
        max_failed: r.max_failed as u64,
    }
}

/// The settings `current` with `change` made, or why the change is refused.
fn changed(current: Retention, change: SettingsChange) -> Result<Retention, WireError> {
    let count = |n: u64, what: &str| {
        usize::try_from(n)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| WireError::BadRequest {
                reason: format!("{what} must be at least 1, not {n}"),
            })
    };
    Ok(Retention {
        failed_ttl_ms: change.failed_ttl_ms.unwrap_or(current.failed_ttl_ms),
        max_failed: match change.max_failed {
            Some(n) => count(n, "max_failed")?,
            None => current.max_failed,
        },
        result_ttl_ms: change.result_ttl_ms.unwrap_or(current.result_ttl_ms),
        max_results: match change.max_results {
            Some(n) => count(n, "max_results")?,
            None => current.max_results,
        },
        max_queued: match change.max_queued {
            Some(n) => count(n, "max_queued")?,
            None => current.max_queued,
        },
    })
}
