//! Subscriptions: a filtered stream of stored deltas that reads the durable log, so a
//! slow subscriber falls behind but never misses a delta.

use crate::filter::DeltaFilter;
use crate::store::{LogTail, Seq, Store, StoreError, StoredDelta};

/// A filtered, lossless stream of stored deltas (spec section 7, subscriptions).
pub struct Subscription {
    tail: LogTail,
    filter: DeltaFilter,
    pending: std::vec::IntoIter<StoredDelta>,
}

impl Subscription {
    pub(super) fn new(store: Store, filter: DeltaFilter, from: Seq) -> Subscription {
        Subscription {
            tail: LogTail::new(store, from),
            filter,
            pending: Vec::new().into_iter(),
        }
    }

    /// The next matching delta; waits for one. `Ok(None)` once the node has shut down.
    ///
    /// # Errors
    /// Storage failures while reading the log.
    pub async fn next(&mut self) -> Result<Option<StoredDelta>, StoreError> {
        loop {
            for d in self.pending.by_ref() {
                if self.filter.matches(&d.delta) {
                    return Ok(Some(d));
                }
            }
            match self.tail.next(256, None).await? {
                Some(batch) => self.pending = batch.deltas()?.into_iter(),
                None => return Ok(None),
            }
        }
    }

    /// Position of the last delta read (resume a later subscription from here).
    pub fn cursor(&self) -> Seq {
        self.tail.cursor()
    }
}
