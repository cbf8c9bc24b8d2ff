//! The quarantine: deltas a trust policy refused, kept apart from the log with why.
//!
//! Records are opaque bytes to the store (the node writes JSON) under increasing ids.
//! It is bounded: past the limit, the oldest records are dropped in the same batch
//! that adds new ones, so a peer that floods refused deltas cannot fill the disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::backend::{Batch, Keyspace};
use super::error::StoreError;
use super::Store;

/// Records kept at most.
pub const DEFAULT_LIMIT: u64 = 100_000;

/// Shared between the writer (adds) and readers (list, remove).
#[derive(Clone)]
pub(crate) struct QuarantineState {
    next: Arc<AtomicU64>,
    oldest: Arc<AtomicU64>,
    len: Arc<AtomicU64>,
    limit: u64,
}

fn key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

fn decode_key(k: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = k
        .try_into()
        .map_err(|_| StoreError::Corrupt("quarantine key is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(arr))
}

impl QuarantineState {
    pub(crate) fn open(ks: &Keyspace, limit: u64) -> Result<QuarantineState, StoreError> {
        let first = match ks.first_key()? {
            Some(k) => decode_key(&k)?,
            None => 1,
        };
        let last = match ks.last_key()? {
            Some(k) => decode_key(&k)?,
            None => 0,
        };
        let mut len = 0u64;
        for g in ks.iter() {
            g.key()?;
            len += 1;
        }
        Ok(QuarantineState {
            next: Arc::new(AtomicU64::new(last + 1)),
            oldest: Arc::new(AtomicU64::new(first)),
            len: Arc::new(AtomicU64::new(len)),
            limit: limit.max(1),
        })
    }

    /// Adds a record to `batch`, evicting the oldest when over the limit.
    pub(crate) fn add(
        &self,
        batch: &mut Batch,
        ks: &Keyspace,
        record: &[u8],
    ) -> Result<(), StoreError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        batch.insert(ks, key(id), record);
        if self.len.fetch_add(1, Ordering::Relaxed) + 1 > self.limit {
            // Skip ids removed by a replay; ids of this batch are newer than `oldest`.
            loop {
                let oldest = self.oldest.fetch_add(1, Ordering::Relaxed);
                if oldest >= id {
                    break;
                }
                if ks.contains_key(key(oldest))? {
                    batch.remove(ks, key(oldest));
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn mark(&self) -> (u64, u64, u64) {
        (
            self.next.load(Ordering::Relaxed),
            self.oldest.load(Ordering::Relaxed),
            self.len.load(Ordering::Relaxed),
        )
    }

    /// Counts again from the keyspace, after the database was reopened: a group that
    /// failed may have reached the journal whole and been recovered.
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) fn reload(&self, ks: &Keyspace) -> Result<(), StoreError> {
        self.rewind(QuarantineState::open(ks, self.limit)?.mark());
        Ok(())
    }

    /// Undoes what `add` counted for a batch that failed to commit.
    pub(crate) fn rewind(&self, (next, oldest, len): (u64, u64, u64)) {
        self.next.store(next, Ordering::Relaxed);
        self.oldest.store(oldest, Ordering::Relaxed);
        self.len.store(len, Ordering::Relaxed);
    }
}

impl Store {
    /// Records kept in the quarantine.
    pub fn quarantine_len(&self) -> u64 {
        self.inner.quarantine.len.load(Ordering::Relaxed)
    }

    /// Up to `limit` quarantine records with an id above `after`, oldest first.
    ///
    /// # Errors
    /// Storage errors.
    pub fn quarantine_list(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        let handles = self.handles()?;
        for g in handles.ks.quarantine.range(key(after.saturating_add(1))..) {
            let (k, v) = g.into_inner()?;
            out.push((decode_key(&k)?, v.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Removes records (once replayed into the log), durably.
    ///
    /// # Errors
    /// Storage errors.
    pub fn quarantine_remove(&self, ids: &[u64]) -> Result<(), StoreError> {
        self.inner.faults.check()?;
        let handles = self.handles()?;
        let ks = &handles.ks.quarantine;
        let mut batch = handles.db.batch(0);
        let mut removed = 0;
        for id in ids {
            if ks.contains_key(key(*id))? {
                batch.remove(ks, key(*id));
                removed += 1;
            }
        }
        batch.commit()?;
        if !self.inner.temporary {
            handles.db.persist(fjall::PersistMode::SyncData)?;
        }
        self.inner
            .quarantine
            .len
            .fetch_sub(removed, Ordering::Relaxed);
        Ok(())
    }
}
