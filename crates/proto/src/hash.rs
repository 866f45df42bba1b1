//! The hash maps dtc keeps: foldhash's fast hashing, randomly seeded as usual, except on a
//! thread that a simulation has seeded ([`seed_thread`]): there every map made from then on
//! gets its seed from the simulation's, in the order maps are made, so a run iterates its
//! maps in the same order every time it is replayed. Every crate takes its maps from here.

use foldhash::SharedSeed;
use foldhash::fast::{FoldHasher, SeedableRandomState};
use std::cell::Cell;
use std::hash::BuildHasher;

thread_local! {
    /// The seed of this thread's next map, when a simulation has seeded the thread.
    static NEXT_SEED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// From now on, maps made on this thread are seeded from `seed`, one after another.
pub fn seed_thread(seed: u64) {
    NEXT_SEED.with(|s| s.set(Some(seed)));
}

/// How a map hashes: foldhash, seeded at random or (on a seeded thread) from the thread's
/// sequence of seeds.
#[derive(Clone, Debug)]
pub struct Seeded(SeedableRandomState);

impl Default for Seeded {
    fn default() -> Self {
        let seeded = NEXT_SEED.with(|s| {
            let seed = s.get()?;
            s.set(Some(crate::id::mix64(seed)));
            Some(seed)
        });
        Self(match seeded {
            Some(seed) => SeedableRandomState::with_seed(seed, SharedSeed::global_fixed()),
            None => SeedableRandomState::random(),
        })
    }
}

impl BuildHasher for Seeded {
    type Hasher = FoldHasher<'static>;

    #[inline]
    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// A hash map of dtc's.
pub type HashMap<K, V> = std::collections::HashMap<K, V, Seeded>;

/// A hash set of dtc's.
pub type HashSet<K> = std::collections::HashSet<K, Seeded>;

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Vec<u64> {
        let map: HashMap<u64, ()> = (0..64).map(|k| (k, ())).collect();
        map.keys().copied().collect()
    }

    #[test]
    fn a_seeded_thread_makes_the_same_maps_in_the_same_order_every_time() {
        let run = || {
            std::thread::spawn(|| {
                seed_thread(1222);
                (order(), order())
            })
            .join()
            .ok()
        };
        let (first, second) = (run(), run());
        assert!(first.is_some());
        assert_eq!(first, second, "a replay iterates alike");
        let (a, b) = first.unwrap_or_default();
        assert_ne!(a, b, "two maps of one run are seeded apart");
    }
}
