//! The frame codec: one [`decode`] for every incoming text frame, one [`encode`] for
//! every outgoing one.
//!
//! Decoding is strict about the envelope (a frame without `type` or `timestamp` is an
//! error the peer is told about) and lenient about unknown fields (that is how
//! extensions stay compatible). It reads a frame in up to three ways, each only when
//! the one before cannot:
//! - `typed`: the delta-carrying frames, most of the traffic, in one typed pass with
//!   their deltas; it only ever accepts, never words an error;
//! - the `Value` path here: every other frame, and the single source of the error
//!   messages a peer reads;
//! - `partwise`: a delta-carrying frame serde refuses whole (one delta nested too deep,
//!   a lone surrogate) read part by part, so one bad delta costs only itself.
//!
//! Invariant: the typed reader accepts no frame the `Value` path refuses and builds the
//! same [`Message`] from the ones it takes (`typed/tests.rs`). Encoding stamps the
//! current time and frames stored delta JSON as it is, never re-encoding a delta.

mod partwise;
mod typed;

pub(crate) use partwise::may_carry_deltas;

use super::pointers::{to_legacy, Pointers};

use serde_json::Value;

use super::{Message, WireDelta};
use crate::delta::json::kind as json_kind;
use crate::delta::now_millis;

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
    match typed::decode(text) {
        Some(msg) => Ok(msg),
        // A delta frame serde refuses whole may still be read delta by delta.
        None => decode_through_value(text).or_else(|e| partwise::decode(text).ok_or(e)),
    }
}

/// The `Value` path: every frame the typed reader leaves, and the specification it is
/// tested against.
fn decode_through_value(text: &str) -> Result<Message, DecodeError> {
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
            "delta_response" => return delta_response_message(obj),
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

/// Shared with the typed reader, so both take the same numbers.
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

fn delta_response_message(
    obj: &mut serde_json::Map<String, Value>,
) -> Result<Message, DecodeError> {
    const KIND: &str = "delta_response";
    let last = match obj.get("last") {
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(field_error(KIND, "last must be a boolean")),
        None => return Err(field_error(KIND, "missing field `last`")),
    };
    Ok(Message::DeltaResponse {
        deltas: take_deltas(obj, KIND)?,
        request_id: req_u64(obj, KIND, "requestId")?,
        last,
    })
}

/// An outgoing frame: a message, or stored delta JSON framed as it is (a sender
/// forwards what it stored without decoding and re-encoding every delta).
#[derive(Debug, Clone, Copy)]
pub enum Outbound<'a> {
    Message(&'a Message),
    /// A `delta` frame around one delta's JSON.
    Delta {
        delta: &'a str,
        seq: Option<u64>,
    },
    /// A `sync_batch` or the extension's `delta_batch` around deltas' JSON.
    Batch {
        kind: BatchKind,
        deltas: &'a [&'a str],
        last_seq: Option<u64>,
    },
}

impl<'a> Outbound<'a> {
    /// A `delta` frame around stored delta JSON.
    pub fn delta(delta: &'a str, seq: Option<u64>) -> Outbound<'a> {
        Outbound::Delta { delta, seq }
    }

    /// A batch frame around stored delta JSON.
    pub fn batch(kind: BatchKind, deltas: &'a [&'a str], last_seq: Option<u64>) -> Outbound<'a> {
        Outbound::Batch {
            kind,
            deltas,
            last_seq,
        }
    }
}

impl<'a> From<&'a Message> for Outbound<'a> {
    fn from(msg: &'a Message) -> Outbound<'a> {
        Outbound::Message(msg)
    }
}

/// Which batch frame: a `sync_batch` of the initial sync, or a live `delta_batch`.
#[derive(Debug, Clone, Copy)]
pub enum BatchKind {
    Sync {
        batch_number: u64,
        is_last: bool,
    },
    Live,
    /// A `delta_response` to a `delta_request`.
    Response {
        request_id: u64,
        last: bool,
    },
}

/// Encodes one outgoing frame, stamped with the current time.
pub fn encode<'a>(frame: impl Into<Outbound<'a>>) -> String {
    encode_with(frame, Pointers::Current)
}

/// [`encode`], with the deltas a frame carries in the pointer form `pointers`.
pub fn encode_with<'a>(frame: impl Into<Outbound<'a>>, pointers: Pointers) -> String {
    let frame = frame.into();
    if pointers == Pointers::Legacy {
        match frame {
            Outbound::Delta { delta, seq } => return encode_delta(&to_legacy(delta), seq),
            Outbound::Batch {
                kind,
                deltas,
                last_seq,
            } => {
                let converted: Vec<String> = deltas.iter().map(|d| to_legacy(d)).collect();
                let refs: Vec<&str> = converted.iter().map(String::as_str).collect();
                return encode_batch(kind, &refs, last_seq);
            }
            Outbound::Message(_) => {}
        }
    }
    match frame {
        Outbound::Message(msg) => encode_message(msg),
        Outbound::Delta { delta, seq } => encode_delta(delta, seq),
        Outbound::Batch {
            kind,
            deltas,
            last_seq,
        } => encode_batch(kind, deltas, last_seq),
    }
}

fn encode_message(msg: &Message) -> String {
    let mut v = serde_json::to_value(msg).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("timestamp".into(), Value::from(now_millis()));
    }
    v.to_string()
}

fn encode_delta(delta_json: &str, seq: Option<u64>) -> String {
    let ts = now_millis();
    match seq {
        Some(s) => {
            format!("{{\"type\":\"delta\",\"timestamp\":{ts},\"delta\":{delta_json},\"seq\":{s}}}")
        }
        None => format!("{{\"type\":\"delta\",\"timestamp\":{ts},\"delta\":{delta_json}}}"),
    }
}

fn encode_batch(kind: BatchKind, deltas: &[&str], last_seq: Option<u64>) -> String {
    use std::fmt::Write;
    let ts = now_millis();
    // One allocation of the frame's size: a frame carries up to 1000 deltas (~330 KB),
    // and growing a `format!` string that large copied it several times.
    let body: usize = deltas.iter().map(|d| d.len() + 1).sum();
    let mut frame = String::with_capacity(body + 160);
    let kind_name = match kind {
        BatchKind::Sync { .. } => "sync_batch",
        BatchKind::Live => "delta_batch",
        BatchKind::Response { .. } => "delta_response",
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
    match kind {
        BatchKind::Sync {
            batch_number,
            is_last,
        } => {
            let _ = write!(
                frame,
                ",\"batchNumber\":{batch_number},\"isLastBatch\":{is_last}"
            );
        }
        BatchKind::Response { request_id, last } => {
            let _ = write!(frame, ",\"requestId\":{request_id},\"last\":{last}");
        }
        BatchKind::Live => {}
    }
    if let Some(s) = last_seq {
        let _ = write!(frame, ",\"lastSeq\":{s}");
    }
    frame.push('}');
    frame
}

#[cfg(test)]
mod tests;
