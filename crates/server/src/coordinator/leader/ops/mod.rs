//! The operator's families as the leader serves them, one file each: the shard's
//! settings, task types' defaults, queues, schedules, and tasks (lists and purges). Each
//! decides its requests (answering a read now, proposing a change) and answers the change
//! once it is applied; [`Leader::admin`] is the one dispatch, and [`AdminReply`] the one
//! way an answer travels, so that the actor and the sessions name no family.

mod queues;
mod schedules;
mod settings;
mod tasks;
mod type_defaults;

pub(in crate::coordinator) use settings::shown_settings;

use super::{Effects, Leader};
use crate::shard::{Applied, TaskTable};
use dtc_proto::WireError;
use dtc_proto::status::{AdminRequest, AdminResponse};
use std::time::Instant;
use tokio::sync::oneshot;

/// Where an operator's answer goes, with the form its error takes for the request asked.
#[derive(Debug)]
pub(in crate::coordinator) struct AdminReply {
    tx: oneshot::Sender<AdminResponse>,
    failed: fn(WireError) -> AdminResponse,
}

impl AdminReply {
    /// Where the answer to `request` goes.
    fn new(request: &AdminRequest, tx: oneshot::Sender<AdminResponse>) -> Self {
        Self {
            tx,
            failed: request.error_form(),
        }
    }

    /// Answers the operator (who may have gone: then nobody hears it).
    fn send(self, answer: AdminResponse) {
        self.tx.send(answer).ok();
    }

    /// Answers the operator with `err`.
    pub(in crate::coordinator) fn fail(self, err: WireError) {
        let answer = (self.failed)(err);
        self.send(answer);
    }

    /// Answers from what was applied, with no leader runtime left (this replica stepped
    /// down meanwhile): what the table says is answered, what needs the runtime is sent to
    /// the new leader.
    pub(super) fn answer_as_follower(self, applied: Applied, leader: Option<String>) {
        match applied {
            Applied::Configured(retention) => settings::answer(self, retention),
            Applied::Purged(n) => tasks::answer_purged(self, n),
            Applied::TypeDefaults(all) => type_defaults::answer(self, all),
            Applied::Schedule { result, .. } => schedules::answer(self, result),
            _ => self.fail(WireError::NotLeader { leader }),
        }
    }
}

impl Leader {
    /// An operator's request, decided by its family: a read answered now, a change
    /// proposed and answered once applied.
    pub(in crate::coordinator) fn admin(
        &mut self,
        request: AdminRequest,
        tx: oneshot::Sender<AdminResponse>,
        table: &TaskTable,
        now: Instant,
        out: &mut Effects,
    ) {
        let reply = AdminReply::new(&request, tx);
        match request {
            // A replica answers its own status; the actor only adds its runtime.
            AdminRequest::Status => {
                let reason = "a replica's status is not the leader's to give".to_owned();
                reply.fail(WireError::BadRequest { reason });
            }
            AdminRequest::Configure(change) => Self::configure(change, reply, table, out),
            AdminRequest::TypeDefaults { kind, options } => {
                Self::set_type_defaults(kind, options, reply, out);
            }
            AdminRequest::Tasks(query) => self.tasks(&query, reply, table, now),
            AdminRequest::Purge(state) => self.purge(state, reply, now, out),
            AdminRequest::Queues(op) => self.queues(op, reply, table, now, out),
            AdminRequest::Schedules(op) => self.schedules(op, reply, table, now, out),
        }
    }
}
