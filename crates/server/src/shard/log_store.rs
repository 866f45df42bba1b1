//! The durable Raft log of one replica, on the `raft-log` write-ahead log: votes, entries,
//! truncation, purging and the commit index, in checksummed chunk files under the data
//! directory. openraft's core owns the [`LogStore`]; its replication tasks read entries
//! through clones of the same handle.
//!
//! Appends are acknowledged to openraft only once fsynced: `raft-log`'s flush thread groups
//! the fsyncs of many appends, and its callback tells openraft the entries are durable —
//! except a leader's own appends in a shard of several replicas, reported at once and
//! marked in the log's [`Durability`] when fsynced (see [`super::durability`]).
//!
//! A purge goes in paced steps ([`PurgePacer`]), so that the chunk files it frees are
//! removed one or two at a time between fsyncs rather than a dozen at once. On a shard that
//! stops taking writes, the last steps wait for its next append.

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
use std::time::{Duration, Instant};
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

/// A purge goes in steps of about this many entries (the log ids at these intervals are
/// remembered as they are appended)...
const PURGE_STEP: u64 = 1000;

/// ...one step at most this often. `raft-log`'s flush thread removes the chunk files a
/// purge frees, and fsyncs the directory, between two fsyncs of the log: removing the dozen
/// chunks one snapshot frees at once held a leader's appends for 0.15-0.3 s.
const PURGE_PACE: Duration = Duration::from_millis(200);

/// The most remembered log ids (when nothing purges for a long time, the oldest are
/// dropped and the first steps of the next purge are larger).
const MAX_PURGE_MARKS: usize = 1024;

/// Where the log is to be purged up to, and how to get there in steps. Pure: the caller
/// performs each step it returns.
#[derive(Debug, Default)]
struct PurgePacer {
    /// Where openraft asked the log to be purged up to.
    target: Option<LogId>,
    /// Log ids every [`PURGE_STEP`] entries, past the last step taken, in order.
    marks: std::collections::VecDeque<LogId>,
    /// When the last step was taken.
    last_step: Option<Instant>,
}

impl PurgePacer {
    /// Entries up to `last` were appended.
    fn appended(&mut self, first: u64, last: LogId) {
        let crossed = first.div_ceil(PURGE_STEP) <= last.index / PURGE_STEP;
        if crossed {
            if self.marks.len() >= MAX_PURGE_MARKS {
                self.marks.pop_front();
            }
            self.marks.push_back(last);
        }
    }

    /// The log was cut back to end before `index`.
    fn truncated(&mut self, index: u64) {
        while self.marks.back().is_some_and(|m| m.index >= index) {
            self.marks.pop_back();
        }
    }

    /// openraft asks for the log to be purged up to `upto`.
    fn purge(&mut self, upto: LogId) {
        if self.target.is_none_or(|t| t.index < upto.index) {
            self.target = Some(upto);
        }
    }

    /// The next point to purge up to at `now`, if a step is due: the next remembered id
    /// before the target, or the target itself.
    fn step(&mut self, purged: Option<u64>, now: Instant) -> Option<LogId> {
        let target = self.target?;
        if purged.is_some_and(|p| p >= target.index) {
            self.target = None;
            return None;
        }
        if self
            .last_step
            .is_some_and(|at| now.duration_since(at) < PURGE_PACE)
        {
            return None;
        }
        while self
            .marks
            .front()
            .is_some_and(|m| purged.is_some_and(|p| m.index <= p))
        {
            self.marks.pop_front();
        }
        let next = match self.marks.front() {
            Some(m) if m.index < target.index => *m,
            _ => target,
        };
        self.marks.retain(|m| m.index > next.index);
        if next == target {
            self.target = None;
        }
        self.last_step = Some(now);
        Some(next)
    }
}

/// The log and the purge under way in it, behind one lock.
#[derive(Debug)]
struct Wal {
    raft: RaftLog<WalTypes>,
    pacer: PurgePacer,
}

impl Wal {
    /// Takes the next step of a purge, if one is due.
    fn purge_step(&mut self) -> io::Result<()> {
        if self.pacer.target.is_none() {
            return Ok(());
        }
        let purged = self.raft.log_state().purged().map(|id| id.0.index);
        if let Some(upto) = self.pacer.step(purged, Instant::now()) {
            self.raft.purge(WalLogId(upto))?;
        }
        Ok(())
    }
}

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
    log: Arc<Mutex<Wal>>,
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
            log: Arc::new(Mutex::new(Wal {
                raft: log,
                pacer: PurgePacer::default(),
            })),
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
    fn lock(&self) -> MutexGuard<'_, Wal> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until everything written so far is on disk.
    async fn sync(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.lock().raft.flush(true, Some(Flushed::Notify(tx)))?;
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
            .raft
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
        let state = log.raft.log_state();
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
            .raft
            .save_vote(WalVote(*vote))
            .map_err(|e| StorageIOError::write_vote(&e))?;
        // The flush thread syncs in order: once the vote is durable, so is every append
        // queued before it, among them a former leader's own appends reported early.
        self.sync()
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let vote = self.lock().raft.log_state().vote().map(|v| v.0);
        Ok(vote.map(|v| self.writes.on_restart(v)))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(id) = committed {
            self.lock()
                .raft
                .commit(WalLogId(id))
                .map_err(|e| write_err(&e))?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().raft.log_state().committed().map(|id| id.0))
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
            .early(log.raft.log_state().vote().map(|v| &v.0), &first);
        let mut last = first;
        log.raft
            .append(entries.map(|e| {
                last = *e.get_log_id();
                (WalLogId(last), WalPayload(e.payload))
            }))
            .map_err(|e| write_err(&e))?;
        log.pacer.appended(first.index, last);
        log.purge_step().map_err(|e| write_err(&e))?;
        let upto = last.index;
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
        log.raft
            .flush(true, Some(flushed))
            .map_err(|e| write_err(&e))?;
        drop(log);
        if let Some(callback) = report_now {
            callback.log_io_completed(Ok(()));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut log = self.lock();
        self.durability.truncated(log_id.index);
        log.pacer.truncated(log_id.index);
        log.raft
            .truncate(log_id.index)
            .map(drop)
            .map_err(|e| write_err(&e))
    }

    /// Purges in steps (paced: see the module doc): this takes the first, the next appends take
    /// the rest. Entries kept a little longer change nothing: openraft reads none before the
    /// point it asked to purge, and a restart finds them after the snapshot.
    ///
    /// A purge past the last entry (a follower that installed a snapshot) is done at once:
    /// the next append follows the snapshot, and the log must end there first.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut log = self.lock();
        let last = log.raft.log_state().last().map(|id| id.0.index);
        if last.is_none_or(|l| l <= log_id.index) {
            log.pacer = PurgePacer::default();
            return log
                .raft
                .purge(WalLogId(log_id))
                .map(drop)
                .map_err(|e| write_err(&e));
        }
        log.pacer.purge(log_id);
        log.purge_step().map_err(|e| write_err(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    #[test]
    fn a_purge_goes_in_paced_steps_through_the_remembered_ids_to_its_target() {
        let mut p = PurgePacer::default();
        // Appends of 300 entries: a mark each time a multiple of the step is crossed.
        for first in (1..=4800).step_by(300) {
            p.appended(first, id(first + 299));
        }
        let marks: Vec<u64> = p.marks.iter().map(|m| m.index).collect();
        assert_eq!(marks, [1200, 2100, 3000, 4200]);
        p.purge(id(3500));
        let t0 = Instant::now();
        assert_eq!(p.step(None, t0), Some(id(1200)));
        assert_eq!(p.step(Some(1200), t0 + PURGE_PACE / 2), None, "not yet");
        let mut at = t0;
        let mut purged = 1200;
        let mut steps = vec![];
        while let Some(next) = {
            at += PURGE_PACE;
            p.step(Some(purged), at)
        } {
            purged = next.index;
            steps.push(purged);
        }
        assert_eq!(steps, [2100, 3000, 3500]);
        assert_eq!(p.step(Some(3500), at + PURGE_PACE * 10), None, "done");
        assert_eq!(p.marks.iter().map(|m| m.index).collect::<Vec<_>>(), [4200]);
    }

    #[test]
    fn a_truncation_forgets_the_ids_past_it() {
        let mut p = PurgePacer::default();
        for first in (1..=3000).step_by(500) {
            p.appended(first, id(first + 499));
        }
        p.truncated(2000);
        assert!(p.marks.iter().all(|m| m.index < 2000));
        assert!(!p.marks.is_empty());
    }

    /// Appends blank entries straight to the log (openraft's callback cannot be made
    /// outside it) and waits until they are on disk.
    async fn append(store: &LogStore, range: std::ops::RangeInclusive<u64>) -> anyhow::Result<()> {
        store
            .lock()
            .raft
            .append(range.map(|i| (WalLogId(id(i)), WalPayload(EntryPayload::Blank))))?;
        store.sync().await?;
        Ok(())
    }

    #[tokio::test]
    async fn a_purge_past_the_last_entry_is_done_at_once_and_appends_follow_it()
    -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("dtc-log-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let writes = LeaderWrites {
            replica: 1,
            parallel: false,
        };
        let mut store = LogStore::open(&dir, writes)?;
        append(&store, 1..=10).await?;
        // Within the log: paced, the first step at once (no mark yet: the target itself).
        store.purge(id(5)).await?;
        assert_eq!(store.get_log_state().await?.last_purged_log_id, Some(id(5)));
        // Past it, as after installing a snapshot: at once, and the log goes on from there.
        store.purge(id(50)).await?;
        let state = store.get_log_state().await?;
        assert_eq!(state.last_purged_log_id, Some(id(50)));
        append(&store, 51..=52).await?;
        assert_eq!(store.get_log_state().await?.last_log_id, Some(id(52)));
        drop(store);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
