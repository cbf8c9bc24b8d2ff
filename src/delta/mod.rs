//! The delta: RhizomeDB's immutable unit of data, exactly in the v1 wire shape.
//!
//! Reading goes through [`Delta::parse`] (text) or [`Delta::from_value`] (parsed JSON),
//! both in `json`: they convert, validate and name the offending field on failure.
//! Serialization always emits the current pointer form (`role` / `target`); the legacy
//! `localContext` / `targetContext` form is accepted on input only. Unknown top-level
//! fields are kept verbatim in [`Delta::extra`] so a delta we store and forward is the
//! same assertion we received.

mod authoring;
pub(crate) mod json;
mod limits;
mod signature;
mod validate;

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};
use serde_json::{Map, Number, Value};

pub use authoring::{negate, new_delta, now_millis, NEGATED_BY_CONTEXT, NEGATES_ROLE, REASON_ROLE};
pub use limits::{json_len, Limits, MAX_DEPTH_CAP, MAX_ID_BYTES_CAP, MAX_SAFE_INTEGER};
pub use signature::{verify_all, Signed, SIGNATURE_ALG, SIGNATURE_FIELD};
pub(crate) use validate::identifier;
pub use validate::{validate, InvalidDelta};

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

#[cfg(test)]
mod tests;
