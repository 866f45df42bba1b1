//! The lifecycle family: a task's submit (with its admission rule and its type's
//! defaults), its attempts' ends, requeues of lost attempts, cancels, retries, expiry before
//! a first start, and its finish.

use super::TaskTable;
use super::record::{Extra, Phase, Record, set_phase, view_of};
use crate::shard::{Applied, SubmitOutcome};
use bytes::Bytes;
use dtc_proto::{Backoff, Outcome, Retry, Start, TaskId, TaskSpec, TaskState, WireError};

impl TaskTable {
    /// The one admission rule for a submit, applied by the table to every submit and by a
    /// leader deciding whether to run a task before its submit is applied: `Ok(true)` if
    /// `spec` would be a new task, `Ok(false)` if its id is known (the submit changes
    /// nothing), or why it is refused — a malformed spec, or no room in the queue with
    /// `ahead` more tasks queued outside the table (those a leader runs ahead).
    pub fn admits(&self, spec: &TaskSpec, ahead: usize) -> Result<bool, WireError> {
        if self.tasks.contains_key(&spec.id) {
            return Ok(false);
        }
        spec.check_shape()?;
        self.has_room(ahead)?;
        Ok(true)
    }

    pub(super) fn has_room(&self, ahead: usize) -> Result<(), WireError> {
        if self.unfinished + ahead >= self.settings.retention.max_queued {
            return Err(WireError::Overloaded);
        }
        Ok(())
    }

    pub(super) fn submit(
        &mut self,
        spec: TaskSpec,
        at_ms: u64,
    ) -> Result<SubmitOutcome, WireError> {
        if let Some(r) = self.tasks.get(&spec.id) {
            return Ok(SubmitOutcome {
                view: view_of(spec.id, r),
                created: false,
            });
        }
        self.admits(&spec, 0)?;
        self.expire(at_ms);
        let mut o = spec.options();
        if let Some(d) = self.type_defaults(&spec.kind) {
            o.timeout_ms = o.timeout_ms.or(d.timeout_ms);
            o.expires_ms = o.expires_ms.or(d.expires_ms);
            o.backoff = o.backoff.or(d.backoff);
            o.queue = o.queue.or_else(|| d.queue.clone());
            if o.priority == 0 {
                o.priority = d.priority;
            }
        }
        let start = match o.start {
            Start::Now => at_ms,
            Start::After(ms) => at_ms.saturating_add(ms),
            Start::At(t) => t,
        };
        let extra = Extra {
            timeout_ms: o.timeout_ms,
            expires_at_ms: o.expires_ms.map(|ms| at_ms.saturating_add(ms)),
            backoff: o.backoff,
            errors: Vec::new(),
            queue: o.queue.filter(|q| q != TaskSpec::DEFAULT_QUEUE),
            priority: o.priority,
            concurrency: o.concurrency,
        };
        let record = Record {
            kind: self.kinds.get(&spec.kind),
            payload: spec.payload,
            max_attempts: spec.max_attempts.max(1),
            ended: 0,
            phase: if start > at_ms {
                Phase::Scheduled(start)
            } else {
                Phase::Queued
            },
            created_ms: at_ms,
            extra: (extra != Extra::default()).then(|| Box::new(extra)),
        };
        let view = view_of(spec.id, &record);
        self.counts.add(record.state());
        self.tasks.insert(spec.id, record);
        self.unfinished += 1;
        Ok(SubmitOutcome {
            view,
            created: true,
        })
    }

    /// An attempt ended. Only the current attempt counts: a completion of an attempt that
    /// has already ended (lost, timed out) changes nothing.
    pub(super) fn complete(
        &mut self,
        id: TaskId,
        attempt: u32,
        outcome: Outcome,
        retry: Retry,
        at_ms: u64,
    ) -> Applied {
        let Some(r) = self.tasks.get_mut(&id) else {
            return Applied::Nothing;
        };
        // A scheduled or retrying task stays so in the table while its attempt runs.
        if r.is_done() || attempt != r.ended + 1 {
            return Applied::Nothing;
        }
        let error = match outcome {
            Outcome::Succeeded(result) => {
                r.ended = attempt;
                return self.finish(id, Outcome::Succeeded(result), at_ms);
            }
            Outcome::Failed(error) => error,
            Outcome::Cancelled => "the worker reported the attempt cancelled".to_owned(),
        };
        r.ended = attempt;
        r.record_error(&error);
        let wait = match retry {
            Retry::Never => None,
            _ if r.ended >= r.max_attempts => None,
            Retry::After(ms) => Some(ms.min(Backoff::MAX_WAIT_MS)),
            Retry::Policy => Some(r.backoff().wait_ms(id, attempt)),
        };
        match wait {
            None => self.finish(id, Outcome::Failed(error), at_ms),
            Some(0) => {
                set_phase(&mut self.counts, r, Phase::Queued);
                Applied::Requeued(id)
            }
            Some(ms) => {
                set_phase(
                    &mut self.counts,
                    r,
                    Phase::Retrying(at_ms.saturating_add(ms)),
                );
                Applied::Waiting(id)
            }
        }
    }

    /// The running attempt was lost with its worker: it runs again at once while attempts
    /// remain (the task did not fail; its worker did).
    pub(super) fn requeue(&mut self, id: TaskId, attempt: u32, at_ms: u64) -> Applied {
        let Some(r) = self.tasks.get_mut(&id) else {
            return Applied::Nothing;
        };
        if r.is_done() || attempt != r.ended + 1 {
            return Applied::Nothing;
        }
        r.ended += 1;
        set_phase(&mut self.counts, r, Phase::Queued);
        r.record_error("the worker running it was lost");
        if r.ended < r.max_attempts {
            return Applied::Requeued(id);
        }
        let reason = format!(
            "gave up after {} attempts: the worker running it was lost",
            r.ended
        );
        self.finish(id, Outcome::Failed(reason), at_ms)
    }

    pub(super) fn cancel(&mut self, id: TaskId, at_ms: u64) -> Applied {
        match self.tasks.get(&id) {
            None => Applied::Refused(id, WireError::NotFound),
            Some(r) if r.is_done() => Applied::Refused(
                id,
                WireError::BadRequest {
                    reason: format!("the task has already finished ({})", r.state().name()),
                },
            ),
            Some(_) => self.finish(id, Outcome::Cancelled, at_ms),
        }
    }

    /// A failed task runs again, with fresh attempts (its past errors are kept).
    pub(super) fn retry(&mut self, id: TaskId) -> Applied {
        let room = self.has_room(0);
        let Some(r) = self.tasks.get_mut(&id) else {
            return Applied::Refused(id, WireError::NotFound);
        };
        if r.state() != TaskState::Failed {
            let reason = format!(
                "only failed tasks can be retried; this one is {}",
                r.state().name()
            );
            return Applied::Refused(id, WireError::BadRequest { reason });
        }
        if let Err(e) = room {
            return Applied::Refused(id, e);
        }
        set_phase(&mut self.counts, r, Phase::Queued);
        r.ended = 0;
        if let Some(extra) = &mut r.extra {
            extra.expires_at_ms = None;
        }
        let view = view_of(id, r);
        self.failed_len -= 1;
        self.unfinished += 1;
        Applied::Retried(view)
    }

    /// A task not started by its expiry fails as expired (the leader proposes this only for
    /// a task it does not run).
    pub(super) fn lapse(&mut self, id: TaskId, at_ms: u64) -> Applied {
        let Some(r) = self.tasks.get(&id) else {
            return Applied::Nothing;
        };
        let lapsed = !r.is_done() && r.ended == 0 && r.expires_at_ms().is_some_and(|t| t <= at_ms);
        if !lapsed {
            return Applied::Nothing;
        }
        let waited = at_ms.saturating_sub(r.created_ms);
        let reason = format!("expired: not started within {waited} ms of being submitted");
        self.finish(id, Outcome::Failed(reason), at_ms)
    }

    pub(super) fn finish(&mut self, id: TaskId, outcome: Outcome, at_ms: u64) -> Applied {
        let Some(r) = self.tasks.get_mut(&id) else {
            return Applied::Nothing;
        };
        let failed = matches!(outcome, Outcome::Failed(_));
        if !failed {
            // Only a failed task may run again: the others keep just what their view shows.
            r.payload = Bytes::new();
        }
        set_phase(&mut self.counts, r, Phase::Done { outcome, at_ms });
        let view = view_of(id, r);
        self.unfinished -= 1;
        if failed {
            self.failed_len += 1;
            self.failed.push_back((at_ms, id));
        } else {
            self.finished.push_back((at_ms, id));
        }
        self.trim();
        Applied::Finished(view)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::shard::{Command, Retention};
    use dtc_proto::*;

    #[test]
    fn submit_is_idempotent_and_returns_the_result() {
        let mut t = TaskTable::new(Retention::default());
        assert!(matches!(
            submit(&mut t, 1, 3),
            Applied::Submitted(Ok(SubmitOutcome { created: true, .. }))
        ));
        assert!(matches!(
            submit(&mut t, 1, 3),
            Applied::Submitted(Ok(SubmitOutcome { created: false, .. }))
        ));
        let done = t.apply(complete(1, 1, ok(b"r"), Retry::Policy, 5));
        assert!(matches!(done, Applied::Finished(ref v) if v.state == TaskState::Succeeded));
        match submit(&mut t, 1, 3) {
            Applied::Submitted(Ok(s)) => {
                assert!(!s.created);
                assert_eq!(s.view.outcome, Some(ok(b"r")));
                assert_eq!(&*s.view.kind, "noop");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(t.unfinished_len(), 0);
    }

    #[test]
    fn a_failed_attempt_retries_after_its_backoff_and_the_errors_are_kept() {
        let mut t = TaskTable::new(Retention::default());
        t.apply(Command::Submit {
            spec: spec(1, 3).with_backoff(EXACT),
            at_ms: 1_000,
        });
        assert_eq!(t.apply(fail(1, 1, 2_000)), Applied::Waiting(TaskId(1)));
        let v = t.view(TaskId(1)).unwrap_or_else(|| panic!("kept"));
        assert_eq!((v.state, v.due_ms), (TaskState::Retrying, Some(2_100)));
        assert!(
            t.runnable(TaskId(1), 2_099).is_none(),
            "not before its time"
        );
        assert_eq!(t.runnable(TaskId(1), 2_100).map(|r| r.attempt), Some(2));
        assert_eq!(
            t.apply(fail(1, 1, 2_150)),
            Applied::Nothing,
            "a stale failure"
        );
        assert_eq!(t.apply(fail(1, 2, 2_200)), Applied::Waiting(TaskId(1)));
        assert_eq!(
            t.timing(TaskId(1)).map(|t| t.due_ms),
            Some(2_400),
            "doubled"
        );
        match t.apply(fail(1, 3, 2_500)) {
            Applied::Finished(v) => {
                assert_eq!(v.state, TaskState::Failed);
                assert_eq!(v.attempts, 3);
                assert_eq!(v.errors, ["boom 1", "boom 2", "boom 3"]);
                assert_eq!(v.outcome, Some(Outcome::Failed("boom 3".into())));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_fatal_error_ends_the_task_and_retry_after_sets_the_time() {
        let mut t = TaskTable::new(Retention::default());
        submit(&mut t, 1, 5);
        submit(&mut t, 2, 5);
        let fatal = complete(1, 1, Outcome::Failed("bad input".into()), Retry::Never, 10);
        assert!(matches!(t.apply(fatal), Applied::Finished(v) if v.state == TaskState::Failed));
        let later = complete(
            2,
            1,
            Outcome::Failed("busy".into()),
            Retry::After(5_000),
            10,
        );
        assert_eq!(t.apply(later), Applied::Waiting(TaskId(2)));
        assert_eq!(t.timing(TaskId(2)).map(|t| t.due_ms), Some(5_010));
        let now = complete(
            2,
            2,
            Outcome::Failed("again".into()),
            Retry::After(0),
            5_010,
        );
        assert_eq!(
            t.apply(now),
            Applied::Requeued(TaskId(2)),
            "no wait: queued"
        );
        assert_eq!(state(&t, 2), Some(TaskState::Queued));
    }

    #[test]
    fn a_failed_task_can_be_retried_with_fresh_attempts() {
        let mut t = TaskTable::new(Retention::default());
        submit(&mut t, 1, 1);
        t.apply(fail(1, 1, 5));
        assert_eq!(state(&t, 1), Some(TaskState::Failed));
        assert_eq!(t.unfinished_len(), 0);
        match t.apply(Command::Retry {
            id: TaskId(1),
            at_ms: 6,
        }) {
            Applied::Retried(v) => {
                assert_eq!((v.state, v.attempts), (TaskState::Queued, 0));
                assert_eq!(v.errors, ["boom 1"], "past errors stay");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            t.runnable(TaskId(1), 6)
                .map(|r| (r.attempt, r.payload.clone())),
            Some((1, Bytes::from_static(b"x")))
        );
        assert!(
            matches!(
                t.apply(Command::Retry {
                    id: TaskId(1),
                    at_ms: 7
                }),
                Applied::Refused(_, WireError::BadRequest { .. })
            ),
            "only a failed task"
        );
        assert!(matches!(
            t.apply(Command::Retry {
                id: TaskId(9),
                at_ms: 7
            }),
            Applied::Refused(_, WireError::NotFound)
        ));
        t.apply(complete(1, 1, ok(b"fine"), Retry::Policy, 8));
        assert_eq!(state(&t, 1), Some(TaskState::Succeeded));
    }

    #[test]
    fn a_delayed_task_is_scheduled_until_its_time() {
        let mut t = TaskTable::new(Retention::default());
        let delayed = spec(1, 1).with_delay(std::time::Duration::from_millis(3_000));
        t.apply(Command::Submit {
            spec: delayed,
            at_ms: 1_000,
        });
        let mut at = spec(2, 1);
        at.options_mut().start = Start::At(500);
        t.apply(Command::Submit {
            spec: at,
            at_ms: 1_000,
        });
        assert_eq!(state(&t, 1), Some(TaskState::Scheduled));
        assert_eq!(t.view(TaskId(1)).and_then(|v| v.due_ms), Some(4_000));
        assert_eq!(state(&t, 2), Some(TaskState::Queued), "a time past is now");
        assert!(t.runnable(TaskId(1), 3_999).is_none());
        assert!(t.runnable(TaskId(1), 4_000).is_some());
        assert_eq!(
            t.unfinished_len(),
            2,
            "scheduled tasks count against the bound"
        );
        assert!(matches!(
            t.apply(Command::Cancel { id: TaskId(1), at_ms: 1_500 }),
            Applied::Finished(v) if v.state == TaskState::Cancelled
        ));
    }

    #[test]
    fn a_task_not_started_by_its_expiry_lapses() {
        let mut t = TaskTable::new(Retention::default());
        let expiring = spec(1, 3).with_expiry(std::time::Duration::from_millis(100));
        t.apply(Command::Submit {
            spec: expiring.clone(),
            at_ms: 0,
        });
        assert_eq!(t.timing(TaskId(1)).and_then(|t| t.expires_at_ms), Some(100));
        assert!(
            t.runnable(TaskId(1), 100).is_none(),
            "not started once lapsed"
        );
        assert_eq!(
            t.apply(Command::Lapse {
                id: TaskId(1),
                at_ms: 99
            }),
            Applied::Nothing
        );
        assert!(matches!(
            t.apply(Command::Lapse {
                id: TaskId(1),
                at_ms: 100
            }),
            Applied::Finished(TaskView {
                state: TaskState::Failed,
                ..
            })
        ));
        // A task that has started once does not lapse.
        t.apply(Command::Submit {
            spec: expiring.with_id(TaskId(2)),
            at_ms: 0,
        });
        t.apply(fail(2, 1, 50));
        assert_eq!(t.timing(TaskId(2)).and_then(|t| t.expires_at_ms), None);
        assert_eq!(
            t.apply(Command::Lapse {
                id: TaskId(2),
                at_ms: 200
            }),
            Applied::Nothing
        );
    }

    #[test]
    fn lost_attempts_requeue_at_once_then_give_up() {
        let mut t = TaskTable::new(Retention::default());
        submit(&mut t, 1, 2);
        let lost = |attempt| Command::Requeue {
            id: TaskId(1),
            attempt,
            at_ms: 1,
        };
        assert_eq!(t.apply(lost(1)), Applied::Requeued(TaskId(1)));
        assert_eq!(t.apply(lost(1)), Applied::Nothing);
        assert!(matches!(
            t.apply(lost(2)),
            Applied::Finished(TaskView {
                state: TaskState::Failed,
                ..
            })
        ));
    }

    #[test]
    fn a_completion_of_an_ended_attempt_changes_nothing() {
        let mut t = TaskTable::new(Retention::default());
        submit(&mut t, 1, 3);
        t.apply(Command::Requeue {
            id: TaskId(1),
            attempt: 1,
            at_ms: 1,
        });
        assert_eq!(
            t.apply(complete(1, 1, ok(b"a"), Retry::Policy, 2)),
            Applied::Nothing
        );
        let second = t.apply(complete(1, 2, ok(b"b"), Retry::Policy, 3));
        assert!(matches!(second, Applied::Finished(ref v) if v.outcome == Some(ok(b"b"))));
        assert_eq!(
            t.apply(complete(1, 3, ok(b"c"), Retry::Policy, 4)),
            Applied::Nothing,
            "a task finishes once"
        );
    }

    #[test]
    fn queue_bound_gives_overloaded() {
        let mut t = TaskTable::new(Retention {
            max_queued: 2,
            ..Retention::default()
        });
        submit(&mut t, 1, 1);
        submit(&mut t, 2, 1);
        assert_eq!(
            submit(&mut t, 3, 1),
            Applied::Submitted(Err(WireError::Overloaded))
        );
        t.apply(Command::Cancel {
            id: TaskId(1),
            at_ms: 0,
        });
        assert!(matches!(submit(&mut t, 3, 1), Applied::Submitted(Ok(_))));
    }

    #[test]
    fn cancel_only_unfinished_tasks() {
        let mut t = TaskTable::new(Retention::default());
        submit(&mut t, 1, 1);
        assert!(matches!(
            t.apply(Command::Cancel {
                id: TaskId(1),
                at_ms: 0
            }),
            Applied::Finished(TaskView {
                state: TaskState::Cancelled,
                ..
            })
        ));
        assert!(matches!(
            t.apply(Command::Cancel {
                id: TaskId(1),
                at_ms: 0
            }),
            Applied::Refused(_, WireError::BadRequest { .. })
        ));
        assert!(matches!(
            t.apply(Command::Cancel {
                id: TaskId(9),
                at_ms: 0
            }),
            Applied::Refused(_, WireError::NotFound)
        ));
    }
}
