//! A consistent copy of a store, taken while it runs: every keyspace read at one
//! instant (a fjall snapshot) and written as a fresh fjall database in another
//! directory, which a node opens as it was at that instant.
//!
//! Invariants:
//! - one snapshot serves every keyspace, so the log, its indexes, the link cursors and
//!   the quarantine in the copy are those of one moment: a cursor never points past the
//!   deltas it covers (they commit in one batch);
//! - the copy is written by fjall's ingestion (sorted keys straight into tables, no
//!   journal), keyspace by keyspace, holding one table's worth of entries at a time;
//! - the target must be absent or empty: a backup never mixes with other files;
//! - the archive (`<data dir>/archive/`) is copied after the snapshot: archival writes
//!   a part, renames it into place, and only then removes its deltas from the log, so a
//!   delta missing from the snapshot is already in a finished part. Parts never change
//!   once named; `.tmp` files are parts still being written, and are left out.

use std::path::Path;
use std::time::Instant;

use fjall::{PersistMode, Readable};

use super::archive::files::{DIR as ARCHIVE_DIR, TMP as PARTIAL_SUFFIX};
use super::backend::{Db, Keyspace};
use super::error::StoreError;
use super::{compact, keys, open, Seq, Store};

/// What a backup copied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backup {
    /// The last log position in the copy.
    pub head: Seq,
    /// Entries copied, over every keyspace (deltas, index entries, metadata).
    pub entries: u64,
    /// The copy's size on disk.
    pub bytes: u64,
    /// Archive parts copied.
    pub archive_files: u64,
    pub millis: u64,
}

impl Store {
    /// Writes a consistent copy of the store to `dir` (created; refused when it holds
    /// anything), with the metadata entries of `replace_meta` set to new values in the
    /// copy. Blocks until the copy is durable: async callers use `spawn_blocking`.
    ///
    /// # Errors
    /// [`StoreError::Backup`] for a target that is not empty or a store in memory;
    /// storage and I/O errors while reading or writing.
    pub fn backup(&self, dir: &Path, replace_meta: &[(&str, &[u8])]) -> Result<Backup, StoreError> {
        let started = Instant::now();
        let handles = self.handles()?;
        let Db::Fjall(db) = &handles.db else {
            return Err(StoreError::Backup(
                "this node keeps its deltas in memory: there is no store on disk to back up (export its deltas instead)".into(),
            ));
        };
        prepare_target(dir, self.path())?;
        // IMPORTANT: taken before anything is read, and held until every keyspace is
        // copied: every read below sees the database as it was at this instant.
        let snapshot = db.snapshot();
        let target = open::open_handles(open::open_fjall_db(dir, false)?)?;
        let mut entries = 0u64;
        let mut head = Seq(0);
        for ((name, from), (_, to)) in handles.ks.all().into_iter().zip(target.ks.all()) {
            let (Keyspace::Fjall(from), Keyspace::Fjall(to)) = (from, to) else {
                return Err(StoreError::Corrupt(format!(
                    "keyspace {name} is not on disk in a fjall store"
                )));
            };
            let mut items = snapshot.iter(from).peekable();
            if items.peek().is_none() {
                continue;
            }
            let mut ingestion = to.start_ingestion()?;
            for guard in items {
                let (key, value) = guard.into_inner()?;
                if name == "log" {
                    head = keys::decode_seq(&key)?;
                }
                ingestion.write(key, value)?;
                entries += 1;
            }
            ingestion.finish()?;
        }
        drop(snapshot);
        if !replace_meta.is_empty() {
            let mut batch = target.db.batch(replace_meta.len());
            for (key, value) in replace_meta {
                batch.insert(&target.ks.meta, key.as_bytes(), *value);
            }
            batch.commit()?;
        }
        target.db.persist(PersistMode::SyncAll)?;
        let tables = target.table_bytes();
        drop(target);
        let archive_files = match self.path() {
            Some(data) => copy_archive(&data.join(ARCHIVE_DIR), &dir.join(ARCHIVE_DIR))?,
            None => 0,
        };
        Ok(Backup {
            head,
            entries,
            bytes: tables + compact::journal_bytes(dir),
            archive_files,
            millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// Creates `dir`, or checks that it is empty; refuses the store's own directory.
fn prepare_target(dir: &Path, source: Option<&Path>) -> Result<(), StoreError> {
    let refuse = |why: String| Err(StoreError::Backup(why));
    if let (Some(source), Ok(target)) = (source, std::path::absolute(dir)) {
        if std::path::absolute(source).is_ok_and(|s| target.starts_with(s)) {
            return refuse(format!(
                "{} is inside the node's data directory: back up to a directory of its own",
                dir.display()
            ));
        }
    }
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return refuse(format!(
                    "{} is not empty: a backup goes to a new or empty directory",
                    dir.display()
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(std::fs::create_dir_all(dir)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => refuse(format!(
            "{} is a file: a backup goes to a new or empty directory",
            dir.display()
        )),
        Err(e) => Err(e.into()),
    }
}

/// Copies the finished archive parts of `from` (if any) into `to`; returns how many.
fn copy_archive(from: &Path, to: &Path) -> Result<u64, StoreError> {
    let entries = match std::fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    std::fs::create_dir_all(to)?;
    let mut copied = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let finished = !name.to_string_lossy().ends_with(PARTIAL_SUFFIX);
        if finished && entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(&name))?;
            std::fs::File::open(to.join(&name))?.sync_all()?;
            copied += 1;
        }
    }
    std::fs::File::open(to)?.sync_all()?;
    Ok(copied)
}
