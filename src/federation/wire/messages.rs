//! The v1 wire messages and our negotiated extension, as types.
//!
//! Every frame is `{"type": ..., "timestamp": ms, ...}`; the `timestamp` is the codec's
//! (stamped on encode, checked on decode), so it is no field here. Field names are the
//! wire's, in snake_case here and camelCase on the wire; unknown fields are ignored on
//! decode, which is how extensions stay compatible. Deltas inside messages are [`WireDelta`]s: each is
//! judged on its own by the ingestion path, so one bad delta gets a `delta_nack`, not a
//! dropped frame.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{IdList, WireDelta};
use crate::delta::Limits;

pub const PROTOCOL_VERSION: &str = "rhizomedb-federation-v1";
/// Version of our extension (see docs/PROTOCOL.md). Advertised in hello / hello_ack.
pub const EXTENSION_VERSION: u32 = 1;

/// A decoded frame body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum Message {
    Hello {
        system_id: String,
        protocol: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rhizome: Option<HelloExt>,
    },
    HelloAck {
        system_id: String,
        link_id: String,
        protocol: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rhizome: Option<HelloExt>,
    },
    Delta {
        delta: WireDelta,
        /// Extension: the sender's log position of this delta.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    DeltaAck {
        delta_id: String,
    },
    DeltaNack {
        delta_id: String,
        reason: String,
    },
    SyncRequest {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filter: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_timestamp: Option<u64>,
        /// Extension: send everything after this position of your log, then live.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_from: Option<u64>,
        /// Extension: skip history, start live from your current head.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_head: Option<bool>,
    },
    SyncStart {
        total_deltas: u64,
        batch_size: u64,
        /// Extra field (ignored by v1 peers): deltas the sender archived, which no sync
        /// serves; with the time range they span.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        archived: Option<ArchivedCounts>,
    },
    SyncBatch {
        deltas: Vec<WireDelta>,
        batch_number: u64,
        is_last_batch: bool,
        /// Extension: the sender's log position of the batch's last delta (or the
        /// position the scan reached, when the filter skipped the rest).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seq: Option<u64>,
    },
    SyncComplete {
        deltas_processed: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seq: Option<u64>,
    },
    /// Extension: live deltas in one frame, in log order.
    DeltaBatch {
        deltas: Vec<WireDelta>,
        last_seq: u64,
    },
    /// Extension: the receiver has committed the sender's log up to `lastSeq` (sent
    /// after each committed batch; the sender's sync-lag metric reads it).
    CursorAck {
        last_seq: u64,
    },
    /// Extension (feature `announce`): relayed deltas of the sender's log, by id only,
    /// sent before the `delta_batch` frames of the same read. `lastSeq` is present when
    /// no `delta_batch` follows: it is then the position the read reached.
    DeltaAnnounce {
        ids: IdList,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seq: Option<u64>,
    },
    /// Extension (feature `announce`): send these deltas (the ones announced that the
    /// receiver lacks), answered by `delta_response` frames with the same `requestId`.
    DeltaRequest {
        request_id: u64,
        ids: IdList,
    },
    /// Extension (feature `announce`): the deltas of one `delta_request` the sender holds
    /// and may send; `last` on its final frame. Ids not sent were not available.
    DeltaResponse {
        request_id: u64,
        deltas: Vec<WireDelta>,
        last: bool,
    },
    /// Extension (feature `reconcile`): one round of a range-based set reconciliation
    /// (docs/PROTOCOL.md 6.10). `puller` is true on the rounds of the side that learns
    /// what it lacks (it numbers the conversation); `round` is read by the session.
    Reconcile {
        conversation: u64,
        puller: bool,
        round: Value,
    },
    /// Extension (feature `reconcile`): our live deltas to you start after `through`
    /// of our log, and we did not send what comes before: reconcile to learn what of it
    /// you lack.
    ReconcileInvite {
        through: u64,
    },
    /// Extension: the connecting side's key proof, right after it verified the accepting
    /// side's in hello_ack (docs/PROTOCOL.md 6.8).
    Auth {
        proof: String,
    },
    Pause,
    Resume,
    Ping,
    Pong,
    Error {
        code: String,
        message: String,
        #[serde(default)]
        fatal: bool,
    },
}

/// Our extension as advertised in hello / hello_ack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelloExt {
    pub version: u32,
    /// In hello_ack: the last position of the connecting side's log that the accepting
    /// side has committed, so the connecting side's sender resumes right after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<u64>,
    /// The sender's log identity: positions are only meaningful within one log, so
    /// cursors are kept per log (a peer whose store was wiped starts afresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// What this node reads, so the other side never sends a frame or a delta it
    /// would refuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<WireLimits>,
    /// Proving who each node is (docs/PROTOCOL.md 6.8): in hello the connecting side's
    /// key and nonce; in hello_ack the accepting side's, with its proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthHello>,
    /// Optional parts of the extension this node speaks ([`features`]); a feature is
    /// used on a link only when both ends list it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// How many positions the sender's log holds: a side without a cursor compares it
    /// with its own to choose between reconciling and receiving everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<u64>,
}

/// Names of the extension's optional parts.
pub mod features {
    /// Relayed deltas go as ids (`delta_announce`), bodies on request.
    pub const ANNOUNCE: &str = "announce";
    /// Range-based set reconciliation for links without a cursor (`reconcile`).
    pub const RECONCILE: &str = "reconcile";
}

/// One side's part of the key proof in hello / hello_ack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthHello {
    /// The sender's node key, lowercase hex.
    pub key: String,
    /// 32 fresh random bytes, hex: the other side's proof must cover it.
    pub nonce: String,
    /// hello_ack only: the accepting side's signature of the handshake transcript.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
}

/// What a node archived (moved out of its live store): no initial sync serves those
/// deltas. Sent in `sync_start` as an extra field, which v1 peers ignore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchivedCounts {
    pub deltas: u64,
    /// The oldest and newest archived timestamps (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<u64>,
}

/// [`Limits`] and the largest frame, as advertised. Every field is optional, so a peer
/// that advertises fewer (or more) keeps the defaults for the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delta_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pointers: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_string_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_id_bytes: Option<u64>,
}

/// What a peer reads: its advertised limits, or the defaults for a peer that says nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    pub max_message_bytes: usize,
    pub delta: Limits,
}

impl Default for PeerLimits {
    fn default() -> PeerLimits {
        PeerLimits {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            delta: Limits::default(),
        }
    }
}

/// The largest frame a node reads unless configured otherwise (and what a peer that
/// advertises nothing is assumed to read).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

impl WireLimits {
    pub fn of(limits: &Limits, max_message_bytes: usize) -> WireLimits {
        let n = |v: usize| Some(v as u64);
        WireLimits {
            max_message_bytes: n(max_message_bytes),
            max_delta_bytes: n(limits.max_delta_bytes),
            max_depth: n(limits.max_depth),
            max_pointers: n(limits.max_pointers),
            max_string_bytes: n(limits.max_string_bytes),
            max_id_bytes: n(limits.max_id_bytes),
        }
    }

    /// The peer's limits, defaults where it said nothing.
    pub fn to_peer(self) -> PeerLimits {
        let d = PeerLimits::default();
        let get = |v: Option<u64>, default: usize| {
            v.map_or(default, |v| usize::try_from(v).unwrap_or(usize::MAX))
        };
        PeerLimits {
            max_message_bytes: get(self.max_message_bytes, d.max_message_bytes),
            delta: Limits {
                max_delta_bytes: get(self.max_delta_bytes, d.delta.max_delta_bytes),
                max_depth: get(self.max_depth, d.delta.max_depth),
                max_pointers: get(self.max_pointers, d.delta.max_pointers),
                max_string_bytes: get(self.max_string_bytes, d.delta.max_string_bytes),
                max_id_bytes: get(self.max_id_bytes, d.delta.max_id_bytes),
            },
        }
    }
}

/// Error codes on the wire.
pub mod codes {
    pub const MESSAGE_ERROR: &str = "MESSAGE_ERROR";
    pub const PROTOCOL_MISMATCH: &str = "PROTOCOL_MISMATCH";
    pub const SYNC_ERROR: &str = "SYNC_ERROR";
    pub const HANDSHAKE_REQUIRED: &str = "HANDSHAKE_REQUIRED";
    pub const MODE_VIOLATION: &str = "MODE_VIOLATION";
    /// A key proof that does not verify, or a key other than the one expected.
    pub const AUTH_FAILED: &str = "AUTH_FAILED";
    /// This node accepts only peers that authenticate.
    pub const AUTH_REQUIRED: &str = "AUTH_REQUIRED";
    /// A reconciliation round broke the protocol or a limit; the conversation is over.
    pub const RECONCILE_ERROR: &str = "RECONCILE_ERROR";
}
