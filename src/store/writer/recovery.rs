//! How the writer becomes writable again after a failed group commit.
//!
//! fjall marks its database poisoned after a failed journal write or fsync: the journal
//! may end in a torn batch, and a committed but unpersisted batch may sit in a memtable,
//! so fjall refuses every later write rather than write after them (vendor/fjall
//! `Error::Poisoned`: "let the application crash and try to recover"). Recovering is
//! what a restart does, in-process: drop every handle, open the directory again (the
//! journal is read up to its last whole batch, a torn tail is cut off), and count the
//! head from what is on disk. Nothing acknowledged is lost, since a group is
//! acknowledged only after its fsync; a group that failed may come back whole, which is
//! why a write answered with an error is safe to retry (deltas are deduplicated by id).
//!
//! Each attempt, at most every [`RETRY_EVERY`]: check that the disk takes a small
//! fsynced file (so a still-full disk does not cost a reopen), reopen a durable fjall
//! store, then write a probe record through the same path as deltas. The store is
//! writable again only once that probe is durable.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Writer;
use crate::store::error::StoreError;
use crate::store::seq::Seq;
use crate::store::{keys, open};

/// How often an unwritable store tries to recover.
pub(super) const RETRY_EVERY: Duration = Duration::from_secs(1);

/// How long a reopen waits for readers to let go of the old database's handles.
const READERS_GRACE: Duration = Duration::from_secs(2);

/// Bytes the disk probe writes and fsyncs: room for a small group commit.
const PROBE_BYTES: usize = 64 * 1024;

/// The probe file, in the data directory beside fjall's own folders (which it ignores).
const PROBE_FILE: &str = ".rhizome-write-probe";

/// The metadata key the probe write sets (the time of the last recovery).
const PROBE_KEY: &str = "store/recovered_at";

impl Writer {
    /// Tries to recover unless it was tried less than [`RETRY_EVERY`] ago.
    pub(super) fn recover_if_due(&mut self) {
        if self.last_attempt.elapsed() < RETRY_EVERY {
            return;
        }
        self.last_attempt = Instant::now();
        match self.recover() {
            Ok(()) => {
                self.health.recovered();
                tracing::warn!(head = %Seq(self.next.0 - 1), "the store is writable again");
            }
            Err(e) => {
                tracing::debug!(error = %e, "the store is still not writable");
                self.health.recovery_failed(&e.to_string());
            }
        }
    }

    fn recover(&mut self) -> Result<(), StoreError> {
        self.faults.check()?;
        if let Some(dir) = &self.probe_dir {
            probe_disk(dir)?;
        }
        if let Some(dir) = self.reopen.clone() {
            self.reopen(&dir)?;
        }
        let handles = self.handles.clone().ok_or(StoreError::Reopening)?;
        let mut batch = handles.db.batch(1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        batch.insert(
            &handles.ks.meta,
            PROBE_KEY.as_bytes(),
            now.to_string().into_bytes(),
        );
        self.write(&handles, batch)
    }

    /// Drops the database and opens it again, then takes the head and the quarantine's
    /// counters from what it holds.
    fn reopen(&mut self, dir: &Path) -> Result<(), StoreError> {
        // IMPORTANT: the slot is emptied before our own handles drop, so that no reader
        // takes them again; the database closes (and its file lock goes) with the last one.
        let old = self.slot.take().or_else(|| self.handles.take());
        self.handles = None;
        if let Some(old) = old {
            let old = Arc::downgrade(&old);
            let deadline = Instant::now() + READERS_GRACE;
            while old.strong_count() > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let handles = Arc::new(open::reopen(dir)?);
        let head = match handles.ks.log.last_key()? {
            Some(key) => keys::decode_seq(&key)?,
            None => Seq(0),
        };
        let published = *self.publish.head.borrow();
        if head < published {
            // Cannot happen while fsync means what it says; refuse to number over it.
            return Err(StoreError::Corrupt(format!(
                "after reopening, the log ends at {head} but {published} was acknowledged"
            )));
        }
        self.quarantine.reload(&handles.ks.quarantine)?;
        self.next = Seq(head.0 + 1);
        self.handles = Some(handles.clone());
        self.slot.put(handles);
        if head > published {
            tracing::warn!(%head, %published, "a group that failed reached the journal whole and was recovered");
            self.publish.head.send_replace(head);
        }
        Ok(())
    }
}

/// Writes, fsyncs and removes a small file in `dir`: whether the disk takes writes again.
fn probe_disk(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(PROBE_FILE);
    let written = std::fs::File::create(&path).and_then(|mut f| {
        f.write_all(&[0u8; PROBE_BYTES])?;
        f.sync_data()
    });
    let removed = std::fs::remove_file(&path);
    written.map_err(|e| {
        StoreError::Io(std::io::Error::new(
            e.kind(),
            format!("probing {}: {e}", dir.display()),
        ))
    })?;
    removed.map_err(StoreError::Io)
}
