//! What the node reports as it works: a broadcast of [`NodeEvent`]s.
//!
//! Events are for observing (logs, `serve --events`, tests, dashboards). They are
//! not a data path: a subscriber that lags loses events (it is told how many), while
//! deltas themselves are always read from the durable log.

use serde::Serialize;
use tokio::sync::broadcast;

/// Everything the node announces. JSON: `{"type": "delta:stored", ...}` with camelCase fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum NodeEvent {
    /// A delta was written to the log.
    #[serde(rename = "delta:stored")]
    DeltaStored {
        delta_id: String,
        seq: u64,
        origin: Option<String>,
    },
    /// A delta that was already stored arrived again; nothing was written.
    #[serde(rename = "delta:duplicate")]
    DeltaDuplicate {
        delta_id: String,
        origin: Option<String>,
    },
    /// A delta broke a validity rule and was not stored.
    #[serde(rename = "delta:invalid")]
    DeltaInvalid {
        delta_id: Option<String>,
        field: String,
        reason: String,
        origin: Option<String>,
    },
    /// A link is dialing its peer (first connect or a reconnect attempt).
    #[serde(rename = "link:connecting")]
    LinkConnecting {
        link_id: String,
        remote_url: String,
        attempt: u32,
    },
    /// The handshake is done; deltas can flow.
    #[serde(rename = "link:connected")]
    LinkConnected {
        link_id: String,
        remote_system_id: String,
        remote_url: Option<String>,
        /// Both ends speak our extension (lossless resume, batched live deltas).
        extension: bool,
    },
    #[serde(rename = "link:disconnected")]
    LinkDisconnected {
        link_id: String,
        reason: String,
        /// The link will dial again (connecting side with reconnect enabled).
        will_reconnect: bool,
    },
    #[serde(rename = "link:error")]
    LinkError { link_id: String, error: String },
    #[serde(rename = "delta:sent")]
    DeltaSent { link_id: String, delta_id: String },
    /// A delta from a peer was accepted (stored, or already stored).
    #[serde(rename = "delta:received")]
    DeltaReceived {
        link_id: String,
        delta_id: String,
        duplicate: bool,
    },
    /// A delta from a peer was refused by a trust policy.
    #[serde(rename = "delta:rejected")]
    DeltaRejected {
        link_id: String,
        delta_id: String,
        /// Who wrote the refused delta: what an operator looks for first.
        author: String,
        reason: String,
        /// The refusal came from replaying the quarantine, not from the delta arriving:
        /// the delta already had a `delta:rejected` when it came in.
        replay: bool,
    },
    #[serde(rename = "sync:started")]
    SyncStarted { link_id: String, total_deltas: u64 },
    /// A new policy set is in force.
    #[serde(rename = "policy:reloaded")]
    PolicyReloaded {
        hash: String,
        scripts: usize,
        errors: usize,
    },
    /// A script failed to compile (or a folder could not be read).
    #[serde(rename = "policy:error")]
    PolicyError {
        file: Option<String>,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// The config file was read again and its links applied.
    #[serde(rename = "config:reloaded")]
    ConfigReloaded {
        links: usize,
        added: usize,
        removed: usize,
        changed: usize,
    },
    /// The config file could not be used; the running config stays.
    #[serde(rename = "config:error")]
    ConfigError { message: String },
    /// A delta refused by a trust policy was kept in quarantine.
    #[serde(rename = "delta:quarantined")]
    DeltaQuarantined {
        link_id: String,
        delta_id: String,
        policy: String,
    },
    /// Every delta of the initial sync is durable.
    #[serde(rename = "sync:completed")]
    SyncCompleted {
        link_id: String,
        deltas_processed: u64,
    },
    /// A reconciliation is over: what this node lacked of the peer's deltas is fetched
    /// (or refused), and the link's cursor may move past it.
    #[serde(rename = "link:reconciled")]
    LinkReconciled {
        link_id: String,
        held: u64,
        missing: u64,
        rounds: u32,
    },
}

/// Fan-out of events to any number of listeners.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<NodeEvent>,
}

impl EventBus {
    pub fn new(capacity: usize) -> EventBus {
        EventBus {
            tx: broadcast::channel(capacity).0,
        }
    }

    pub fn emit(&self, event: NodeEvent) {
        // No listener is fine: events are optional to observe.
        let _ = self.tx.send(event);
    }

    /// Whether anyone listens: per-delta events are not even built when nobody does.
    pub fn is_observed(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.tx.subscribe()
    }
}
