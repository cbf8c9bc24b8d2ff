//! The node: one store, one event bus, the admission rules, and one ingestion path for
//! every delta ([`ingest`]). It knows nothing of federation, HTTP or the CLI, which
//! are built on it.
//!
//! - [`config`]: how to start a node.
//! - [`ingest`]: the one way into the log.
//! - [`subscription`]: a lossless, filtered stream of what is stored.
//! - [`quarantine`]: listing and replaying what trust policies refused.
//! - [`retention`]: the retention rule and the task that archives old deltas.

mod config;
mod ingest;
mod lifecycle;
mod quarantine;
pub mod retention;
mod subscription;
mod verify;

pub use config::{NodeConfig, NodeError, Storage};
pub(crate) use ingest::PendingIngest;
pub use ingest::{IngestOutcome, Origin};
pub use lifecycle::{backup_store, ImportTrust, IMPORT_SCOPE};
pub use quarantine::{QuarantineEntry, ReplayReport};
pub use subscription::Subscription;

use std::sync::Arc;
use std::time::Instant;

use crate::admission::{AuthorTable, PeerTable, Rules, SignaturePolicy, TrustPolicy};
use crate::delta::{self, Delta, InvalidDelta, Limits, Pointer};
use crate::events::{EventBus, NodeEvent};
use crate::filter::DeltaFilter;
use crate::identity::NodeKey;
use crate::policy::PolicyHost;
use crate::store::{Durability, Query, Seq, Store, StoreError, StoredDelta};

/// A running node; cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    system_id: String,
    key: NodeKey,
    signing_key: Option<NodeKey>,
    store: Store,
    events: EventBus,
    started: Instant,
    trust: std::sync::RwLock<Arc<TrustPolicy>>,
    peers: std::sync::RwLock<Arc<PeerTable>>,
    authors: std::sync::RwLock<Arc<AuthorTable>>,
    signatures: std::sync::RwLock<Arc<SignaturePolicy>>,
    policies: Arc<PolicyHost>,
    log_id: String,
    /// Invalid deltas refused since start.
    invalid: std::sync::atomic::AtomicU64,
    /// Signatures that verified since start.
    signatures_verified: std::sync::atomic::AtomicU64,
    /// Deltas the signature rules refused since start.
    signature_refusals: std::sync::atomic::AtomicU64,
    /// Ids of deltas that quarantined negations wait for (see `quarantine`).
    awaited: std::sync::Mutex<std::collections::HashSet<String>>,
    limits: Limits,
    /// The retention rule and the last archival pass (see `retention`).
    retention: retention::Retention,
}

const SYSTEM_ID_KEY: &str = "node/system_id";
const LOG_ID_KEY: &str = "node/log_id";

impl Node {
    /// Opens the store and starts the node.
    ///
    /// # Errors
    /// When the store cannot be opened (for example it is locked by another process).
    pub async fn open(config: NodeConfig) -> Result<Node, NodeError> {
        let storage = config.storage.clone();
        let durability = config.durability.unwrap_or(Durability::Sync);
        // Opening recovers the journal: blocking work, kept off the async workers.
        let store = tokio::task::spawn_blocking(move || match storage {
            Storage::Path(p) => Store::open_with(&p, durability),
            Storage::Memory => Store::temporary(),
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("store open task failed: {e}")))??;
        // After the store: a node that cannot open its data makes no key there.
        let peers = PeerTable::new(config.peers.clone()).map_err(NodeError::Peers)?;
        let authors = AuthorTable::new(config.authors.clone()).map_err(NodeError::Signatures)?;
        let signatures =
            SignaturePolicy::new(config.signatures.clone()).map_err(NodeError::Signatures)?;
        let (key, written) = config.node_key()?;
        let signing_key = config
            .signing_key
            .as_deref()
            .map(NodeKey::load)
            .transpose()?;
        if written {
            tracing::info!(public_key = %key.public_hex(), "made this node's key");
        }
        let system_id = match (config.system_id, store.get_meta(SYSTEM_ID_KEY)?) {
            (Some(id), stored) => {
                if stored.as_deref() != Some(id.as_bytes()) {
                    store
                        .put_meta(SYSTEM_ID_KEY, id.clone().into_bytes())
                        .await?;
                }
                id
            }
            (None, Some(stored)) => {
                String::from_utf8(stored).map_err(|_| NodeError::BadSystemId)?
            }
            (None, None) => {
                let id = format!(
                    "rhizome-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                );
                store
                    .put_meta(SYSTEM_ID_KEY, id.clone().into_bytes())
                    .await?;
                id
            }
        };
        // Identifies this log (not the node): positions in it mean nothing to another
        // log, so peers key their cursors by it and a wiped store starts afresh.
        let log_id = match store.get_meta(LOG_ID_KEY)? {
            Some(id) => String::from_utf8(id).map_err(|_| NodeError::BadSystemId)?,
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                store.put_meta(LOG_ID_KEY, id.clone().into_bytes()).await?;
                id
            }
        };
        let events = EventBus::new(4096);
        let policies = if config.policies.is_empty() {
            Arc::new(PolicyHost::empty(events.clone()))
        } else {
            let host = PolicyHost::new(config.policies.clone(), events.clone())
                .map_err(|e| NodeError::Policies(e.to_string()))?;
            let host = Arc::new(host);
            host.watch()
                .map_err(|e| NodeError::Policies(format!("cannot watch for changes: {e}")))?;
            host
        };
        let node = Node {
            inner: Arc::new(Inner {
                system_id,
                key,
                signing_key,
                store,
                events,
                started: Instant::now(),
                trust: std::sync::RwLock::new(Arc::new(config.trust)),
                peers: std::sync::RwLock::new(Arc::new(peers)),
                authors: std::sync::RwLock::new(Arc::new(authors)),
                signatures: std::sync::RwLock::new(Arc::new(signatures)),
                policies,
                log_id,
                invalid: Default::default(),
                signatures_verified: Default::default(),
                signature_refusals: Default::default(),
                awaited: Default::default(),
                limits: config.limits,
                retention: retention::Retention::new(),
            }),
        };
        node.recall_awaited_targets()?;
        retention::Retention::spawn(&node);
        Ok(node)
    }

    /// A node on a temporary store: for tests and examples.
    ///
    /// # Errors
    /// When the temporary store cannot be created.
    pub async fn in_memory(system_id: &str) -> Result<Node, NodeError> {
        Node::open(NodeConfig {
            storage: Storage::Memory,
            system_id: Some(system_id.to_owned()),
            ..Default::default()
        })
        .await
    }

    pub fn system_id(&self) -> &str {
        &self.inner.system_id
    }

    /// The node's public key, lowercase hex.
    pub fn public_key(&self) -> String {
        self.inner.key.public_hex()
    }

    /// The node's key pair: links prove with it who this node is.
    pub fn key(&self) -> &NodeKey {
        &self.inner.key
    }

    /// The key that signs the deltas this node completes from the authoring shorthand.
    pub fn signing_key(&self) -> Option<&NodeKey> {
        self.inner.signing_key.as_ref()
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The built-in trust policy in force.
    pub fn trust_policy(&self) -> Arc<TrustPolicy> {
        read(&self.inner.trust)
    }

    /// The peers this node knows.
    pub fn peers(&self) -> Arc<PeerTable> {
        read(&self.inner.peers)
    }

    /// Changes the known peers in one step (`update` gets the current table and returns
    /// the next); later handshakes and batches see the new table.
    ///
    /// # Errors
    /// What `update` refused; the table is then unchanged.
    pub fn update_peers(
        &self,
        update: impl FnOnce(&PeerTable) -> Result<PeerTable, String>,
    ) -> Result<(), String> {
        replace(&self.inner.peers, update)
    }

    /// The authors bound to keys.
    pub fn authors(&self) -> Arc<AuthorTable> {
        read(&self.inner.authors)
    }

    /// Changes the bound authors in one step, as [`Node::update_peers`] does the peers.
    ///
    /// # Errors
    /// What `update` refused; the table is then unchanged.
    pub fn update_authors(
        &self,
        update: impl FnOnce(&AuthorTable) -> Result<AuthorTable, String>,
    ) -> Result<(), String> {
        replace(&self.inner.authors, update)
    }

    /// What must be signed, and who may negate.
    pub fn signature_policy(&self) -> Arc<SignaturePolicy> {
        read(&self.inner.signatures)
    }

    /// Replaces the signature settings (config reload); later batches use them.
    pub fn set_signature_policy(&self, policy: SignaturePolicy) {
        put(&self.inner.signatures, policy);
    }

    /// Signatures that verified, and deltas the signature rules refused, since start.
    pub fn signature_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.inner.signatures_verified.load(Relaxed),
            self.inner.signature_refusals.load(Relaxed),
        )
    }

    /// The built-in rules every delta is judged by, as they are now.
    pub fn rules(&self) -> Rules {
        Rules {
            trust: self.trust_policy(),
            peers: self.peers(),
            authors: self.authors(),
            signatures: self.signature_policy(),
        }
    }

    /// Replaces the built-in trust policy (config reload); later batches use the new one.
    pub fn set_trust_policy(&self, trust: TrustPolicy) {
        put(&self.inner.trust, trust);
    }

    /// The scripts in force and their hot reload.
    pub fn policies(&self) -> &Arc<PolicyHost> {
        &self.inner.policies
    }

    /// Invalid deltas refused since start (local and remote).
    pub fn invalid_count(&self) -> u64 {
        self.inner
            .invalid
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// This store's log identity (a new one when the store is new).
    pub fn log_id(&self) -> &str {
        &self.inner.log_id
    }

    /// The limits every delta must fit, on every way in.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.inner.started.elapsed()
    }

    /// Listens to the node's events.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    /// Whether any listener takes the node's events (per-delta ones are skipped if not).
    pub fn events_observed(&self) -> bool {
        self.inner.events.is_observed()
    }

    pub(crate) fn emit(&self, event: NodeEvent) {
        self.inner.events.emit(event);
    }

    /// Authors a delta on this node (fresh id, now, our system id) and stores it.
    ///
    /// # Errors
    /// When the delta is invalid (for example an empty role) or the store fails.
    pub async fn create_delta(
        &self,
        author: &str,
        pointers: Vec<Pointer>,
    ) -> Result<StoredDelta, CreateError> {
        let d = delta::new_delta(author, self.system_id(), pointers);
        self.store_one(d).await
    }

    /// Authors and stores a negation of `negated_id`.
    ///
    /// # Errors
    /// As [`Node::create_delta`].
    pub async fn negate(
        &self,
        negated_id: &str,
        author: &str,
        reason: Option<&str>,
    ) -> Result<StoredDelta, CreateError> {
        let d = delta::negate(negated_id, author, self.system_id(), reason);
        self.store_one(d).await
    }

    /// Stores a delta this node authored, signed with its signing key when it has one.
    async fn store_one(&self, mut d: Delta) -> Result<StoredDelta, CreateError> {
        if let Some(key) = self.signing_key() {
            d.sign(key)?;
        }
        let outcome = self.ingest(vec![d.clone()], Origin::Local).await?;
        match outcome.into_iter().next() {
            Some(IngestOutcome::Stored(seq)) | Some(IngestOutcome::Duplicate(seq)) => {
                Ok(StoredDelta {
                    seq,
                    origin: None,
                    delta: d,
                })
            }
            Some(IngestOutcome::Invalid(e)) => Err(CreateError::Invalid(e)),
            // Local deltas meet the signature rules only.
            Some(IngestOutcome::Rejected { policy, reason }) => {
                Err(CreateError::Refused { policy, reason })
            }
            // Local deltas have no pull filter, so only a closed store gets here.
            Some(IngestOutcome::Filtered(_)) | None => Err(CreateError::Store(StoreError::Closed)),
        }
    }

    /// Announces a delta that was refused as invalid before it could enter the path
    /// (for example a whole HTTP request refused because one of its deltas is invalid).
    pub fn report_invalid(&self, delta_id: Option<String>, e: &InvalidDelta, origin: &Origin) {
        tracing::debug!(field = %e.field, reason = %e.reason, "invalid delta refused");
        self.inner
            .invalid
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.emit(NodeEvent::DeltaInvalid {
            delta_id,
            field: e.field.clone(),
            reason: e.reason.clone(),
            origin: origin.system().map(str::to_owned),
        });
    }

    /// A delta by id.
    ///
    /// # Errors
    /// Storage failures.
    pub fn get(&self, id: &str) -> Result<Option<StoredDelta>, StoreError> {
        self.inner.store.get(id)
    }

    /// Deltas matching a query, in log order.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn query(&self, q: Query) -> Result<Vec<StoredDelta>, StoreError> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || store.query(&q))
            .await
            .map_err(|e| StoreError::Corrupt(format!("query task failed: {e}")))?
    }

    /// A stream of deltas matching `filter`, stored after `from` (use `store().head()` for
    /// "new deltas only", `Seq(0)` for everything). It reads the durable log, so a slow
    /// subscriber only falls behind; it never misses a delta.
    pub fn subscribe(&self, filter: DeltaFilter, from: Seq) -> Subscription {
        Subscription::new(self.inner.store.clone(), filter, from)
    }

    /// Stops the store's writer after every submitted write is done.
    pub fn close(&self) {
        self.inner.store.close();
    }
}

/// Why authoring a delta failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Invalid(#[from] InvalidDelta),
    #[error("refused by {policy}: {reason}")]
    Refused { policy: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn read<T>(lock: &std::sync::RwLock<Arc<T>>) -> Arc<T> {
    match lock.read() {
        Ok(t) => t.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn put<T>(lock: &std::sync::RwLock<Arc<T>>, value: T) {
    match lock.write() {
        Ok(mut v) => *v = Arc::new(value),
        Err(poisoned) => *poisoned.into_inner() = Arc::new(value),
    }
}

/// Swaps in what `update` makes of the current value, under the lock, so concurrent
/// updates never lose one another.
fn replace<T>(
    lock: &std::sync::RwLock<Arc<T>>,
    update: impl FnOnce(&T) -> Result<T, String>,
) -> Result<(), String> {
    let mut guard = match lock.write() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    *guard = Arc::new(update(&guard)?);
    Ok(())
}
