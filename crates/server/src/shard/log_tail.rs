//! Tells, before a replica's log is opened, a write torn by a crash from a damaged record.
//!
//! `raft-log` drops whatever it cannot read at the end of the log's last chunk file, as a
//! write a crash interrupted. A record whose length field was damaged on disk reads the
//! same way (it announces more bytes than the file holds), and dropping it would drop every
//! record after it, entries this replica had acknowledged among them. So before
//! [`super::LogStore::open`] hands the directory to `raft-log`, [`check_log_tail`] reads
//! the last chunk file itself: a record that cannot be read at the end is a torn write
//! only if no readable record follows it. If one does, the log is damaged and the replica
//! must not start; nothing has been truncated.

use super::log_store::WalTypes;
use raft_log::codeq::Decode;
use raft_log::{RaftWalTypes, WALRecord};
use std::io;
use std::path::{Path, PathBuf};

/// One record of a chunk file, as `raft-log` writes it.
type Record = WALRecord<RaftWalTypes<WalTypes>>;

/// A log that `raft-log` would truncate past records it had written in full.
#[derive(Debug, thiserror::Error)]
pub enum LogTailError {
    /// A record cannot be read, and readable records follow it.
    #[error(
        "the raft log is damaged: the record at offset {offset} of {file} cannot be read \
         ({reason}), and records follow it at offset {next}, so it is not a write torn by a \
         crash; nothing was truncated. Keep the file for inspection, then empty this \
         replica's data directory and restart it: it catches up from the other replicas"
    )]
    Damaged {
        file: PathBuf,
        offset: usize,
        next: usize,
        reason: String,
    },
    /// The log's directory or a chunk file could not be read.
    #[error("the raft log in {dir} cannot be read: {source}")]
    Io { dir: PathBuf, source: io::Error },
}

/// What reading one chunk file found.
#[derive(Debug, PartialEq, Eq)]
enum Tail {
    /// Every record reads.
    Clean,
    /// The records from this offset on cannot be read and nothing readable follows: a
    /// torn write, which `raft-log` drops.
    Torn(usize),
    /// The record at `offset` cannot be read, yet a record reads at `next`.
    Damaged {
        offset: usize,
        next: usize,
        reason: String,
    },
}

/// Checks the chunk files `raft-log` will open with permission to truncate: the last one,
/// and the one before it whenever the last would be removed whole.
pub fn check_log_tail(dir: &Path) -> Result<(), LogTailError> {
    let io_err = |source| LogTailError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let mut chunks = match chunk_files(dir) {
        Ok(chunks) => chunks,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(e)),
    };
    while let Some(file) = chunks.pop() {
        let bytes = std::fs::read(&file).map_err(io_err)?;
        match read_tail(&bytes) {
            Tail::Clean => return Ok(()),
            Tail::Torn(offset) => {
                if offset > 0 {
                    return Ok(());
                }
            }
            Tail::Damaged {
                offset,
                next,
                reason,
            } => {
                return Err(LogTailError::Damaged {
                    file,
                    offset,
                    next,
                    reason,
                });
            }
        }
    }
    Ok(())
}

/// The log's chunk files (`r-<id>.wal`, ids zero-padded), oldest first.
fn chunk_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let chunk = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("r-") && n.ends_with(".wal"));
        if chunk {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads the records of one chunk file's bytes until one fails, then looks for a readable
/// record after it.
fn read_tail(bytes: &[u8]) -> Tail {
    let mut offset = 0;
    while offset < bytes.len() {
        let reason = match read_record(&bytes[offset..]) {
            Ok(len) => {
                offset += len;
                continue;
            }
            Err(e) => e.to_string(),
        };
        let next = (offset + 1..bytes.len()).find(|&at| read_record(&bytes[at..]).is_ok());
        return match next {
            Some(next) => Tail::Damaged {
                offset,
                next,
                reason,
            },
            None => Tail::Torn(offset),
        };
    }
    Tail::Clean
}

/// Decodes one record (its checksum verified) at the start of `bytes`: its length.
fn read_record(bytes: &[u8]) -> io::Result<usize> {
    let mut rest = bytes;
    Record::decode(&mut rest)?;
    Ok(bytes.len() - rest.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::log_store::{Flushed, WalLogId, WalPayload};
    use crate::shard::{LeaderWrites, LogStore};
    use anyhow::{Context, ensure};
    use openraft::storage::RaftLogStorage;
    use openraft::{CommittedLeaderId, EntryPayload, LogId};
    use raft_log::RaftLog;
    use raft_log::api::raft_log_writer::RaftLogWriter;
    use std::sync::Arc;

    /// A fresh directory of its own for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dtc-log-tail-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        dir
    }

    /// Writes entries 1..=`n` (blank, term 1) to a fresh log in `dir`, fsynced; returns its
    /// one chunk file and the offset at which each record starts.
    fn write_log(dir: &Path, n: u64) -> anyhow::Result<(PathBuf, Vec<usize>)> {
        std::fs::create_dir_all(dir)?;
        let mut log = RaftLog::<WalTypes>::open(Arc::new(raft_log::Config::new(dir.display())))?;
        log.append((1..=n).map(|i| {
            let id = LogId::new(CommittedLeaderId::new(1, 0), i);
            (WalLogId(id), WalPayload(EntryPayload::Blank))
        }))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        log.flush(true, Some(Flushed::Notify(tx)))?;
        rx.blocking_recv()??;
        drop(log);
        let files = chunk_files(dir)?;
        ensure!(files.len() == 1, "a small log fits one chunk: {files:?}");
        let file = files.into_iter().next().context("one chunk")?;
        let bytes = std::fs::read(&file)?;
        let mut starts = vec![0];
        let mut at = 0;
        while let Ok(len) = read_record(&bytes[at..]) {
            at += len;
            if at == bytes.len() {
                break;
            }
            starts.push(at);
        }
        ensure!(
            starts.len() as u64 == n + 1,
            "a checkpoint, then a record per entry"
        );
        Ok((file, starts))
    }

    /// The last entry the log in `dir` holds, opened as a replica opens it.
    fn reopen(dir: &Path) -> io::Result<Option<u64>> {
        let writes = LeaderWrites {
            replica: 1,
            parallel: false,
        };
        let mut store = LogStore::open(dir, writes)?;
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        let state = runtime
            .block_on(store.get_log_state())
            .map_err(io::Error::other)?;
        Ok(state.last_log_id.map(|id| id.index))
    }

    #[test]
    fn a_write_torn_at_the_end_is_dropped_and_the_rest_kept() -> anyhow::Result<()> {
        let dir = scratch("torn");
        let (file, starts) = write_log(&dir, 5)?;
        let len = std::fs::metadata(&file)?.len();
        let last = starts[5];
        let f = std::fs::OpenOptions::new().write(true).open(&file)?;
        f.set_len((last as u64 + len) / 2)?;
        drop(f);
        assert_eq!(read_tail(&std::fs::read(&file)?), Tail::Torn(last));
        assert_eq!(reopen(&dir)?, Some(4));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn a_damaged_length_with_records_after_it_stops_the_replica_and_truncates_nothing()
    -> anyhow::Result<()> {
        let dir = scratch("damaged");
        let (file, starts) = write_log(&dir, 5)?;
        let mut bytes = std::fs::read(&file)?;
        // Entry 2's record: its type (4 bytes), then its log id's length field, made to
        // announce 16 MiB, more than the file holds: read alone, a torn write.
        let at = starts[2] + 4;
        bytes[at..at + 4].copy_from_slice(&(16u32 << 20).to_be_bytes());
        std::fs::write(&file, &bytes)?;
        let Err(err) = reopen(&dir) else {
            anyhow::bail!("a damaged log opened");
        };
        let message = err.to_string();
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert!(message.contains(name), "{message}");
        assert!(
            message.contains(&format!("offset {}", starts[2])),
            "{message}"
        );
        assert!(
            message.contains(&format!("offset {}", starts[3])),
            "{message}"
        );
        assert_eq!(std::fs::read(&file)?, bytes, "nothing truncated");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn a_flipped_bit_in_the_last_chunk_start_keeps_the_chunk() -> anyhow::Result<()> {
        let dir = scratch("checkpoint");
        let (file, starts) = write_log(&dir, 3)?;
        let mut bytes = std::fs::read(&file)?;
        bytes[starts[1] - 1] ^= 0x10;
        std::fs::write(&file, &bytes)?;
        assert!(matches!(
            check_log_tail(&dir),
            Err(LogTailError::Damaged { offset: 0, .. })
        ));
        assert!(file.exists(), "the chunk is not removed");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn a_clean_log_and_a_missing_one_pass() -> anyhow::Result<()> {
        let dir = scratch("clean");
        check_log_tail(&dir)?;
        write_log(&dir, 2)?;
        check_log_tail(&dir)?;
        assert_eq!(reopen(&dir)?, Some(2));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
