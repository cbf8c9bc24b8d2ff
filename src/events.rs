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

    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.tx.subscribe()
    }
}
