//! The queues family: an operator lists the queues (answered now, with what the leader
//! knows of each: ready, running, workers, rate), or pauses, resumes or rate-limits one
//! (proposed, applied to the scheduler and answered with every queue once applied).

use super::AdminReply;
use crate::coordinator::leader::{Effects, Leader, Then};
use crate::shard::{Command, TaskTable};
use dtc_proto::hash::HashMap;
use dtc_proto::status::{AdminResponse, QueueOp, QueueStatus};
use dtc_proto::{TaskSpec, WireError};
use std::time::Instant;

impl Leader {
    /// An operator's question about the queues: a list is answered now, a pause or resume
    /// once committed.
    pub(super) fn queues(
        &self,
        op: QueueOp,
        reply: AdminReply,
        table: &TaskTable,
        now: Instant,
        out: &mut Effects,
    ) {
        if let QueueOp::Pause(queue) | QueueOp::Resume(queue) | QueueOp::Limit(queue, _) = &op
            && let Err(e) = dtc_proto::check_queue_name(queue)
        {
            reply.fail(e);
            return;
        }
        let cmd = match op {
            QueueOp::List => {
                reply.send(AdminResponse::Queues(Ok(self.queue_list(table, now))));
                return;
            }
            QueueOp::Pause(queue) => Command::PauseQueue {
                queue,
                paused: true,
            },
            QueueOp::Resume(queue) => Command::PauseQueue {
                queue,
                paused: false,
            },
            QueueOp::Limit(queue, per_hour) => Command::LimitQueue { queue, per_hour },
        };
        out.propose.push((cmd, Then::Admin(reply)));
    }

    /// Every queue this leader knows of: with tasks ready or running, served by a worker,
    /// paused, or with tasks finished lately; by name.
    fn queue_list(&self, table: &TaskTable, now: Instant) -> Vec<QueueStatus> {
        let ready = self.sched.ready_by_queue();
        let workers = self.sched.workers_by_queue();
        let mut running: HashMap<String, u64> = HashMap::default();
        for id in self.sched.running_tasks() {
            let queue = table
                .queue_of(id)
                .or_else(|| self.early.input(id).map(|i| i.queue))
                .unwrap_or(TaskSpec::DEFAULT_QUEUE);
            *running.entry(queue.to_owned()).or_default() += 1;
        }
        let paused = table.paused_queues();
        let limits = table.queue_rates();
        let names: std::collections::BTreeSet<String> = ready
            .keys()
            .chain(workers.keys())
            .chain(self.rates.queues())
            .map(|q| q.to_string())
            .chain(running.keys().cloned())
            .chain(paused.iter().cloned())
            .chain(limits.iter().map(|(q, _)| q.clone()))
            .collect();
        names
            .into_iter()
            .map(|name| QueueStatus {
                queued: ready.get(name.as_str()).map_or(0, |n| *n as u64),
                running: running.get(&name).copied().unwrap_or(0),
                workers: workers.get(name.as_str()).copied().unwrap_or(0),
                paused: paused.binary_search(&name).is_ok(),
                done_per_s: self.rates.per_s(&name, now),
                rate_per_hour: limits
                    .binary_search_by(|(q, _)| q.cmp(&name))
                    .ok()
                    .and_then(|i| limits.get(i))
                    .map(|(_, rate)| *rate),
                name,
            })
            .collect()
    }

    /// The queues' rate limits are applied (or the change refused by the table).
    pub(in crate::coordinator::leader) fn queue_rates_set(
        &mut self,
        limits: Result<Vec<(String, u64)>, WireError>,
        reply: Option<AdminReply>,
        table: &TaskTable,
        now: Instant,
    ) {
        if let Ok(limits) = &limits {
            tracing::info!(?limits, "the queue rate limits are set");
            self.sched.set_rates(limits, now);
        }
        if let Some(reply) = reply {
            reply.send(AdminResponse::Queues(
                limits.map(|_| self.queue_list(table, now)),
            ));
        }
    }

    /// The paused queues are applied (or the change refused by the table).
    pub(in crate::coordinator::leader) fn queues_paused(
        &mut self,
        paused: Result<Vec<String>, WireError>,
        reply: Option<AdminReply>,
        table: &TaskTable,
        now: Instant,
    ) {
        if let Ok(paused) = &paused {
            tracing::info!(?paused, "the paused queues are set");
            self.sched.set_all_paused(paused);
        }
        if let Some(reply) = reply {
            reply.send(AdminResponse::Queues(
                paused.map(|_| self.queue_list(table, now)),
            ));
        }
    }
}
