//! The leader's timers: tasks waiting for their start time (scheduled or retrying), tasks
//! that expire if not started by a time, and the deadlines of running attempts. Every time
//! is on the leader's clock (ms since the Unix epoch, as stamped on its commands).
//!
//! Timers are derived state: the table holds every due time and expiry, and a new leader
//! sets them again from it. So a timer may outlive what it was set for (the task was
//! cancelled, the attempt finished); whoever takes a due timer checks it against the table
//! and the scheduler, and ignores it if it no longer applies. Owned by the [`Leader`].
//!
//! [`Leader`]: super::leader::Leader

use dtc_proto::TaskId;
use std::collections::BTreeSet;

/// The leader's timers, each ordered by its time.
#[derive(Debug, Default)]
pub(super) struct Timers {
    /// Tasks that may start at a time: (due, task).
    starts: BTreeSet<(u64, TaskId)>,
    /// Tasks that fail if not started by a time: (expiry, task).
    expiries: BTreeSet<(u64, TaskId)>,
    /// Running attempts that must end by a time: (deadline, task, attempt).
    deadlines: BTreeSet<(u64, TaskId, u32)>,
}

/// Timers that came due.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Due {
    /// Tasks whose start time came, earliest first.
    pub starts: Vec<TaskId>,
    /// Tasks whose expiry came.
    pub expiries: Vec<TaskId>,
    /// Attempts whose deadline came.
    pub deadlines: Vec<(TaskId, u32)>,
}

impl Timers {
    /// `id` may start at `due_ms`.
    pub(super) fn start_at(&mut self, due_ms: u64, id: TaskId) {
        self.starts.insert((due_ms, id));
    }

    /// `id` fails if it has not started by `at_ms`.
    pub(super) fn expire_at(&mut self, at_ms: u64, id: TaskId) {
        self.expiries.insert((at_ms, id));
    }

    /// `attempt` of `id` must end by `at_ms`.
    pub(super) fn deadline(&mut self, at_ms: u64, id: TaskId, attempt: u32) {
        self.deadlines.insert((at_ms, id, attempt));
    }

    /// How many timers are set.
    pub(super) fn len(&self) -> usize {
        self.starts.len() + self.expiries.len() + self.deadlines.len()
    }

    /// Drops the timers of tasks `keep` says no longer need one (finished, cancelled):
    /// what bounds the timers when tasks due far ahead are cancelled over and over.
    pub(super) fn retain(&mut self, keep: impl Fn(TaskId) -> bool) {
        self.starts.retain(|(_, id)| keep(*id));
        self.expiries.retain(|(_, id)| keep(*id));
        self.deadlines.retain(|(_, id, _)| keep(*id));
    }

    /// The earliest time any timer is due.
    pub(super) fn next_ms(&self) -> Option<u64> {
        [
            self.starts.first().map(|t| t.0),
            self.expiries.first().map(|t| t.0),
            self.deadlines.first().map(|t| t.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Takes the timers due at `now_ms`: every expiry and deadline, and at most
    /// `max_starts` start times (the earliest), so that a burst of tasks due together
    /// enters the ready queue in slices and the first of them start at once.
    pub(super) fn take_due(&mut self, now_ms: u64, max_starts: usize) -> Due {
        fn split<T: Ord + Copy>(set: &mut BTreeSet<T>, first_later: T) -> Vec<T> {
            let later = set.split_off(&first_later);
            std::mem::replace(set, later).into_iter().collect()
        }
        let after = now_ms.saturating_add(1);
        let mut starts = Vec::new();
        while starts.len() < max_starts
            && let Some(&(due, id)) = self.starts.first()
            && due <= now_ms
        {
            self.starts.pop_first();
            starts.push(id);
        }
        Due {
            starts,
            expiries: split(&mut self.expiries, (after, TaskId(0)))
                .into_iter()
                .map(|(_, id)| id)
                .collect(),
            deadlines: split(&mut self.deadlines, (after, TaskId(0), 0))
                .into_iter()
                .map(|(_, id, attempt)| (id, attempt))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_come_due_in_time_order_and_only_once() {
        let mut t = Timers::default();
        t.start_at(300, TaskId(1));
        t.start_at(100, TaskId(2));
        t.start_at(100, TaskId(2));
        t.expire_at(250, TaskId(3));
        t.deadline(200, TaskId(4), 2);
        assert_eq!(t.next_ms(), Some(100));
        assert_eq!(t.take_due(99, 10), Due::default());
        let due = t.take_due(250, 10);
        assert_eq!(
            due.starts,
            vec![TaskId(2)],
            "a timer set twice is one timer"
        );
        assert_eq!(due.expiries, vec![TaskId(3)]);
        assert_eq!(due.deadlines, vec![(TaskId(4), 2)]);
        assert_eq!(t.next_ms(), Some(300));
        assert_eq!(t.take_due(250, 10), Due::default(), "taken timers are gone");
        t.start_at(290, TaskId(9));
        assert_eq!(
            t.take_due(u64::MAX, 1).starts,
            vec![TaskId(9)],
            "a slice at a time"
        );
        assert_eq!(t.next_ms(), Some(300));
        assert_eq!(t.take_due(u64::MAX, 1).starts, vec![TaskId(1)]);
        assert_eq!(t.next_ms(), None);
        t.start_at(10, TaskId(1));
        t.expire_at(20, TaskId(2));
        t.retain(|id| id == TaskId(2));
        assert_eq!(t.len(), 1, "the timer of a task that needs none is dropped");
    }
}
