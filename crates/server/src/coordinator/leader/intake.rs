//! A client's requests as the leader takes them: a submit run ahead of its commit where
//! the table allows (or unlogged while its submitter waits), cancels and retries proposed,
//! lookups answered after the proposals before them, waiters kept until their task ends,
//! and the task as a client sees it (the table's view with what only the leader knows).

use super::{Effects, Leader, Read, Then};
use crate::net::Reply;
use crate::sched::Ready;
use crate::shard::{Command, Listed, TaskTable};
use dtc_proto::message::RequestBody;
use dtc_proto::status::{Cursor, StateCounts, TaskPage, TaskQuery};
use dtc_proto::{TaskId, TaskState, TaskView, WireError};
use std::time::Instant;

impl Leader {
    /// A client's request.
    pub(in crate::coordinator) fn request(
        &mut self,
        body: RequestBody,
        reply: Reply,
        table: &TaskTable,
        now: Instant,
        out: &mut Effects,
    ) {
        let at_ms = self.clock.at(now);
        match body {
            RequestBody::Submit { task, wait } => {
                if let Err(e) = task.check(self.config.max_payload) {
                    out.answers.push((reply, Err(e)));
                    return;
                }
                let reply = if wait {
                    // Another submitter waiting for a task that runs unlogged joins it.
                    match self.early.wait_unlogged(task.id, reply) {
                        Ok(()) => return,
                        Err(reply) => reply,
                    }
                } else {
                    // This submitter wants an acknowledgement now: log the task (if it
                    // runs unlogged).
                    self.log_unlogged(task.id, at_ms, out);
                    reply
                };
                let id = task.id;
                // Some tasks run only once the table holds them (and with it their type's
                // defaults).
                let plain = task.options.as_deref().is_none_or(|o| !o.needs_table())
                    && table.type_defaults(&task.kind).is_none();
                let new = plain
                    && self.ready
                    && !self.early.submitting(id)
                    && table.admits(&task, self.early.ahead()).is_ok_and(|new| new);
                if new {
                    self.stats.arrived(id, now);
                    let ready = Ready {
                        queue: task.queue(),
                        priority: task.priority(),
                        key: None,
                        since_ms: at_ms,
                    };
                    self.sched.enqueue(id, &task.kind, ready);
                    if wait {
                        self.early.run_unlogged(task, reply);
                        return;
                    }
                    self.early.run_ahead(task.clone());
                } else {
                    self.early.proposing(id);
                }
                out.propose.push((
                    Command::Submit { spec: task, at_ms },
                    Then::Submitted { id, reply, wait },
                ));
            }
            // Answered once the proposals before it are applied, so that a lookup sees the
            // submits that came before it.
            RequestBody::Get { id, wait } => out.reads.push((id, wait, reply)),
            // A running task's worker is told to stop once the cancel is committed.
            RequestBody::Cancel { id } => {
                self.log_unlogged(id, at_ms, out);
                out.propose
                    .push((Command::Cancel { id, at_ms }, Then::Answer(reply)));
            }
            RequestBody::Retry { id } => {
                out.propose
                    .push((Command::Retry { id, at_ms }, Then::Answer(reply)));
            }
            // Client sessions take waits back themselves; none reaches here.
            RequestBody::Unwait { .. } => out.answers.push((
                reply,
                Err(WireError::BadRequest {
                    reason: "only a router's connection takes waits back".into(),
                }),
            )),
        }
    }

    /// Drops the waiting requests nobody wants an answer for any more (their clients
    /// left), giving back what they hold of their connections' bounds.
    pub(in crate::coordinator) fn drop_abandoned(&mut self) {
        self.waiters.retain(|_, waiting| {
            waiting.retain(|r| !r.is_abandoned());
            !waiting.is_empty()
        });
        self.early.drop_abandoned();
    }

    /// Logs the submit of a task that has so far run unlogged (if it is one). Its waiting
    /// submitters are answered when it finishes.
    pub(super) fn log_unlogged(&mut self, id: TaskId, at_ms: u64, out: &mut Effects) {
        let Some((spec, replies)) = self.early.log(id) else {
            return;
        };
        let mut replies = replies.into_iter();
        let then = match replies.next() {
            Some(reply) => Then::Submitted {
                id,
                reply,
                wait: true,
            },
            None => Then::Nothing,
        };
        for reply in replies {
            self.wait_for(id, reply);
        }
        out.propose.push((Command::Submit { spec, at_ms }, then));
    }

    /// Answers `reply` when the task finishes, unless nobody wants it any more. Waiters
    /// whose client has gone are dropped here too, besides [`Leader::drop_abandoned`].
    pub(super) fn wait_for(&mut self, id: TaskId, reply: Reply) {
        if reply.is_abandoned() {
            return;
        }
        let waiting = self.waiters.entry(id).or_default();
        waiting.retain(|r| !r.is_abandoned());
        waiting.push(reply);
    }

    /// A lookup, answered from the table with what this leader knows of running tasks.
    pub(in crate::coordinator) fn read(
        &mut self,
        read: Read,
        table: &TaskTable,
        now: Instant,
        out: &mut Effects,
    ) {
        let (id, wait, reply) = read;
        match self.view(id, table, now) {
            None => out.answers.push((reply, Err(WireError::NotFound))),
            Some(v) if wait && !v.state.is_finished() => self.wait_for(id, reply),
            Some(v) => out.answers.push((reply, Ok(v))),
        }
    }

    /// The task as a client sees it: the table's view, with what only the leader knows.
    pub(super) fn view(&self, id: TaskId, table: &TaskTable, now: Instant) -> Option<TaskView> {
        let v = table
            .view(id)
            .or_else(|| self.early.view(id, self.clock.at(now)));
        v.map(|v| self.overlay(v, now))
    }

    /// A table's view with `Running` where the task runs, `Queued` where its time has
    /// come and it waits for a slot, and whether any worker can run it.
    pub(super) fn overlay(&self, mut view: TaskView, now: Instant) -> TaskView {
        if view.state.is_finished() {
            return view;
        }
        if self.sched.running_on(view.id).is_some() {
            view.state = TaskState::Running;
            view.attempts += 1;
            view.due_ms = None;
            view.progress = self.progress.get(&view.id).cloned();
            return view;
        }
        if view.due_ms.is_some_and(|due| due <= self.clock.at(now)) {
            view.state = TaskState::Queued;
            view.due_ms = None;
        }
        view.no_handler = !self.sched.handles(&view.kind);
        view
    }

    /// A page of the shard's tasks, newest first, as clients see them (running where they
    /// run). A scan of the whole table.
    pub(super) fn list(&self, query: &TaskQuery, table: &TaskTable, now: Instant) -> TaskPage {
        let limit = query.limit.clamp(1, TaskQuery::MAX_LIMIT) as usize;
        let now_ms = self.clock.at(now);
        let mut found: Vec<Cursor> = table
            .scan(query.before, query.kind.as_deref())
            .filter(|t| {
                query
                    .state
                    .is_none_or(|want| self.shown_state(t, now_ms) == want)
            })
            .map(|t| t.at)
            .collect();
        let newest_first = |a: &Cursor, b: &Cursor| b.cmp(a);
        if found.len() > limit {
            found.select_nth_unstable_by(limit, newest_first);
            found.truncate(limit + 1);
        }
        found.sort_unstable_by(newest_first);
        let next = (found.len() > limit).then(|| found[limit - 1]);
        found.truncate(limit);
        let tasks = found
            .iter()
            .filter_map(|at| self.view(at.id, table, now))
            .collect();
        TaskPage { tasks, next }
    }

    /// A listed task's state as clients see it (see [`Leader::overlay`]).
    pub(super) fn shown_state(&self, t: &Listed, now_ms: u64) -> TaskState {
        if t.state.is_finished() {
            t.state
        } else if self.sched.running_on(t.at.id).is_some() {
            TaskState::Running
        } else if t.due_ms.is_some_and(|due| due <= now_ms) {
            TaskState::Queued
        } else {
            t.state
        }
    }

    /// How many tasks are in each state, running ones as this leader runs them.
    pub(in crate::coordinator) fn state_counts(&self, table: &TaskTable) -> StateCounts {
        let mut counts = table.state_counts();
        for id in self.sched.running_tasks() {
            if let Some(v) = table.view(id).filter(|v| !v.state.is_finished()) {
                counts.sub(v.state);
            }
            counts.add(TaskState::Running);
        }
        counts
    }
}
