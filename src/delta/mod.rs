//! The delta: RhizomeDB's immutable unit of data, exactly in the v1 wire shape.
//!
//! Decoding goes through [`Delta::from_value`], which both converts and validates and
//! names the offending field on failure. Text ([`Delta::from_json`], frames, HTTP bodies)
//! first takes a typed fast path (`fast.rs`) that builds the same `Delta` without a
//! `Value`; whatever it does not take, errors included, goes the `Value` way, so error
//! messages have one source. Serialization always emits the current
//! pointer form (`role` / `target`); the legacy `localContext` / `targetContext`
//! form is accepted on input only. Unknown top-level fields are kept verbatim in
//! [`Delta::extra`] so a delta we store and forward is the same assertion we received.

mod authoring;
mod decode;
pub(crate) mod fast;
mod limits;
mod validate;
mod wire;

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

pub use authoring::{negate, new_delta, now_millis, NEGATED_BY_CONTEXT, NEGATES_ROLE, REASON_ROLE};
pub(crate) use decode::kind as json_kind;
pub use limits::{json_len, Limits, MAX_DEPTH_CAP, MAX_ID_BYTES_CAP, MAX_SAFE_INTEGER};
pub(crate) use validate::identifier;
pub use validate::{validate, InvalidDelta};
pub use wire::WireDelta;

/// An immutable assertion.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// Globally unique id (UUID v4 when authored here).
    pub id: String,
    /// Milliseconds since the Unix epoch, as asserted by the author's system.
    pub timestamp: u64,
    /// Who made the assertion.
    pub author: String,
    /// The system (node) the assertion was authored on.
    pub system: String,
    /// What the assertion relates, each under a role.
    pub pointers: Vec<Pointer>,
    /// Top-level fields this node does not know; kept so that forwarding never alters a delta.
    pub extra: Map<String, Value>,
}

/// One role of a delta and what it points at.
#[derive(Debug, Clone, PartialEq)]
pub struct Pointer {
    pub role: String,
    pub target: Target,
}

/// What a pointer points at: another entity (by id, optionally in a context) or a primitive.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Reference(Reference),
    String(String),
    Number(Number),
    Bool(bool),
}

/// A reference to an entity, optionally naming the context (property) it is placed under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    pub id: String,
    pub context: Option<String>,
}

impl Delta {
    /// Decodes and validates a delta from JSON, naming the field and the reason on failure.
    ///
    /// # Errors
    /// [`InvalidDelta`] when a field is missing, has the wrong type or breaks a rule.
    pub fn from_value(value: &Value) -> Result<Delta, InvalidDelta> {
        let delta = decode::delta_from_value(value)?;
        validate(&delta)?;
        Ok(delta)
    }

    /// Decodes and validates a delta from JSON text.
    ///
    /// # Errors
    /// [`InvalidDelta`] for text that is not JSON or not a valid delta.
    pub fn from_json(text: &str) -> Result<Delta, InvalidDelta> {
        match fast::delta_from_str(text) {
            // The same delta the `Value` path builds, so the same verdict.
            Some(delta) => validate(&delta).map(|()| delta),
            None => Delta::from_json_slow(text),
        }
    }

    /// Decodes and validates a delta from raw JSON (an element of a larger document).
    ///
    /// # Errors
    /// [`InvalidDelta`] for JSON that is not a valid delta.
    pub fn from_raw(raw: &RawValue) -> Result<Delta, InvalidDelta> {
        Delta::from_json(raw.get())
    }

    /// The `Value` path alone: what [`Delta::from_json`] falls back to, and the
    /// specification its fast path is tested against.
    fn from_json_slow(text: &str) -> Result<Delta, InvalidDelta> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| InvalidDelta::new("", format!("not valid JSON: {e}")))?;
        Delta::from_value(&value)
    }

    /// Compact JSON in the v1 wire shape.
    pub fn to_json(&self) -> String {
        // Serializing our own types into a String cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Ids of the deltas this delta negates (targets of its `negates` pointers).
    pub fn negated_ids(&self) -> impl Iterator<Item = &str> {
        self.pointers
            .iter()
            .filter_map(|p| match (&p.role[..], &p.target) {
                (NEGATES_ROLE, Target::Reference(r)) => Some(r.id.as_str()),
                _ => None,
            })
    }

    /// The references among this delta's targets.
    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        self.pointers.iter().filter_map(|p| match &p.target {
            Target::Reference(r) => Some(r),
            _ => None,
        })
    }
}

impl Target {
    /// A reference target without a context.
    pub fn reference(id: impl Into<String>) -> Target {
        Target::Reference(Reference {
            id: id.into(),
            context: None,
        })
    }

    /// A reference target placed under `context`.
    pub fn reference_in(id: impl Into<String>, context: impl Into<String>) -> Target {
        Target::Reference(Reference {
            id: id.into(),
            context: Some(context.into()),
        })
    }

    /// Converts JSON into a target; used for the authoring shorthand as well as decoding.
    ///
    /// # Errors
    /// A message saying why the value is not a valid target.
    pub fn from_value(value: &Value) -> Result<Target, InvalidDelta> {
        decode::target_from_value(value, "target")
    }
}

impl Pointer {
    pub fn new(role: impl Into<String>, target: Target) -> Pointer {
        Pointer {
            role: role.into(),
            target,
        }
    }
}

impl From<&str> for Target {
    fn from(s: &str) -> Target {
        Target::String(s.to_owned())
    }
}
impl From<String> for Target {
    fn from(s: String) -> Target {
        Target::String(s)
    }
}
impl From<bool> for Target {
    fn from(b: bool) -> Target {
        Target::Bool(b)
    }
}
impl From<i64> for Target {
    fn from(n: i64) -> Target {
        Target::Number(n.into())
    }
}

impl Serialize for Delta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(5 + self.extra.len()))?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("timestamp", &self.timestamp)?;
        map.serialize_entry("author", &self.author)?;
        map.serialize_entry("system", &self.system)?;
        map.serialize_entry("pointers", &self.pointers)?;
        for (k, v) in &self.extra {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Serialize for Pointer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Pointer", 2)?;
        st.serialize_field("role", &self.role)?;
        st.serialize_field("target", &self.target)?;
        st.end()
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Target::Reference(r) => r.serialize(s),
            Target::String(v) => s.serialize_str(v),
            Target::Number(n) => n.serialize(s),
            Target::Bool(b) => s.serialize_bool(*b),
        }
    }
}

impl Serialize for Reference {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1 + usize::from(self.context.is_some())))?;
        map.serialize_entry("id", &self.id)?;
        if let Some(c) = &self.context {
            map.serialize_entry("context", c)?;
        }
        map.end()
    }
}

/// Deserializing goes through [`Delta::from_value`], so serde users get the same
/// validation and field-naming errors as the wire.
impl<'de> Deserialize<'de> for Delta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Delta, D::Error> {
        let value = Value::deserialize(d)?;
        Delta::from_value(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
