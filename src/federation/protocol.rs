//! The v1 wire messages and our negotiated extension.
//!
//! Every frame is `{"type": ..., "timestamp": ms, ...}`. Decoding is strict about the
//! envelope (a frame without `type` or `timestamp` is an error the peer is told about)
//! and lenient about unknown fields (that is how extensions stay compatible). Deltas
//! inside messages stay raw JSON here: each is judged on its own by the ingestion path,
//! so one bad delta gets a `delta_nack`, not a dropped frame.
//!
//! The delta-carrying frames are most of the traffic: `fast.rs` reads them in one typed
//! pass, deltas included. Whatever it does not take (errors, odd shapes) is decoded here
//! through `Value`, which stays the single source of error messages.

mod fast;
mod partwise;

pub(crate) use partwise::may_carry_deltas;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::delta::{json_kind, now_millis, Limits, WireDelta};

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
}

/// Why a frame could not be decoded; the text goes back to the peer in a MESSAGE_ERROR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Decodes one frame.
///
/// # Errors
/// [`DecodeError`] saying what is wrong: not JSON, no `type`, no `timestamp`, an
/// unknown type, or a known type with missing or mistyped fields.
pub fn decode(text: &str) -> Result<Message, DecodeError> {
    match fast::decode(text) {
        Some(msg) => Ok(msg),
        // A delta frame serde refuses whole may still be read delta by delta.
        None => decode_slow(text).or_else(|e| partwise::decode(text).ok_or(e)),
    }
}

/// The `Value` path: every frame the fast path leaves, and the specification it is
/// tested against.
fn decode_slow(text: &str) -> Result<Message, DecodeError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| DecodeError(format!("Failed to decode message: not valid JSON: {e}")))?;
    decode_value(value)
}

/// A frame already parsed as JSON.
fn decode_value(mut value: Value) -> Result<Message, DecodeError> {
    let obj = value.as_object().ok_or_else(|| {
        DecodeError("Failed to decode message: a message must be a JSON object".into())
    })?;
    let kind = match obj.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(_) => {
            return Err(DecodeError(
                "Failed to decode message: type must be a string".into(),
            ))
        }
        None => {
            return Err(DecodeError(
                "Failed to decode message: Message missing type field".into(),
            ))
        }
    };
    match obj.get("timestamp") {
        Some(v) if timestamp_ok(v) => {}
        Some(_) => {
            return Err(DecodeError(
                "Failed to decode message: timestamp must be a non-negative number".into(),
            ))
        }
        None => {
            return Err(DecodeError(
                "Failed to decode message: Message missing timestamp field".into(),
            ))
        }
    }
    // The frames that carry deltas are most of the traffic: take their fields out of
    // the parsed object directly (serde's tagged-enum path would buffer every delta
    // a second time).
    if let Some(obj) = value.as_object_mut() {
        match kind.as_str() {
            "delta" => return delta_message(obj),
            "sync_batch" => return sync_batch_message(obj),
            "delta_batch" => return delta_batch_message(obj),
            _ => {}
        }
    }
    serde_json::from_value(value).map_err(|e| {
        let e = e.to_string();
        if e.starts_with("unknown variant") {
            DecodeError(format!("Unknown message type: {kind:?}"))
        } else {
            DecodeError(format!("Invalid {kind} message: {e}"))
        }
    })
}

/// An envelope timestamp: any non-negative number.
fn timestamp_ok(v: &Value) -> bool {
    matches!(v, Value::Number(n) if n.as_f64().is_some_and(|f| f >= 0.0))
}

fn field_error(kind: &str, e: impl std::fmt::Display) -> DecodeError {
    DecodeError(format!("Invalid {kind} message: {e}"))
}

fn take_deltas(
    obj: &mut serde_json::Map<String, Value>,
    kind: &str,
) -> Result<Vec<WireDelta>, DecodeError> {
    match obj.remove("deltas") {
        Some(Value::Array(items)) => Ok(items.into_iter().map(WireDelta::from_value).collect()),
        Some(other) => Err(field_error(
            kind,
            format!("deltas must be an array, got {}", json_kind(&other)),
        )),
        None => Err(field_error(kind, "missing field `deltas`")),
    }
}

fn opt_u64(
    obj: &serde_json::Map<String, Value>,
    kind: &str,
    field: &str,
) -> Result<Option<u64>, DecodeError> {
    opt_u64_of(obj.get(field), kind, field)
}

/// Shared with the fast path, so both take the same numbers.
fn opt_u64_of(value: Option<&Value>, kind: &str, field: &str) -> Result<Option<u64>, DecodeError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| field_error(kind, format!("{field} must be a non-negative integer"))),
    }
}

fn req_u64(
    obj: &serde_json::Map<String, Value>,
    kind: &str,
    field: &str,
) -> Result<u64, DecodeError> {
    opt_u64(obj, kind, field)?.ok_or_else(|| field_error(kind, format!("missing field `{field}`")))
}

fn delta_message(obj: &mut serde_json::Map<String, Value>) -> Result<Message, DecodeError> {
    let delta = obj
        .remove("delta")
        .ok_or_else(|| field_error("delta", "missing field `delta`"))?;
    Ok(Message::Delta {
        delta: WireDelta::from_value(delta),
        seq: opt_u64(obj, "delta", "seq")?,
    })
}

fn sync_batch_message(obj: &mut serde_json::Map<String, Value>) -> Result<Message, DecodeError> {
    const KIND: &str = "sync_batch";
    let is_last_batch = match obj.get("isLastBatch") {
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(field_error(KIND, "isLastBatch must be a boolean")),
        None => return Err(field_error(KIND, "missing field `isLastBatch`")),
    };
    Ok(Message::SyncBatch {
        deltas: take_deltas(obj, KIND)?,
        batch_number: req_u64(obj, KIND, "batchNumber")?,
        is_last_batch,
        last_seq: opt_u64(obj, KIND, "lastSeq")?,
    })
}

fn delta_batch_message(obj: &mut serde_json::Map<String, Value>) -> Result<Message, DecodeError> {
    const KIND: &str = "delta_batch";
    Ok(Message::DeltaBatch {
        deltas: take_deltas(obj, KIND)?,
        last_seq: req_u64(obj, KIND, "lastSeq")?,
    })
}

/// Encodes a message with the current timestamp.
pub fn encode(msg: &Message) -> String {
    let mut v = serde_json::to_value(msg).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("timestamp".into(), Value::from(now_millis()));
    }
    v.to_string()
}

/// Encodes a `delta` message around stored delta JSON without re-encoding the delta.
pub fn encode_delta_raw(delta_json: &str, seq: Option<u64>) -> String {
    let ts = now_millis();
    match seq {
        Some(s) => {
            format!("{{\"type\":\"delta\",\"timestamp\":{ts},\"delta\":{delta_json},\"seq\":{s}}}")
        }
        None => format!("{{\"type\":\"delta\",\"timestamp\":{ts},\"delta\":{delta_json}}}"),
    }
}

/// Encodes a batch (`sync_batch` or the extension's `delta_batch`) around stored delta JSON.
pub fn encode_batch_raw(kind: BatchKind, deltas: &[&str], last_seq: Option<u64>) -> String {
    use std::fmt::Write;
    let ts = now_millis();
    // One allocation of the frame's size: a frame carries up to 1000 deltas (~330 KB),
    // and growing a `format!` string that large copied it several times.
    let body: usize = deltas.iter().map(|d| d.len() + 1).sum();
    let mut frame = String::with_capacity(body + 160);
    let kind_name = match kind {
        BatchKind::Sync { .. } => "sync_batch",
        BatchKind::Live => "delta_batch",
    };
    // Writing into a String cannot fail.
    let _ = write!(
        frame,
        "{{\"type\":\"{kind_name}\",\"timestamp\":{ts},\"deltas\":["
    );
    for (i, d) in deltas.iter().enumerate() {
        if i > 0 {
            frame.push(',');
        }
        frame.push_str(d);
    }
    frame.push(']');
    if let BatchKind::Sync {
        batch_number,
        is_last,
    } = kind
    {
        let _ = write!(
            frame,
            ",\"batchNumber\":{batch_number},\"isLastBatch\":{is_last}"
        );
    }
    if let Some(s) = last_seq {
        let _ = write!(frame, ",\"lastSeq\":{s}");
    }
    frame.push('}');
    frame
}

#[derive(Debug, Clone, Copy)]
pub enum BatchKind {
    Sync { batch_number: u64, is_last: bool },
    Live,
}

/// Checks that a raw JSON fragment is what we think it is (used in tests of the raw encoders).
pub fn is_json(text: &str) -> bool {
    serde_json::from_str::<&RawValue>(text).is_ok()
}

#[cfg(test)]
mod tests;
