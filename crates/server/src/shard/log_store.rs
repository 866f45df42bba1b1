//! The durable Raft log of one replica, on the `raft-log` write-ahead log: votes, entries,
//! truncation, purging and the commit index, in checksummed chunk files under the data
//! directory. openraft's core owns the [`LogStore`]; its replication tasks read entries
//! through clones of the same handle.
//!
//! Appends are acknowledged to openraft only once fsynced: `raft-log`'s flush thread groups
//! the fsyncs of many appends, and its callback tells openraft the entries are durable —
//! except a leader's own appends in a shard of several replicas, reported at once and
//! marked in the log's [`Durability`] when fsynced (see [`super::durability`]).

use super::durability::{Durability, LeaderWrites};
use super::log_tail::check_log_tail;
use super::raft_types::{Entry, LogId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{EntryPayload, OptionalSend, RaftLogId, StorageIOError};
use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::codeq::{Decode, Encode};
use raft_log::{RaftLog, Types};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::io::{self, Read, Write};
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// The most bytes one record of the log may announce; anything larger is corruption.
const MAX_RECORD: u32 = 512 * 1024 * 1024;

/// How many entries, and how many payload bytes, the log keeps cached in memory.
const CACHE_ITEMS: usize = 8192;
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The size at which the log starts a new chunk file. `raft-log` evicts cached entries,
/// and purges, only up to the end of the last closed chunk: small chunks keep both the
/// cache and the disk close to what the last snapshot needs.
const CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// A log id as `raft-log` stores it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WalLogId(pub(super) LogId);

/// An entry's payload as `raft-log` stores it.
#[derive(Clone, Debug)]
pub struct WalPayload(pub(super) EntryPayload<TypeConfig>);

/// A vote as `raft-log` stores it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd)]
pub struct WalVote(Vote);

/// Appended entries up to `upto`, to mark durable in `durability` once fsynced.
pub struct Synced {
    durability: Durability,
    generation: u64,
    upto: u64,
}

impl Synced {
    fn done(&self, res: &io::Result<()>) {
        match res {
            Ok(()) => self.durability.synced(self.generation, self.upto),
            Err(e) => {
                tracing::error!(error = %e, "the raft log could not be synced");
                self.durability.failed();
            }
        }
    }
}

/// Who is told when a flush is durable.
pub enum Flushed {
    /// openraft, after an append (and the log's durability).
    Append(LogFlushed<TypeConfig>, Synced),
    /// Only the log's durability: a leader's own append, already reported to openraft.
    Own(Synced),
    /// A waiting call (a vote).
    Notify(oneshot::Sender<io::Result<()>>),
}

impl raft_log::Callback for Flushed {
    fn send(self, res: io::Result<()>) {
        match self {
            Self::Append(f, synced) => {
                synced.done(&res);
                f.log_io_completed(res);
            }
            Self::Own(synced) => synced.done(&res),
            Self::Notify(tx) => {
                tx.send(res).ok();
            }
        }
    }
}

/// The `raft-log` type parameters of a shard's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalTypes;

impl Types for WalTypes {
    type LogId = WalLogId;
    type LogPayload = WalPayload;
    type Vote = WalVote;
    type Callback = Flushed;
    type UserData = ();

    fn log_index(log_id: &WalLogId) -> u64 {
        log_id.0.index
    }

    fn payload_size(payload: &WalPayload) -> u64 {
        match &payload.0 {
            EntryPayload::Normal(batch) => batch
                .0
                .iter()
                .map(|c| 64 + c.payload_len() as u64)
                .sum::<u64>()
                .max(64),
            EntryPayload::Blank | EntryPayload::Membership(_) => 64,
        }
    }
}

/// Writes `value` as a 4-byte big-endian length and its postcard encoding.
fn encode_framed<T: Serialize, W: Write>(value: &T, mut w: W) -> io::Result<usize> {
    let bytes = postcard::to_allocvec(value).map_err(io::Error::other)?;
    let len = u32::try_from(bytes.len()).map_err(io::Error::other)?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(&bytes)?;
    Ok(4 + bytes.len())
}

/// Reads what [`encode_framed`] wrote.
fn decode_framed<T: DeserializeOwned, R: Read>(mut r: R) -> io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_RECORD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a log record announces {len} bytes"),
        ));
    }
    // Grow with what the reader holds, not with what the length announces.
    let mut bytes = Vec::new();
    r.take(u64::from(len)).read_to_end(&mut bytes)?;
    if bytes.len() != len as usize {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "a log record announces {len} bytes and holds {}",
                bytes.len()
            ),
        ));
    }
    postcard::from_bytes(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads one log entry's payload as the log stores it (what a replica replays at start):
/// the entry, or why its bytes are refused.
pub fn read_log_payload(bytes: &[u8]) -> io::Result<EntryPayload<TypeConfig>> {
    decode_framed(bytes)
}

/// Stores a wrapper as its inner value's framed postcard encoding.
macro_rules! framed_codec {
    ($($wrapper:ident),*) => {$(
        impl Encode for $wrapper {
            fn encode<W: Write>(&self, w: W) -> io::Result<usize> {
                encode_framed(&self.0, w)
            }
        }

        impl Decode for $wrapper {
            fn decode<R: Read>(r: R) -> io::Result<Self> {
                decode_framed(r).map(Self)
            }
        }
    )*};
}

framed_codec!(WalLogId, WalPayload, WalVote);

/// A replica's Raft log; clones share one log.
#[derive(Clone)]
pub struct LogStore {
    log: Arc<Mutex<RaftLog<WalTypes>>>,
    writes: LeaderWrites,
    durability: Durability,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, replaying what an earlier run wrote. A record
    /// torn by a crash at the end of the last chunk is dropped; a damaged record that other
    /// records follow is an error, and nothing is dropped (see `shard::log_tail`).
    /// `writes` says whose appends may be reported before they are fsynced.
    pub fn open(dir: &Path, writes: LeaderWrites) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        check_log_tail(dir).map_err(io::Error::other)?;
        let mut config = raft_log::Config::new(dir.display());
        config.log_cache_max_items = Some(CACHE_ITEMS);
        config.log_cache_capacity = Some(CACHE_BYTES);
        config.wal.truncate_incomplete_record = Some(true);
        // Sync as soon as a write is queued: under load, writes queue up behind the running
        // fsync and share the next one anyway; when idle, waiting only adds latency.
        config.wal.flush_batch_wait = Some(std::time::Duration::ZERO);
        config.wal.chunk_max_size = Some(CHUNK_BYTES);
        let log = RaftLog::open(Arc::new(config))?;
        let durability = Durability::new(log.log_state().last().map(|id: &WalLogId| id.0.index));
        Ok(Self {
            log: Arc::new(Mutex::new(log)),
            writes,
            durability,
        })
    }

    /// How far this log is durable.
    pub fn durability(&self) -> &Durability {
        &self.durability
    }

    /// Locks the log. A poisoned lock is taken over: the log itself is consistent between
    /// calls, and its own checks reject an out-of-order write.
    fn lock(&self) -> MutexGuard<'_, RaftLog<WalTypes>> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until everything written so far is on disk.
    async fn sync(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.lock().flush(true, Some(Flushed::Notify(tx)))?;
        rx.await
            .map_err(|_| io::Error::other("the log's flush thread stopped"))?
    }
}

fn write_err(e: &io::Error) -> StorageError {
    StorageIOError::write_logs(e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let from = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&n) => n.saturating_add(1),
            Bound::Excluded(&n) => n,
            Bound::Unbounded => u64::MAX,
        };
        let log = self.lock();
        let entries: io::Result<Vec<Entry>> = log
            .read(from, to)
            .map(|r| {
                r.map(|(id, payload)| Entry {
                    log_id: id.0,
                    payload: payload.0,
                })
            })
            .collect();
        entries.map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let log = self.lock();
        let state = log.log_state();
        let last_purged_log_id = state.purged().map(|id| id.0);
        let last_log_id = state.last().map(|id| id.0).or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.lock()
            .save_vote(WalVote(*vote))
            .map_err(|e| StorageIOError::write_vote(&e))?;
        // The flush thread syncs in order: once the vote is durable, so is every append
        // queued before it, among them a former leader's own appends reported early.
        self.sync()
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let vote = self.lock().log_state().vote().map(|v| v.0);
        Ok(vote.map(|v| self.writes.on_restart(v)))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(id) = committed {
            self.lock()
                .commit(WalLogId(id))
                .map_err(|e| write_err(&e))?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().log_state().committed().map(|id| id.0))
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
        let mut log = self.lock();
        let mut entries = entries.into_iter().peekable();
        let Some(first) = entries.peek().map(|e| *e.get_log_id()) else {
            drop(log);
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let early = self
            .writes
            .early(log.log_state().vote().map(|v| &v.0), &first);
        let mut upto = first.index;
        log.append(entries.map(|e| {
            upto = e.get_log_id().index;
            (WalLogId(*e.get_log_id()), WalPayload(e.payload))
        }))
        .map_err(|e| write_err(&e))?;
        let synced = Synced {
            durability: self.durability.clone(),
            generation: self.durability.generation(),
            upto,
        };
        // A leader's own append is reported now; any other once it is fsynced.
        let (flushed, report_now) = if early {
            (Flushed::Own(synced), Some(callback))
        } else {
            (Flushed::Append(callback, synced), None)
        };
        log.flush(true, Some(flushed)).map_err(|e| write_err(&e))?;
        drop(log);
        if let Some(callback) = report_now {
            callback.log_io_completed(Ok(()));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut log = self.lock();
        self.durability.truncated(log_id.index);
        log.truncate(log_id.index)
            .map(drop)
            .map_err(|e| write_err(&e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.lock()
            .purge(WalLogId(log_id))
            .map(drop)
            .map_err(|e| write_err(&e))
    }
}
