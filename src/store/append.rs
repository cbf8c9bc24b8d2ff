//! The one append: deltas, and the writes that must commit with them (a link's cursor,
//! quarantine records, metadata), queued to the writer in one request.
//!
//! Invariants: a request commits atomically, in the order requests were queued; it is
//! acknowledged (its [`PendingAppend`] resolves `Ok`) only once it is durable and the
//! head has moved past it; a delta whose id is already stored is not written again and
//! reports [`AppendOutcome::Duplicate`].

use tokio::sync::oneshot;

use super::error::StoreError;
use super::seq::Seq;
use super::Store;
use crate::delta::Delta;

/// A delta to append and where it came from.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub delta: Delta,
    /// The peer system it arrived from (`None` for local deltas); senders never echo it back there.
    pub origin: Option<String>,
}

/// What happened to one appended delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Newly stored at this position.
    Stored(Seq),
    /// Already stored (at this position); nothing was written.
    Duplicate(Seq),
}

/// Writes that ride in the same atomic batch as a request's deltas.
#[derive(Debug, Default)]
pub struct SideWrites {
    /// Metadata (a link's cursor for the deltas it covers).
    pub meta: Vec<(String, Vec<u8>)>,
    /// Records for the quarantine (deltas refused by a trust policy).
    pub quarantine: Vec<Vec<u8>>,
}

/// What the writer answers a request with: one outcome per entry, in order.
pub(super) type Outcomes = Result<Vec<AppendOutcome>, StoreError>;

/// An append queued with [`Store::append`].
#[must_use = "an append is acknowledged only once `durable` resolves"]
pub struct PendingAppend {
    rx: oneshot::Receiver<Outcomes>,
}

impl PendingAppend {
    /// Resolves once the append is on disk (or has failed), with one outcome per entry.
    ///
    /// # Errors
    /// [`StoreError::Closed`] when the writer stopped first; the write's error when it
    /// failed (see [`StoreError::WriteFailed`], [`StoreError::Unwritable`]).
    pub async fn durable(self) -> Outcomes {
        self.rx.await.map_err(|_| StoreError::Closed)?
    }

    /// [`PendingAppend::durable`] for callers on a blocking thread. Panics when called
    /// from inside a tokio runtime, like any `blocking_recv`.
    ///
    /// # Errors
    /// As [`PendingAppend::durable`].
    pub fn durable_blocking(self) -> Outcomes {
        self.rx.blocking_recv().map_err(|_| StoreError::Closed)?
    }
}

impl Store {
    /// Queues deltas (already validated) and their side writes as one atomic batch and
    /// returns at once. Appends commit in the order they were queued, so a caller may
    /// prepare its next batch while this one is written; nothing is acknowledged until
    /// [`PendingAppend::durable`] resolves.
    ///
    /// # Errors
    /// [`StoreError::Closed`] when the writer has stopped.
    pub fn append(
        &self,
        entries: Vec<NewEntry>,
        side: SideWrites,
    ) -> Result<PendingAppend, StoreError> {
        Ok(PendingAppend {
            rx: self.inner.writer.submit(entries, side)?,
        })
    }

    /// Appends local deltas (no origin, no side writes) and waits until they are
    /// durable, on this (blocking) thread: what unit tests elsewhere in the crate need
    /// to fill a store.
    #[cfg(test)]
    pub(crate) fn append_local_blocking(&self, deltas: Vec<Delta>) -> Vec<AppendOutcome> {
        let entries = deltas
            .into_iter()
            .map(|delta| NewEntry {
                delta,
                origin: None,
            })
            .collect();
        self.append(entries, SideWrites::default())
            .expect("append")
            .durable_blocking()
            .expect("durable")
    }

    /// Writes one metadata value durably, ordered with delta writes: an [`Store::append`]
    /// of that side write alone.
    ///
    /// # Errors
    /// As [`PendingAppend::durable`].
    pub async fn put_meta(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let side = SideWrites {
            meta: vec![(key.to_owned(), value)],
            quarantine: Vec::new(),
        };
        self.append(Vec::new(), side)?.durable().await.map(|_| ())
    }
}
