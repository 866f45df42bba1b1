//! The queues family: which queues are paused and which are rate-limited, replicated
//! settings changed by `PauseQueue` and `LimitQueue`, each bounded in number.

use super::TaskTable;
use crate::shard::Applied;
use dtc_proto::WireError;
use dtc_proto::status::{MAX_LIMITED_QUEUES, MAX_PAUSED_QUEUES};

impl TaskTable {
    /// The queues whose tasks are held, sorted.
    pub fn paused_queues(&self) -> &[String] {
        &self.settings.paused_queues
    }

    pub(super) fn pause_queue(&mut self, queue: String, paused: bool) -> Applied {
        if let Err(e) = dtc_proto::check_queue_name(&queue) {
            return Applied::QueuesPaused(Err(e));
        }
        let all = &mut self.settings.paused_queues;
        match (all.binary_search(&queue), paused) {
            (Ok(_), true) | (Err(_), false) => {}
            (Ok(i), false) => {
                all.remove(i);
            }
            (Err(_), true) if all.len() >= MAX_PAUSED_QUEUES => {
                let reason = format!(
                    "at most {MAX_PAUSED_QUEUES} queues may be paused at once; resume one first"
                );
                return Applied::QueuesPaused(Err(WireError::BadRequest { reason }));
            }
            (Err(i), true) => all.insert(i, queue),
        }
        Applied::QueuesPaused(Ok(all.clone()))
    }

    /// The rate-limited queues and their starts per hour, sorted by name.
    pub fn queue_rates(&self) -> &[(String, u64)] {
        &self.settings.queue_rates
    }

    pub(super) fn limit_queue(&mut self, queue: String, per_hour: Option<u64>) -> Applied {
        if let Err(e) = dtc_proto::check_queue_name(&queue) {
            return Applied::QueueRates(Err(e));
        }
        let all = &mut self.settings.queue_rates;
        let at = all.binary_search_by(|(q, _)| q.as_str().cmp(&queue));
        match (at, per_hour) {
            (_, Some(0)) => {
                let reason = "a rate limit must allow at least 1 task an hour".to_owned();
                return Applied::QueueRates(Err(WireError::BadRequest { reason }));
            }
            (Err(_), None) => {}
            (Ok(i), None) => {
                all.remove(i);
            }
            (Ok(i), Some(rate)) => all[i].1 = rate,
            (Err(_), Some(_)) if all.len() >= MAX_LIMITED_QUEUES => {
                let reason = format!(
                    "at most {MAX_LIMITED_QUEUES} queues may be rate-limited; lift a limit first"
                );
                return Applied::QueueRates(Err(WireError::BadRequest { reason }));
            }
            (Err(i), Some(rate)) => all.insert(i, (queue, rate)),
        }
        Applied::QueueRates(Ok(all.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::{Command, Retention};

    #[test]
    fn paused_queues_are_a_replicated_setting_kept_in_snapshots() {
        let mut t = TaskTable::new(Retention::default());
        let pause = |t: &mut TaskTable, q: &str, paused: bool| {
            t.apply(Command::PauseQueue {
                queue: q.into(),
                paused,
            })
        };
        assert_eq!(
            pause(&mut t, "b", true),
            Applied::QueuesPaused(Ok(vec!["b".into()]))
        );
        pause(&mut t, "a", true);
        pause(&mut t, "a", true);
        assert_eq!(t.paused_queues(), ["a", "b"]);
        assert_eq!(
            pause(&mut t, "b", false),
            Applied::QueuesPaused(Ok(vec!["a".into()]))
        );
        assert!(matches!(
            pause(&mut t, "not a name", true),
            Applied::QueuesPaused(Err(WireError::BadRequest { .. }))
        ));
        let restored = TaskTable::restore(&t.image().encode());
        assert_eq!(
            restored.map(|r| r.paused_queues().to_vec()).ok(),
            Some(vec!["a".to_string()])
        );
    }

    #[test]
    fn queue_rate_limits_are_a_bounded_replicated_setting_kept_in_snapshots() {
        let mut t = TaskTable::new(Retention::default());
        let limit = |t: &mut TaskTable, q: &str, per_hour: Option<u64>| {
            t.apply(Command::LimitQueue {
                queue: q.into(),
                per_hour,
            })
        };
        limit(&mut t, "b", Some(7));
        limit(&mut t, "a", Some(3600));
        assert_eq!(
            limit(&mut t, "b", Some(60)),
            Applied::QueueRates(Ok(vec![("a".into(), 3600), ("b".into(), 60)]))
        );
        assert_eq!(
            limit(&mut t, "a", None),
            Applied::QueueRates(Ok(vec![("b".into(), 60)]))
        );
        for refused in [
            limit(&mut t, "c", Some(0)),
            limit(&mut t, "no name", Some(1)),
        ] {
            assert!(matches!(
                refused,
                Applied::QueueRates(Err(WireError::BadRequest { .. }))
            ));
        }
        for n in 1..MAX_LIMITED_QUEUES {
            limit(&mut t, &format!("q{n}"), Some(1));
        }
        assert!(matches!(
            limit(&mut t, "one-too-many", Some(1)),
            Applied::QueueRates(Err(WireError::BadRequest { .. }))
        ));
        assert_eq!(t.queue_rates().len(), MAX_LIMITED_QUEUES);
        let restored = TaskTable::restore(&t.image().encode());
        assert_eq!(
            restored.map(|r| r.queue_rates().to_vec()).ok(),
            Some(t.queue_rates().to_vec())
        );
    }
}
