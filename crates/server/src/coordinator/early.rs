//! The tasks a leader knows before the table does: one map for every task that may run
//! before its submit is applied, owned by the leader's runtime.
//!
//! A new task does not wait for its submit to commit before it runs: the ready leader hands
//! it to a worker at once (its input came with the request), so the submit's commit
//! overlaps the run. A submitter that waits for the result is acknowledged by the result
//! itself, so its task is not even logged on arrival: it runs *unlogged*, and its submit
//! and completion go into the log together. Anything that needs it durable earlier — a
//! submit without wait, a cancel, a lost worker — logs its submit at once. Each task here
//! also counts its submits proposed and not yet applied.

use crate::net::Reply;
use crate::shard::Input;
use dtc_proto::hash::HashMap;
use dtc_proto::{TaskId, TaskSpec, TaskState, TaskView};

/// A task the table may not hold yet.
struct Early {
    /// Its spec, while it may run before the table holds it.
    spec: Option<TaskSpec>,
    /// Its waiting submitters, while nothing about it is logged.
    unlogged: Option<Vec<Reply>>,
    /// Its submits proposed and not yet applied.
    submits: u32,
}

/// Every task whose submit is not applied yet, or that runs ahead of it.
#[derive(Default)]
pub(super) struct EarlyTasks {
    tasks: HashMap<TaskId, Early>,
    /// How many hold a spec (run ahead of the table): they count against the queue bound.
    ahead: usize,
}

impl EarlyTasks {
    /// How many tasks run ahead of the table (queued or running, not in it yet).
    pub(super) fn ahead(&self) -> usize {
        self.ahead
    }

    /// Whether a submit of `id` is proposed and not yet applied.
    pub(super) fn submitting(&self, id: TaskId) -> bool {
        self.tasks.get(&id).is_some_and(|e| e.submits > 0)
    }

    /// What a lookup of an unlogged task shows (`created_ms`: now, as good as any time
    /// before it is logged); `None` if `id` is not one.
    pub(super) fn view(&self, id: TaskId, created_ms: u64) -> Option<TaskView> {
        let e = self.tasks.get(&id).filter(|e| e.unlogged.is_some())?;
        let spec = e.spec.as_ref();
        Some(TaskView {
            id,
            kind: spec.map_or_else(|| "".into(), |s| s.kind.as_str().into()),
            state: TaskState::Queued,
            attempts: 0,
            outcome: None,
            created_ms,
            due_ms: None,
            finished_ms: None,
            errors: Vec::new(),
            no_handler: false,
            queue: spec
                .filter(|s| s.queue() != TaskSpec::DEFAULT_QUEUE)
                .map(|s| s.queue().to_owned()),
            priority: spec.map_or(0, TaskSpec::priority),
            concurrency: spec.and_then(|s| s.concurrency().cloned()),
            progress: None,
        })
    }

    /// Adds a submitter waiting for an unlogged task; hands `reply` back if `id` is not one.
    pub(super) fn wait_unlogged(&mut self, id: TaskId, reply: Reply) -> Result<(), Reply> {
        match self.tasks.get_mut(&id).and_then(|e| e.unlogged.as_mut()) {
            Some(replies) => {
                replies.push(reply);
                Ok(())
            }
            None => Err(reply),
        }
    }

    /// A new task that runs before anything is logged, for a submitter waiting for it.
    pub(super) fn run_unlogged(&mut self, spec: TaskSpec, reply: Reply) {
        self.insert(spec, Some(vec![reply]), 0);
    }

    /// A new task that runs ahead of its submit, now proposed.
    pub(super) fn run_ahead(&mut self, spec: TaskSpec) {
        self.insert(spec, None, 1);
    }

    fn insert(&mut self, spec: TaskSpec, unlogged: Option<Vec<Reply>>, submits: u32) {
        let id = spec.id;
        let early = Early {
            spec: Some(spec),
            unlogged,
            submits,
        };
        if let Some(old) = self.tasks.insert(id, early)
            && old.spec.is_some()
        {
            self.ahead -= 1;
        }
        self.ahead += 1;
    }

    /// A submit of `id` (known to the table or not) is proposed.
    pub(super) fn proposing(&mut self, id: TaskId) {
        self.tasks
            .entry(id)
            .or_insert(Early {
                spec: None,
                unlogged: None,
                submits: 0,
            })
            .submits += 1;
    }

    /// An unlogged task is to be logged now: its spec (it keeps running ahead) and its
    /// waiting submitters. `None` if `id` does not run unlogged.
    pub(super) fn log(&mut self, id: TaskId) -> Option<(TaskSpec, Vec<Reply>)> {
        let e = self.tasks.get_mut(&id)?;
        let replies = e.unlogged.take()?;
        let spec = e.spec.clone()?;
        e.submits += 1;
        Some((spec, replies))
    }

    /// A submit of `id` has been applied (or refused): one fewer in flight. Returns whether
    /// the task ran ahead of it (it is the table's from now on).
    pub(super) fn applied(&mut self, id: TaskId) -> bool {
        let Some(e) = self.tasks.get_mut(&id) else {
            return false;
        };
        e.submits = e.submits.saturating_sub(1);
        let ran_ahead = e.unlogged.is_none() && e.spec.take().is_some();
        if ran_ahead {
            self.ahead -= 1;
        }
        if e.spec.is_none() && e.submits == 0 {
            self.tasks.remove(&id);
        }
        ran_ahead
    }

    /// The next attempt and input of a task that runs ahead of the table.
    pub(super) fn input(&self, id: TaskId) -> Option<Input<'_>> {
        let spec = self.tasks.get(&id)?.spec.as_ref()?;
        Some(Input {
            attempt: 1,
            kind: &spec.kind,
            payload: &spec.payload,
            // Only untimed tasks run ahead.
            timeout_ms: None,
            queue: spec.queue(),
            priority: spec.priority(),
            // Keyed tasks never run ahead: the key's count comes from the table.
            key: None,
            // It entered the scheduler when it arrived; this input only starts it.
            since_ms: 0,
        })
    }

    /// Drops the waiting submitters nobody wants an answer for any more.
    pub(super) fn drop_abandoned(&mut self) {
        for waiting in self.tasks.values_mut().filter_map(|e| e.unlogged.as_mut()) {
            waiting.retain(|r| !r.is_abandoned());
        }
    }

    /// Every unlogged task's waiting submitters, the map emptied.
    pub(super) fn drain_waiting(&mut self) -> impl Iterator<Item = Reply> + use<> {
        self.ahead = 0;
        std::mem::take(&mut self.tasks)
            .into_values()
            .filter_map(|e| e.unlogged)
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn spec(n: u128) -> TaskSpec {
        TaskSpec {
            id: TaskId(n),
            kind: "noop".into(),
            payload: Bytes::from_static(b"x"),
            max_attempts: 1,
            options: None,
        }
    }

    #[test]
    fn a_task_run_ahead_is_the_tables_once_its_submit_is_applied() {
        let mut early = EarlyTasks::default();
        early.run_ahead(spec(1));
        assert_eq!(early.ahead(), 1);
        assert!(early.submitting(TaskId(1)));
        assert_eq!(
            early.input(TaskId(1)).map(|i| (i.attempt, i.kind)),
            Some((1, "noop"))
        );
        assert!(early.applied(TaskId(1)));
        assert_eq!(early.ahead(), 0);
        assert!(!early.submitting(TaskId(1)));
        assert!(early.input(TaskId(1)).is_none());
        assert!(!early.applied(TaskId(1)), "nothing left to apply");
    }

    #[test]
    fn an_unlogged_task_keeps_its_submitters_until_it_is_logged() -> Result<(), String> {
        let mut early = EarlyTasks::default();
        let (first, _rx1) = Reply::for_test(1);
        let (second, _rx2) = Reply::for_test(2);
        early.run_unlogged(spec(7), first);
        assert!(early.view(TaskId(7), 0).is_some());
        assert!(!early.submitting(TaskId(7)));
        assert!(early.wait_unlogged(TaskId(7), second).is_ok());
        let (third, _rx3) = Reply::for_test(3);
        assert!(early.wait_unlogged(TaskId(8), third).is_err());
        // An unlogged task's submit applied by someone else's proposal does not end it.
        early.proposing(TaskId(7));
        assert!(!early.applied(TaskId(7)));
        assert!(early.view(TaskId(7), 0).is_some());
        let (logged, replies) = early.log(TaskId(7)).ok_or("task 7 runs unlogged")?;
        assert_eq!(logged.id, TaskId(7));
        assert_eq!(replies.len(), 2);
        assert!(early.view(TaskId(7), 0).is_none());
        assert!(early.submitting(TaskId(7)));
        assert_eq!(
            early.ahead(),
            1,
            "it still runs ahead until its submit applies"
        );
        assert!(early.applied(TaskId(7)));
        assert_eq!(early.ahead(), 0);
        Ok(())
    }

    #[test]
    fn submits_of_known_tasks_are_counted_without_running_ahead() {
        let mut early = EarlyTasks::default();
        early.proposing(TaskId(3));
        early.proposing(TaskId(3));
        assert!(early.submitting(TaskId(3)));
        assert_eq!(early.ahead(), 0);
        assert!(!early.applied(TaskId(3)));
        assert!(early.submitting(TaskId(3)));
        assert!(!early.applied(TaskId(3)));
        assert!(!early.submitting(TaskId(3)));
    }

    #[test]
    fn draining_answers_every_unlogged_submitter() {
        let mut early = EarlyTasks::default();
        let (a, _ra) = Reply::for_test(1);
        let (b, _rb) = Reply::for_test(2);
        early.run_unlogged(spec(1), a);
        early.run_unlogged(spec(2), b);
        early.run_ahead(spec(3));
        assert_eq!(early.drain_waiting().count(), 2);
        assert_eq!(early.ahead(), 0);
        assert!(!early.submitting(TaskId(3)));
    }
}
