//! The open database and its keyspaces, behind a slot the writer can empty and refill.
//!
//! fjall poisons a database after a failed write (its journal may end in a torn batch),
//! and the only way back is to drop it and open the directory again, which recovers the
//! journal up to its last whole batch. A database opens once per process (a file lock),
//! so the old handles must all be gone before the new ones open. Readers therefore take
//! the handles from the slot for one call at a time ([`Slot::get`]) and never keep them;
//! while the writer reopens, the slot is empty and reads fail with
//! [`StoreError::Reopening`] for that moment.

use std::sync::{Arc, PoisonError, RwLock};

use super::backend::{Db, Keyspace};
use super::error::StoreError;

pub(crate) struct Keyspaces {
    pub log: Keyspace,
    pub ids: Keyspace,
    pub by_target: Keyspace,
    pub by_context: Keyspace,
    pub by_author: Keyspace,
    pub by_system: Keyspace,
    pub by_time: Keyspace,
    pub negations: Keyspace,
    pub meta: Keyspace,
    pub quarantine: Keyspace,
}

impl Keyspaces {
    /// Every keyspace with its name, in the order the store opens them: what a backup
    /// copies and a compaction rewrites, so neither can forget one.
    pub fn all(&self) -> [(&'static str, &Keyspace); 10] {
        [
            ("log", &self.log),
            ("ids", &self.ids),
            ("by_target", &self.by_target),
            ("by_context", &self.by_context),
            ("by_author", &self.by_author),
            ("by_system", &self.by_system),
            ("by_time", &self.by_time),
            ("negations", &self.negations),
            ("meta", &self.meta),
            ("quarantine", &self.quarantine),
        ]
    }
}

/// One opening of the database.
pub(crate) struct Handles {
    pub db: Db,
    pub ks: Keyspaces,
}

impl Handles {
    /// Bytes of every keyspace's tables on disk: the flushed data, without fjall's
    /// journal (preallocated, and recycled once its memtables are flushed).
    pub(crate) fn table_bytes(&self) -> u64 {
        self.ks.all().iter().map(|(_, k)| k.disk_space()).sum()
    }

    /// Bytes of the tables that hold live deltas (the log and the query indexes): what
    /// archiving a delta shrinks. The ids, the metadata and the quarantine stay.
    pub(crate) fn delta_bytes(&self) -> u64 {
        let ks = &self.ks;
        self.table_bytes()
            .saturating_sub(ks.ids.disk_space() + ks.meta.disk_space() + ks.quarantine.disk_space())
    }

    /// Writes every memtable out, so that [`Handles::table_bytes`] counts everything.
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.ks.all().iter().try_for_each(|(_, k)| k.flush())
    }

    /// Makes the space of removed entries free on disk now (after archival), rather
    /// than when compaction gets to them: compacts the log and the indexes whole and
    /// flushes the rest. Nothing to do in memory.
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) fn reclaim(&self) -> Result<(), StoreError> {
        let ks = &self.ks;
        // The keyspaces archival removes from; the others are only flushed.
        [
            &ks.log,
            &ks.by_target,
            &ks.by_context,
            &ks.by_author,
            &ks.by_system,
            &ks.by_time,
            &ks.negations,
        ]
        .iter()
        .try_for_each(|k| k.major_compact())?;
        self.flush()
    }
}

/// Where the current [`Handles`] are; empty while the writer reopens the database.
pub(crate) struct Slot(RwLock<Option<Arc<Handles>>>);

impl Slot {
    pub(crate) fn new(handles: Arc<Handles>) -> Slot {
        Slot(RwLock::new(Some(handles)))
    }

    /// The current handles, for one call: keeping them would stop a reopen.
    ///
    /// # Errors
    /// [`StoreError::Reopening`] while the writer reopens the database.
    pub(crate) fn get(&self) -> Result<Arc<Handles>, StoreError> {
        // A plain swap of an `Option` cannot leave the lock half done.
        let slot = self.0.read().unwrap_or_else(PoisonError::into_inner);
        slot.clone().ok_or(StoreError::Reopening)
    }

    /// Empties the slot; later reads wait for [`Slot::put`].
    pub(crate) fn take(&self) -> Option<Arc<Handles>> {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    pub(crate) fn put(&self, handles: Arc<Handles>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(handles);
    }
}
