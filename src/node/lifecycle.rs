//! The node's side of `rhizome import` and `rhizome backup`: deltas read from files
//! enter through the one ingestion path, judged like deltas from a peer unless the
//! operator vouches for them; a backup is a copy of the store that starts a log of its
//! own.

use std::path::{Path, PathBuf};

use crate::admission::Admission;
use crate::delta::{Delta, InvalidDelta};
use crate::identity::KEY_FILE;
use crate::policy::{LinkContext, LinkPeer};
use crate::store::{Backup, Store, StoreError};

use super::{IngestOutcome, Node, NodeError, Origin, LOG_ID_KEY};

/// The link imported deltas are judged on: the scripts of `policies/import/` and
/// `filters/pull/import/` apply to them, besides the node's global ones.
pub const IMPORT_SCOPE: &str = "import";

/// How far an import believes the deltas it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportTrust {
    /// As deltas from a peer that proved nothing: the pull filters, the signature rules
    /// for peers, the node's trust policies; refused deltas go to the quarantine, where
    /// a replay can admit them once the policies change.
    Policies,
    /// The operator's own files: validation, limits and the signature rules as for a
    /// local client, without the trust policies and pull filters.
    Trusted,
}

impl Node {
    /// Ingests deltas read from a file (each parsed and validated, or why not), one
    /// outcome per item in order, durable when this returns.
    ///
    /// # Errors
    /// Only storage failures; per-delta problems are in the outcomes.
    pub async fn import(
        &self,
        deltas: Vec<Result<Delta, InvalidDelta>>,
        trust: ImportTrust,
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        let admission = match trust {
            ImportTrust::Policies => Some(Admission::new(import_link(), None, true)),
            ImportTrust::Trusted => None,
        };
        self.admit(deltas, Origin::Local, admission.as_ref(), Vec::new())
            .await?
            .finish()
            .await
    }

    /// Writes a consistent copy of this node's store to `dir` (see [`backup_store`]).
    ///
    /// # Errors
    /// As [`backup_store`].
    pub async fn backup(&self, dir: PathBuf) -> Result<Backup, NodeError> {
        let store = self.store().clone();
        tokio::task::spawn_blocking(move || backup_store(&store, &dir))
            .await
            .map_err(|e| StoreError::Corrupt(format!("backup task failed: {e}")))?
    }
}

/// Writes a consistent copy of `store` to `dir`, with the node key kept beside it, for
/// `serve --data DIR` to open as it was: same system id, same link cursors (links
/// resume from the copy's positions), same quarantine.
///
/// The copy gets a log id of its own. Peers keep their cursors in our log by its id;
/// the copy's log stops where the backup was taken and grows differently from there,
/// so a peer holding a later position of the original must not resume from it (it
/// would skip what the copy writes at the positions in between): under a new id,
/// peers read the copy's log from its start, and dedup absorbs what they already hold.
///
/// # Errors
/// A target that is not empty, a store in memory, storage and I/O errors.
pub fn backup_store(store: &Store, dir: &Path) -> Result<Backup, NodeError> {
    let log_id = uuid::Uuid::new_v4().to_string();
    let copy = store.backup(dir, &[(LOG_ID_KEY, log_id.as_bytes())])?;
    if let Some(data) = store.path() {
        let key = data.join(KEY_FILE);
        if key.exists() {
            // `fs::copy` keeps the permission bits: the key stays readable by its owner only.
            std::fs::copy(&key, dir.join(KEY_FILE)).map_err(StoreError::Io)?;
        }
    }
    Ok(copy)
}

/// The link imported deltas are judged on.
fn import_link() -> LinkContext {
    LinkContext {
        id: IMPORT_SCOPE.into(),
        name: IMPORT_SCOPE.into(),
        remote_system: String::new(),
        remote_url: String::new(),
        mode: "pull".into(),
        direction: "inbound".into(),
        peer: LinkPeer {
            name: IMPORT_SCOPE.into(),
            authenticated: false,
            key: None,
        },
    }
}
