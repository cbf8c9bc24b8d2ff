//! Making new deltas on this node: fresh ids, the current time, our system id.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Map;

use super::{Delta, Pointer, Target};

/// Role of the pointer by which a negation names the delta it negates.
pub const NEGATES_ROLE: &str = "negates";
/// Context under which a negated delta is referenced.
pub const NEGATED_BY_CONTEXT: &str = "negated_by";
/// Role of a negation's optional human-readable reason.
pub const REASON_ROLE: &str = "reason";

/// A new delta with a UUID v4 id and the current time in milliseconds.
pub fn new_delta(
    author: impl Into<String>,
    system: impl Into<String>,
    pointers: Vec<Pointer>,
) -> Delta {
    Delta {
        id: new_id(),
        timestamp: now_millis(),
        author: author.into(),
        system: system.into(),
        pointers,
        extra: Map::new(),
    }
}

/// A delta that negates `negated_id` (which may itself be a negation).
pub fn negate(
    negated_id: &str,
    author: impl Into<String>,
    system: impl Into<String>,
    reason: Option<&str>,
) -> Delta {
    let mut pointers = vec![Pointer::new(
        NEGATES_ROLE,
        Target::reference_in(negated_id, NEGATED_BY_CONTEXT),
    )];
    if let Some(reason) = reason {
        pointers.push(Pointer::new(REASON_ROLE, Target::String(reason.to_owned())));
    }
    new_delta(author, system, pointers)
}

/// A fresh delta id: a UUID v4.
pub(super) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Milliseconds since the Unix epoch (at least 1, so an authored delta is always valid).
pub fn now_millis() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(1);
    u64::try_from(ms).unwrap_or(u64::MAX).max(1)
}
