//! The schedules family: an operator lists the schedules (answered now, with next ticks
//! from the leader's firings) or adds, pauses, resumes, triggers or deletes one (checked,
//! proposed, and answered with the schedule once applied); the leader's firings follow the
//! table, and a tick's task enters the ready queue.

use super::AdminReply;
use crate::coordinator::leader::{Effects, Leader, Then};
use crate::shard::{Command, TaskTable};
use dtc_proto::schedule::{ScheduleOp, ScheduleSpec, ScheduleStatus};
use dtc_proto::status::AdminResponse;
use dtc_proto::{TaskId, WireError};
use std::time::Instant;

impl Leader {
    /// An operator's question about the schedules: a list is answered now, a change once
    /// committed.
    pub(super) fn schedules(
        &self,
        op: ScheduleOp,
        reply: AdminReply,
        table: &TaskTable,
        now: Instant,
        out: &mut Effects,
    ) {
        let at_ms = self.clock.at(now);
        let cmd = match op {
            ScheduleOp::List { after } => {
                // Next ticks from the firings (no calendar to read per schedule).
                let page = table
                    .schedules()
                    .after(after.as_deref())
                    .take(ScheduleSpec::MAX_LISTED)
                    .map(|s| s.status_with(self.firings.next_of(&s.spec.name)))
                    .collect();
                reply.send(AdminResponse::Schedules(Ok(page)));
                return;
            }
            ScheduleOp::Add(spec) => {
                let checked = crate::shard::check_schedule(&spec).and_then(|()| {
                    let len = spec.payload.len();
                    if len > self.config.max_payload {
                        return Err(WireError::BadRequest {
                            reason: format!(
                                "the payload is {len} bytes; this cluster takes at most {} \
                                 (--max-payload)",
                                self.config.max_payload
                            ),
                        });
                    }
                    Ok(())
                });
                if let Err(e) = checked {
                    reply.fail(e);
                    return;
                }
                Command::AddSchedule {
                    spec: Box::new(spec),
                    at_ms,
                }
            }
            ScheduleOp::Pause(name) => Command::PauseSchedule {
                name,
                paused: true,
                at_ms,
            },
            ScheduleOp::Resume(name) => Command::PauseSchedule {
                name,
                paused: false,
                at_ms,
            },
            ScheduleOp::Trigger(name) => Command::TriggerSchedule { name, at_ms },
            ScheduleOp::Delete(name) => Command::DeleteSchedule { name },
        };
        out.propose.push((cmd, Then::Admin(reply)));
    }

    /// Tracks a schedule as the table now holds it (or no more, once deleted).
    pub(super) fn reload_schedule(&mut self, name: &str, table: &TaskTable) {
        match table.schedules().get(name) {
            Some(s) => self.firings.load(&s.spec, s.paused, s.last_tick_ms),
            None => self.firings.remove(name),
        }
    }

    /// A schedule's tick is applied: its task, if it made one, enters the ready queue.
    pub(in crate::coordinator::leader) fn fired(
        &mut self,
        created: Option<TaskId>,
        fresh: bool,
        table: &TaskTable,
        now: Instant,
    ) {
        if let Some(id) = created.filter(|_| fresh && self.ready) {
            self.enqueue(id, table, now);
        }
    }

    /// A change of a schedule is applied: its ticks follow the table, a task it made
    /// (a trigger) enters the ready queue, and the operator is answered.
    #[expect(clippy::too_many_arguments, reason = "what an applied change carries")]
    pub(in crate::coordinator::leader) fn schedule_changed(
        &mut self,
        name: &str,
        result: Result<Vec<ScheduleStatus>, WireError>,
        created: Option<TaskId>,
        reply: Option<AdminReply>,
        fresh: bool,
        table: &TaskTable,
        now: Instant,
    ) {
        if self.ready {
            self.reload_schedule(name, table);
        }
        self.fired(created, fresh, table, now);
        if let Some(reply) = reply {
            answer(reply, result);
        }
    }
}

/// Answers a change with the schedule as it then stands.
pub(super) fn answer(reply: AdminReply, result: Result<Vec<ScheduleStatus>, WireError>) {
    reply.send(AdminResponse::Schedules(result));
}
