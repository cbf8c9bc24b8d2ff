//! The RhizomeDB validity rules. Nothing that fails them is ever stored.

use super::limits::{MAX_ID_BYTES_CAP, MAX_SAFE_INTEGER};
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

/// Checks every rule: non-empty id, author and system with no control characters;
/// a positive timestamp a JavaScript peer represents exactly; each pointer has a
/// non-empty role and a valid target; a present context is non-empty. Sizes beyond the
/// identifier cap are [`super::Limits`]' concern, checked on the ingestion path.
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
    if delta.timestamp > MAX_SAFE_INTEGER {
        return Err(InvalidDelta::new(
            "timestamp",
            format!(
                "is {}; at most {MAX_SAFE_INTEGER} (2^53-1, what every peer represents exactly)",
                delta.timestamp
            ),
        ));
    }
    non_empty(&delta.author, "author")?;
    non_empty(&delta.system, "system")?;
    // Field paths are spelled out only for an error: this runs for every delta received.
    for (i, p) in delta.pointers.iter().enumerate() {
        non_empty(&p.role, "role").map_err(|e| at_pointer(e, i))?;
        bounded(&p.role, "role").map_err(|e| at_pointer(e, i))?;
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
    for (key, value) in &delta.extra {
        if let Some(bad) = non_finite(value) {
            return Err(InvalidDelta::new(
                key.as_str(),
                format!("holds {bad}, not a finite number: no peer can represent it, and it has no canonical form to sign"),
            ));
        }
    }
    Ok(())
}

/// The first number in `value` that is not a finite double (`1e400`), if any.
fn non_finite(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Number(n) if n.as_f64().is_none_or(|f| !f.is_finite()) => {
                return Some(n.to_string())
            }
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    None
}

/// An error about pointer `i`'s `field` (`role`, `target.id`, ...), with its full path.
fn at_pointer(e: InvalidDelta, i: usize) -> InvalidDelta {
    InvalidDelta::new(format!("pointers[{i}].{}", e.field), e.reason)
}

/// A non-empty identifier under the rules of [`bounded`]: what a peer's system id must
/// be too, since it keys cursors and appears in logs like a delta's `system`.
///
/// # Errors
/// The rule broken, naming `field`.
pub(crate) fn identifier(value: &str, field: &str) -> Result<(), InvalidDelta> {
    non_empty(value, field)?;
    bounded(value, field)
}

/// An identifier (id, author, system, role, reference id or context) within the hard cap
/// and free of control characters: identifiers are index keys, appear in logs and
/// headers, and a newline or NUL in one forges a log line or cuts a key.
fn bounded(value: &str, field: &str) -> Result<(), InvalidDelta> {
    if value.len() > MAX_ID_BYTES_CAP {
        return Err(InvalidDelta::new(
            field,
            format!(
                "is {} bytes long; at most {MAX_ID_BYTES_CAP} are allowed",
                value.len()
            ),
        ));
    }
    if let Some(c) = control_char(value) {
        return Err(InvalidDelta::new(
            field,
            format!("holds the control character {c:?}; identifiers may not"),
        ));
    }
    Ok(())
}

/// The first control character (U+0000-U+001F, U+007F-U+009F) in `value`. Every
/// identifier of every delta passes here, so the bytes are scanned first without
/// decoding: the one-byte controls are below 0x20 or 0x7F, the others start with 0xC2.
pub(crate) fn control_char(value: &str) -> Option<char> {
    let suspect = value.as_bytes().iter().fold(false, |seen, &b| {
        seen | (b < 0x20) | (b == 0x7f) | (b == 0xc2)
    });
    if !suspect {
        return None;
    }
    value.chars().find(|c| c.is_control())
}

fn non_empty(value: &str, field: &str) -> Result<(), InvalidDelta> {
    if value.is_empty() {
        Err(InvalidDelta::new(field, "must be a non-empty string"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::control_char;

    #[test]
    fn control_characters_are_found_in_every_encoding_length() {
        for c in ['\0', '\n', '\x1b', '\x7f', '\u{80}', '\u{9f}'] {
            assert_eq!(control_char(&format!("ab{c}cd")), Some(c), "{c:?}");
        }
        // 0xC2 starts other characters too, and multi-byte text is not control.
        for s in ["plain", "\u{a0}\u{ff}", "é€𝄞", "\u{2028}"] {
            assert_eq!(control_char(s), None, "{s:?}");
        }
    }
}
