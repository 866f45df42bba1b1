//! The type-defaults family: an operator sets or clears the options a task type's
//! submits take where they give none, checked with a task's own bounds, proposed, and
//! answered with every type's defaults once applied.

use super::AdminReply;
use crate::coordinator::leader::{Effects, Leader, Then};
use crate::shard::Command;
use dtc_proto::status::AdminResponse;
use dtc_proto::{TaskOptions, TaskSpec, WireError};

impl Leader {
    /// An operator sets (or with `None` clears) a task type's defaults.
    pub(super) fn set_type_defaults(
        kind: String,
        options: Option<TaskOptions>,
        reply: AdminReply,
        out: &mut Effects,
    ) {
        if kind.is_empty() || kind.len() > TaskSpec::MAX_KIND_LEN {
            let reason = format!("a task type is 1 to {} bytes", TaskSpec::MAX_KIND_LEN);
            reply.fail(WireError::BadRequest { reason });
            return;
        }
        // The same bounds as a task's own options.
        if let Some(o) = &options
            && let Err(e) = TaskSpec::new(kind.as_str(), "")
                .with_options(o.clone())
                .check_shape()
        {
            reply.fail(e);
            return;
        }
        let cmd = Command::SetTypeDefaults {
            kind,
            options: options.map(Box::new),
        };
        out.propose.push((cmd, Then::Admin(reply)));
    }

    /// A type's defaults are applied (or the change refused by the table).
    pub(in crate::coordinator::leader) fn type_defaults_set(
        all: Result<Vec<(String, TaskOptions)>, WireError>,
        reply: Option<AdminReply>,
    ) {
        if let Some(reply) = reply {
            answer(reply, all);
        }
    }
}

/// Answers a change with every type's defaults, or why the table refused it.
pub(super) fn answer(reply: AdminReply, all: Result<Vec<(String, TaskOptions)>, WireError>) {
    reply.send(AdminResponse::TypeDefaults(all));
}
