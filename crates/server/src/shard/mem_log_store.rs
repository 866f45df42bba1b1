//! A Raft log in memory, on a [`MemDisk`]: for replicas started without a data directory
//! (tests, a throw-away local cluster) and for the deterministic simulation.
//!
//! A [`MemDisk`] stands for a replica's disk: it outlives the replica that uses it, so a
//! replica "restarted" on the same disk finds its vote, its synced entries and its last
//! snapshot. Appends are synced after the disk's sync delay (at once by default); a replica
//! that stops before an append is synced loses it, as a crash loses unsynced writes, and the
//! next [`MemLogStore::open`] drops it. Saving a vote syncs every append before it, as one
//! write-ahead log does. A leader's own appends are reported at once and marked in the
//! log's [`Durability`] when synced, as the disk log does (see [`super::durability`]).
//! openraft's core owns the [`MemLogStore`]; its replication tasks read through clones of
//! it.
//!
//! The simulation injects faults into a disk, as a real one has them: every write failing
//! (EIO, or ENOSPC when the filesystem is full) until the disk is healed, and a bit flipped
//! in an entry or the snapshot, which their checksums catch when read: a damaged entry
//! fails the read, and a replica does not open a log or a snapshot holding one.

use super::durability::{Durability, LeaderWrites};
use super::raft_types::{Entry, LogId, Node, NodeId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, RaftLogId, SnapshotMeta, StorageIOError};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A snapshot as a disk keeps it: its meta and its encoded bytes.
pub type StoredSnapshot = (SnapshotMeta<NodeId, Node>, Vec<u8>);

#[derive(Debug, Default)]
struct Disk {
    entries: BTreeMap<u64, Entry>,
    /// Entries up to this index are synced; the rest are lost if the replica stops.
    synced: u64,
    /// Bumped by every truncation, so a sync queued before it cannot mark later entries.
    generation: u64,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    snapshot: Option<StoredSnapshot>,
    /// Every write fails with this until the disk is healed.
    failing: Option<DiskFault>,
    /// Entries whose bytes no longer match their checksum.
    damaged: BTreeSet<u64>,
}

impl Disk {
    /// Whether a write can be made now.
    fn writable(&self) -> io::Result<()> {
        self.failing.map_or(Ok(()), |f| Err(f.error()))
    }

    /// Refuses a read of entries in `range` if any of them is damaged.
    fn readable(&self, range: impl RangeBounds<u64>) -> io::Result<()> {
        match self.damaged.range(range).next() {
            Some(index) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("log entry {index} fails its checksum"),
            )),
            None => Ok(()),
        }
    }
}

/// A write fault of a [`MemDisk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFault {
    /// The device fails every write (EIO).
    Io,
    /// The filesystem is full (ENOSPC).
    Full,
}

impl DiskFault {
    fn error(self) -> io::Error {
        io::Error::from_raw_os_error(match self {
            Self::Io => 5,
            Self::Full => 28,
        })
    }
}

/// A replica's disk, in memory; clones share it.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    disk: Arc<Mutex<Disk>>,
    sync_delay: Duration,
}

impl MemDisk {
    /// A disk whose appends take `sync_delay` to become durable (zero: at once).
    pub fn with_sync_delay(sync_delay: Duration) -> Self {
        Self {
            disk: Arc::default(),
            sync_delay,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The last snapshot written to this disk.
    pub(crate) fn snapshot(&self) -> Option<StoredSnapshot> {
        self.lock().snapshot.clone()
    }

    /// Writes a snapshot (atomically, durably).
    pub(crate) fn put_snapshot(&self, snapshot: StoredSnapshot) -> io::Result<()> {
        let mut d = self.lock();
        d.writable()?;
        d.snapshot = Some(snapshot);
        Ok(())
    }

    /// From now on every write fails with `fault`, until [`MemDisk::heal`].
    pub fn fail_writes(&self, fault: DiskFault) {
        self.lock().failing = Some(fault);
    }

    /// Writes succeed again (damaged data stays damaged).
    pub fn heal(&self) {
        self.lock().failing = None;
    }

    /// Flips a bit in what the disk holds, chosen by `pick`: in one of its synced entries,
    /// or in its snapshot's bytes. Says what was damaged, or `None` if the disk is empty.
    pub fn flip_bit(&self, pick: u64) -> Option<String> {
        let mut d = self.lock();
        let synced = d.synced;
        let entries: Vec<u64> = d.entries.range(..=synced).map(|(i, _)| *i).collect();
        let snapshot = usize::from(d.snapshot.is_some());
        let choices = entries.len() + snapshot;
        if choices == 0 {
            return None;
        }
        let choice = (pick % choices as u64) as usize;
        match entries.get(choice) {
            Some(&index) => {
                d.damaged.insert(index);
                Some(format!("log entry {index}"))
            }
            None => {
                let (_, bytes) = d.snapshot.as_mut()?;
                let at = (pick / 8) as usize % bytes.len().max(1);
                let byte = bytes.get_mut(at)?;
                *byte ^= 1 << (pick % 8);
                Some(format!("snapshot byte {at}"))
            }
        }
    }
}

fn write_err(e: &io::Error) -> StorageError {
    StorageIOError::write_logs(e).into()
}

/// An in-memory Raft log on a [`MemDisk`]; clones share one log.
#[derive(Clone, Debug)]
pub struct MemLogStore {
    disk: MemDisk,
    writes: LeaderWrites,
    durability: Durability,
}

impl MemLogStore {
    /// Opens the log on `disk`, as a replica starting up: entries that were never synced are
    /// gone; a damaged entry is an error, as the disk log's checksums make it. `writes`
    /// says whose appends may be reported before they are synced.
    pub fn open(disk: &MemDisk, writes: LeaderWrites) -> io::Result<Self> {
        let last = {
            let mut d = disk.lock();
            let synced = d.synced;
            d.entries.split_off(&(synced + 1));
            d.damaged.split_off(&(synced + 1));
            d.readable(..)?;
            d.entries.keys().next_back().copied()
        };
        Ok(Self {
            disk: disk.clone(),
            writes,
            durability: Durability::new(last),
        })
    }

    /// How far this log is durable.
    pub fn durability(&self) -> &Durability {
        &self.durability
    }
}

impl RaftLogReader<TypeConfig> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let d = self.disk.lock();
        d.readable(range.clone())
            .map_err(|e| StorageIOError::read_logs(&e))?;
        Ok(d.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for MemLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let d = self.disk.lock();
        let last = d.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: d.purged,
            last_log_id: last.or(d.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut d = self.disk.lock();
        d.writable().map_err(|e| StorageIOError::write_vote(&e))?;
        d.vote = Some(*vote);
        if let Some(&last) = d.entries.keys().next_back() {
            d.synced = d.synced.max(last);
            self.durability.synced(self.durability.generation(), last);
        }
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let vote = self.disk.lock().vote;
        Ok(vote.map(|v| self.writes.on_restart(v)))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut d = self.disk.lock();
        d.writable().map_err(|e| write_err(&e))?;
        d.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.disk.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (upto, generation, early) = {
            let mut d = self.disk.lock();
            d.writable().map_err(|e| write_err(&e))?;
            let mut upto = d.synced;
            let mut early = None;
            for e in entries {
                early.get_or_insert_with(|| self.writes.early(d.vote.as_ref(), e.get_log_id()));
                upto = upto.max(e.get_log_id().index);
                d.entries.insert(e.get_log_id().index, e);
            }
            (upto, d.generation, early.unwrap_or(false))
        };
        let disk = self.disk.clone();
        let durability = self.durability.clone();
        let marked = durability.generation();
        // A leader's own append is reported now; any other once it is synced.
        let callback = if early {
            callback.log_io_completed(Ok(()));
            None
        } else {
            Some(callback)
        };
        let sync = move || {
            let mut d = disk.lock();
            let res = d.writable();
            if res.is_ok() && d.generation == generation {
                d.synced = d.synced.max(upto);
            }
            drop(d);
            match &res {
                Ok(()) => durability.synced(marked, upto),
                Err(e) => {
                    tracing::error!(error = %e, "the raft log could not be synced");
                    durability.failed();
                }
            }
            if let Some(callback) = callback {
                callback.log_io_completed(res);
            }
        };
        if self.disk.sync_delay.is_zero() {
            sync();
        } else {
            // Stopping the replica drops this task: the entries stay unsynced.
            let delay = self.disk.sync_delay;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                sync();
            });
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut d = self.disk.lock();
        d.writable().map_err(|e| write_err(&e))?;
        d.entries.split_off(&log_id.index);
        d.damaged.split_off(&log_id.index);
        d.synced = d.synced.min(log_id.index.saturating_sub(1));
        d.generation += 1;
        self.durability.truncated(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut d = self.disk.lock();
        d.writable().map_err(|e| write_err(&e))?;
        let keep = d.entries.split_off(&(log_id.index + 1));
        d.entries = keep;
        let damaged = d.damaged.split_off(&(log_id.index + 1));
        d.damaged = damaged;
        d.purged = Some(log_id);
        Ok(())
    }
}
