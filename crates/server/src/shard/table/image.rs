//! The table's snapshot image: what a snapshot holds, taken quickly under the table's
//! lock ([`TaskTable::image`]) and encoded away from it ([`TableImage::encode`]), and the
//! table restored from those bytes. Equal tables give equal bytes.

use super::record::{KindNames, Record};
use super::{Settings, TaskTable};
use crate::shard::cow_map::Frozen;
use dtc_proto::TaskId;
use dtc_proto::TaskState;
use dtc_proto::status::StateCounts;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The table's content as a snapshot holds it. Tasks are sorted by id, so that equal tables
/// give equal bytes (replicas can be compared by their snapshots). `T` holds the tasks:
/// frozen while the image waits to be encoded, a sorted list of borrowed records when
/// encoding, of owned ones when decoding.
#[derive(Serialize, Deserialize)]
struct Image<T> {
    tasks: T,
    finished: VecDeque<(u64, TaskId)>,
    failed: VecDeque<(u64, TaskId)>,
    settings: Settings,
    clock_ms: u64,
}

/// A copy of the table's content, taken quickly (under the table's lock: the tasks are
/// frozen, not copied) and encoded later (away from it): [`TaskTable::image`], then
/// [`TableImage::encode`].
pub struct TableImage(Image<Frozen<Record>>);

impl TableImage {
    /// The snapshot bytes: tasks sorted by id, postcard-encoded; equal tables give equal
    /// bytes.
    pub fn encode(self) -> Vec<u8> {
        let Image {
            tasks: frozen,
            finished,
            failed,
            settings,
            clock_ms,
        } = self.0;
        let mut tasks: Vec<(TaskId, &Record)> = Vec::with_capacity(frozen.len());
        tasks.extend(frozen.iter().map(|(id, r)| (*id, r)));
        tasks.sort_unstable_by_key(|(id, _)| *id);
        let image = Image {
            tasks,
            finished,
            failed,
            settings,
            clock_ms,
        };
        // Encoding into a Vec fails only on out-of-memory, which aborts anyway.
        postcard::to_allocvec(&image).unwrap_or_default()
    }
}

/// A snapshot that could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("the task table snapshot is corrupt: {0}")]
pub struct CorruptSnapshot(#[from] postcard::Error);

impl TaskTable {
    /// The table's content, encoded (postcard); equal tables give equal bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        self.image().encode()
    }

    /// A copy of the table's content, to encode later.
    pub fn image(&self) -> TableImage {
        TableImage(Image {
            tasks: self.tasks.freeze(),
            finished: self.finished.clone(),
            failed: self.failed.clone(),
            settings: self.settings.clone(),
            clock_ms: self.clock_ms,
        })
    }

    /// A table restored from [`TaskTable::snapshot`] bytes.
    pub fn restore(bytes: &[u8]) -> Result<Self, CorruptSnapshot> {
        let image: Image<Vec<(TaskId, Record)>> = postcard::from_bytes(bytes)?;
        let unfinished = image.tasks.iter().filter(|(_, r)| !r.is_done()).count();
        let failed_len = image
            .tasks
            .iter()
            .filter(|(_, r)| r.state() == TaskState::Failed)
            .count();
        let mut kinds = KindNames::default();
        let mut counts = StateCounts::default();
        for (_, r) in &image.tasks {
            counts.add(r.state());
        }
        Ok(Self {
            counts,
            tasks: image
                .tasks
                .into_iter()
                .map(|(id, mut r)| {
                    r.kind = kinds.get(&r.kind);
                    (id, r)
                })
                .collect(),
            kinds,
            finished: image.finished,
            failed: image.failed,
            failed_len,
            unfinished,
            settings: image.settings,
            clock_ms: image.clock_ms,
        })
    }
}
