//! The task table's map from task id to record, made to be copied for a snapshot in
//! constant time: the map is split into [`BUCKETS`] buckets, each behind an `Arc`, and a
//! [`Frozen`] copy shares the buckets. A bucket still shared with a copy is cloned the first
//! time the live map changes it (about 1/4096 of the table, a few microseconds), so the cost
//! of copying a large table is spread over the changes made while a snapshot is being
//! encoded instead of stalling the table's lock for the whole copy.
//!
//! Owned by [`super::TaskTable`]; its frozen copies go to the snapshot encoder.

use dtc_proto::TaskId;
use dtc_proto::hash::HashMap;
use std::sync::Arc;

/// How many buckets the map has: enough that one is small (a 200,000-task table puts
/// about 50 tasks in each, so the first batch applied after a snapshot, which touches a
/// few hundred buckets, unshares a few percent of the table rather than all of it), few
/// enough that the bucket array stays in cache and freezing the map takes well under a
/// millisecond.
const BUCKETS: usize = 4096;

type Bucket<V> = Arc<HashMap<TaskId, V>>;

/// A map from task id to `V`, cheap to freeze.
#[derive(Debug)]
pub struct CowMap<V> {
    buckets: Box<[Bucket<V>]>,
    len: usize,
}

/// A copy of a [`CowMap`] as it was when frozen, sharing its unchanged buckets.
#[derive(Debug)]
pub struct Frozen<V> {
    buckets: Box<[Bucket<V>]>,
    len: usize,
}

/// The bucket of `id`: the top bits of its digest (the router shards on the low ones, so a
/// shard's ids still spread over every bucket).
fn bucket_of(id: TaskId) -> usize {
    (id.hash64() >> 52) as usize
}

impl<V> Default for CowMap<V> {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| Arc::default()).collect(),
            len: 0,
        }
    }
}

impl<V: Clone> CowMap<V> {
    /// The value of `id`.
    pub fn get(&self, id: &TaskId) -> Option<&V> {
        self.buckets[bucket_of(*id)].get(id)
    }

    /// Whether the map holds `id`.
    pub fn contains_key(&self, id: &TaskId) -> bool {
        self.get(id).is_some()
    }

    /// The value of `id`, to change; its bucket is cloned first if a frozen copy shares it.
    pub fn get_mut(&mut self, id: &TaskId) -> Option<&mut V> {
        let bucket = &mut self.buckets[bucket_of(*id)];
        if Arc::get_mut(bucket).is_none() && !bucket.contains_key(id) {
            // Absent: no need to unshare the bucket.
            return None;
        }
        Arc::make_mut(bucket).get_mut(id)
    }

    /// Sets the value of `id`, returning the one it replaces.
    pub fn insert(&mut self, id: TaskId, value: V) -> Option<V> {
        let old = Arc::make_mut(&mut self.buckets[bucket_of(id)]).insert(id, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `id`, returning its value.
    pub fn remove(&mut self, id: &TaskId) -> Option<V> {
        let bucket = &mut self.buckets[bucket_of(*id)];
        if Arc::get_mut(bucket).is_none() && !bucket.contains_key(id) {
            return None;
        }
        let old = Arc::make_mut(bucket).remove(id);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// How many entries the map holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&TaskId, &V)> {
        self.buckets.iter().flat_map(|b| b.iter())
    }

    /// A copy of the map as it is now, in constant time (one pointer per bucket).
    pub fn freeze(&self) -> Frozen<V> {
        Frozen {
            buckets: self.buckets.clone(),
            len: self.len,
        }
    }
}

impl<V: Clone> FromIterator<(TaskId, V)> for CowMap<V> {
    fn from_iter<I: IntoIterator<Item = (TaskId, V)>>(entries: I) -> Self {
        let mut map = Self::default();
        for (id, value) in entries {
            map.insert(id, value);
        }
        map
    }
}

impl<V> Frozen<V> {
    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&TaskId, &V)> {
        self.buckets.iter().flat_map(|b| b.iter())
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted<'a>(entries: impl Iterator<Item = (&'a TaskId, &'a u32)>) -> Vec<(u128, u32)> {
        let mut all: Vec<_> = entries.map(|(id, v)| (id.0, *v)).collect();
        all.sort_unstable();
        all
    }

    #[test]
    fn a_frozen_copy_keeps_what_the_map_held_while_the_map_changes() {
        let mut map: CowMap<u32> = (0..2000u32).map(|i| (TaskId(i.into()), i)).collect();
        let frozen = map.freeze();
        for i in 0..1000u32 {
            if let Some(v) = map.get_mut(&TaskId(i.into())) {
                *v += 1;
            }
        }
        for i in 1000..1500u32 {
            assert_eq!(map.remove(&TaskId(i.into())), Some(i));
        }
        map.insert(TaskId(5000), 7);

        let before: Vec<_> = (0..2000u32).map(|i| (u128::from(i), i)).collect();
        assert_eq!(sorted(frozen.iter()), before);
        assert_eq!(frozen.len(), 2000);

        let mut after: Vec<_> = (0..1000u32)
            .map(|i| (u128::from(i), i + 1))
            .chain((1500..2000u32).map(|i| (u128::from(i), i)))
            .chain([(5000, 7)])
            .collect();
        after.sort_unstable();
        assert_eq!(sorted(map.iter()), after);
        assert_eq!(map.len(), after.len());
    }

    #[test]
    fn absent_keys_change_nothing_and_are_counted_once() {
        let mut map = CowMap::default();
        assert!(map.is_empty());
        let frozen = map.freeze();
        assert_eq!(map.get_mut(&TaskId(1)), None);
        assert_eq!(map.remove(&TaskId(1)), None);
        assert_eq!(map.insert(TaskId(1), 1), None);
        assert_eq!(map.insert(TaskId(1), 2), Some(1));
        assert_eq!(map.len(), 1);
        assert!(map.contains_key(&TaskId(1)));
        assert_eq!(frozen.len(), 0);
    }

    #[test]
    fn ids_spread_over_the_buckets() {
        // Ids a router sends to one shard share their low bits; they must still spread.
        let mut used = [0u32; BUCKETS];
        for i in 0..409_600u128 {
            used[bucket_of(TaskId((i << 8) | 3))] += 1;
        }
        let (min, max) = (used.iter().min(), used.iter().max());
        assert!(min.is_some_and(|m| *m > 40), "{min:?}..{max:?}");
        assert!(max.is_some_and(|m| *m < 200), "{min:?}..{max:?}");
    }
}
