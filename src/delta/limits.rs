//! The size limits every delta must fit, whichever way it comes in.
//!
//! One set, checked once on the node's single ingestion path: a delta posted over HTTP,
//! received in a live frame, in a sync batch or replayed from quarantine meets the same
//! rules. The defaults are the contract between nodes: a delta a default node stores is
//! one every default node accepts, so what a node stores it can always forward. A node
//! advertises its limits in the handshake, and a sender passes over (and reports) a
//! delta its peer would refuse rather than send a frame that blocks the link.
//!
//! Sizes are measured on the delta's compact JSON, the form the log keeps and frames
//! carry, so every node measures the same delta the same way.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Delta, InvalidDelta, Target};

/// The most any identifier may be, configured or not: identifiers are index keys, and
/// the store's keys are limited to 64 KiB.
pub const MAX_ID_BYTES_CAP: usize = 4096;

/// How deep JSON may nest anywhere in a frame: serde_json refuses past 128 levels, and a
/// frame wraps a delta in two (the frame object, its `deltas` array).
pub const MAX_DEPTH_CAP: usize = 100;

/// What a delta may weigh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Limits {
    /// Bytes of the delta's compact JSON.
    pub max_delta_bytes: usize,
    /// Levels of JSON nesting in the delta: the delta object is level 1, each array or
    /// object inside it one more (a reference target is at level 4; only unknown fields
    /// go deeper).
    pub max_depth: usize,
    /// Pointers per delta.
    pub max_pointers: usize,
    /// Bytes of any string value: a string target, or a string in an unknown field.
    pub max_string_bytes: usize,
    /// Bytes of `id`, `author`, `system`, a role, a reference id or a context.
    pub max_id_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_delta_bytes: 1024 * 1024,
            max_depth: 32,
            max_pointers: 1024,
            max_string_bytes: 256 * 1024,
            max_id_bytes: MAX_ID_BYTES_CAP,
        }
    }
}

/// The largest integer a JavaScript peer represents exactly (`Number.MAX_SAFE_INTEGER`).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

impl Limits {
    /// Checks that the limits are usable: none zero, none above the hard caps, and a
    /// delta at the limit fits in a frame of `max_message_bytes`.
    ///
    /// # Errors
    /// Which limit is out of range, and why.
    pub fn check_settings(&self, max_message_bytes: usize) -> Result<(), String> {
        let fields = [
            ("maxDeltaBytes", self.max_delta_bytes),
            ("maxDepth", self.max_depth),
            ("maxPointers", self.max_pointers),
            ("maxStringBytes", self.max_string_bytes),
            ("maxIdBytes", self.max_id_bytes),
        ];
        if let Some((name, _)) = fields.iter().find(|(_, v)| *v == 0) {
            return Err(format!("limits.{name} must be at least 1"));
        }
        if self.max_depth < 4 {
            return Err(format!(
                "limits.maxDepth is {}; a reference target alone nests 4 levels deep",
                self.max_depth
            ));
        }
        if self.max_depth > MAX_DEPTH_CAP {
            return Err(format!(
                "limits.maxDepth is {}; at most {MAX_DEPTH_CAP} (frames must stay decodable)",
                self.max_depth
            ));
        }
        if self.max_id_bytes > MAX_ID_BYTES_CAP {
            return Err(format!(
                "limits.maxIdBytes is {}; at most {MAX_ID_BYTES_CAP} (identifiers are index keys)",
                self.max_id_bytes
            ));
        }
        if self.max_delta_bytes > max_message_bytes / 2 {
            return Err(format!(
                "limits.maxDeltaBytes is {}; at most half the largest frame ({} bytes), so a delta at the limit always fits in a frame",
                self.max_delta_bytes, max_message_bytes
            ));
        }
        Ok(())
    }

    /// The largest HTTP request body worth reading: room for a delta at the limit
    /// written with generous whitespace, and never less than 2 MiB for arrays.
    pub fn max_request_bytes(&self) -> usize {
        (self.max_delta_bytes * 2).max(2 * 1024 * 1024)
    }

    /// Whether every delta that fits `self` also fits `other`.
    pub fn within(&self, other: &Limits) -> bool {
        self.max_delta_bytes <= other.max_delta_bytes
            && self.max_depth <= other.max_depth
            && self.max_pointers <= other.max_pointers
            && self.max_string_bytes <= other.max_string_bytes
            && self.max_id_bytes <= other.max_id_bytes
    }

    /// Checks a delta (already shaped and validated) against the limits.
    ///
    /// # Errors
    /// The field at fault and the limit it breaks.
    pub fn check(&self, delta: &Delta) -> Result<(), InvalidDelta> {
        if delta.pointers.len() > self.max_pointers {
            return Err(InvalidDelta::new(
                "pointers",
                format!(
                    "has {} pointers; at most {} are allowed (limits.maxPointers)",
                    delta.pointers.len(),
                    self.max_pointers
                ),
            ));
        }
        // An upper bound of the JSON's length, gathered on the way: a string takes at
        // most six bytes a byte (`\u00XX`) and its quotes. Only a delta whose bound
        // passes the limit is serialized to be measured exactly.
        let mut bound = 128 + 64 * delta.pointers.len();
        for (value, field) in [
            (&delta.id, "id"),
            (&delta.author, "author"),
            (&delta.system, "system"),
        ] {
            self.id_bytes(value, field)?;
            bound += string_bound(value);
        }
        for (i, p) in delta.pointers.iter().enumerate() {
            let at =
                |e: InvalidDelta| InvalidDelta::new(format!("pointers[{i}].{}", e.field), e.reason);
            self.id_bytes(&p.role, "role").map_err(at)?;
            bound += string_bound(&p.role);
            match &p.target {
                Target::Reference(r) => {
                    self.id_bytes(&r.id, "target.id").map_err(at)?;
                    bound += string_bound(&r.id);
                    if let Some(c) = &r.context {
                        self.id_bytes(c, "target.context").map_err(at)?;
                        bound += string_bound(c);
                    }
                }
                Target::String(s) => {
                    self.string_bytes(s, "target").map_err(at)?;
                    bound += string_bound(s);
                }
                Target::Number(n) => bound += display_len(n),
                Target::Bool(_) => {}
            }
        }
        for (key, value) in &delta.extra {
            self.string_bytes(key, key)?;
            bound += string_bound(key) + 2;
            // The delta object is level 1, so its fields' values start at level 2.
            bound += self.nested(value, 2, key)?;
        }
        if bound <= self.max_delta_bytes {
            return Ok(());
        }
        let bytes = json_len(delta);
        if bytes > self.max_delta_bytes {
            return Err(InvalidDelta::new(
                "",
                format!(
                    "the delta is {bytes} bytes of JSON; at most {} are allowed (limits.maxDeltaBytes)",
                    self.max_delta_bytes
                ),
            ));
        }
        Ok(())
    }

    fn id_bytes(&self, value: &str, field: &str) -> Result<(), InvalidDelta> {
        at_most(value, field, self.max_id_bytes, "maxIdBytes")
    }

    fn string_bytes(&self, value: &str, field: &str) -> Result<(), InvalidDelta> {
        at_most(value, field, self.max_string_bytes, "maxStringBytes")
    }

    /// Walks an unknown field's value; `level` is where an array or object in it sits.
    /// Returns an upper bound of its JSON's length. Values come out of serde_json, whose
    /// own limit (128 levels) bounds this recursion.
    fn nested(&self, value: &Value, level: usize, field: &str) -> Result<usize, InvalidDelta> {
        let deeper = || {
            if level > self.max_depth {
                Err(InvalidDelta::new(
                    field,
                    format!(
                        "nests deeper than {} levels of JSON (limits.maxDepth)",
                        self.max_depth
                    ),
                ))
            } else {
                Ok(())
            }
        };
        match value {
            Value::String(s) => {
                self.string_bytes(s, field)?;
                Ok(string_bound(s))
            }
            Value::Array(items) => {
                deeper()?;
                let mut bound = 2;
                for v in items {
                    bound += self.nested(v, level + 1, field)? + 1;
                }
                Ok(bound)
            }
            Value::Object(map) => {
                deeper()?;
                let mut bound = 2;
                for (k, v) in map {
                    self.string_bytes(k, field)?;
                    bound += string_bound(k) + 2 + self.nested(v, level + 1, field)?;
                }
                Ok(bound)
            }
            Value::Number(n) => Ok(display_len(n)),
            Value::Null | Value::Bool(_) => Ok(5),
        }
    }
}

/// `value` is at most `max` bytes long, else the error names `field` and the `limit` key.
fn at_most(value: &str, field: &str, max: usize, limit: &str) -> Result<(), InvalidDelta> {
    if value.len() > max {
        return Err(InvalidDelta::new(
            field,
            format!(
                "is {} bytes long; at most {max} are allowed (limits.{limit})",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// The most bytes a string takes in JSON.
fn string_bound(s: &str) -> usize {
    6 * s.len() + 2
}

/// The length of a number as JSON writes it, without building the text.
fn display_len(n: &serde_json::Number) -> usize {
    let mut counter = Counter(0);
    // Writing to a counter cannot fail.
    let _ = std::io::Write::write_fmt(&mut counter, format_args!("{n}"));
    counter.0
}

/// The length of the delta's compact JSON, without building it.
pub fn json_len(delta: &Delta) -> usize {
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and every map key is a string.
    let _ = serde_json::to_writer(&mut counter, delta);
    counter.0
}

struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::{Pointer, Target};

    fn delta() -> Delta {
        Delta {
            id: "d-1".into(),
            timestamp: 1,
            author: "a".into(),
            system: "s".into(),
            pointers: vec![Pointer {
                role: "text".into(),
                target: Target::String("hello".into()),
            }],
            extra: Default::default(),
        }
    }

    #[test]
    fn json_len_is_the_length_of_the_compact_json() {
        let d = delta();
        assert_eq!(json_len(&d), d.to_json().len());
    }

    #[test]
    fn each_limit_names_its_field() {
        let limits = Limits::default();
        assert!(limits.check(&delta()).is_ok());

        let mut d = delta();
        d.pointers[0].target = Target::String("x".repeat(limits.max_string_bytes + 1));
        let e = limits.check(&d).unwrap_err();
        assert_eq!(e.field, "pointers[0].target");
        assert!(e.reason.contains("maxStringBytes"), "{e}");

        let mut d = delta();
        let mut deep = Value::Null;
        for _ in 0..40 {
            deep = Value::Array(vec![deep]);
        }
        d.extra.insert("extra".into(), deep);
        let e = limits.check(&d).unwrap_err();
        assert_eq!(e.field, "extra");
        assert!(e.reason.contains("maxDepth"), "{e}");

        let mut d = delta();
        d.pointers = vec![d.pointers[0].clone(); limits.max_pointers + 1];
        assert_eq!(limits.check(&d).unwrap_err().field, "pointers");

        let mut d = delta();
        d.author = "a".repeat(limits.max_id_bytes + 1);
        assert_eq!(limits.check(&d).unwrap_err().field, "author");

        let small = Limits {
            max_delta_bytes: 50,
            ..Limits::default()
        };
        let e = small.check(&delta()).unwrap_err();
        assert!(e.reason.contains("maxDeltaBytes"), "{e}");
    }

    #[test]
    fn the_size_bound_never_lets_an_oversized_delta_through() {
        // Escaped characters, numbers and nesting: the exact length decides at the edge.
        let mut d = delta();
        d.pointers[0].target = Target::String("\u{1}\"".repeat(100));
        d.extra
            .insert("n".into(), serde_json::json!([1e300, -0.5, {"k": "\n"}]));
        let exact = json_len(&d);
        let at = Limits {
            max_delta_bytes: exact,
            ..Limits::default()
        };
        assert!(at.check(&d).is_ok());
        let below = Limits {
            max_delta_bytes: exact - 1,
            ..Limits::default()
        };
        assert!(below.check(&d).is_err());
    }

    #[test]
    fn depth_counts_the_delta_as_level_one() {
        let limits = Limits {
            max_depth: 4,
            ..Limits::default()
        };
        let mut d = delta();
        // level 2: the array, 3 and 4: the arrays in it; scalars add nothing
        d.extra.insert("x".into(), serde_json::json!([[[1]]]));
        assert!(limits.check(&d).is_ok());
        d.extra.insert("x".into(), serde_json::json!([[[[1]]]]));
        assert!(limits.check(&d).is_err());
        d.extra.insert("x".into(), serde_json::json!([[{"a": 1}]]));
        assert!(limits.check(&d).is_ok());
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        let max_message = 16 * 1024 * 1024;
        assert!(Limits::default().check_settings(max_message).is_ok());
        let bad = [
            Limits {
                max_depth: 101,
                ..Limits::default()
            },
            Limits {
                max_id_bytes: 5000,
                ..Limits::default()
            },
            Limits {
                max_pointers: 0,
                ..Limits::default()
            },
            Limits {
                max_delta_bytes: 9 * 1024 * 1024,
                ..Limits::default()
            },
        ];
        for l in bad {
            assert!(l.check_settings(max_message).is_err(), "{l:?}");
        }
    }
}
