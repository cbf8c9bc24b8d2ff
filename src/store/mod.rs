//! The delta store: a gap-free log of deltas by local sequence number, with an id
//! index (dedup), query indexes, the negation relation and small metadata (system id,
//! link cursors) in one database so they commit atomically. The database is fjall on
//! disk ([`Store::open`]) or ordered maps in memory ([`Store::temporary`]), behind
//! `backend`; everything else here is the same code for both.
//!
//! One way in, one way out of the log:
//! - writes: [`Store::append`] (`append`) queues deltas and their side writes to one
//!   writer thread (`writer`) that groups concurrent requests into one batch and one
//!   fsync;
//! - reads of the log: [`Store::read_log`] and [`LogTail`] (`tail`), raw records with
//!   the parsed deltas as a view of the same read; point reads and queries go straight
//!   to the backend from any thread (`lookup`, `query`).
//!
//! Archival ([`Store::archive`], `archive`) moves old deltas out to files and leaves
//! gaps in the log; archived ids stay in the id index for dedup.
//!
//! Only durable entries are visible to readers of the log: the published head
//! ([`Store::head`], [`Store::watch_head`]) moves after commit *and* persist.

mod append;
mod archive;
mod backend;
mod backup;
mod compact;
mod error;
mod faults;
mod handles;
mod health;
mod keys;
mod lookup;
mod open;
mod postings;
mod quarantine;
mod query;
mod record;
mod seq;
mod tail;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use handles::{Handles, Slot};

pub use append::{AppendOutcome, NewEntry, PendingAppend, SideWrites};
pub use archive::{ArchiveError, ArchiveReport, ArchiveRule, ArchiveScan, ArchiveStats};
pub use backup::Backup;
pub use compact::Compaction;
pub use error::StoreError;
pub use health::StorageHealth;
pub use open::Durability;
pub use quarantine::DEFAULT_LIMIT as QUARANTINE_LIMIT;
pub use query::{Query, QueryReader, ReadStop};
pub use record::{RawRecord, StoredDelta};
pub use seq::Seq;
pub use tail::{LogBatch, LogTail, ReadLimit};

/// A handle to the store; cheap to clone. Every clone talks to the same writer thread
/// and reads the same database; the writer stops with [`Store::close`] or when the last
/// handle drops.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// The open database; the writer reopens it after a write error (see `handles`).
    handles: Arc<Slot>,
    /// Whether writes are possible now; the writer keeps it (see `health`).
    health: Arc<health::HealthState>,
    faults: faults::FaultSwitch,
    /// `None` in memory.
    path: Option<PathBuf>,
    temporary: bool,
    writer: writer::WriterHandle,
    head: watch::Receiver<Seq>,
    duplicates: Arc<AtomicU64>,
    quarantine: quarantine::QuarantineState,
    /// The newest durable log records, for tailers (see `tail`).
    recent: Arc<tail::RecentLog>,
    /// Held by an archival pass: one at a time (see `archive`).
    archive_lock: std::sync::Mutex<()>,
}

impl Store {
    /// The data directory; `None` for a store in memory.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Whether the store goes away with the process (in memory, or a temporary directory).
    pub fn is_temporary(&self) -> bool {
        self.inner.temporary
    }

    /// The highest durable sequence number: the number of deltas ever stored, archived
    /// ones included (archival leaves gaps in the log).
    pub fn head(&self) -> Seq {
        *self.inner.head.borrow()
    }

    /// A receiver that changes whenever the durable head moves; log tailers wait on it.
    pub fn watch_head(&self) -> watch::Receiver<Seq> {
        self.inner.head.clone()
    }

    /// Deltas offered again after they were stored, since this process opened the store.
    pub fn duplicates(&self) -> u64 {
        self.inner.duplicates.load(Ordering::Relaxed)
    }

    /// The open database, for one call (see `handles`).
    pub(crate) fn handles(&self) -> Result<Arc<Handles>, StoreError> {
        self.inner.handles.get()
    }

    /// Whether the store can write now, and the last write error.
    pub fn health(&self) -> StorageHealth {
        self.inner.health.snapshot()
    }

    /// Makes every write fail as on a full disk while `on` (tests of recovery).
    #[doc(hidden)]
    pub fn inject_write_faults(&self, on: bool) {
        self.inner.faults.set(on);
    }

    /// Waits until everything submitted so far is written and stops the writer.
    /// Later appends fail with [`StoreError::Closed`]. Idempotent.
    pub fn close(&self) {
        self.inner.writer.shutdown();
    }
}

#[cfg(test)]
mod tests;
