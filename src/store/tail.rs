//! The one read of the log: the durable positions after a cursor, as raw records, with
//! the parsed deltas a view of the same read ([`LogBatch::deltas`]).
//!
//! [`Store::read_log`] reads once; [`LogTail`] reads on from a cursor it owns, waiting
//! when caught up. Each tailer owns its cursor, so a slow one holds back only itself and
//! nothing is ever dropped. Invariants:
//! - only durable positions are read (up to the published head), in log order;
//! - a bounded read ([`ReadLimit::Batch`]) holds at most `SCAN_BYTES` of records past its
//!   first one, so a batch of big deltas stays bounded in memory;
//! - records from `skip_origin` are passed over without being copied or checked, but
//!   still count as read: [`LogBatch::through`] moves past them.

mod recent;

use std::sync::Arc;

use tokio::sync::watch;

pub(super) use recent::{RecentLog, RECENT_RECORDS};

use super::backend::Slice;
use super::error::StoreError;
use super::keys;
use super::record::{RawRecord, StoredDelta};
use super::seq::Seq;
use super::Store;

/// The most record bytes one bounded read holds: a sender reads the log 1000 positions
/// at a time, and 1000 deltas at the size limit would be a gigabyte.
const SCAN_BYTES: usize = 8 * 1024 * 1024;

/// How far one read of the log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadLimit {
    /// Up to this many positions, fewer once the records read reach 8 MiB: what a
    /// reader that must stay bounded in memory takes (a tailer, a sender).
    Batch(usize),
    /// Every durable position after the cursor: the whole log as it is now.
    All,
}

/// What one read of the log found.
#[derive(Debug, Default)]
pub struct LogBatch {
    /// The records kept, in log order.
    pub records: Vec<RawRecord>,
    /// The last position read, kept or passed over (the cursor when nothing was read).
    pub through: Seq,
}

impl LogBatch {
    /// The parsed view of the records.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when a stored delta does not parse.
    pub fn deltas(&self) -> Result<Vec<StoredDelta>, StoreError> {
        self.records.iter().map(RawRecord::delta).collect()
    }
}

impl Store {
    /// Reads the durable positions after `after`, in order, up to `limit`, passing over
    /// (without copying them) the records that came from `skip_origin`: a link's sender
    /// never sends a peer's deltas back to it, and on a bidirectional link most of what
    /// a log holds came from its peer. Blocks on the backend: async callers use
    /// [`LogTail`] or `spawn_blocking`.
    ///
    /// # Errors
    /// Storage or corruption errors.
    pub fn read_log(
        &self,
        after: Seq,
        limit: ReadLimit,
        skip_origin: Option<&str>,
    ) -> Result<LogBatch, StoreError> {
        let (positions, max_bytes) = match limit {
            ReadLimit::Batch(n) => (n, SCAN_BYTES),
            ReadLimit::All => (usize::MAX, usize::MAX),
        };
        let head = self.head();
        let mut batch = LogBatch {
            records: Vec::new(),
            through: after,
        };
        if after >= head || positions == 0 {
            return Ok(batch);
        }
        let mut bytes = 0usize;
        // Whether to read on: a bounded read stops once it holds `max_bytes` of records.
        let mut keep = |seq: Seq, record: Slice| -> Result<bool, StoreError> {
            bytes = bytes.saturating_add(record.len());
            batch
                .records
                .extend(RawRecord::read(seq, record, skip_origin)?);
            batch.through = seq;
            Ok(bytes < max_bytes)
        };
        // What the writer committed last is usually still in memory (see `recent`).
        if let Some(records) = self.inner.recent.read(after, head, positions) {
            for (seq, record) in records {
                if !keep(seq, record)? {
                    break;
                }
            }
            return Ok(batch);
        }
        let handles = self.inner.handles.get()?;
        for guard in handles
            .ks
            .log
            .range(keys::seq_key(Seq(after.0 + 1))..=keys::seq_key(head))
            .take(positions)
        {
            let (k, v) = guard.into_inner()?;
            if !keep(keys::decode_seq(&k)?, v)? {
                break;
            }
        }
        Ok(batch)
    }
}

/// Reads the log on from a cursor, waiting for more when caught up. While it lives, the
/// store keeps the newest records in memory, where a tail that keeps up reads them.
pub struct LogTail {
    store: Store,
    cursor: Seq,
    head: watch::Receiver<Seq>,
    _recent: recent::Registration,
}

impl LogTail {
    /// A tail that will yield the positions after `cursor`.
    pub fn new(store: Store, cursor: Seq) -> LogTail {
        let head = store.watch_head();
        let _recent = store.inner.recent.register();
        LogTail {
            store,
            cursor,
            head,
            _recent,
        }
    }

    /// The last position read.
    pub fn cursor(&self) -> Seq {
        self.cursor
    }

    /// The next read after the cursor, of up to `max` positions (a
    /// [`ReadLimit::Batch`]), without the records from `skip_origin`; waits until at
    /// least one position was read. The batch may still hold no record when every
    /// position read was passed over; the cursor moves past them all. `Ok(None)` once
    /// the store has closed.
    ///
    /// # Errors
    /// Storage errors while reading.
    pub async fn next(
        &mut self,
        max: usize,
        skip_origin: Option<Arc<str>>,
    ) -> Result<Option<LogBatch>, StoreError> {
        loop {
            let head = *self.head.borrow_and_update();
            if head > self.cursor {
                let store = self.store.clone();
                let after = self.cursor;
                let skip = skip_origin.clone();
                let batch = tokio::task::spawn_blocking(move || {
                    store.read_log(after, ReadLimit::Batch(max), skip.as_deref())
                })
                .await
                .map_err(|e| StoreError::Corrupt(format!("log reader task failed: {e}")))??;
                if batch.through > after {
                    self.cursor = batch.through;
                    return Ok(Some(batch));
                }
            }
            if self.head.changed().await.is_err() {
                return Ok(None);
            }
        }
    }
}
