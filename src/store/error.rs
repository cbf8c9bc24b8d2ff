//! What can go wrong in the store. A write error says whether the write may be sent
//! again (it may, always: nothing of a failed group commit is acknowledged, and deltas
//! are deduplicated by id) and whether the store is recovering by itself.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the data directory {0} is open in another process (only one rhizome node can use it)"
    )]
    Locked(PathBuf),
    #[error("storage error: {0}")]
    Fjall(#[from] fjall::Error),
    #[error("corrupt store: {0}")]
    Corrupt(String),
    #[error("could not create a temporary directory: {0}")]
    TempDir(std::io::Error),
    #[error("the store's writer has stopped")]
    Closed,
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// This write was in a group commit that failed: none of it was acknowledged, and
    /// sending it again is safe (deltas are deduplicated by id).
    #[error("the write failed and was not acknowledged (safe to retry): {0}")]
    WriteFailed(String),
    /// An earlier write failed and the store has not recovered yet; it retries by itself.
    #[error("the store cannot write until this is resolved (it retries by itself): {0}")]
    Unwritable(String),
    #[error("the store is reopening its database after a write error; retry shortly")]
    Reopening,
    /// A backup that cannot be made as asked (the target, or a store in memory).
    #[error("{0}")]
    Backup(String),
}
