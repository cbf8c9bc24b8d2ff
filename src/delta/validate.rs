//! The RhizomeDB validity rules. Nothing that fails them is ever stored.

use super::{Delta, Target};

/// Why a delta is invalid: the field (a JSON path such as `pointers[1].target.id`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.display())]
pub struct InvalidDelta {
    pub field: String,
    pub reason: String,
}

impl InvalidDelta {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> InvalidDelta {
        InvalidDelta {
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn display(&self) -> String {
        if self.field.is_empty() {
            format!("invalid delta: {}", self.reason)
        } else {
            format!("invalid delta: {} {}", self.field, self.reason)
        }
    }
}

/// Checks every rule: non-empty id, author and system; positive timestamp; each pointer
/// has a non-empty role and a valid target; a present context is non-empty.
///
/// # Errors
/// The first rule broken, with the field it concerns.
pub fn validate(delta: &Delta) -> Result<(), InvalidDelta> {
    non_empty(&delta.id, "id")?;
    for (value, field) in [
        (&delta.id, "id"),
        (&delta.author, "author"),
        (&delta.system, "system"),
    ] {
        bounded(value, field)?;
    }
    if delta.timestamp == 0 {
        return Err(InvalidDelta::new("timestamp", "must be positive, got 0"));
    }
    non_empty(&delta.author, "author")?;
    non_empty(&delta.system, "system")?;
    // Field paths are spelled out only for an error: this runs for every delta received.
    for (i, p) in delta.pointers.iter().enumerate() {
        non_empty(&p.role, "role").map_err(|e| at_pointer(e, i))?;
        match &p.target {
            Target::Reference(r) => {
                non_empty(&r.id, "target.id").map_err(|e| at_pointer(e, i))?;
                bounded(&r.id, "target.id").map_err(|e| at_pointer(e, i))?;
                if let Some(c) = &r.context {
                    non_empty(c, "target.context").map_err(|e| at_pointer(e, i))?;
                    bounded(c, "target.context").map_err(|e| at_pointer(e, i))?;
                }
            }
            Target::Number(n) if n.as_f64().is_none_or(|f| !f.is_finite()) => {
                return Err(InvalidDelta::new(
                    format!("pointers[{i}].target"),
                    "must be a finite number",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// An error about pointer `i`'s `field` (`role`, `target.id`, ...), with its full path.
fn at_pointer(e: InvalidDelta, i: usize) -> InvalidDelta {
    InvalidDelta::new(format!("pointers[{i}].{}", e.field), e.reason)
}

/// Longest id, author, system, reference id or context, in bytes. These are index keys,
/// and the store's keys are limited (64 KiB); 4 KiB leaves room and is far beyond any
/// real identifier.
pub const MAX_TERM_BYTES: usize = 4096;

fn bounded(value: &str, field: &str) -> Result<(), InvalidDelta> {
    if value.len() > MAX_TERM_BYTES {
        Err(InvalidDelta::new(
            field,
            format!(
                "is {} bytes long; at most {MAX_TERM_BYTES} are allowed",
                value.len()
            ),
        ))
    } else {
        Ok(())
    }
}

fn non_empty(value: &str, field: &str) -> Result<(), InvalidDelta> {
    if value.is_empty() {
        Err(InvalidDelta::new(field, "must be a non-empty string"))
    } else {
        Ok(())
    }
}
