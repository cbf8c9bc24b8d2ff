//! The two pointer forms on the wire. The log keeps every delta in the current form
//! (`{"role", "target": {"id", "context"?}}`); a peer of the seed's version reads only
//! the legacy one (`{"localContext", "target": {"id"} | primitive, "targetContext"?}`)
//! and exits on anything else (`../shared/interop/legacy-peers.md`). So a link that
//! talks to such a peer converts each delta when it frames it, and only then.

use serde_json::{Map, Value};

/// Which pointer form a link's outgoing deltas use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pointers {
    #[default]
    Current,
    Legacy,
}

/// `delta_json` (current form, as stored) with its pointers in the legacy form. Every
/// other field, unknown ones included, is kept as it is; text that is not a delta
/// object is returned unchanged (the log only holds valid deltas).
pub fn to_legacy(delta_json: &str) -> String {
    let Ok(Value::Object(mut delta)) = serde_json::from_str::<Value>(delta_json) else {
        return delta_json.to_owned();
    };
    if let Some(Value::Array(pointers)) = delta.get_mut("pointers") {
        for pointer in pointers.iter_mut() {
            if let Value::Object(p) = pointer {
                *p = legacy_pointer(std::mem::take(p));
            }
        }
    }
    Value::Object(delta).to_string()
}

fn legacy_pointer(current: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    let mut target_context = None;
    for (key, value) in current {
        match (key.as_str(), value) {
            ("role", v) => {
                out.insert("localContext".into(), v);
            }
            ("target", Value::Object(mut reference)) => {
                target_context = reference.remove("context");
                out.insert("target".into(), Value::Object(reference));
            }
            (_, v) => {
                out.insert(key, v);
            }
        }
    }
    if let Some(context) = target_context {
        out.insert("targetContext".into(), context);
    }
    out
}

/// Whether a delta-carrying frame from a peer uses the legacy form: a `"localContext"`
/// object key. (Inside a JSON string the quotes would be escaped, so the unescaped key
/// followed by a colon can only be a key.)
pub fn shows_legacy(frame: &str) -> bool {
    frame.match_indices("\"localContext\"").any(|(i, key)| {
        frame[i + key.len()..]
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with(':')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::Delta;

    #[test]
    fn legacy_form_is_what_the_seed_reads_and_parses_back_the_same() {
        let current = r#"{"id":"d1","timestamp":5,"author":"a","system":"s","pointers":[{"role":"about","target":{"id":"topic_0","context":"notes"}},{"role":"text","target":"legacy-0"},{"role":"n","target":{"id":"e"}}],"extra":{"k":[1,2]}}"#;
        let legacy = to_legacy(current);
        assert_eq!(
            legacy,
            r#"{"id":"d1","timestamp":5,"author":"a","system":"s","pointers":[{"localContext":"about","target":{"id":"topic_0"},"targetContext":"notes"},{"localContext":"text","target":"legacy-0"},{"localContext":"n","target":{"id":"e"}}],"extra":{"k":[1,2]}}"#
        );
        // The same delta either way, so a peer that relays it back dedups.
        assert_eq!(
            Delta::parse(&legacy).unwrap(),
            Delta::parse(current).unwrap()
        );
    }

    #[test]
    fn the_legacy_form_is_recognised_by_its_key_only() {
        assert!(shows_legacy(
            r#"{"type":"delta","delta":{"pointers":[{"localContext":"text","target":"x"}]}}"#
        ));
        assert!(shows_legacy(
            r#"{"deltas":[{"pointers":[{"localContext" : "r"}]}]}"#
        ));
        assert!(!shows_legacy(
            r#"{"type":"delta","delta":{"pointers":[{"role":"text","target":"\"localContext\": no"}]}}"#
        ));
        assert!(!shows_legacy(
            r#"{"pointers":[{"role":"localContext","target":"x"}]}"#
        ));
    }
}
