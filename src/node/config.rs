//! How to start a node, and why starting one fails.

use std::path::PathBuf;

use crate::admission::{AuthorEntry, PeerEntry, SignatureSettings, TrustPolicy};
use crate::delta::Limits;
use crate::identity::{IdentityError, NodeKey};
use crate::policy::PolicyDirs;
use crate::store::{Durability, StoreError};

/// Where the node keeps its deltas.
#[derive(Debug, Clone, Default)]
pub enum Storage {
    /// A durable fjall database in this directory.
    Path(PathBuf),
    /// The store in memory ([`crate::store::Store::temporary`]): nothing reaches the disk or survives the node.
    #[default]
    Memory,
}

/// How to start a node.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    pub storage: Storage,
    /// This node's system id; by default the one kept in the store, or a new one made (and kept) once.
    pub system_id: Option<String>,
    /// The node's own trust rules, applied to every remote delta on every link.
    pub trust: TrustPolicy,
    /// Where trust policies and push / pull filter scripts live (watched and hot-reloaded).
    pub policies: PolicyDirs,
    /// When an acknowledged write is on disk (durable stores; default: fsync).
    pub durability: Option<Durability>,
    /// What a delta may weigh, on every way in (and what links advertise to peers).
    pub limits: Limits,
    /// The node's key (PKCS#8 PEM). `None`: the one kept in the data directory
    /// (`node.key`, made on first start), or a fresh one for a node in memory.
    pub key_file: Option<PathBuf>,
    /// The peers this node knows by key or token (`[[peer]]`).
    pub peers: Vec<PeerEntry>,
    /// Authors bound to keys (`[[author]]`).
    pub authors: Vec<AuthorEntry>,
    /// What must be signed, and who may negate (`[signatures]`).
    pub signatures: SignatureSettings,
    /// The key (PKCS#8 PEM) that signs the deltas this node completes from the authoring
    /// shorthand (`signingKey`). `None`: those go unsigned.
    pub signing_key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored system id is not UTF-8")]
    BadSystemId,
    #[error("policies: {0}")]
    Policies(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("peers: {0}")]
    Peers(String),
    #[error("signatures: {0}")]
    Signatures(String),
}

impl NodeConfig {
    /// The node's key: `key_file`, else the one kept in the data directory (made there
    /// now when there is none), else a fresh one for a node in memory. Returns whether
    /// a key file was written now.
    ///
    /// # Errors
    /// When the key cannot be read, made or written.
    pub fn node_key(&self) -> Result<(NodeKey, bool), IdentityError> {
        match (&self.key_file, &self.storage) {
            (Some(file), _) => NodeKey::load(file).map(|k| (k, false)),
            (None, Storage::Path(dir)) => NodeKey::load_or_create(dir),
            (None, Storage::Memory) => NodeKey::generate().map(|k| (k, false)),
        }
    }
}
