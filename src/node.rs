//! The node: one store, one event bus, one ingestion path for every delta.
//!
//! Every delta, whether authored here, posted over HTTP or received from a peer,
//! goes through [`Node::ingest`]: validate, then (for remote deltas, added with
//! federation) filters and trust policies, then append with dedup, then wake the
//! log's readers. Nothing reaches the log any other way.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::admission::{self, Admission, Judged};
use crate::delta::{self, Delta, InvalidDelta, Limits, Pointer};
use crate::events::{EventBus, NodeEvent};
use crate::federation::{LinkRegistry, ServerOptions, TrustPolicy};
use crate::filter::DeltaFilter;
use crate::policy::{PolicyDirs, PolicyHost};
use crate::store::{
    AppendOutcome, Durability, LogTail, NewEntry, PendingAppend, Query, Seq, SideWrites, Store,
    StoreError, StoredDelta,
};

/// Where a delta came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Authored on this node or handed to it by a local client (library, HTTP, CLI).
    Local,
    /// Received from a peer system over a federation link.
    Remote { system: String },
}

impl Origin {
    fn system(&self) -> Option<&str> {
        match self {
            Origin::Local => None,
            Origin::Remote { system } => Some(system),
        }
    }
}

/// The result of ingesting one delta.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestOutcome {
    Stored(Seq),
    Duplicate(Seq),
    Invalid(InvalidDelta),
    /// A remote delta the link's pull filter (declarative or scripted) does not keep.
    Filtered(String),
    /// A remote delta a trust policy refused: which one and why. It is kept in quarantine.
    Rejected {
        policy: String,
        reason: String,
    },
}

/// Where the node keeps its deltas.
#[derive(Debug, Clone, Default)]
pub enum Storage {
    /// A durable fjall database in this directory.
    Path(PathBuf),
    /// The store in memory ([`Store::temporary`]): nothing reaches the disk or survives the node.
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
    /// The federation endpoint's options (path, limits, heartbeat).
    pub server: ServerOptions,
    /// Where trust policies and push / pull filter scripts live (watched and hot-reloaded).
    pub policies: PolicyDirs,
    /// When an acknowledged write is on disk (durable stores; default: fsync).
    pub durability: Option<Durability>,
    /// What a delta may weigh, on every way in (and what links advertise to peers).
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored system id is not UTF-8")]
    BadSystemId,
    #[error("policies: {0}")]
    Policies(String),
    #[error("{0}")]
    Limits(String),
}

/// A running node; cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    system_id: String,
    store: Store,
    events: EventBus,
    started: Instant,
    trust: std::sync::RwLock<Arc<TrustPolicy>>,
    server: ServerOptions,
    links: LinkRegistry,
    policies: Arc<PolicyHost>,
    log_id: String,
    /// Invalid deltas refused since start.
    invalid: std::sync::atomic::AtomicU64,
    limits: Limits,
}

const SYSTEM_ID_KEY: &str = "node/system_id";
const LOG_ID_KEY: &str = "node/log_id";

impl Node {
    /// Opens the store and starts the node.
    ///
    /// # Errors
    /// When the store cannot be opened (for example it is locked by another process).
    pub async fn open(config: NodeConfig) -> Result<Node, NodeError> {
        config
            .limits
            .check_settings(config.server.max_message_size)
            .map_err(NodeError::Limits)?;
        let storage = config.storage.clone();
        let durability = config.durability.unwrap_or(Durability::Sync);
        // Opening recovers the journal: blocking work, kept off the async workers.
        let store = tokio::task::spawn_blocking(move || match storage {
            Storage::Path(p) => Store::open_with(&p, durability),
            Storage::Memory => Store::temporary(),
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("store open task failed: {e}")))??;
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
        Ok(Node {
            inner: Arc::new(Inner {
                system_id,
                store,
                events,
                started: Instant::now(),
                trust: std::sync::RwLock::new(Arc::new(config.trust)),
                server: config.server,
                links: LinkRegistry::default(),
                policies,
                log_id,
                invalid: Default::default(),
                limits: config.limits,
            }),
        })
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

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The built-in trust policy in force.
    pub fn trust_policy(&self) -> Arc<TrustPolicy> {
        match self.inner.trust.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the built-in trust policy (config reload); later batches use the new one.
    pub fn set_trust_policy(&self, trust: TrustPolicy) {
        match self.inner.trust.write() {
            Ok(mut t) => *t = Arc::new(trust),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(trust),
        }
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

    pub fn server_options(&self) -> &ServerOptions {
        &self.inner.server
    }

    pub(crate) fn links(&self) -> &LinkRegistry {
        &self.inner.links
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

    async fn store_one(&self, d: Delta) -> Result<StoredDelta, CreateError> {
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
            // Local deltas are never judged, so only a closed store gets here.
            Some(IngestOutcome::Filtered(_) | IngestOutcome::Rejected { .. }) | None => {
                Err(CreateError::Store(StoreError::Closed))
            }
        }
    }

    /// The single ingestion path for deltas already in memory.
    ///
    /// # Errors
    /// Only storage failures; per-delta problems are in the outcomes.
    pub async fn ingest(
        &self,
        deltas: Vec<Delta>,
        origin: Origin,
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        let checked = deltas
            .into_iter()
            .map(|d| delta::validate(&d).map(|()| d))
            .collect();
        self.ingest_checked(checked, origin, None, Vec::new()).await
    }

    /// The single ingestion path for deltas as JSON text, one delta per item.
    ///
    /// # Errors
    /// Only storage failures; per-delta problems are in the outcomes.
    pub async fn ingest_json<T: AsRef<str>>(
        &self,
        texts: &[T],
        origin: Origin,
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        let checked = texts.iter().map(|t| Delta::from_json(t.as_ref())).collect();
        self.ingest_checked(checked, origin, None, Vec::new()).await
    }

    /// Where every entry point meets: record invalid deltas, judge remote ones
    /// (`admission`: the link's pull filter, then the node's trust policy), append the
    /// rest with `meta` (a link's cursor) in the same atomic batch, announce what happened.
    pub(crate) async fn ingest_checked(
        &self,
        checked: Vec<Result<Delta, InvalidDelta>>,
        origin: Origin,
        admission: Option<&Admission>,
        meta: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        self.ingest_begin(checked, origin, admission, meta)
            .await?
            .finish()
            .await
    }

    /// The first half of [`Node::ingest_checked`]: validates, judges and queues the
    /// append, then returns without waiting for the disk. A link that reads many
    /// batches decodes and judges the next one while this one is written; appends
    /// commit in the order they were begun.
    pub(crate) async fn ingest_begin(
        &self,
        checked: Vec<Result<Delta, InvalidDelta>>,
        origin: Origin,
        admission: Option<&Admission>,
        meta: Vec<(String, Vec<u8>)>,
    ) -> Result<PendingIngest, StoreError> {
        let origin_system = origin.system().map(str::to_owned);
        let limits = self.inner.limits;
        let checked = checked
            .into_iter()
            .map(|item| item.and_then(|d| limits.check(&d).map(|()| d)))
            .collect();
        let (checked, verdicts) = self.judge(checked, admission).await?;
        let observed = self.events_observed();
        let mut outcomes: Vec<Option<IngestOutcome>> = Vec::with_capacity(checked.len());
        let mut entries = Vec::new();
        let mut ids = Vec::new();
        let mut quarantine = Vec::new();
        for (item, verdict) in checked.into_iter().zip(verdicts) {
            match (item, verdict, admission) {
                (Ok(_), Some(Judged::Filtered(reason)), _) => {
                    outcomes.push(Some(IngestOutcome::Filtered(reason)));
                }
                (Ok(delta), Some(Judged::Rejected { policy, reason }), Some(a)) => {
                    tracing::debug!(delta_id = %delta.id, link = %a.link.id, %policy, %reason, "delta rejected");
                    self.emit(NodeEvent::DeltaRejected {
                        link_id: a.link.id.clone(),
                        delta_id: delta.id.clone(),
                        reason: format!("{policy}: {reason}"),
                    });
                    if a.quarantine {
                        self.emit(NodeEvent::DeltaQuarantined {
                            link_id: a.link.id.clone(),
                            delta_id: delta.id.clone(),
                            policy: policy.clone(),
                        });
                        let record = admission::QuarantineRecord::new(
                            delta,
                            a.link.clone(),
                            origin_system.clone(),
                            policy.clone(),
                            reason.clone(),
                        );
                        quarantine.push(record.to_bytes());
                    }
                    outcomes.push(Some(IngestOutcome::Rejected { policy, reason }));
                }
                (Ok(delta), _, _) => {
                    // Ids are kept for the stored/duplicate events only.
                    if observed {
                        ids.push(delta.id.clone());
                    }
                    entries.push(NewEntry {
                        delta,
                        origin: origin_system.clone(),
                    });
                    outcomes.push(None);
                }
                (Err(e), _, _) => {
                    self.report_invalid(None, &e, &origin);
                    outcomes.push(Some(IngestOutcome::Invalid(e)));
                }
            }
        }
        let append = if entries.is_empty() && meta.is_empty() && quarantine.is_empty() {
            None
        } else {
            let side = SideWrites { meta, quarantine };
            Some(self.inner.store.append(entries, side)?)
        };
        Ok(PendingIngest {
            node: self.clone(),
            append,
            outcomes,
            ids: observed.then_some(ids),
            origin: origin_system,
        })
    }
    /// Judges remote deltas against one consistent policy set. Scripts cost CPU, so
    /// when any apply the work moves to a blocking thread, off the async workers.
    async fn judge(
        &self,
        checked: Vec<Result<Delta, InvalidDelta>>,
        admission: Option<&Admission>,
    ) -> Result<JudgedBatch, StoreError> {
        let Some(a) = admission else {
            let n = checked.len();
            return Ok((checked, vec![None; n]));
        };
        let set = self.inner.policies.current();
        let trust = self.trust_policy();
        if !a.runs_scripts(&set) {
            let verdicts = a.judge_all(&trust, &set, &checked);
            return Ok((checked, verdicts));
        }
        let a = a.clone();
        tokio::task::spawn_blocking(move || {
            let verdicts = a.judge_all(&trust, &set, &checked);
            (checked, verdicts)
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("policy task failed: {e}")))
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
        Subscription {
            tail: LogTail::new(self.inner.store.clone(), from),
            filter,
            pending: Vec::new().into_iter(),
        }
    }

    /// Stops the store's writer after every submitted write is done.
    pub fn close(&self) {
        self.inner.store.close();
    }
}

type JudgedBatch = (Vec<Result<Delta, InvalidDelta>>, Vec<Option<Judged>>);

/// Why authoring a delta failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Invalid(#[from] InvalidDelta),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A filtered, lossless stream of stored deltas (spec section 7, subscriptions).
pub struct Subscription {
    tail: LogTail,
    filter: DeltaFilter,
    pending: std::vec::IntoIter<StoredDelta>,
}

impl Subscription {
    /// The next matching delta; waits for one. `Ok(None)` once the node has shut down.
    ///
    /// # Errors
    /// Storage failures while reading the log.
    pub async fn next(&mut self) -> Result<Option<StoredDelta>, StoreError> {
        loop {
            for d in self.pending.by_ref() {
                if self.filter.matches(&d.delta) {
                    return Ok(Some(d));
                }
            }
            match self.tail.next(256, None).await? {
                Some(batch) => self.pending = batch.deltas()?.into_iter(),
                None => return Ok(None),
            }
        }
    }

    /// Position of the last delta read (resume a later subscription from here).
    pub fn cursor(&self) -> Seq {
        self.tail.cursor()
    }
}

/// An ingestion queued by [`Node::ingest_begin`]: its append is on its way to disk.
#[must_use = "nothing is acknowledged until `finish` resolves"]
pub(crate) struct PendingIngest {
    node: Node,
    append: Option<PendingAppend>,
    /// One slot per delta offered; `None` where the append decides.
    outcomes: Vec<Option<IngestOutcome>>,
    /// The ids of the appended deltas, when someone listens to events.
    ids: Option<Vec<String>>,
    origin: Option<String>,
}

impl PendingIngest {
    /// Waits for the append to be durable, announces what was stored, and returns
    /// one outcome per delta offered, in order.
    ///
    /// # Errors
    /// Storage failures.
    pub(crate) async fn finish(self) -> Result<Vec<IngestOutcome>, StoreError> {
        let PendingIngest {
            node,
            append,
            mut outcomes,
            ids,
            origin,
        } = self;
        let appended = match append {
            Some(pending) => pending.durable().await?,
            None => Vec::new(),
        };
        let mut ids = ids.map(Vec::into_iter);
        let mut appended = appended.into_iter();
        for slot in outcomes.iter_mut().filter(|o| o.is_none()) {
            let Some(result) = appended.next() else {
                break;
            };
            let delta_id = ids.as_mut().and_then(Iterator::next);
            *slot = Some(match result {
                AppendOutcome::Stored(seq) => {
                    if let Some(delta_id) = delta_id {
                        node.emit(NodeEvent::DeltaStored {
                            delta_id,
                            seq: seq.0,
                            origin: origin.clone(),
                        });
                    }
                    IngestOutcome::Stored(seq)
                }
                AppendOutcome::Duplicate(seq) => {
                    if let Some(delta_id) = delta_id {
                        node.emit(NodeEvent::DeltaDuplicate {
                            delta_id,
                            origin: origin.clone(),
                        });
                    }
                    IngestOutcome::Duplicate(seq)
                }
            });
        }
        Ok(outcomes.into_iter().flatten().collect())
    }
}
