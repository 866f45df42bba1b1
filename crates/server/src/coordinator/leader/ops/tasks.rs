//! The tasks family as an operator sees it: a page of the shard's tasks (answered now, by
//! the leader, which knows which run), and a purge of the finished tasks of one state
//! (proposed, answered with how many went once applied).

use super::AdminReply;
use crate::coordinator::leader::{Effects, Leader, Then};
use crate::shard::{Command, TaskTable};
use dtc_proto::status::{AdminResponse, TaskQuery};
use dtc_proto::{TaskState, WireError};
use std::time::Instant;

impl Leader {
    /// A page of the shard's tasks.
    pub(super) fn tasks(
        &self,
        query: &TaskQuery,
        reply: AdminReply,
        table: &TaskTable,
        now: Instant,
    ) {
        reply.send(AdminResponse::Tasks(Ok(self.list(query, table, now))));
    }

    /// An operator's purge of the finished tasks in `state`.
    pub(super) fn purge(
        &self,
        state: TaskState,
        reply: AdminReply,
        now: Instant,
        out: &mut Effects,
    ) {
        if !state.is_finished() {
            let reason = format!(
                "only finished tasks can be purged (failed, succeeded, cancelled), not {}",
                state.name()
            );
            reply.fail(WireError::BadRequest { reason });
            return;
        }
        let at_ms = self.clock.at(now);
        out.propose
            .push((Command::Purge { state, at_ms }, Then::Admin(reply)));
    }

    /// A purge is applied: `n` tasks went.
    pub(in crate::coordinator::leader) fn purged(n: u64, reply: Option<AdminReply>) {
        tracing::info!(tasks = n, "purged");
        if let Some(reply) = reply {
            answer_purged(reply, n);
        }
    }
}

/// Answers a purge with how many tasks went.
pub(super) fn answer_purged(reply: AdminReply, n: u64) {
    reply.send(AdminResponse::Purged(Ok(n)));
}
