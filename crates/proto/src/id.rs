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
        let folded = (self.0 as u64) ^ ((self.0 >> 64) as u64).rotate_left(29);
        let mut z = folded.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
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
}
