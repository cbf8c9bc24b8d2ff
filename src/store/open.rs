//! How a store comes up: the backend's database, the keyspaces and their tuning, the
//! head and quarantine counters recovered from what is stored, and the writer thread.
//! One way for both backends ([`Store::start`]); a store on disk is locked to one
//! process, and its durability is chosen when it opens.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use fjall::config::{FilterPolicy, PartitioningPolicy, PinningPolicy};
use fjall::{Database, KeyspaceCreateOptions, PersistMode};
use tokio::sync::watch;

use super::backend::Db;
use super::error::StoreError;
use super::handles::{Handles, Keyspaces, Slot};
use super::seq::Seq;
use super::tail::{RecentLog, RECENT_RECORDS};
use super::{faults, health, keys, quarantine, writer, Inner, Store};

/// Memtable sizes, which bound a syncing receiver's memory: the log holds the delta
/// bodies, the indexes only short keys. The log's keys are sequential, so its flushed
/// tables never overlap and a smaller memtable costs little compaction. The indexes'
/// keys are not sequential, so below 4 MiB their compactions cost more CPU than the
/// memory they save (measured with `bench sync`; see BENCHMARKS.md, "Store tuning").
const LOG_MEMTABLE: u64 = 2 * 1024 * 1024;
const INDEX_MEMTABLE: u64 = 4 * 1024 * 1024;
/// Block cache shared by all keyspaces. It serves queries and log tailers reading recent
/// blocks, and appends' dedup lookups reading the id index's filter partitions (see
/// `Store::start`): 4 MiB holds the filters of 2-3M ids (1.2-2.4 bytes each); past that,
/// a lookup that misses it reads one 4 KiB partition from the OS's page cache.
const CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// Journal bytes kept before fjall flushes the keyspaces that hold the oldest journal,
/// so it can be deleted. The journal rotates at 64 MiB; the keyspaces written rarely
/// (metadata, quarantine) seldom fill a memtable, so with fjall's default (512 MiB) a
/// store carried up to half a gigabyte of journal whose deltas were long in tables.
/// 64 MiB is fjall's minimum: flushing those small memtables costs next to nothing.
const JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// When an acknowledged write is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync (`PersistMode::SyncData`) each group commit before anything is acknowledged.
    Sync,
    /// Leave writes in OS buffers: for fjall stores whose contents need not survive a
    /// crash (tests, benchmarks). A store in memory has nothing to fsync either way.
    Buffered,
}

impl Store {
    /// Opens (or creates) a durable store in `path`.
    ///
    /// # Errors
    /// [`StoreError::Locked`] when another process has it open; I/O and recovery errors.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        Store::open_with(path.as_ref(), Durability::Sync)
    }

    /// Opens a durable fjall store with an explicit durability (benchmarks compare both).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with(path: &Path, durability: Durability) -> Result<Store, StoreError> {
        Store::open_fjall(path, false, durability)
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
    /// dropped, without fsync: the store's tests run on both backends.
    #[cfg(test)]
    pub(crate) fn temporary_on_disk() -> Result<Store, StoreError> {
        let dir = tempfile::Builder::new()
            .prefix("rhizome-")
            .tempdir()
            .map_err(StoreError::TempDir)?;
        Store::open_fjall(&dir.keep(), true, Durability::Buffered)
    }

    fn open_fjall(
        path: &Path,
        temporary: bool,
        durability: Durability,
    ) -> Result<Store, StoreError> {
        let db = open_fjall_db(path, temporary)?;
        let persist = match durability {
            Durability::Sync => Some(PersistMode::SyncData),
            Durability::Buffered => None,
        };
        Store::start(db, Some(path.to_path_buf()), temporary, persist)
    }

    /// Opens the keyspaces, recovers the head and the quarantine's counters, and starts
    /// the writer: the one way a store comes up, whatever its backend.
    fn start(
        db: Db,
        path: Option<PathBuf>,
        temporary: bool,
        persist: Option<PersistMode>,
    ) -> Result<Store, StoreError> {
        let handles = Arc::new(open_handles(db)?);
        let ks = &handles.ks;
        let quarantine =
            quarantine::QuarantineState::open(&ks.quarantine, quarantine::DEFAULT_LIMIT)?;
        let head = match ks.log.last_key()? {
            Some(key) => keys::decode_seq(&key)?,
            None => Seq(0),
        };
        let (head_tx, head_rx) = watch::channel(head);
        let duplicates = Arc::new(AtomicU64::new(0));
        let recent = Arc::new(RecentLog::new(RECENT_RECORDS));
        let publish = writer::Publish {
            head: head_tx,
            recent: recent.clone(),
        };
        let slot = Arc::new(Slot::new(handles.clone()));
        let health = Arc::new(health::HealthState::new());
        let faults = faults::FaultSwitch::default();
        // Only a durable fjall store is reopened after a write error: a temporary one is
        // deleted when its database drops, and memory has no torn state to recover.
        let fjall_dir = match &handles.db {
            Db::Fjall(_) => path.clone(),
            Db::Memory(_) => None,
        };
        let writer = writer::spawn(writer::Setup {
            handles,
            slot: slot.clone(),
            reopen: fjall_dir.clone().filter(|_| !temporary),
            probe_dir: fjall_dir,
            head,
            publish,
            persist,
            duplicates: duplicates.clone(),
            quarantine: quarantine.clone(),
            health: health.clone(),
            faults: faults.clone(),
        });
        Ok(Store {
            inner: Arc::new(Inner {
                handles: slot,
                health,
                faults,
                path,
                temporary,
                writer,
                head: head_rx,
                duplicates,
                quarantine,
                recent,
                archive_lock: std::sync::Mutex::new(()),
            }),
        })
    }
}

/// Opens the fjall database in `path` (once per process: a second opening is `Locked`).
pub(super) fn open_fjall_db(path: &Path, temporary: bool) -> Result<Db, StoreError> {
    let db = Database::builder(path)
        .temporary(temporary)
        .cache_size(CACHE_BYTES)
        .max_journaling_size(JOURNAL_BYTES)
        .open()
        .map_err(|e| match e {
            fjall::Error::Locked => StoreError::Locked(path.to_path_buf()),
            other => StoreError::Fjall(other),
        })?;
    Ok(Db::Fjall(db))
}

/// Opens a durable store's database again, after the old handles are gone: fjall
/// recovers its journal up to the last whole batch.
pub(super) fn reopen(path: &Path) -> Result<Handles, StoreError> {
    open_handles(open_fjall_db(path, false)?)
}

/// The store's keyspaces in `db`, with their tuning.
pub(super) fn open_handles(db: Db) -> Result<Handles, StoreError> {
    // Memtables bound the store's memory: fjall's default (64 MiB each) times ten
    // keyspaces would let a long sync hold ~600 MiB in memory before flushing.
    let open = |name: &str| {
        let memtable = if name == "log" {
            LOG_MEMTABLE
        } else {
            INDEX_MEMTABLE
        };
        // Bloom filters only help point reads that mostly miss: the id index (every
        // append asks whether the id is already stored). Its filters are partitioned:
        // a table's single filter is built from a buffer of every key's hash (8 bytes
        // per key, 8 MiB while compacting the ids of 1M deltas), a partitioned one
        // 4 KiB at a time, and a lookup loads one 4 KiB partition through the block
        // cache where it loaded a table's whole filter. fjall always keeps a table's
        // partition index in memory, and the index blocks stay pinned. The filter
        // pinning policy still matters for tables written before partitioning (they
        // keep a single filter until compacted): unpinned, with a small cache, every
        // dedup lookup reloaded that whole filter and appends ran 4x slower. The log is
        // read by position from tables whose key ranges do not overlap, and the term
        // indexes only by prefix, so building filters for them on every flush and
        // compaction is work nobody reads.
        let point_reads = matches!(name, "ids" | "meta" | "quarantine");
        db.keyspace(name, || {
            let opts = KeyspaceCreateOptions::default().max_memtable_size(memtable);
            if point_reads {
                opts.filter_block_partitioning_policy(PartitioningPolicy::all(true))
                    .filter_block_pinning_policy(PinningPolicy::all(true))
                    .index_block_pinning_policy(PinningPolicy::all(true))
            } else {
                opts.filter_policy(FilterPolicy::disabled())
            }
        })
    };
    let ks = Keyspaces {
        log: open("log")?,
        ids: open("ids")?,
        by_target: open("by_target")?,
        by_context: open("by_context")?,
        by_author: open("by_author")?,
        by_system: open("by_system")?,
        by_time: open("by_time")?,
        negations: open("negations")?,
        meta: open("meta")?,
        quarantine: open("quarantine")?,
    };
    Ok(Handles { db, ks })
}
