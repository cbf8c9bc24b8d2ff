//! Reading the durable log from a cursor, waiting for more when caught up.
//!
//! This is how anything that wants "every delta from position N on" gets them:
//! library subscriptions now, federation link senders later. Each tailer owns its
//! cursor, so a slow one holds back only itself and nothing is ever dropped.

use tokio::sync::watch;

use crate::store::{Seq, Store, StoreError, StoredDelta};

pub struct LogTail {
    store: Store,
    cursor: Seq,
    head: watch::Receiver<Seq>,
}

impl LogTail {
    /// A tail that will yield the deltas stored after `cursor`.
    pub fn new(store: Store, cursor: Seq) -> LogTail {
        let head = store.watch_head();
        LogTail {
            store,
            cursor,
            head,
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
        self.next_with(move |store, after| store.scan_after(after, max), |d| d.seq)
            .await
    }

    /// Like [`LogTail::next_batch`] but with each delta's stored JSON and origin
    /// unparsed: `(seq, origin, json)`, for senders that forward bytes as stored.
    ///
    /// # Errors
    /// Storage errors while reading.
    pub async fn next_raw_batch(
        &mut self,
        max: usize,
    ) -> Result<Option<Vec<RawRecord>>, StoreError> {
        self.next_with(
            move |store, after| store.scan_raw_after(after, max),
            |r| r.0,
        )
        .await
    }

    async fn next_with<T: Send + 'static>(
        &mut self,
        scan: impl Fn(&Store, Seq) -> Result<Vec<T>, StoreError> + Send + Clone + 'static,
        seq_of: impl Fn(&T) -> Seq,
    ) -> Result<Option<Vec<T>>, StoreError> {
        loop {
            let head = *self.head.borrow_and_update();
            if head > self.cursor {
                let store = self.store.clone();
                let after = self.cursor;
                let scan = scan.clone();
                let batch = tokio::task::spawn_blocking(move || scan(&store, after))
                    .await
                    .map_err(|e| StoreError::Corrupt(format!("log reader task failed: {e}")))??;
                if let Some(last) = batch.last() {
                    self.cursor = seq_of(last);
                    return Ok(Some(batch));
                }
            }
            if self.head.changed().await.is_err() {
                return Ok(None);
            }
        }
    }
}

/// A log record as stored: position, the peer it came from, the delta's JSON.
pub type RawRecord = (Seq, Option<String>, String);
