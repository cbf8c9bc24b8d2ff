//! The typed reader: `delta`, `sync_batch`, `delta_batch` and `delta_response` frames
//! read in one typed pass, deltas included, with no `Value` per delta.
//!
//! This reader only ever accepts a frame, never refuses one: whatever it does not take
//! (a missing or mistyped field, another message type, a delta that is not shaped like
//! one, a duplicate key) goes to `decode`'s `Value` path, which words the errors and
//! sorts each delta itself. So it must accept no frame the `Value` path refuses and
//! build the same `Message` from the ones it takes; the unit tests check both.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::{opt_u64_of, timestamp_ok};
use crate::delta::json::{give_up, next_key, set_once, TypedDelta};
use crate::federation::wire::{Message, WireDelta};

/// The frame, or `None` when the `Value` path must decode it.
pub(super) fn decode(text: &str) -> Option<Message> {
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = FrameSeed.deserialize(&mut de).ok()?;
    de.end().ok()?;
    fields.into_message()
}

/// The top-level fields the three frames use, as read. Each field is kept as `Value`
/// except the deltas: the small ones are then judged by the `Value` path's own helpers.
#[derive(Default)]
struct Fields {
    kind: Option<String>,
    timestamp: Option<Value>,
    delta: Option<WireDelta>,
    deltas: Option<Vec<WireDelta>>,
    seq: Option<Value>,
    last_seq: Option<Value>,
    batch_number: Option<Value>,
    is_last_batch: Option<Value>,
    request_id: Option<Value>,
    last: Option<Value>,
}

impl Fields {
    fn into_message(self) -> Option<Message> {
        if !self.timestamp.as_ref().is_some_and(timestamp_ok) {
            return None;
        }
        let kind = self.kind?;
        let u64_of = |v: &Option<Value>, field| opt_u64_of(v.as_ref(), &kind, field).ok();
        match kind.as_str() {
            "delta" => Some(Message::Delta {
                seq: u64_of(&self.seq, "seq")?,
                delta: self.delta?,
            }),
            "sync_batch" => Some(Message::SyncBatch {
                is_last_batch: match self.is_last_batch? {
                    Value::Bool(b) => b,
                    _ => return None,
                },
                batch_number: u64_of(&self.batch_number, "batchNumber")??,
                last_seq: u64_of(&self.last_seq, "lastSeq")?,
                deltas: self.deltas?,
            }),
            "delta_batch" => Some(Message::DeltaBatch {
                last_seq: u64_of(&self.last_seq, "lastSeq")??,
                deltas: self.deltas?,
            }),
            "delta_response" => Some(Message::DeltaResponse {
                request_id: u64_of(&self.request_id, "requestId")??,
                last: match self.last? {
                    Value::Bool(b) => b,
                    _ => return None,
                },
                deltas: self.deltas?,
            }),
            _ => None,
        }
    }
}

struct FrameSeed;

impl<'de> DeserializeSeed<'de> for FrameSeed {
    type Value = Fields;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Fields, D::Error> {
        d.deserialize_map(FrameVisitor)
    }
}

struct FrameVisitor;

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = Fields;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a frame object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut f = Fields::default();
        while let Some(key) = next_key(&mut map)? {
            match &*key {
                "type" => {
                    let kind: String = map.next_value()?;
                    // Other frames are rare and small: leave them to the `Value` path
                    // at once (senders write `type` first).
                    if !matches!(
                        kind.as_str(),
                        "delta" | "sync_batch" | "delta_batch" | "delta_response"
                    ) {
                        return Err(give_up());
                    }
                    set_once(&mut f.kind, kind)?;
                }
                "timestamp" => set_once(&mut f.timestamp, map.next_value()?)?,
                "delta" => {
                    let TypedDelta(d) = map.next_value()?;
                    set_once(&mut f.delta, WireDelta::Decoded(d))?;
                }
                "deltas" => {
                    let deltas: Vec<TypedDelta> = map.next_value()?;
                    let deltas = deltas
                        .into_iter()
                        .map(|TypedDelta(d)| WireDelta::Decoded(d))
                        .collect();
                    set_once(&mut f.deltas, deltas)?;
                }
                "seq" => set_once(&mut f.seq, map.next_value()?)?,
                "lastSeq" => set_once(&mut f.last_seq, map.next_value()?)?,
                "batchNumber" => set_once(&mut f.batch_number, map.next_value()?)?,
                "isLastBatch" => set_once(&mut f.is_last_batch, map.next_value()?)?,
                "requestId" => set_once(&mut f.request_id, map.next_value()?)?,
                "last" => set_once(&mut f.last, map.next_value()?)?,
                // Unknown fields are ignored, but read as `Value` so that what the
                // `Value` path would refuse in them (say, a lone surrogate escape or
                // nesting past serde_json's limit) is refused here too.
                _ => {
                    map.next_value::<Value>()?;
                }
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests;
