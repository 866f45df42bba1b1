//! A replica's data directory as the coordinator opens it: the file that names its format
//! (refused if another version wrote it) and the file that keeps the shard's identity
//! (taken from the shard's first membership, then kept). The Raft log and the snapshots
//! inside it are `crate::shard`'s.

use crate::shard::FORMAT_VERSION;
use dtc_proto::message::ShardId;
use std::io;
use std::path::{Path, PathBuf};

/// The file in a data directory that names its format.
const FORMAT_FILE: &str = "FORMAT";

/// The file in a data directory that holds the shard's identity.
const SHARD_FILE: &str = "SHARD";

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The directory could not be made.
    #[error("cannot create it: {0}")]
    Create(io::Error),
    /// Another version of dtc wrote it.
    #[error("it holds {found:?}, but this dtc reads {wants:?}; use another --data-dir")]
    OtherFormat {
        /// What its format file says.
        found: String,
        /// What this build writes.
        wants: String,
    },
    /// One of its files could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// One of its files could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Its shard identity file holds something else.
    #[error("{} is not a shard identity: {reason}", path.display())]
    BadIdentity {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The Raft log or the snapshots in it cannot be opened.
    #[error("{0}")]
    Store(String),
}

/// What a data directory's format file says (of [`FORMAT_VERSION`]).
fn data_format() -> String {
    format!("dtc data format {FORMAT_VERSION}")
}

/// Creates the data directory's format file, or checks the one there.
pub(super) fn check_format(dir: &Path) -> Result<(), DataDirError> {
    std::fs::create_dir_all(dir).map_err(DataDirError::Create)?;
    let path = dir.join(FORMAT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(found) if found.trim() == data_format() => Ok(()),
        Ok(found) => Err(DataDirError::OtherFormat {
            found: found.trim().to_owned(),
            wants: data_format(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::write(&path, format!("{}\n", data_format()))
                .map_err(|source| DataDirError::Write { path, source })
        }
        Err(source) => Err(DataDirError::Read { path, source }),
    }
}

/// The shard's identity as the data directory keeps it; a directory without one takes
/// `derived` (from the shard's first membership) and keeps it from then on.
pub(super) fn shard_identity(dir: &Path, derived: ShardId) -> Result<ShardId, DataDirError> {
    let path = dir.join(SHARD_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.parse().map_err(|e| DataDirError::BadIdentity {
            reason: format!("{e}"),
            path,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::write(&path, format!("{derived}\n"))
                .map_err(|source| DataDirError::Write { path, source })?;
            Ok(derived)
        }
        Err(source) => Err(DataDirError::Read { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory of its own for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dtc-data-dir-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        dir
    }

    #[test]
    fn a_new_directory_takes_this_format_and_the_shards_identity_and_keeps_them() {
        let dir = scratch("new");
        assert!(check_format(&dir).is_ok());
        assert!(check_format(&dir).is_ok(), "reopened");
        assert_eq!(shard_identity(&dir, ShardId(7)).ok(), Some(ShardId(7)));
        assert_eq!(
            shard_identity(&dir, ShardId(9)).ok(),
            Some(ShardId(7)),
            "kept from the first start"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn another_format_or_a_damaged_identity_is_refused_with_what_to_do() {
        let dir = scratch("other");
        assert!(check_format(&dir).is_ok());
        std::fs::write(dir.join(FORMAT_FILE), "dtc data format 1\n").ok();
        let refused = check_format(&dir);
        assert!(
            matches!(&refused, Err(DataDirError::OtherFormat { found, .. }) if found == "dtc data format 1"),
            "{refused:?}"
        );
        assert!(
            refused
                .err()
                .is_some_and(|e| e.to_string().contains("use another --data-dir"))
        );
        std::fs::write(dir.join(SHARD_FILE), "not a shard\n").ok();
        assert!(matches!(
            shard_identity(&dir, ShardId(1)),
            Err(DataDirError::BadIdentity { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
