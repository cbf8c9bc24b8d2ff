//! A delta as a frame carries it: decoded while the frame is read, or, when it is not
//! shaped like a delta, the JSON it came as (so the answer can quote its id and say why).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::delta::json::unvalidated;
use crate::delta::{validate, Delta, InvalidDelta};

/// One delta of a `delta`, `sync_batch` or `delta_batch` frame.
///
/// Invariant: `Malformed` holds exactly the JSON that [`Delta::from_value`] refuses
/// before validation (wrong shape or types); anything shaped like a delta is `Decoded`,
/// whichever way the frame was read, so two decodings of one frame compare equal.
#[derive(Debug, Clone, PartialEq)]
pub enum WireDelta {
    /// Shaped like a delta; not validated yet (that is the ingestion path's job).
    Decoded(Delta),
    /// Not a delta.
    Malformed(Value),
    /// Not even JSON serde will read (nested past its depth limit, a lone surrogate
    /// escape...): what the frame reader could still tell, so the delta is answered and
    /// counted like any invalid one instead of costing its whole frame.
    Unreadable {
        /// The element's top-level `id`, when the reader could find it.
        id: Option<String>,
        reason: String,
    },
}

impl WireDelta {
    /// Sorts JSON into the two cases.
    pub fn from_value(value: Value) -> WireDelta {
        match unvalidated(&value) {
            Ok(d) => WireDelta::Decoded(d),
            Err(_) => WireDelta::Malformed(value),
        }
    }

    /// The id to answer with: the delta's, or a malformed delta's `id` if it is a
    /// string, else empty.
    pub fn id(&self) -> &str {
        self.id_str().unwrap_or_default()
    }

    /// The `id`, when it is a string.
    pub fn id_str(&self) -> Option<&str> {
        match self {
            WireDelta::Decoded(d) => Some(&d.id),
            WireDelta::Malformed(v) => v.get("id").and_then(Value::as_str),
            WireDelta::Unreadable { id, .. } => id.as_deref(),
        }
    }

    /// The delta, validated, or why it is refused (the same as [`Delta::from_value`]).
    ///
    /// # Errors
    /// [`InvalidDelta`] naming the field at fault.
    pub fn check(&self) -> Result<Delta, InvalidDelta> {
        match self {
            WireDelta::Decoded(d) => validate(d).map(|()| d.clone()),
            WireDelta::Malformed(v) => Delta::from_value(v),
            WireDelta::Unreadable { reason, .. } => Err(InvalidDelta::new("", reason.clone())),
        }
    }

    /// Like [`WireDelta::check`], without copying a decoded delta.
    ///
    /// # Errors
    /// [`InvalidDelta`] naming the field at fault.
    pub fn into_checked(self) -> Result<Delta, InvalidDelta> {
        match self {
            WireDelta::Decoded(d) => validate(&d).map(|()| d),
            WireDelta::Malformed(v) => Delta::from_value(&v),
            WireDelta::Unreadable { reason, .. } => Err(InvalidDelta::new("", reason)),
        }
    }
}

impl From<Delta> for WireDelta {
    fn from(d: Delta) -> WireDelta {
        WireDelta::Decoded(d)
    }
}

impl Serialize for WireDelta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WireDelta::Decoded(d) => d.serialize(s),
            WireDelta::Malformed(v) => v.serialize(s),
            // Never sent on: only its id is known.
            WireDelta::Unreadable { id, .. } => serde_json::json!({ "id": id }).serialize(s),
        }
    }
}

/// Through `Value`: the derived `Message` decoder (the specification the codec's typed
/// reader is checked against) and tests use it; frames take the typed reader in `codec`.
impl<'de> Deserialize<'de> for WireDelta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<WireDelta, D::Error> {
        Value::deserialize(d).map(WireDelta::from_value)
    }
}
