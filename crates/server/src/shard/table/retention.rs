//! The retention family: how long and how many finished tasks are kept and how many may
//! wait ([`Retention`], set by `Configure`), the forgetting of finished tasks past those
//! bounds, and purges.

use super::TaskTable;
use super::record::Phase;
use crate::shard::Applied;
use dtc_proto::{Outcome, TaskId, TaskState};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The shard's settings: how long and how many finished tasks are kept, and how many may
/// wait in the queue. Part of the replicated table: set by the shard's first leader from its
/// flags, changed by an operator through the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Succeeded and cancelled tasks are forgotten this many ms after they finished.
    pub result_ttl_ms: u64,
    /// At most this many succeeded and cancelled tasks are kept; the oldest go first.
    pub max_results: usize,
    /// At most this many tasks may be unfinished; a submit past it is `Overloaded`.
    pub max_queued: usize,
    /// Failed tasks are kept this many ms (to be seen, retried or purged).
    pub failed_ttl_ms: u64,
    /// At most this many failed tasks are kept; the oldest go first.
    pub max_failed: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            result_ttl_ms: 10 * 60 * 1000,
            max_results: 200_000,
            max_queued: 100_000,
            failed_ttl_ms: 7 * 24 * 3600 * 1000,
            max_failed: 100_000,
        }
    }
}

impl TaskTable {
    /// Sets the shard's settings (the first leader's flags, or an operator's change) and
    /// forgets at once what the new bounds no longer keep.
    pub(super) fn configure(&mut self, retention: Retention) -> Applied {
        self.settings.retention = retention;
        self.settings.configured = true;
        self.trim();
        Applied::Configured(retention)
    }

    /// The settings in force.
    pub fn retention(&self) -> Retention {
        self.settings.retention
    }

    /// Forgets the oldest finished tasks past the bounds on their number.
    pub(super) fn trim(&mut self) {
        let r = self.settings.retention;
        while self.finished.len() > r.max_results {
            if let Some((_, old)) = self.finished.pop_front() {
                self.remove(old);
            }
        }
        while self.failed_len > r.max_failed {
            let Some(entry) = self.failed.pop_front() else {
                break;
            };
            self.forget_failed(entry);
        }
        // Entries of tasks retried since they failed are skipped when they come first;
        // drop them sooner if many accumulate.
        if self.failed.len() > 2 * self.failed_len + 1024 {
            let tasks = &self.tasks;
            self.failed.retain(|(at, id)| {
                tasks.get(id).is_some_and(|r| {
                    matches!(&r.phase, Phase::Done { outcome: Outcome::Failed(_), at_ms } if at_ms == at)
                })
            });
        }
    }

    /// Forgets the failed task of a `failed` entry, unless it has been retried since.
    pub(super) fn forget_failed(&mut self, (at, id): (u64, TaskId)) {
        let current = self.tasks.get(&id).is_some_and(|r| {
            matches!(&r.phase, Phase::Done { outcome: Outcome::Failed(_), at_ms } if *at_ms == at)
        });
        if current {
            self.remove(id);
            self.failed_len -= 1;
        }
    }

    /// Forgets every finished task in `state` (none if `state` is not a finished one).
    pub(super) fn purge(&mut self, state: TaskState) -> u64 {
        let before = self.tasks.len();
        match state {
            TaskState::Failed => {
                for entry in std::mem::take(&mut self.failed) {
                    self.forget_failed(entry);
                }
            }
            TaskState::Succeeded | TaskState::Cancelled => {
                let tasks = &self.tasks;
                let (gone, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.finished)
                    .into_iter()
                    .partition(|(_, id)| tasks.get(id).is_some_and(|r| r.state() == state));
                self.finished = kept;
                for (_, id) in gone {
                    self.remove(id);
                }
            }
            _ => {}
        }
        (before - self.tasks.len()) as u64
    }

    pub(super) fn remove(&mut self, id: TaskId) {
        if let Some(r) = self.tasks.remove(&id) {
            self.counts.sub(r.state());
        }
    }

    pub(super) fn expire(&mut self, at_ms: u64) {
        let r = self.settings.retention;
        let cutoff = at_ms.saturating_sub(r.result_ttl_ms);
        while let Some(&(done_at, id)) = self.finished.front() {
            if done_at > cutoff {
                break;
            }
            self.finished.pop_front();
            self.remove(id);
        }
        let cutoff = at_ms.saturating_sub(r.failed_ttl_ms);
        while let Some(&entry) = self.failed.front() {
            if entry.0 > cutoff {
                break;
            }
            self.failed.pop_front();
            self.forget_failed(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::shard::Command;
    use dtc_proto::*;

    #[test]
    fn results_and_failures_are_kept_for_bounded_times_and_counts() {
        let mut t = TaskTable::new(Retention {
            result_ttl_ms: 100,
            max_results: 3,
            max_queued: 100,
            failed_ttl_ms: 1_000,
            max_failed: 2,
        });
        for n in 0..5 {
            submit(&mut t, n, 1);
            t.apply(complete(n, 1, ok(b""), Retry::Policy, 10));
        }
        for n in 10..13 {
            submit(&mut t, n, 1);
            t.apply(fail(n, 1, 10));
        }
        assert_eq!(t.len(), 5, "the newest three results and two failures");
        assert!(t.view(TaskId(0)).is_none());
        assert!(t.view(TaskId(10)).is_none());
        assert!(t.view(TaskId(4)).is_some());
        t.apply(Command::Retry {
            id: TaskId(11),
            at_ms: 10,
        });
        t.apply(fail(11, 1, 20));
        t.apply(Command::Expire { at_ms: 110 });
        assert_eq!(t.len(), 2, "results go after 100 ms, failures stay");
        t.apply(Command::Expire { at_ms: 1_010 });
        assert_eq!(
            state(&t, 11),
            Some(TaskState::Failed),
            "failed again at 20: kept"
        );
        assert!(t.view(TaskId(12)).is_none());
        t.apply(Command::Expire { at_ms: 1_020 });
        assert!(t.is_empty());
    }

    #[test]
    fn a_purge_forgets_the_finished_tasks_of_one_state() {
        let mut t = TaskTable::new(Retention::default());
        for n in 0..6 {
            submit(&mut t, n, 1);
        }
        t.apply(fail(0, 1, 1));
        t.apply(fail(1, 1, 1));
        t.apply(complete(2, 1, ok(b""), Retry::Policy, 1));
        t.apply(Command::Cancel {
            id: TaskId(3),
            at_ms: 1,
        });
        let purge = |state| Command::Purge { state, at_ms: 2 };
        assert_eq!(
            t.apply(purge(TaskState::Queued)),
            Applied::Purged(0),
            "unfinished stay"
        );
        assert_eq!(t.apply(purge(TaskState::Failed)), Applied::Purged(2));
        assert_eq!(t.apply(purge(TaskState::Cancelled)), Applied::Purged(1));
        assert_eq!(state(&t, 2), Some(TaskState::Succeeded));
        assert_eq!(t.len(), 3);
        assert_eq!(t.state_counts().get(TaskState::Failed), 0);
        assert!(matches!(
            t.apply(Command::Retry {
                id: TaskId(0),
                at_ms: 3
            }),
            Applied::Refused(_, WireError::NotFound)
        ));
    }
}
