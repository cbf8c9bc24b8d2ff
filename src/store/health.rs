//! Whether the store can write, and what stopped it: what `/status`, the
//! `rhizome_storage_writable` gauge and `/health/ready` report.
//!
//! Only the writer changes it: a failed group commit marks the store unwritable with
//! the error; the writer's recovery (see `writer::recovery`) marks it writable again
//! once a probe write is durable. Readers take a consistent snapshot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// A snapshot of the store's ability to write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageHealth {
    /// Whether writes are accepted now. `false` from a failed write until recovery.
    pub writable: bool,
    /// The latest write or recovery error, kept after recovery for the record.
    pub last_error: Option<String>,
    /// When `last_error` happened (Unix ms).
    pub last_error_at_ms: Option<u64>,
    /// Since when the store has not been writable (Unix ms); `None` while writable.
    pub unwritable_since_ms: Option<u64>,
    /// Group commits that failed since start (each fails every write in it).
    pub write_failures: u64,
    /// Times the store became writable again by itself since start.
    pub recoveries: u64,
}

pub(crate) struct HealthState {
    /// Mirrors `state.writable`: the writer reads it on every group without the lock.
    writable: AtomicBool,
    state: Mutex<StorageHealth>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl HealthState {
    pub(crate) fn new() -> HealthState {
        HealthState {
            writable: AtomicBool::new(true),
            state: Mutex::new(StorageHealth {
                writable: true,
                ..StorageHealth::default()
            }),
        }
    }

    pub(crate) fn is_writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    pub(crate) fn snapshot(&self) -> StorageHealth {
        self.lock().clone()
    }

    /// A group commit failed: nothing is written until recovery.
    pub(crate) fn write_failed(&self, error: &str) {
        let mut s = self.lock();
        s.write_failures += 1;
        Self::note_error(&mut s, error);
        self.writable.store(false, Ordering::Release);
    }

    /// A recovery attempt failed: still unwritable, with the newer reason.
    pub(crate) fn recovery_failed(&self, error: &str) {
        Self::note_error(&mut self.lock(), error);
    }

    pub(crate) fn recovered(&self) {
        let mut s = self.lock();
        s.writable = true;
        s.unwritable_since_ms = None;
        s.recoveries += 1;
        self.writable.store(true, Ordering::Release);
    }

    /// The reason writes are refused now, for the answer to each refused write.
    pub(crate) fn reason(&self) -> String {
        self.lock()
            .last_error
            .clone()
            .unwrap_or_else(|| "an earlier write failed".into())
    }

    fn note_error(s: &mut StorageHealth, error: &str) {
        let now = now_ms();
        s.last_error = Some(error.to_owned());
        s.last_error_at_ms = Some(now);
        if s.writable {
            s.writable = false;
            s.unwritable_since_ms = Some(now);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StorageHealth> {
        // Plain field writes under the lock cannot leave it half done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
