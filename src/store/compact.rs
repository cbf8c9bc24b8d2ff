//! How much disk the store takes, and making it take less.
//!
//! The size is what the data occupies: every keyspace's tables, plus the journal
//! blocks actually written. fjall's own `Database::disk_space` counts the active
//! journal at its preallocated length (64 MiB from the first write), which would make an
//! empty node look like it holds 64 MiB and hide what a compaction saves. A journal is
//! preallocated with `set_len`, which leaves the file sparse, so its allocated blocks
//! are what was written.
//!
//! A major compaction merges each keyspace's tables into one sorted run: overwritten
//! and removed entries (cursors moved on, quarantine entries replayed, index entries of
//! negations) go, and many small tables become few large ones. It runs beside the writer
//! and readers; fjall keeps the tables a reader still holds until it lets go.

use std::path::Path;

use super::error::StoreError;
use super::Store;

/// The store's size on disk before and after a major compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Compaction {
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub millis: u64,
}

impl Store {
    /// Bytes the store's data occupies on disk: its tables and the journal blocks in
    /// use (0 in memory, or while the database reopens after a write error).
    pub fn disk_space(&self) -> u64 {
        let Ok(handles) = self.handles() else {
            return 0;
        };
        handles.table_bytes() + self.path().map_or(0, journal_bytes)
    }

    /// Runs a major compaction of every keyspace, one after the other, and says what
    /// the store took on disk before and after. Blocks until done: async callers use
    /// `spawn_blocking`.
    ///
    /// # Errors
    /// Storage errors; a store reopening after a write error.
    pub fn compact(&self) -> Result<Compaction, StoreError> {
        let started = std::time::Instant::now();
        let bytes_before = self.disk_space();
        let handles = self.handles()?;
        for (name, ks) in handles.ks.all() {
            tracing::debug!(keyspace = name, "major compaction");
            ks.major_compact()?;
        }
        drop(handles);
        Ok(Compaction {
            bytes_before,
            bytes_after: self.disk_space(),
            millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// Bytes allocated to the journal files (`*.jnl`) in a fjall directory.
pub(super) fn journal_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "jnl"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| allocated(&m))
        .sum()
}

#[cfg(unix)]
fn allocated(m: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    // `st_blocks` counts 512-byte units whatever the file system's block size.
    m.blocks() * 512
}

#[cfg(not(unix))]
fn allocated(m: &std::fs::Metadata) -> u64 {
    m.len()
}
