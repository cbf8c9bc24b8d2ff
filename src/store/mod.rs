//! The delta store: a gap-free log of deltas by local sequence number, with an id
//! index (dedup), query indexes, the negation relation and small metadata (system id,
//! link cursors) in one database so they commit atomically. The database is fjall on
//! disk ([`Store::open`]) or ordered maps in memory ([`Store::temporary`]), behind
//! `backend`; everything else here is the same code for both.
//!
//! All writes go through one writer thread (see `writer`) that groups concurrent
//! requests into one batch and one fsync. Reads go straight to the backend from any
//! thread. Only durable entries are visible to readers of the log: the published
//! head (`head()`, `watch_head()`) moves after commit *and* persist.

mod backend;
mod faults;
mod handles;
mod health;
mod keys;
mod open;
mod postings;
mod quarantine;
mod query;
mod recent;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::delta::Delta;
use backend::{Db, Slice};
use handles::{Handles, Slot};

pub use health::StorageHealth;
pub use query::{Query, QueryReader, ReadStop};
pub(crate) use recent::Registration as TailRegistration;
pub use writer::{AppendOutcome, NewEntry, SideWrites};

/// The most record bytes one raw scan holds: a sender reads the log in scans of up to
/// 1000 positions, and 1000 deltas at the size limit would be a gigabyte.
const SCAN_BYTES: usize = 8 * 1024 * 1024;

/// A local sequence number: position of a delta in this node's log. The first delta
/// stored gets `Seq(1)`; `Seq(0)` means "before everything" and is the cursor of a
/// reader that has seen nothing.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl std::fmt::Display for Seq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A delta as it sits in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDelta {
    pub seq: Seq,
    /// The peer system this delta arrived from; `None` when it was made or posted here.
    pub origin: Option<String>,
    pub delta: Delta,
}

/// A log record as stored, unparsed: what a sender forwards without re-encoding. It
/// shares the stored bytes (reference-counted), so reading it copies nothing.
#[derive(Clone)]
pub struct RawRecord {
    pub seq: Seq,
    record: Slice,
    origin: Option<std::ops::Range<usize>>,
    json_at: usize,
}

impl RawRecord {
    /// Reads a record's layout once; `None` for a record from `skip_origin`, whose delta
    /// is not looked at. A kept record's text is checked here, so the accessors need not.
    fn read(
        seq: Seq,
        record: Slice,
        skip_origin: Option<&str>,
    ) -> Result<Option<RawRecord>, StoreError> {
        let (origin, json) = keys::split_record(&record)?;
        if skip_origin.is_some() && origin == skip_origin {
            return Ok(None);
        }
        std::str::from_utf8(json).map_err(|_| {
            StoreError::Corrupt(format!("log record at seq {seq}: delta is not UTF-8"))
        })?;
        let json_at = record.len() - json.len();
        let origin = origin.map(|o| keys::RECORD_HEADER..keys::RECORD_HEADER + o.len());
        Ok(Some(RawRecord {
            seq,
            record,
            origin,
            json_at,
        }))
    }

    /// The peer system the delta arrived from; `None` when it was made or posted here.
    pub fn origin(&self) -> Option<&str> {
        let range = self.origin.clone()?;
        // Checked as UTF-8 in `new`, so this never falls back.
        self.record
            .get(range)
            .and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The delta's JSON as stored.
    pub fn json(&self) -> &str {
        // Checked as UTF-8 in `new`, so this never falls back.
        self.record
            .get(self.json_at..)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for RawRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRecord")
            .field("seq", &self.seq)
            .field("origin", &self.origin())
            .field("json", &self.json())
            .finish()
    }
}

/// Raw log records read from a range of positions: see [`Store::scan_raw_skipping`].
#[derive(Debug, Default)]
pub struct RawScan {
    /// The records kept, in log order.
    pub records: Vec<RawRecord>,
    /// The last position read, kept or passed over (the range's start when nothing was read).
    pub through: Seq,
}

/// When an acknowledged write is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync (`PersistMode::SyncData`) each group commit before anything is acknowledged.
    Sync,
    /// Leave writes in OS buffers: for fjall stores whose contents need not survive a
    /// crash (tests, benchmarks). A store in memory has nothing to fsync either way.
    Buffered,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the data directory {0} is open in another process (only one rhizome node can use it)"
    )]
    Locked(PathBuf),
    #[error("storage error: {0}")]
    Fjall(#[from] fjall::Error),
    #[error("corrupt store: {0}")]
    Corrupt(String),
    #[error("could not create a temporary directory: {0}")]
    TempDir(std::io::Error),
    #[error("the store's writer has stopped")]
    Closed,
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// This write was in a group commit that failed: none of it was acknowledged, and
    /// sending it again is safe (deltas are deduplicated by id).
    #[error("the write failed and was not acknowledged (safe to retry): {0}")]
    WriteFailed(String),
    /// An earlier write failed and the store has not recovered yet; it retries by itself.
    #[error("the store cannot write until this is resolved (it retries by itself): {0}")]
    Unwritable(String),
    #[error("the store is reopening its database after a write error; retry shortly")]
    Reopening,
}

/// An append queued with [`Store::submit`].
#[must_use = "an append is acknowledged only once `durable` resolves"]
pub struct PendingAppend {
    rx: tokio::sync::oneshot::Receiver<Result<Vec<AppendOutcome>, StoreError>>,
}

impl PendingAppend {
    /// Resolves once the append is on disk (or has failed).
    ///
    /// # Errors
    /// As [`Store::append`].
    pub async fn durable(self) -> Result<Vec<AppendOutcome>, StoreError> {
        self.rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// A handle to the store; cheap to clone.
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
    /// The newest durable log records, for tailers (see `recent`).
    recent: Arc<recent::RecentLog>,
}

impl Store {
    /// Opens (or creates) a durable store in `path`.
    ///
    /// # Errors
    /// [`StoreError::Locked`] when another process has it open; I/O and recovery errors.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        Store::open_with(path.as_ref(), Durability::Sync)
    }

    /// A store in memory: nothing survives the process (or the last handle), and
    /// nothing touches the disk. The same code path as a durable store above the
    /// backend (writer, indexes, queries), without fsync; what `--memory` nodes and
    /// most tests use.
    ///
    /// # Errors
    /// None in practice: the store comes up through the same fallible steps as on disk.
    pub fn temporary() -> Result<Store, StoreError> {
        Store::start(Db::memory(), None, true, None)
    }

    /// A temporary store on fjall, in a fresh directory removed when the store is
    /// dropped, without fsync: for tests and benchmarks of the disk backend.
    ///
    /// # Errors
    /// When the directory or the database cannot be created.
    pub fn temporary_on_disk() -> Result<Store, StoreError> {
        let dir = tempfile::Builder::new()
            .prefix("rhizome-")
            .tempdir()
            .map_err(StoreError::TempDir)?;
        Store::open_fjall(&dir.keep(), true, Durability::Buffered)
    }

    /// Opens a durable fjall store with an explicit durability (benchmarks compare both).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with(path: &Path, durability: Durability) -> Result<Store, StoreError> {
        Store::open_fjall(path, false, durability)
    }

    /// The data directory; `None` for a store in memory.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Whether the store goes away with the process (in memory, or a temporary directory).
    pub fn is_temporary(&self) -> bool {
        self.inner.temporary
    }

    /// Appends deltas (already validated) and metadata writes in one atomic, durable
    /// batch. A delta whose id is already stored is not written again and reports
    /// [`AppendOutcome::Duplicate`]. Resolves once the batch is on disk.
    ///
    /// # Errors
    /// When the writer has stopped or the write failed.
    pub async fn append(
        &self,
        entries: Vec<NewEntry>,
        meta: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        self.append_with(
            entries,
            SideWrites {
                meta,
                quarantine: Vec::new(),
            },
        )
        .await
    }

    /// [`Store::append`] with quarantine records as well, all in the same atomic batch.
    ///
    /// # Errors
    /// As [`Store::append`].
    pub async fn append_with(
        &self,
        entries: Vec<NewEntry>,
        side: SideWrites,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        self.submit(entries, side)?.durable().await
    }

    /// Queues an append and returns at once. Appends commit in the order they were
    /// submitted, so a caller may prepare its next batch while this one is written,
    /// and learn the outcome from [`PendingAppend::durable`].
    ///
    /// # Errors
    /// When the writer has stopped.
    pub fn submit(
        &self,
        entries: Vec<NewEntry>,
        side: SideWrites,
    ) -> Result<PendingAppend, StoreError> {
        Ok(PendingAppend {
            rx: self.inner.writer.submit(entries, side)?,
        })
    }

    /// The blocking twin of [`Store::append`], for non-async callers (it panics when
    /// called from inside a tokio runtime, like any `blocking_recv`).
    ///
    /// # Errors
    /// As [`Store::append`].
    pub fn append_blocking(
        &self,
        entries: Vec<NewEntry>,
        meta: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let rx = self.inner.writer.submit(
            entries,
            SideWrites {
                meta,
                quarantine: Vec::new(),
            },
        )?;
        rx.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    /// The highest durable sequence number (also the number of deltas stored: the log has no gaps).
    pub fn head(&self) -> Seq {
        *self.inner.head.borrow()
    }

    /// A receiver that changes whenever the durable head moves; log tailers wait on it.
    pub fn watch_head(&self) -> watch::Receiver<Seq> {
        self.inner.head.clone()
    }

    /// Keeps the newest durable records in memory for log readers while it lives, so
    /// that a reader keeping up with the head does not read them back from the backend.
    pub(crate) fn register_tailer(&self) -> TailRegistration {
        self.inner.recent.register()
    }

    /// Deltas offered again after they were stored, since this process opened the store.
    pub fn duplicates(&self) -> u64 {
        self.inner.duplicates.load(Ordering::Relaxed)
    }

    /// The delta with this id.
    ///
    /// # Errors
    /// Storage or corruption errors.
    pub fn get(&self, id: &str) -> Result<Option<StoredDelta>, StoreError> {
        match self.seq_of(id)? {
            Some(seq) => self.get_seq(seq),
            None => Ok(None),
        }
    }

    /// The log position of the delta with this id.
    ///
    /// # Errors
    /// Storage or corruption errors.
    pub fn seq_of(&self, id: &str) -> Result<Option<Seq>, StoreError> {
        match self.inner.handles.get()?.ks.ids.get(id.as_bytes())? {
            Some(v) => Ok(Some(keys::decode_seq(&v)?)),
            None => Ok(None),
        }
    }

    /// The delta at a log position.
    ///
    /// # Errors
    /// Storage or corruption errors.
    pub fn get_seq(&self, seq: Seq) -> Result<Option<StoredDelta>, StoreError> {
        match self.inner.handles.get()?.ks.log.get(keys::seq_key(seq))? {
            Some(bytes) => Ok(Some(decode_stored(seq, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` durable deltas after `after`, in log order: what a log tailer reads next.
    ///
    /// # Errors
    /// Storage or corruption errors.
    pub fn scan_after(&self, after: Seq, limit: usize) -> Result<Vec<StoredDelta>, StoreError> {
        let head = self.head();
        if after >= head || limit == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(limit.min((head.0 - after.0) as usize));
        let handles = self.inner.handles.get()?;
        for guard in handles
            .ks
            .log
            .range(keys::seq_key(Seq(after.0 + 1))..=keys::seq_key(head))
        {
            let (k, v) = guard.into_inner()?;
            out.push(decode_stored(keys::decode_seq(&k)?, &v)?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Like [`Store::scan_after`] but returns raw delta JSON, for senders that forward
    /// stored bytes without re-encoding.
    ///
    /// # Errors
    /// Storage or corruption errors.
    pub fn scan_raw_after(
        &self,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, Option<String>, String)>, StoreError> {
        let scan = self.scan_raw_skipping(after, limit, None)?;
        Ok(scan
            .records
            .iter()
            .map(|r| (r.seq, r.origin().map(str::to_owned), r.json().to_owned()))
            .collect())
    }

    /// Reads up to `limit` log positions after `after` (fewer once the records read reach
    /// `SCAN_BYTES`: a scan of big deltas stays bounded in memory), in order, as raw records, and
    /// passes over (without copying them) the records that came from `skip_origin`:
    /// what a link's sender reads, since it never sends a peer's deltas back to it. On a
    /// bidirectional link most of what a receiver's log holds came from its peer.
    ///
    /// # Errors
    /// Storage or corruption errors.
    pub fn scan_raw_skipping(
        &self,
        after: Seq,
        limit: usize,
        skip_origin: Option<&str>,
    ) -> Result<RawScan, StoreError> {
        let head = self.head();
        let mut scan = RawScan {
            records: Vec::new(),
            through: after,
        };
        if after >= head || limit == 0 {
            return Ok(scan);
        }
        let mut bytes = 0;
        // Whether to read on: a scan stops once it holds `SCAN_BYTES` of records.
        let mut keep = |seq: Seq, record: Slice| -> Result<bool, StoreError> {
            bytes += record.len();
            scan.records
                .extend(RawRecord::read(seq, record, skip_origin)?);
            scan.through = seq;
            Ok(bytes < SCAN_BYTES)
        };
        // What the writer committed last is usually still in memory (see `recent`).
        if let Some(records) = self.inner.recent.read(after, head, limit) {
            for (seq, record) in records {
                if !keep(seq, record)? {
                    break;
                }
            }
            return Ok(scan);
        }
        let handles = self.inner.handles.get()?;
        for guard in handles
            .ks
            .log
            .range(keys::seq_key(Seq(after.0 + 1))..=keys::seq_key(head))
            .take(limit)
        {
            let (k, v) = guard.into_inner()?;
            if !keep(keys::decode_seq(&k)?, v)? {
                break;
            }
        }
        Ok(scan)
    }

    /// The last log position whose delta has a timestamp before `timestamp`, or the
    /// position just before the first delta at or after it; used to start an initial
    /// sync `from_timestamp` without scanning the whole log. Deltas arrive out of
    /// timestamp order, so callers must still filter by timestamp after this position.
    ///
    /// # Errors
    /// Storage errors.
    pub fn first_seq_at_or_after(&self, timestamp: u64) -> Result<Option<Seq>, StoreError> {
        let mut min: Option<Seq> = None;
        let handles = self.inner.handles.get()?;
        for guard in handles
            .ks
            .by_time
            .range(keys::time_key(timestamp, Seq(0))..)
        {
            // A posting's key holds its smallest position.
            let k = guard.key()?;
            let seq = keys::seq_of_index_key(&k)?;
            min = Some(min.map_or(seq, |m| m.min(seq)));
        }
        Ok(min)
    }

    /// Reads a metadata value (system id, link cursors...).
    ///
    /// # Errors
    /// Storage errors.
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .inner
            .handles
            .get()?
            .ks
            .meta
            .get(key.as_bytes())?
            .map(|v| v.to_vec()))
    }

    /// Writes a metadata value durably, ordered with delta writes.
    ///
    /// # Errors
    /// As [`Store::append`].
    pub async fn put_meta(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.append(Vec::new(), vec![(key.to_owned(), value)])
            .await
            .map(|_| ())
    }

    /// The blocking twin of [`Store::put_meta`].
    ///
    /// # Errors
    /// As [`Store::append`].
    pub fn put_meta_blocking(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.append_blocking(Vec::new(), vec![(key.to_owned(), value)])
            .map(|_| ())
    }

    /// Metadata entries whose key starts with `prefix`.
    ///
    /// # Errors
    /// Storage errors.
    pub fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for guard in self.inner.handles.get()?.ks.meta.prefix(prefix.as_bytes()) {
            let (k, v) = guard.into_inner()?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    /// Whether the delta with this id is negated by a negation that is not itself negated.
    ///
    /// # Errors
    /// Storage or corruption errors.
    pub fn is_negated(&self, id: &str) -> Result<bool, StoreError> {
        query::is_negated(self, id, 0)
    }

    /// The deltas that negate the delta with this id, in log order.
    ///
    /// # Errors
    /// Storage or corruption errors.
    pub fn negations_of(&self, id: &str) -> Result<Vec<StoredDelta>, StoreError> {
        let mut out = Vec::new();
        for seq in postings::term_positions(&self.inner.handles.get()?.ks.negations, id)? {
            if let Some(d) = self.get_seq(seq)? {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Deltas matching a query, in log order, using the most selective index available.
    ///
    /// # Errors
    /// Storage or corruption errors.
    pub fn query(&self, q: &Query) -> Result<Vec<StoredDelta>, StoreError> {
        query::run(self, q)
    }

    /// Bytes the database uses on disk (0 in memory).
    pub fn disk_space(&self) -> u64 {
        self.inner
            .handles
            .get()
            .map_or(0, |handles| handles.db.disk_space())
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

fn decode_stored(seq: Seq, bytes: &[u8]) -> Result<StoredDelta, StoreError> {
    let (origin, json) = keys::decode_record(bytes)?;
    let delta =
        Delta::parse(json).map_err(|e| StoreError::Corrupt(format!("delta at seq {seq}: {e}")))?;
    Ok(StoredDelta {
        seq,
        origin: origin.map(str::to_owned),
        delta,
    })
}

#[cfg(test)]
mod tests;
