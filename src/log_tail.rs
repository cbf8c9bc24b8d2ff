//! Reading the durable log from a cursor, waiting for more when caught up.
//!
//! This is how anything that wants "every delta from position N on" gets them:
//! library subscriptions now, federation link senders later. Each tailer owns its
//! cursor, so a slow one holds back only itself and nothing is ever dropped.

use std::sync::Arc;

use tokio::sync::watch;

pub use crate::store::RawRecord;
use crate::store::{RawScan, Seq, Store, StoreError, StoredDelta};

pub struct LogTail {
    store: Store,
    cursor: Seq,
    head: watch::Receiver<Seq>,
    /// Keeps the newest records in memory, where this tail reads them while it keeps up.
    _recent: crate::store::TailRegistration,
}

impl LogTail {
    /// A tail that will yield the deltas stored after `cursor`.
    pub fn new(store: Store, cursor: Seq) -> LogTail {
        let head = store.watch_head();
        let _recent = store.register_tailer();
        LogTail {
            store,
            cursor,
            head,
            _recent,
        }
    }

    /// The position of the last delta handed out.
    pub fn cursor(&self) -> Seq {
        self.cursor
    }

    /// Moves the cursor (for example to skip to the head, or to resume from a checkpoint).
    pub fn seek(&mut self, cursor: Seq) {
        self.cursor = cursor;
    }

    /// The next deltas after the cursor, up to `max`, waiting until there is at least one.
    /// Returns `Ok(None)` when the store has closed.
    ///
    /// # Errors
    /// Storage errors while reading.
    pub async fn next_batch(&mut self, max: usize) -> Result<Option<Vec<StoredDelta>>, StoreError> {
        self.next_with(
            move |store, after| store.scan_after(after, max),
            |batch: &Vec<StoredDelta>| batch.last().map(|d| d.seq),
        )
        .await
    }

    /// Like [`LogTail::next_batch`] but with each delta's stored JSON and origin
    /// unparsed, and without the records that came from `skip_origin` (see
    /// [`Store::scan_raw_skipping`]): for senders that forward bytes as stored. Waits
    /// until at least one position was read; the scan may still hold no record when
    /// every position read was passed over, and the cursor moves past them all.
    ///
    /// # Errors
    /// Storage errors while reading.
    pub async fn next_raw_batch(
        &mut self,
        max: usize,
        skip_origin: Option<Arc<str>>,
    ) -> Result<Option<RawScan>, StoreError> {
        self.next_with(
            move |store, after| store.scan_raw_skipping(after, max, skip_origin.as_deref()),
            |scan| Some(scan.through),
        )
        .await
    }

    async fn next_with<T: Send + 'static>(
        &mut self,
        scan: impl Fn(&Store, Seq) -> Result<T, StoreError> + Send + Clone + 'static,
        through: impl Fn(&T) -> Option<Seq>,
    ) -> Result<Option<T>, StoreError> {
        loop {
            let head = *self.head.borrow_and_update();
            if head > self.cursor {
                let store = self.store.clone();
                let after = self.cursor;
                let scan = scan.clone();
                let batch = tokio::task::spawn_blocking(move || scan(&store, after))
                    .await
                    .map_err(|e| StoreError::Corrupt(format!("log reader task failed: {e}")))??;
                if let Some(last) = through(&batch).filter(|&last| last > after) {
                    self.cursor = last;
                    return Ok(Some(batch));
                }
            }
            if self.head.changed().await.is_err() {
                return Ok(None);
            }
        }
    }
}
