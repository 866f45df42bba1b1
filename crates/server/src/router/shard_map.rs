//! Which shard owns a task: a stable hash of its id (of its key, for an id routed by a
//! concurrency key: [`TaskId::route_hash`]), by jump consistent hashing (Lamping and Veach),
//! so that growing from N to N+1 shards moves only about 1/(N+1) of the ids.

use dtc_proto::TaskId;

/// Maps task ids to shard indexes `0..shards`.
#[derive(Clone, Copy, Debug)]
pub struct ShardMap {
    shards: usize,
}

impl ShardMap {
    /// A map over `shards` shards (at least one).
    pub fn new(shards: usize) -> Self {
        Self {
            shards: shards.max(1),
        }
    }

    /// The shard that owns `id`. The same id always maps to the same shard, and the ids
    /// routed by one key to one shard.
    pub fn shard_of(&self, id: TaskId) -> usize {
        jump_hash(id.route_hash(), self.shards)
    }

    /// The shard of the tasks routed by `key` ([`TaskId::routed_by`]): where a concurrency
    /// key's tasks, and a schedule of that name, live.
    pub fn shard_of_key(&self, key: &str) -> usize {
        jump_hash(dtc_proto::key_route_hash(key), self.shards)
    }
}

fn jump_hash(mut key: u64, buckets: usize) -> usize {
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_balanced() {
        let map = ShardMap::new(4);
        let mut counts = [0usize; 4];
        for n in 0..40_000u128 {
            let id = TaskId(n * 0x1_0000_0001);
            let s = map.shard_of(id);
            assert_eq!(s, map.shard_of(id));
            counts[s] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "unbalanced: {counts:?}");
        }
    }

    #[test]
    fn growing_moves_few_ids() {
        let (a, b) = (ShardMap::new(4), ShardMap::new(5));
        let moved = (0..10_000u128)
            .filter(|n| a.shard_of(TaskId(*n)) != b.shard_of(TaskId(*n)))
            .count();
        assert!(moved < 2_600, "moved {moved} of 10000");
    }

    #[test]
    fn a_keys_tasks_share_a_shard_and_keys_spread() {
        let map = ShardMap::new(4);
        let mut used = std::collections::HashSet::new();
        for k in 0..64 {
            let key = format!("tenant:{k}");
            let home = map.shard_of(TaskId::new().routed_by(&key));
            assert_eq!(map.shard_of_key(&key), home);
            for _ in 0..20 {
                assert_eq!(map.shard_of(TaskId::new().routed_by(&key)), home, "{key}");
            }
            used.insert(home);
        }
        assert_eq!(used.len(), 4, "64 keys use every shard");
    }
}
