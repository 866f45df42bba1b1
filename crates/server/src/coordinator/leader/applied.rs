//! What follows a command this leader proposed once it is applied: the submitter
//! answered (or kept waiting), the task enqueued, its waiters told of its end, a cancelled
//! attempt's worker told to stop; an operator's command is answered by its family in
//! `ops`. A replica that stepped down meanwhile answers from what was applied alone.

use super::{AdminReply, Effects, Leader, Then};
use crate::shard::{Applied, SubmitOutcome, TaskTable};
use dtc_proto::message::CoordMsg;
use dtc_proto::{TaskState, WireError};
use std::time::Instant;

impl Then {
    /// The operator waiting on this, if one is.
    fn admin(self) -> Option<AdminReply> {
        match self {
            Self::Admin(reply) => Some(reply),
            _ => None,
        }
    }

    /// Answers whoever waits on this with `err`.
    pub(in crate::coordinator) fn fail(self, err: &WireError) {
        match self {
            Self::Submitted { reply, .. } | Self::Answer(reply) => {
                reply.send(Err(err.clone()));
            }
            Self::Admin(reply) => reply.fail(err.clone()),
            Self::Ended(_) | Self::Nothing => {}
        }
    }

    /// Answers from what was applied, with no leader runtime left to schedule or to hold
    /// waiters (this replica stepped down meanwhile): a submitter that waits for an
    /// unfinished task is told to go to the new leader.
    pub(in crate::coordinator) fn answer_as_follower(
        self,
        applied: Applied,
        leader: Option<String>,
    ) {
        match (applied, self) {
            (
                Applied::Submitted(Ok(SubmitOutcome { view, .. })),
                Self::Submitted { reply, wait, .. },
            ) => {
                if wait && !view.state.is_finished() {
                    reply.send(Err(WireError::NotLeader { leader }));
                } else {
                    reply.send(Ok(view));
                }
            }
            (Applied::Submitted(Err(e)) | Applied::Refused(_, e), then) => {
                then.fail(&e);
            }
            (Applied::Finished(view) | Applied::Retried(view), Self::Answer(reply)) => {
                reply.send(Ok(view));
            }
            (applied, Self::Admin(reply)) => reply.answer_as_follower(applied, leader),
            (_, then) => then.fail(&WireError::NotLeader { leader }),
        }
    }
}

impl Leader {
    /// A command proposed by this leader was applied at log `index`, with `applied`.
    pub(in crate::coordinator) fn applied(
        &mut self,
        applied: Applied,
        then: Then,
        index: u64,
        table: &TaskTable,
        now: Instant,
        out: &mut Effects,
    ) {
        let fresh = index > self.rebuilt_upto;
        match (applied, then) {
            (
                Applied::Submitted(Ok(SubmitOutcome { view, created })),
                Then::Submitted { reply, wait, .. },
            ) => {
                let ran_ahead = self.early.applied(view.id);
                if created {
                    self.stats.submitted();
                } else {
                    // An existing task's id: whatever arrived under it was not new.
                    self.stats.forget(view.id);
                }
                if created && fresh {
                    if ran_ahead {
                        // Already in the ready queue (or running): only its expiry to time.
                        if let Some(at) = table.timing(view.id).and_then(|t| t.expires_at_ms) {
                            self.timers.expire_at(at, view.id);
                        }
                    } else {
                        self.enqueue(view.id, table, now);
                    }
                }
                let view = self.overlay(view, now);
                if wait && !view.state.is_finished() {
                    self.wait_for(view.id, reply);
                } else {
                    out.answers.push((reply, Ok(view)));
                }
            }
            (Applied::Submitted(Err(e)), Then::Submitted { id, reply, .. }) => {
                // A task scheduled ahead whose submit the table refused: an entry still in
                // the ready queue is dropped when its turn comes (it has no input), and a
                // run completes into nothing.
                self.stats.forget(id);
                if self.early.applied(id) {
                    self.sched.forget(id);
                }
                // Submitters of a task that ran unlogged wait for its end: tell them too.
                for waiting in self.waiters.remove(&id).unwrap_or_default() {
                    out.answers.push((waiting, Err(e.clone())));
                }
                out.answers.push((reply, Err(e)));
            }
            (Applied::Requeued(id) | Applied::Waiting(id), _) => {
                self.stats.retried();
                // The attempt that ended (a timed-out one may still be marked running).
                self.sched.forget(id);
                if fresh {
                    self.enqueue(id, table, now);
                }
            }
            (Applied::Retried(view), then) => {
                if fresh {
                    self.enqueue(view.id, table, now);
                }
                if let Then::Answer(reply) = then {
                    out.answers.push((reply, Ok(view)));
                }
            }
            (Applied::Finished(view), then) => {
                if let Some(queue) = table.queue_of(view.id) {
                    self.rates.done(queue, now);
                }
                if view.state == TaskState::Cancelled
                    && let Some((worker, attempt)) = self.sched.running_on(view.id)
                {
                    // Its worker stops it and keeps the slot until it reports that.
                    out.sends.push((
                        worker,
                        CoordMsg::Cancel {
                            id: view.id,
                            attempt,
                        },
                    ));
                }
                self.sched.forget(view.id);
                self.stats.finished(view.id, view.state, now);
                for reply in self.waiters.remove(&view.id).unwrap_or_default() {
                    out.answers.push((reply, Ok(view.clone())));
                }
                if let Then::Answer(reply) = then {
                    out.answers.push((reply, Ok(view)));
                }
            }
            (Applied::Refused(_, e), Then::Answer(reply)) => {
                out.answers.push((reply, Err(e)));
            }
            (Applied::Configured(retention), then) => Self::configured(retention, then.admin()),
            (Applied::Purged(n), then) => Self::purged(n, then.admin()),
            (Applied::TypeDefaults(all), then) => Self::type_defaults_set(all, then.admin()),
            (Applied::QueueRates(limits), then) => {
                self.queue_rates_set(limits, then.admin(), table, now);
            }
            (Applied::QueuesPaused(paused), then) => {
                self.queues_paused(paused, then.admin(), table, now);
            }
            (Applied::Fired(created), _) => self.fired(created, fresh, table, now),
            (
                Applied::Schedule {
                    name,
                    result,
                    created,
                },
                then,
            ) => self.schedule_changed(&name, result, created, then.admin(), fresh, table, now),
            (Applied::Nothing, Then::Ended(id)) => {
                // A stale attempt ended; the current one may have been lost with an earlier
                // connection of the same worker. Make sure the task can still run.
                if self.ready && self.sched.running_on(id).is_none() {
                    self.enqueue(id, table, now);
                }
            }
            (applied, then @ (Then::Submitted { .. } | Then::Answer(_) | Then::Admin(_))) => {
                tracing::error!(?applied, "a command yielded an unexpected result");
                then.fail(&WireError::Unavailable {
                    reason: "internal error".into(),
                });
            }
            (
                Applied::Submitted(_) | Applied::Refused(..) | Applied::Nothing,
                Then::Nothing | Then::Ended(_),
            ) => {}
        }
    }
}
