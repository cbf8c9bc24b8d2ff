//! A switch that makes the store's writes fail as a full disk would, for tests of what
//! the node does then (see `tests/it/storage_faults.rs`).
//!
//! It is checked where the writer hands a group to the backend and where recovery
//! probes the disk, so an injected fault takes the same path as a real `ENOSPC`: the
//! group fails unacknowledged, the store reports itself unwritable, and recovery
//! (reopening the database when it is durable) runs once the switch is off.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::error::StoreError;

#[derive(Clone, Default)]
pub(crate) struct FaultSwitch(Arc<AtomicBool>);

impl FaultSwitch {
    pub(crate) fn set(&self, on: bool) {
        self.0.store(on, Ordering::Release);
    }

    /// Fails like a write on a full filesystem while the switch is on.
    ///
    /// # Errors
    /// An I/O error of kind `StorageFull`, naming the injection.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if self.0.load(Ordering::Acquire) {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no space left on device (injected write fault)",
            )));
        }
        Ok(())
    }
}
