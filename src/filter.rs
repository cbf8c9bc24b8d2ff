//! `DeltaFilter`: the declarative selection used by queries, subscriptions and link filters.
//!
//! JSON is the wire's camelCase. Decoding is strict: a field of the wrong type
//! (`"authors": "bob"`) or an unknown field is an error naming the field, never a
//! filter that silently matches nothing (the reference implementation iterates such
//! a string per character).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::delta::{Delta, Target};

/// Selects deltas. Every field present must match (AND); within a list, any value matches (OR).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeltaFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
    /// Matches when any pointer targets one of these entity ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ids: Option<Vec<String>>,
    /// Matches when any reference target sits in one of these contexts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_contexts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authors: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systems: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_range: Option<TimestampRange>,
    /// Whether deltas negated by another (un-negated) delta are included. Negation is a
    /// property of the store, not of one delta, so [`DeltaFilter::matches`] ignores it and
    /// queries apply it; `None` means false, as in the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_negated: Option<bool>,
}

/// Inclusive bounds in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<u64>,
}

/// A filter that could not be decoded: which field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter: {message}")]
pub struct InvalidFilter {
    pub message: String,
}

impl DeltaFilter {
    /// Decodes a filter from JSON, strictly.
    ///
    /// # Errors
    /// an error naming the field of the wrong type or the unknown field.
    pub fn from_value(value: &Value) -> Result<DeltaFilter, InvalidFilter> {
        if !value.is_object() {
            return Err(InvalidFilter {
                message: "a filter must be a JSON object".into(),
            });
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            };
            InvalidFilter { message }
        })
    }

    /// True when the filter selects nothing in particular (every delta matches).
    pub fn is_empty(&self) -> bool {
        *self == DeltaFilter::default()
    }

    pub fn include_negated(&self) -> bool {
        self.include_negated.unwrap_or(false)
    }

    /// Whether `delta` satisfies every criterion present (negation aside, see `include_negated`).
    pub fn matches(&self, delta: &Delta) -> bool {
        if let Some(ids) = &self.ids {
            if !ids.contains(&delta.id) {
                return false;
            }
        }
        if let Some(authors) = &self.authors {
            if !authors.contains(&delta.author) {
                return false;
            }
        }
        if let Some(systems) = &self.systems {
            if !systems.contains(&delta.system) {
                return false;
            }
        }
        if let Some(range) = &self.timestamp_range {
            if !range.contains(delta.timestamp) {
                return false;
            }
        }
        if let Some(target_ids) = &self.target_ids {
            if !delta.references().any(|r| target_ids.contains(&r.id)) {
                return false;
            }
        }
        if let Some(contexts) = &self.target_contexts {
            let hit = delta.pointers.iter().any(|p| match &p.target {
                Target::Reference(r) => r.context.as_ref().is_some_and(|c| contexts.contains(c)),
                _ => false,
            });
            if !hit {
                return false;
            }
        }
        true
    }
}

impl TimestampRange {
    pub fn contains(&self, ts: u64) -> bool {
        self.start.is_none_or(|s| ts >= s) && self.end.is_none_or(|e| ts <= e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::{new_delta, Pointer};
    use serde_json::json;

    fn sample() -> Delta {
        let mut d = new_delta(
            "alice",
            "node-a",
            vec![
                Pointer::new("on", Target::reference_in("prod_1", "comments")),
                Pointer::new("by", Target::reference("user_1")),
                Pointer::new("text", "hello".into()),
            ],
        );
        d.timestamp = 1000;
        d
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert!(DeltaFilter::default().matches(&sample()));
        assert!(DeltaFilter::from_value(&json!({})).unwrap().is_empty());
    }

    #[test]
    fn each_field_must_match() {
        let d = sample();
        let cases = [
            (json!({"ids": [d.id.clone()]}), true),
            (json!({"ids": ["other"]}), false),
            (json!({"authors": ["bob", "alice"]}), true),
            (json!({"authors": ["bob"]}), false),
            (json!({"systems": ["node-a"]}), true),
            (json!({"systems": ["node-b"]}), false),
            (json!({"targetIds": ["user_1"]}), true),
            (json!({"targetIds": ["hello"]}), false),
            (json!({"targetContexts": ["comments"]}), true),
            (json!({"targetContexts": ["reviews"]}), false),
            (
                json!({"timestampRange": {"start": 1000, "end": 1000}}),
                true,
            ),
            (json!({"timestampRange": {"start": 1001}}), false),
            (json!({"timestampRange": {"end": 999}}), false),
            (json!({"authors": ["alice"], "systems": ["node-b"]}), false),
        ];
        for (filter, expected) in cases {
            let f = DeltaFilter::from_value(&filter).unwrap();
            assert_eq!(f.matches(&d), expected, "filter {filter}");
        }
    }

    #[test]
    fn wrong_types_are_errors_naming_the_field() {
        let err = DeltaFilter::from_value(&json!({"authors": "bob"})).unwrap_err();
        assert!(err.message.starts_with("authors:"), "{err}");
        assert!(err.message.contains("expected a sequence"), "{err}");
        let err = DeltaFilter::from_value(&json!({"authors": {"length": 1}})).unwrap_err();
        assert!(err.message.starts_with("authors:"), "{err}");
        let err = DeltaFilter::from_value(&json!({"contexts": ["x"]})).unwrap_err();
        assert!(err.message.contains("contexts"), "{err}");
        assert!(DeltaFilter::from_value(&json!([])).is_err());
    }

    #[test]
    fn json_roundtrip_is_camel_case() {
        let f = DeltaFilter {
            target_ids: Some(vec!["x".into()]),
            include_negated: Some(true),
            ..Default::default()
        };
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v, json!({"targetIds": ["x"], "includeNegated": true}));
        assert_eq!(DeltaFilter::from_value(&v).unwrap(), f);
    }
}
