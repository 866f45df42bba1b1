//! The state-machine side of a replica's Raft storage: the task table, the last applied log
//! position and membership, and snapshots of them.
//!
//! openraft's state-machine task owns the [`TableStore`] and applies committed entries
//! through it. The coordinator's actor reads the same table through a [`SharedTable`]
//! (assignments need a queued task's input; lookups need its view): one lock per shard,
//! taken for the length of one apply batch or one actor turn.
//!
//! A snapshot is the postcard image of the table plus where it stands in the log, followed
//! by a CRC-32 of those bytes, checked wherever a snapshot is read (a file at start, one
//! installed from the leader): a damaged snapshot is refused, never loaded. The
//! current one is kept in memory and, when the replica has a data directory, in
//! `snapshot.bin` (written to a temporary file, fsynced, renamed), so that a restarted
//! replica starts from it once the log before it has been purged. Building one freezes the
//! table under its lock (constant time: the tasks are shared with the live table, not
//! copied) and nothing more; sorting, encoding and writing the file (about a hundred
//! milliseconds for 200,000 kept results) run on tokio's blocking pool when there is a data
//! directory, so that neither the apply path nor the runtime's threads wait on them.

use super::FORMAT_VERSION;
use super::mem_log_store::{MemDisk, StoredSnapshot};
use super::raft_types::{BatchApplied, Entry, LogId, Node, NodeId, StorageError, TypeConfig};
use super::table::CorruptSnapshot;
use super::{Retention, TaskTable};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The snapshot file's format version: the data's ([`FORMAT_VERSION`]).
const SNAPSHOT_VERSION: u32 = FORMAT_VERSION;

/// The name of the snapshot file in a data directory.
const SNAPSHOT_FILE: &str = "snapshot.bin";

/// The table and where it stands in the log.
#[derive(Debug, Default)]
pub struct Applied {
    /// The task table.
    pub table: TaskTable,
    /// The last log entry applied to it.
    pub last_applied: Option<LogId>,
    /// The membership as of `last_applied`.
    pub membership: StoredMembership<NodeId, Node>,
}

/// The table as the actor and the state machine share it.
#[derive(Clone, Debug, Default)]
pub struct SharedTable(Arc<Mutex<Applied>>);

impl SharedTable {
    /// Locks the table. A poisoned lock (a panic while applying) is taken over as is: the
    /// table's own invariants hold between commands.
    pub fn lock(&self) -> MutexGuard<'_, Applied> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    version: u32,
    meta: SnapshotMeta<NodeId, Node>,
    table: Vec<u8>,
}

/// The replica's state machine.
#[derive(Debug)]
pub struct TableStore {
    shared: SharedTable,
    dir: Option<PathBuf>,
    /// Or the in-memory disk snapshots go to.
    mem: Option<MemDisk>,
    /// The latest snapshot (meta and file bytes), shared with the snapshot builders.
    current: Arc<Mutex<Option<Current>>>,
    built: Arc<AtomicU64>,
}

type Current = StoredSnapshot;

/// A snapshot file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// Reading it failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// It is not a snapshot this version of dtc can read.
    #[error("{} is not a dtc snapshot of format version {SNAPSHOT_VERSION}: {source}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        source: SnapshotDecodeError,
    },
}

/// Why a snapshot's bytes cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotDecodeError {
    /// Too short to hold even the checksum.
    #[error("{0} bytes are too few for a snapshot")]
    TooShort(usize),
    /// The bytes are damaged.
    #[error(
        "its checksum does not match (stored {stored:08x}, computed {computed:08x}): the file is damaged"
    )]
    Checksum {
        /// The checksum the file carries.
        stored: u32,
        /// The checksum of its bytes.
        computed: u32,
    },
    /// The checksum matches but the bytes are not a snapshot file.
    #[error("{0}")]
    Encoding(#[from] postcard::Error),
    /// Another version of dtc wrote it.
    #[error("it has version {0}")]
    Version(u32),
    /// Its table cannot be restored.
    #[error(transparent)]
    Table(#[from] CorruptSnapshot),
}

impl TableStore {
    /// A state machine in memory only (nothing survives the process). Its table has the
    /// default settings until the log configures them.
    pub fn in_memory() -> Self {
        Self {
            shared: SharedTable(Arc::new(Mutex::new(Applied {
                table: TaskTable::new(Retention::default()),
                ..Applied::default()
            }))),
            dir: None,
            mem: None,
            current: Arc::default(),
            built: Arc::default(),
        }
    }

    /// A state machine whose snapshots live in `dir`, starting from the one found there.
    pub fn open(dir: &Path) -> Result<Self, SnapshotFileError> {
        let mut store = Self::in_memory();
        store.dir = Some(dir.to_path_buf());
        let path = dir.join(SNAPSHOT_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(store),
            Err(source) => return Err(SnapshotFileError::Io { path, source }),
        };
        let format = |source: SnapshotDecodeError| SnapshotFileError::Format {
            path: path.clone(),
            source,
        };
        let file = decode_file(&bytes).map_err(format)?;
        store
            .load(&file.meta, &file.table)
            .map_err(|e| format(e.into()))?;
        *store.current_lock() = Some((file.meta, bytes));
        Ok(store)
    }

    /// A state machine whose snapshots live on `disk`, starting from the one found there.
    pub fn on_mem_disk(disk: &MemDisk) -> Result<Self, SnapshotFileError> {
        let mut store = Self::in_memory();
        store.mem = Some(disk.clone());
        if let Some((meta, file)) = disk.snapshot() {
            let format = |source: SnapshotDecodeError| SnapshotFileError::Format {
                path: PathBuf::from("(the in-memory disk)"),
                source,
            };
            let decoded = decode_file(&file).map_err(format)?;
            store
                .load(&meta, &decoded.table)
                .map_err(|e| format(e.into()))?;
            *store.current_lock() = Some((meta, file));
        }
        Ok(store)
    }

    fn current_lock(&self) -> MutexGuard<'_, Option<Current>> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The handle the coordinator's actor reads the table through.
    pub fn shared(&self) -> SharedTable {
        self.shared.clone()
    }

    fn load(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        table: &[u8],
    ) -> Result<(), CorruptSnapshot> {
        let table = TaskTable::restore(table)?;
        let mut s = self.shared.lock();
        s.table = table;
        s.last_applied = meta.last_log_id;
        s.membership = meta.last_membership.clone();
        Ok(())
    }

    /// Makes the snapshot file's bytes with `make` and writes them to the data directory,
    /// on the blocking pool; without a data directory, makes them here (an in-memory disk
    /// takes no time, and a simulation must not leave its thread).
    async fn persist<F>(&self, make: F) -> io::Result<Vec<u8>>
    where
        F: FnOnce() -> io::Result<Vec<u8>> + Send + 'static,
    {
        let Some(dir) = self.dir.clone() else {
            return make();
        };
        tokio::task::spawn_blocking(move || {
            let file = make()?;
            write_file(&dir, &file)?;
            Ok(file)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Keeps a written snapshot as the current one (and writes it to the in-memory disk,
    /// if any).
    fn keep(&mut self, meta: SnapshotMeta<NodeId, Node>, file: Vec<u8>) -> io::Result<()> {
        if let Some(disk) = &self.mem {
            disk.put_snapshot((meta.clone(), file.clone()))?;
        }
        *self.current_lock() = Some((meta, file));
        Ok(())
    }
}

/// Writes `file` as the snapshot in `dir`: a temporary file, fsynced, renamed over the old
/// one, and the directory fsynced.
fn write_file(dir: &Path, file: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(file)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// A snapshot file's bytes: the encoded [`SnapshotFile`], then its CRC-32 (little-endian).
fn encode_file(meta: &SnapshotMeta<NodeId, Node>, table: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut bytes = postcard::to_allocvec(&SnapshotFile {
        version: SNAPSHOT_VERSION,
        meta: meta.clone(),
        table,
    })
    .map_err(io::Error::other)?;
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

/// Reads a snapshot file's bytes as a replica does (at start, or installed from its
/// leader): where it stands in the log and the table it holds, or why it is refused.
pub fn read_snapshot_file(
    bytes: &[u8],
) -> Result<(SnapshotMeta<NodeId, Node>, TaskTable), SnapshotDecodeError> {
    let file = decode_file(bytes)?;
    let table = TaskTable::restore(&file.table)?;
    Ok((file.meta, table))
}

/// Reads a snapshot file's bytes: the checksum must match and the version be this one's.
fn decode_file(bytes: &[u8]) -> Result<SnapshotFile, SnapshotDecodeError> {
    let Some(split) = bytes.len().checked_sub(4) else {
        return Err(SnapshotDecodeError::TooShort(bytes.len()));
    };
    let (body, crc) = bytes.split_at(split);
    let mut stored = [0u8; 4];
    stored.copy_from_slice(crc);
    let computed = crc32fast::hash(body);
    let stored = u32::from_le_bytes(stored);
    if stored != computed {
        return Err(SnapshotDecodeError::Checksum { stored, computed });
    }
    let file: SnapshotFile = postcard::from_bytes(body)?;
    if file.version != SNAPSHOT_VERSION {
        return Err(SnapshotDecodeError::Version(file.version));
    }
    Ok(file)
}

fn snapshot_of(meta: SnapshotMeta<NodeId, Node>, file: Vec<u8>) -> Snapshot<TypeConfig> {
    Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(file)),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for TableStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, table) = {
            let s = self.shared.lock();
            let n = self.built.fetch_add(1, Ordering::Relaxed);
            let id = s
                .last_applied
                .map_or_else(String::new, |l| format!("{}-{}", l.leader_id, l.index));
            let meta = SnapshotMeta {
                last_log_id: s.last_applied,
                last_membership: s.membership.clone(),
                snapshot_id: format!("{id}-{n}"),
            };
            (meta, s.table.image())
        };
        let write_err = |e: io::Error| StorageIOError::write_snapshot(None, &e);
        let file_meta = meta.clone();
        let started = std::time::Instant::now();
        let file = self
            .persist(move || encode_file(&file_meta, table.encode()))
            .await
            .map_err(write_err)?;
        self.keep(meta.clone(), file.clone()).map_err(write_err)?;
        tracing::debug!(
            bytes = file.len(),
            ms = started.elapsed().as_millis(),
            ?meta.last_log_id,
            "snapshot built"
        );
        Ok(snapshot_of(meta, file))
    }
}

impl RaftStateMachine<TypeConfig> for TableStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, Node>), StorageError> {
        let s = self.shared.lock();
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchApplied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut s = self.shared.lock();
        let mut out = Vec::new();
        for entry in entries {
            s.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(BatchApplied::default()),
                EntryPayload::Normal(batch) => out.push(BatchApplied(
                    batch.0.into_iter().map(|c| s.table.apply(c)).collect(),
                )),
                EntryPayload::Membership(m) => {
                    s.membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(BatchApplied::default());
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        Self {
            shared: self.shared.clone(),
            dir: self.dir.clone(),
            mem: self.mem.clone(),
            current: Arc::clone(&self.current),
            built: Arc::clone(&self.built),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let file = snapshot.into_inner();
        let read_err = |e: SnapshotDecodeError| {
            StorageIOError::read_snapshot(Some(meta.signature()), &io::Error::other(e))
        };
        let decoded = decode_file(&file).map_err(read_err)?;
        self.load(meta, &decoded.table)
            .map_err(|e| read_err(e.into()))?;
        let file = self
            .persist(move || Ok(file))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.keep(meta.clone(), file)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        tracing::info!(?meta.last_log_id, "installed a snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self
            .current_lock()
            .as_ref()
            .map(|(meta, file)| snapshot_of(meta.clone(), file.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_file_with_any_byte_changed_is_refused() -> io::Result<()> {
        let table = TaskTable::new(Retention::default()).snapshot();
        let bytes = encode_file(&SnapshotMeta::default(), table)?;
        assert!(decode_file(&bytes).is_ok());
        for at in [0, bytes.len() / 2, bytes.len() - 5, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            let refused = decode_file(&damaged);
            assert!(
                matches!(refused, Err(SnapshotDecodeError::Checksum { .. })),
                "a flip at byte {at}: {:?}",
                refused.map(|f| f.version)
            );
        }
        assert!(decode_file(&bytes[..3]).is_err());
        Ok(())
    }
}
