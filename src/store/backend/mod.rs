//! Where the store's bytes live: fjall on disk, or ordered maps in memory.
//!
//! Everything above this module (the writer, keys, postings, queries, quarantine, the
//! published head) is one code path for both; it talks to a [`Db`], its [`Keyspace`]s
//! and [`Batch`]es, which offer exactly the operations the store uses. Each type is an
//! enum of two arms rather than a trait object, so the fjall path pays one branch per
//! call and no allocation or dynamic dispatch.
//!
//! Both backends share fjall's byte type [`Slice`] (reference-counted, small values
//! inline), so a memory read hands out the stored bytes without copying them.

mod memory;
mod tree;

use std::ops::RangeBounds;
use std::sync::Arc;

use fjall::{KeyspaceCreateOptions, PersistMode};

use super::error::StoreError;

pub(crate) use fjall::Slice;

/// A database: a set of named keyspaces whose batches commit atomically.
#[derive(Clone)]
pub(crate) enum Db {
    Fjall(fjall::Database),
    Memory(Arc<memory::Db>),
}

impl Db {
    /// A fresh, empty in-memory database.
    pub(crate) fn memory() -> Db {
        Db::Memory(Arc::new(memory::Db::default()))
    }

    /// Opens (or creates) a keyspace; `options` only matter to fjall.
    pub(crate) fn keyspace(
        &self,
        name: &str,
        options: impl FnOnce() -> KeyspaceCreateOptions,
    ) -> Result<Keyspace, StoreError> {
        Ok(match self {
            Db::Fjall(db) => Keyspace::Fjall(db.keyspace(name, options)?),
            Db::Memory(db) => Keyspace::Memory(memory::Db::keyspace(db, name)),
        })
    }

    /// A batch with room for about `writes` writes (a hint: it grows past it).
    pub(crate) fn batch(&self, writes: usize) -> Batch {
        match self {
            // What `Database::batch` sets up (journal written through to the OS on
            // commit, as no `manual_journal_persist` is set), with room reserved.
            Db::Fjall(db) => Batch::Fjall(
                fjall::OwnedWriteBatch::with_capacity(db.clone(), writes)
                    .durability(Some(PersistMode::Buffer)),
            ),
            Db::Memory(db) => Batch::Memory(memory::Batch::new(db.clone(), writes)),
        }
    }

    /// Makes committed batches durable; nothing to do in memory.
    pub(crate) fn persist(&self, mode: PersistMode) -> Result<(), StoreError> {
        match self {
            Db::Fjall(db) => Ok(db.persist(mode)?),
            Db::Memory(_) => Ok(()),
        }
    }
}

/// An ordered map of byte keys to byte values.
#[derive(Clone)]
pub(crate) enum Keyspace {
    Fjall(fjall::Keyspace),
    Memory(memory::Keyspace),
}

impl Keyspace {
    pub(crate) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Slice>, StoreError> {
        match self {
            Keyspace::Fjall(ks) => Ok(ks.get(key)?),
            Keyspace::Memory(ks) => Ok(ks.get(key.as_ref())),
        }
    }

    pub(crate) fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool, StoreError> {
        match self {
            Keyspace::Fjall(ks) => Ok(ks.contains_key(key)?),
            Keyspace::Memory(ks) => Ok(ks.contains_key(key.as_ref())),
        }
    }

    /// The smallest key.
    pub(crate) fn first_key(&self) -> Result<Option<Slice>, StoreError> {
        match self {
            Keyspace::Fjall(ks) => Ok(ks.first_key_value().map(|g| g.key()).transpose()?),
            Keyspace::Memory(ks) => Ok(ks.first_key()),
        }
    }

    /// The largest key.
    pub(crate) fn last_key(&self) -> Result<Option<Slice>, StoreError> {
        match self {
            Keyspace::Fjall(ks) => Ok(ks.last_key_value().map(|g| g.key()).transpose()?),
            Keyspace::Memory(ks) => Ok(ks.last_key()),
        }
    }

    /// Entries with keys in `range`, in key order. An empty or inverted range yields nothing.
    pub(crate) fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        match self {
            Keyspace::Fjall(ks) => Iter::Fjall(ks.range(range)),
            Keyspace::Memory(ks) => Iter::Memory(ks.range(range)),
        }
    }

    /// Entries whose key starts with `prefix`, in key order.
    pub(crate) fn prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        match self {
            Keyspace::Fjall(ks) => Iter::Fjall(ks.prefix(prefix)),
            Keyspace::Memory(ks) => {
                Iter::Memory(ks.range(fjall::util::prefix_to_range(prefix.as_ref())))
            }
        }
    }

    /// Writes the memtable out as a table and waits for it; nothing to do in memory.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        match self {
            Keyspace::Fjall(ks) => Ok(ks.rotate_memtable_and_wait()?),
            Keyspace::Memory(_) => Ok(()),
        }
    }

    /// Every entry, in key order.
    pub(crate) fn iter(&self) -> Iter {
        match self {
            Keyspace::Fjall(ks) => Iter::Fjall(ks.iter()),
            Keyspace::Memory(ks) => Iter::Memory(ks.range::<&[u8], _>(..)),
        }
    }

    /// Bytes of the keyspace's tables on disk (what its memtable holds is in the
    /// journal); 0 in memory.
    pub(crate) fn disk_space(&self) -> u64 {
        match self {
            Keyspace::Fjall(ks) => ks.disk_space(),
            Keyspace::Memory(_) => 0,
        }
    }

    /// Writes the memtable out, then merges every table into one sorted run, dropping
    /// overwritten and removed entries; blocks until done. Nothing to do in memory.
    pub(crate) fn major_compact(&self) -> Result<(), StoreError> {
        match self {
            Keyspace::Fjall(ks) => {
                // Flushed first, so the journal that held the memtable can be dropped
                // and the compaction sees every entry.
                self.flush()?;
                Ok(ks.major_compact()?)
            }
            Keyspace::Memory(_) => Ok(()),
        }
    }
}

/// An iterator over a keyspace's entries.
pub(crate) enum Iter {
    Fjall(fjall::Iter),
    Memory(memory::Iter),
}

impl Iterator for Iter {
    type Item = Guard;

    fn next(&mut self) -> Option<Guard> {
        match self {
            Iter::Fjall(it) => it.next().map(Guard::Fjall),
            Iter::Memory(it) => it.next().map(|(k, v)| Guard::Memory(k, v)),
        }
    }
}

/// One entry of an [`Iter`]: fjall reads its key and value lazily and may fail doing so.
pub(crate) enum Guard {
    Fjall(fjall::Guard),
    Memory(Slice, Slice),
}

impl Guard {
    pub(crate) fn key(self) -> Result<Slice, StoreError> {
        match self {
            Guard::Fjall(g) => Ok(g.key()?),
            Guard::Memory(k, _) => Ok(k),
        }
    }

    pub(crate) fn into_inner(self) -> Result<(Slice, Slice), StoreError> {
        match self {
            Guard::Fjall(g) => Ok(g.into_inner()?),
            Guard::Memory(k, v) => Ok((k, v)),
        }
    }
}

/// Writes to several keyspaces of one database that become visible together on commit.
pub(crate) enum Batch {
    Fjall(fjall::OwnedWriteBatch),
    Memory(memory::Batch),
}

impl Batch {
    pub(crate) fn insert(&mut self, ks: &Keyspace, key: impl Into<Slice>, value: impl Into<Slice>) {
        match (self, ks) {
            (Batch::Fjall(b), Keyspace::Fjall(ks)) => b.insert(ks, key, value),
            (Batch::Memory(b), Keyspace::Memory(ks)) => b.insert(ks, key.into(), value.into()),
            (b, _) => b.mismatch(),
        }
    }

    pub(crate) fn remove(&mut self, ks: &Keyspace, key: impl Into<Slice>) {
        match (self, ks) {
            (Batch::Fjall(b), Keyspace::Fjall(ks)) => b.remove(ks, key),
            (Batch::Memory(b), Keyspace::Memory(ks)) => b.remove(ks, key.into()),
            (b, _) => b.mismatch(),
        }
    }

    /// Applies every write at once: readers see all of them or none.
    ///
    /// # Errors
    /// fjall's write errors; [`StoreError::Corrupt`] for a batch that was handed a
    /// keyspace of the other backend (a bug, refused rather than half applied).
    pub(crate) fn commit(self) -> Result<(), StoreError> {
        match self {
            Batch::Fjall(b) => Ok(b.commit()?),
            Batch::Memory(b) => b.commit(),
        }
    }

    fn mismatch(&mut self) {
        // Poison the batch so its commit fails; the fjall arm cannot carry a flag, so
        // it becomes a memory batch that refuses to commit.
        *self = Batch::Memory(memory::Batch::refused());
    }
}
