//! Task ids: 128-bit, chosen by the submitter, written as a UUID in text.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A task's identity: 128 bits, unique per task, chosen by whoever submits it.
///
/// Submitting the same id twice returns the existing task instead of running it again.
/// [`TaskId::new`] makes time-ordered random ids (UUID version 7); any other 128-bit value
/// may be used. In text it is a UUID (`8-4-4-4-12` hex digits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId(pub u128);

impl TaskId {
    /// A fresh time-ordered random id (UUID version 7).
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().as_u128())
    }

    /// A 64-bit digest of the id, mixed so that every bit of the id counts (splitmix64).
    pub fn hash64(self) -> u64 {
        mix64((self.0 as u64) ^ ((self.0 >> 64) as u64).rotate_left(29))
    }

    /// The same id, routed by `key`: its low 32 bits become the key's digest and it is
    /// marked as a UUID version 8 (custom layout), keeping its other 90 bits. Every task
    /// routed by one key lands on one shard (see [`TaskId::route_hash`]), and the id alone
    /// still finds it: lookups need no index. The same id and key always give the same
    /// routed id, so resubmitting is still idempotent.
    #[must_use]
    pub fn routed_by(self, key: &str) -> Self {
        let keep = !(VERSION_MASK | VARIANT_MASK | u128::from(u32::MAX));
        Self((self.0 & keep) | ROUTED_VERSION | RFC_VARIANT | u128::from(key_digest(key)))
    }

    /// The same id in the namespace clients may not submit, routed by `key`: the ids of
    /// the tasks a shard submits itself (a schedule's ticks and triggers). Like
    /// [`TaskId::routed_by`], but marked with the UUID variant bits `11` instead of `10`,
    /// so no id a client is allowed to submit can take a reserved id's place.
    #[must_use]
    pub fn reserved_by(self, key: &str) -> Self {
        Self((self.routed_by(key).0 & !VARIANT_MASK) | RESERVED_VARIANT)
    }

    /// Whether the id is in the namespace only the shard itself submits in
    /// ([`TaskId::reserved_by`]).
    pub fn is_reserved(self) -> bool {
        self.0 & (VERSION_MASK | VARIANT_MASK) == ROUTED_VERSION | RESERVED_VARIANT
    }

    /// Whether the id was made by [`TaskId::routed_by`] for `key`.
    pub fn is_routed_by(self, key: &str) -> bool {
        self.0 & (VERSION_MASK | VARIANT_MASK) == ROUTED_VERSION | RFC_VARIANT
            && self.0 as u32 == key_digest(key)
    }

    /// Whether the id is routed by a key (a client's or the shard's own).
    fn is_routed(self) -> bool {
        self.0 & VERSION_MASK == ROUTED_VERSION
            && matches!(self.0 & VARIANT_MASK, RFC_VARIANT | RESERVED_VARIANT)
    }

    /// What places the task on a shard: the digest of its key for a routed id (the same as
    /// [`key_route_hash`] of that key), else [`TaskId::hash64`] of the whole id.
    pub fn route_hash(self) -> u64 {
        if self.is_routed() {
            mix64(u64::from(self.0 as u32))
        } else {
            self.hash64()
        }
    }
}

const VERSION_MASK: u128 = 0xF << 76;
const VARIANT_MASK: u128 = 0b11 << 62;
const ROUTED_VERSION: u128 = 8 << 76;
const RFC_VARIANT: u128 = 0b10 << 62;
const RESERVED_VARIANT: u128 = 0b11 << 62;

/// Where the tasks routed by `key` go: the value a router places on a shard, equal to
/// [`TaskId::route_hash`] of every id routed by `key`.
pub fn key_route_hash(key: &str) -> u64 {
    mix64(u64::from(key_digest(key)))
}

/// A 32-bit digest of a key (FNV-1a, folded): part of the stored ids, so it never changes.
fn key_digest(key: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h ^ (h >> 32)) as u32
}

/// splitmix64's finaliser.
pub(crate) fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&uuid::Uuid::from_u128(self.0).hyphenated(), f)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The text was not a UUID.
#[derive(Debug, thiserror::Error)]
#[error("not a task id (expected a UUID like 0192f0c1-7e4a-7b3c-9d2e-4f5a6b7c8d9e): {0}")]
pub struct ParseTaskIdError(String);

impl FromStr for TaskId {
    type Err = ParseTaskIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s)
            .map(|u| Self(u.as_u128()))
            .map_err(|e| ParseTaskIdError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let id = TaskId::new();
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text.matches('-').count(), 4);
        assert_eq!(text.parse::<TaskId>().ok(), Some(id));
    }

    #[test]
    fn new_ids_are_time_ordered_and_distinct() {
        let a = TaskId::new();
        let b = TaskId::new();
        assert_ne!(a, b);
        assert!(
            a.0 >> 80 <= b.0 >> 80,
            "the millisecond prefix must not go backwards"
        );
    }

    #[test]
    fn bad_text_is_an_error() {
        assert!("not-a-uuid".parse::<TaskId>().is_err());
        assert!("".parse::<TaskId>().is_err());
    }

    #[test]
    fn reserved_ids_route_like_routed_ones_and_no_routed_id_is_reserved() {
        let plain = TaskId::new();
        let reserved = plain.reserved_by("nightly");
        assert!(reserved.is_reserved());
        assert_eq!(reserved.route_hash(), key_route_hash("nightly"));
        assert!(
            !reserved.is_routed_by("nightly"),
            "a client's key never names it"
        );
        for id in [
            plain,
            plain.routed_by("nightly"),
            reserved.routed_by("nightly"),
        ] {
            assert!(!id.is_reserved(), "{id}");
        }
        assert_eq!(reserved.reserved_by("nightly"), reserved);
    }

    #[test]
    fn ids_routed_by_a_key_share_its_route_and_keep_the_rest() {
        let a = TaskId::new().routed_by("tenant:42");
        let b = TaskId::new().routed_by("tenant:42");
        assert_ne!(a, b, "the rest of the id stays unique");
        assert_eq!(a.route_hash(), b.route_hash());
        assert_eq!(a.route_hash(), key_route_hash("tenant:42"));
        assert!(a.is_routed_by("tenant:42") && !a.is_routed_by("tenant:43"));
        let text = a.to_string();
        assert_eq!(&text[14..15], "8", "a UUID version 8: {text}");
        let plain = TaskId(7);
        assert!(!plain.is_routed_by("tenant:42"));
        assert_eq!(plain.route_hash(), plain.hash64());
        assert_eq!(
            plain.routed_by("k"),
            plain.routed_by("k"),
            "a pure function"
        );
        let spread: std::collections::HashSet<u64> = (0..100)
            .map(|n| key_route_hash(&format!("tenant:{n}")) >> 60)
            .collect();
        assert!(spread.len() > 8, "keys spread: {spread:?}");
    }
}
