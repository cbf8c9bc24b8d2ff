//! JSON -> [`Delta`]: the one way a delta is read, from text or from a parsed value.
//!
//! [`Delta::parse`] reads text, [`Delta::from_value`] a parsed `Value`; both validate.
//! Text first goes through the typed reader (`typed`), which builds the `Delta` in one
//! serde pass without a `Value` per delta, because that is most of what a node reads.
//! The typed reader only ever accepts: whatever it does not take, errors included, is
//! read again as a `Value` (`value`), the single source of the messages a user reads,
//! naming the field at fault. Invariant: on any text the two give the same `Delta` or
//! the same error (`tests.rs` checks it over thousands of cases, and that valid deltas
//! do take the typed reader). [`Batch`] reads a document of deltas the same two ways.

mod batch;
mod typed;
mod value;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{validate, Delta, InvalidDelta, Target};

pub(crate) use batch::{Batch, BatchError};
pub(crate) use typed::{give_up, next_key, set_once, TypedDelta};
pub(crate) use value::{delta_from_value as unvalidated, kind};

impl Delta {
    /// Reads and validates a delta from JSON text, naming the field and the reason on
    /// failure.
    ///
    /// # Errors
    /// [`InvalidDelta`] for text that is not JSON or not a valid delta.
    pub fn parse(text: &str) -> Result<Delta, InvalidDelta> {
        match typed::delta_from_str(text) {
            // The same delta the `Value` path builds, so the same verdict.
            Some(delta) => validate(&delta).map(|()| delta),
            None => Delta::parse_through_value(text),
        }
    }

    /// Reads and validates a delta from parsed JSON, naming the field and the reason on
    /// failure.
    ///
    /// # Errors
    /// [`InvalidDelta`] when a field is missing, has the wrong type or breaks a rule.
    pub fn from_value(value: &Value) -> Result<Delta, InvalidDelta> {
        let delta = value::delta_from_value(value)?;
        validate(&delta)?;
        Ok(delta)
    }

    /// The `Value` path alone: what [`Delta::parse`] falls back to, and the
    /// specification its typed reader is tested against.
    fn parse_through_value(text: &str) -> Result<Delta, InvalidDelta> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| InvalidDelta::new("", format!("not valid JSON: {e}")))?;
        Delta::from_value(&value)
    }
}

impl Target {
    /// Converts JSON into a target; used for the authoring shorthand as well as decoding.
    ///
    /// # Errors
    /// A message saying why the value is not a valid target.
    pub fn from_value(value: &Value) -> Result<Target, InvalidDelta> {
        value::target_from_value(value, "target")
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
pub(crate) mod tests;
