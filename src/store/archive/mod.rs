//! Archival: moving old deltas out of the live store into archive files (see `files`
//! for their layout), in bounded memory, a chunk at a time.
//!
//! Crash safety, per chunk: the chunk's parts are written and fsynced first, and only
//! then are its deltas removed from the store, in one durable batch that also marks the
//! parts applied (`archive/applied/<part>` in the metadata). A crash in between leaves
//! the deltas in both places, never in neither; the next pass first applies every part
//! not marked applied (removing what is still live), so it neither loses nor duplicates
//! a delta. Readers of the archive skip a line whose delta is still live, so a query
//! never shows one twice in that window.
//!
//! What is never archived (so that no query answer can change because of archival,
//! except by missing archived deltas):
//! - a negation, and a delta that a stored negation targets: whether a delta is
//!   negated is decided from live deltas only;
//! - the newest delta (the head): the log's last record carries the head across restarts.
//!
//! Archived ids stay in the id index, so a peer sending an archived delta again is
//! answered as a duplicate and it does not come back.
//!
//! - `files`: the parts' layout, writing (temp, fsync, rename) and reading;
//! - `pass`: one pass: finishing an interrupted one, choosing by age or size, writing;
//! - `remove`: taking a chunk out of the log and the indexes in one durable batch;
//! - `read`: the archive as a query reads it ([`ArchiveScan`]).

pub(super) mod files;
mod pass;
mod read;
mod remove;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use read::ArchiveScan;

use super::error::StoreError;
use super::seq::Seq;
use super::Store;
use crate::delta::Delta;
use crate::filter::DeltaFilter;

const STATS_KEY: &str = "archive/stats";
const APPLIED_PREFIX: &str = "archive/applied/";

/// Which deltas a pass moves to the archive. A delta is archived when it is old enough
/// (`before`) or the store is over its size (`max_bytes`, oldest first by log
/// position), and it matches `filter`, and it is not one the rules above keep live.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArchiveRule {
    /// Deltas whose timestamp (ms) is before this.
    pub before: Option<u64>,
    /// Only deltas matching this filter may be archived.
    pub filter: Option<DeltaFilter>,
    /// Archive oldest first while the store's tables take more bytes on disk than this
    /// (see [`Store::table_bytes`]).
    pub max_bytes: Option<u64>,
}

/// What one pass did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveReport {
    /// Deltas moved out of the live store by this pass.
    pub archived: u64,
    /// Of those, deltas an earlier, interrupted pass had already written to a part.
    pub recovered: u64,
    /// Parts written by this pass (file names under `archive/`).
    pub parts: Vec<String>,
    /// Candidates kept live: negations, negated deltas, the newest delta.
    pub kept: u64,
    /// The store's table bytes on disk before and after (see [`Store::table_bytes`]).
    pub store_bytes_before: u64,
    pub store_bytes_after: u64,
    /// Timestamps (ms) of the oldest and newest delta archived by this pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest: Option<u64>,
    pub took_ms: u64,
}

/// What the archive holds, all passes together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveStats {
    /// Deltas archived (moved out of the live store).
    pub count: u64,
    /// The oldest and newest timestamps (ms) among them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest: Option<u64>,
}

impl ArchiveStats {
    /// Whether deltas in `range` (ms, inclusive; `None` for every time) may have been archived.
    pub fn overlaps(&self, start: Option<u64>, end: Option<u64>) -> bool {
        match (self.count, self.oldest, self.newest) {
            (0, _, _) => false,
            (_, Some(oldest), Some(newest)) => {
                start.is_none_or(|s| s <= newest) && end.is_none_or(|e| e >= oldest)
            }
            _ => true,
        }
    }

    fn add(&mut self, gone: &[(Seq, Delta)]) {
        for (_, d) in gone {
            self.count += 1;
            self.oldest = Some(self.oldest.map_or(d.timestamp, |o| o.min(d.timestamp)));
            self.newest = Some(self.newest.map_or(d.timestamp, |n| n.max(d.timestamp)));
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a store in memory has no data directory to archive into")]
    NoDirectory,
    #[error("archive file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("archive file {path}, line {line}: {message}")]
    BadLine {
        path: PathBuf,
        line: u64,
        message: String,
    },
}

impl ArchiveError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> ArchiveError {
        ArchiveError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

impl Store {
    /// Where this store's archive files are: `archive/` in the data directory.
    pub fn archive_dir(&self) -> Option<PathBuf> {
        self.path().map(|p| p.join(files::DIR))
    }

    /// What the archive holds (from the store's metadata).
    ///
    /// # Errors
    /// Storage errors, or [`StoreError::Corrupt`] for unreadable counters.
    pub fn archive_stats(&self) -> Result<ArchiveStats, StoreError> {
        match self.get_meta(STATS_KEY)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("{STATS_KEY}: {e}"))),
            None => Ok(ArchiveStats::default()),
        }
    }

    /// Bytes the store's tables take on disk: its flushed data (log, indexes, metadata),
    /// without fjall's journal, which is preallocated and recycled once the memtables
    /// it covers are flushed. What `maxBytes` bounds. 0 in memory.
    pub fn table_bytes(&self) -> u64 {
        self.handles().map_or(0, |h| h.table_bytes())
    }

    /// Bytes the archive's files take on disk.
    pub fn archive_bytes(&self) -> u64 {
        self.archive_dir().map_or(0, |d| files::total_bytes(&d))
    }

    /// Every finished archive part, in name order (month, then log position).
    ///
    /// # Errors
    /// When the archive folder cannot be listed.
    pub fn archive_parts(&self) -> Result<Vec<PathBuf>, ArchiveError> {
        match self.archive_dir() {
            Some(dir) => files::list(&dir),
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests;
