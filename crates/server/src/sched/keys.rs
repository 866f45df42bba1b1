//! Concurrency keys: how many tasks of each key run, and which of a key's ready tasks may
//! enter the scheduler's lanes. Owned by the [`Scheduler`](super::Scheduler), which asks it
//! before a keyed task becomes assignable and tells it when a keyed attempt starts and
//! stops.
//!
//! A key's ready tasks wait here, best rank first; only as many enter the lanes as the key
//! has room for (`limit − running − reserved − already in a lane`, with the limit of the
//! task at the head). A keyed attempt counts from its assignment until its worker reports
//! it stopped (or the worker is gone), not until the task's result is logged: an attempt
//! that timed out or was cancelled still runs on its worker, and still counts.

use dtc_proto::TaskId;
use dtc_proto::hash::HashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// A keyed ready task, as the lanes take it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Entry {
    /// Its rank (lower first) and arrival number: the lane's order.
    pub rank: i64,
    pub arrival: u64,
    pub id: TaskId,
    /// Its own limit on the key's running tasks.
    pub limit: u32,
    pub queue: Arc<str>,
    pub kind: Arc<str>,
}

#[derive(Debug, Default)]
struct KeyUse {
    /// Attempts assigned (or held by a reconnecting worker) and not yet reported stopped.
    running: u32,
    /// Tasks a new leader found unfinished: any may still run on a worker that has not
    /// reconnected, so each counts as running until claimed or until the grace ends.
    reserved: u32,
    /// Entries let into the lanes and not yet taken out.
    in_lanes: u32,
    waiting: BinaryHeap<Reverse<Entry>>,
}

impl KeyUse {
    fn idle(&self) -> bool {
        self.running == 0 && self.reserved == 0 && self.in_lanes == 0 && self.waiting.is_empty()
    }
}

/// The keys in use and their counts.
#[derive(Debug, Default)]
pub(super) struct Keys {
    keys: HashMap<Arc<str>, KeyUse>,
    /// The key of each keyed entry in a lane, by its arrival number (unique per entry, where
    /// a task id may have a stale entry besides its current one).
    in_lanes: HashMap<u64, Arc<str>>,
    waiting: usize,
}

impl Keys {
    /// A keyed task is ready: it waits for room under its key. Returns what may enter the
    /// lanes now.
    pub fn wait(&mut self, key: &str, entry: Entry) -> Vec<Entry> {
        let key = self.intern(key);
        let k = self.keys.entry(Arc::clone(&key)).or_default();
        k.waiting.push(Reverse(entry));
        self.waiting += 1;
        self.admit(&key)
    }

    /// The lane entry numbered `arrival` was taken out: if it was keyed, it either starts
    /// (`started`) and counts as running, or was stale and makes room. Returns its key and
    /// what may enter the lanes now.
    pub fn left_lane(&mut self, arrival: u64, started: bool) -> Option<(Arc<str>, Vec<Entry>)> {
        if self.in_lanes.is_empty() {
            return None;
        }
        let key = self.in_lanes.remove(&arrival)?;
        let k = self.keys.get_mut(&key)?;
        k.in_lanes = k.in_lanes.saturating_sub(1);
        if started {
            k.running += 1;
            Some((key, Vec::new()))
        } else {
            let admitted = self.admit(&key);
            Some((key, admitted))
        }
    }

    /// A reconnecting worker holds an attempt of a `key` task: it counts as running, in
    /// place of one of the key's reservations.
    pub fn held(&mut self, key: &str) -> Arc<str> {
        let key = self.intern(key);
        let k = self.keys.entry(Arc::clone(&key)).or_default();
        k.running += 1;
        k.reserved = k.reserved.saturating_sub(1);
        key
    }

    /// An attempt of a `key` task stopped: returns what may enter the lanes now.
    pub fn stopped(&mut self, key: &Arc<str>) -> Vec<Entry> {
        if let Some(k) = self.keys.get_mut(key) {
            k.running = k.running.saturating_sub(1);
        }
        self.admit(key)
    }

    /// A new leader found an unfinished task of `key` that may still run somewhere.
    pub fn reserve(&mut self, key: &str) {
        let key = self.intern(key);
        self.keys.entry(key).or_default().reserved += 1;
    }

    /// The grace for reconnecting workers is over: unclaimed tasks run nowhere. Returns what
    /// may enter the lanes now.
    pub fn end_reservations(&mut self) -> Vec<Entry> {
        let reserved: Vec<Arc<str>> = self
            .keys
            .iter_mut()
            .filter(|(_, k)| k.reserved > 0)
            .map(|(key, k)| {
                k.reserved = 0;
                Arc::clone(key)
            })
            .collect();
        reserved.iter().flat_map(|key| self.admit(key)).collect()
    }

    /// Tasks waiting for room under their key, by queue.
    pub fn waiting_by_queue(&self) -> impl Iterator<Item = &Arc<str>> {
        self.keys
            .values()
            .flat_map(|k| k.waiting.iter().map(|Reverse(e)| &e.queue))
    }

    /// How many tasks wait for room under their key.
    pub fn waiting_len(&self) -> usize {
        self.waiting
    }

    /// How many attempts of `key` run (reservations included).
    #[cfg(test)]
    pub fn running(&self, key: &str) -> u32 {
        self.keys.get(key).map_or(0, |k| k.running + k.reserved)
    }

    /// The key's shared name (one allocation per key in use).
    fn intern(&self, key: &str) -> Arc<str> {
        self.keys
            .get_key_value(key)
            .map_or_else(|| Arc::from(key), |(k, _)| Arc::clone(k))
    }

    /// Lets the key's best waiting tasks into the lanes while its head's limit leaves room;
    /// forgets a key with nothing left.
    fn admit(&mut self, key: &Arc<str>) -> Vec<Entry> {
        let mut out = Vec::new();
        let Some(k) = self.keys.get_mut(key) else {
            return out;
        };
        while let Some(Reverse(head)) = k.waiting.peek() {
            if k.running + k.reserved + k.in_lanes >= head.limit {
                break;
            }
            let Some(Reverse(entry)) = k.waiting.pop() else {
                break;
            };
            k.in_lanes += 1;
            self.waiting -= 1;
            self.in_lanes.insert(entry.arrival, Arc::clone(key));
            out.push(entry);
        }
        if k.idle() {
            self.keys.remove(key);
        }
        out
    }
}
