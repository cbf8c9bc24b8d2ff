//! Reading a delta-carrying frame part by part, when serde refuses it whole.
//!
//! serde_json refuses a whole document for one bad part: one delta nested past its
//! depth limit, or holding a lone surrogate escape, would cost every delta of its
//! `sync_batch`, and with them the receiver's place in the sender's log. This reader
//! finds the frame's top-level members and the elements of its `deltas` array with an
//! iterative scan (no recursion: no nesting is too deep for it), reads the envelope
//! with serde, then each delta on its own. A delta serde cannot read becomes
//! [`WireDelta::Unreadable`], answered and counted like any invalid delta; the others
//! are judged as usual.
//!
//! The scan checks only what it needs to find the parts (balanced brackets, closed
//! strings); serde reads every part afterwards and refuses what is not JSON.

use serde_json::{Map, Value};

use super::decode_value;
use crate::delta::MAX_DEPTH_CAP;
use crate::federation::wire::{Message, WireDelta};

/// The frame, when it is a delta-carrying frame whose envelope reads; `None` otherwise
/// (the caller reports serde's error for the whole frame).
pub(super) fn decode(text: &str) -> Option<Message> {
    let members = members(text)?;
    let mut envelope = Map::new();
    let mut deltas = None;
    let mut single = None;
    for (key, start, end) in members {
        let part = &text[start..end];
        match key.as_str() {
            "deltas" => deltas = Some(elements(part)?),
            "delta" => single = Some(element(part, depth(part)?)),
            _ => {
                envelope.insert(key, serde_json::from_str(part).ok()?);
            }
        }
    }
    let kind = envelope.get("type")?.as_str()?.to_owned();
    // Placeholders for serde's envelope checks; the parts read above replace them.
    match kind.as_str() {
        "delta" => envelope.insert("delta".into(), Value::Object(Map::new())),
        "sync_batch" | "delta_batch" | "delta_response" => {
            envelope.insert("deltas".into(), Value::Array(vec![]))
        }
        _ => return None,
    };
    let mut msg = decode_value(Value::Object(envelope)).ok()?;
    match &mut msg {
        Message::Delta { delta, .. } => *delta = single?,
        Message::SyncBatch { deltas: d, .. }
        | Message::DeltaBatch { deltas: d, .. }
        | Message::DeltaResponse { deltas: d, .. } => {
            *d = deltas?;
        }
        _ => return None,
    }
    Some(msg)
}

/// Whether a frame that did not decode may have carried deltas: yes, unless its
/// `type` can be read and names another message.
pub(crate) fn may_carry_deltas(text: &str) -> bool {
    let Some(members) = members(text) else {
        return true;
    };
    let kind = members
        .iter()
        .find(|(k, _, _)| k == "type")
        .and_then(|(_, s, e)| serde_json::from_str::<String>(&text[*s..*e]).ok());
    match kind {
        Some(kind) => matches!(
            kind.as_str(),
            "delta" | "sync_batch" | "delta_batch" | "delta_response"
        ),
        None => true,
    }
}

/// One delta read on its own.
fn element(text: &str, depth: usize) -> WireDelta {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => WireDelta::from_value(v),
        Err(e) => {
            let reason = if depth > MAX_DEPTH_CAP {
                format!(
                    "nests {depth} levels of JSON deep; no node reads past {MAX_DEPTH_CAP} (limits.maxDepth)"
                )
            } else {
                format!("not readable JSON: {e}")
            };
            WireDelta::Unreadable {
                id: top_level_id(text),
                reason,
            }
        }
    }
}

/// A delta's `id`, found without reading the rest of it.
fn top_level_id(text: &str) -> Option<String> {
    let members = members(text)?;
    let (_, s, e) = members.iter().find(|(k, _, _)| k == "id")?;
    serde_json::from_str(&text[*s..*e]).ok()
}

/// The elements of a JSON array, each read on its own.
fn elements(text: &str) -> Option<Vec<WireDelta>> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut out = Vec::new();
    if b.get(i) == Some(&b']') {
        return (skip_ws(b, i + 1) == b.len()).then_some(out);
    }
    loop {
        let (end, depth) = value_end(b, i)?;
        out.push(element(&text[i..end], depth));
        i = skip_ws(b, end);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            b']' => return (skip_ws(b, i + 1) == b.len()).then_some(out),
            _ => return None,
        }
    }
}

/// The nesting depth of one value (a scalar is 0, `[]` is 1).
fn depth(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let start = skip_ws(b, 0);
    let (end, depth) = value_end(b, start)?;
    (skip_ws(b, end) == b.len()).then_some(depth)
}

/// The members of a JSON object: key, and where its value starts and ends in `text`.
fn members(text: &str) -> Option<Vec<(String, usize, usize)>> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut out = Vec::new();
    if b.get(i) == Some(&b'}') {
        return (skip_ws(b, i + 1) == b.len()).then_some(out);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(b, i)?;
        let key: String = serde_json::from_str(&text[i..key_end]).ok()?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let (end, _) = value_end(b, i)?;
        out.push((key, i, end));
        i = skip_ws(b, end);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            b'}' => return (skip_ws(b, i + 1) == b.len()).then_some(out),
            _ => return None,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Where the string starting at `i` (on its opening quote) ends, past its closing quote.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match b.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
}

/// Where the value starting at `i` ends, and how deep it nests. Iterative: the depth
/// is a counter, not the stack.
fn value_end(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    let mut max = 0usize;
    let mut j = i;
    loop {
        match b.get(j)? {
            b'"' => {
                j = string_end(b, j)?;
                if depth == 0 {
                    return Some((j, 0));
                }
            }
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
                j += 1;
            }
            b']' | b'}' => {
                depth = depth.checked_sub(1)?;
                j += 1;
                if depth == 0 {
                    return Some((j, max));
                }
            }
            _ if depth == 0 => {
                // A scalar: up to the next delimiter.
                let len = b[j..]
                    .iter()
                    .position(|c| matches!(c, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r'))
                    .unwrap_or(b.len() - j);
                return (len > 0).then_some((j + len, 0));
            }
            _ => j += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
    }

    fn good(id: &str) -> String {
        format!(
            r#"{{"id":"{id}","timestamp":5,"author":"a","system":"s","pointers":[{{"role":"r","target":"t"}}]}}"#
        )
    }

    #[test]
    fn a_batch_with_one_unreadable_delta_keeps_the_others() {
        let deep = format!(
            r#"{{"id":"deep","timestamp":5,"author":"a","system":"s","pointers":[],"extra":{}}}"#,
            nested(125)
        );
        let deeper = format!(
            r#"{{"id":"deeper","timestamp":5,"author":"a","system":"s","pointers":[],"extra":{}}}"#,
            nested(140)
        );
        let frame = format!(
            r#"{{"type":"sync_batch","timestamp":1,"deltas":[{},{deep},{deeper},{}],"batchNumber":0,"isLastBatch":true,"lastSeq":9}}"#,
            good("a"),
            good("b")
        );
        assert!(
            serde_json::from_str::<Value>(&frame).is_err(),
            "serde refuses it whole"
        );
        let Some(Message::SyncBatch {
            deltas, last_seq, ..
        }) = decode(&frame)
        else {
            panic!("not read part by part");
        };
        assert_eq!(last_seq, Some(9));
        assert_eq!(deltas.len(), 4);
        assert!(matches!(&deltas[0], WireDelta::Decoded(d) if d.id == "a"));
        // Readable alone: the limits judge it on the ingestion path.
        assert!(matches!(&deltas[1], WireDelta::Decoded(d) if d.id == "deep"));
        assert!(matches!(&deltas[3], WireDelta::Decoded(d) if d.id == "b"));
        match &deltas[2] {
            WireDelta::Unreadable { id, reason } => {
                assert_eq!(id.as_deref(), Some("deeper"));
                assert!(reason.contains("141 levels"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_lone_surrogate_costs_only_its_delta() {
        let bad = r#"{"id":"s","timestamp":5,"author":"\ud800","system":"s","pointers":[]}"#;
        let frame = format!(
            r#"{{"type":"delta_batch","timestamp":1,"deltas":[{bad},{}],"lastSeq":3}}"#,
            good("ok")
        );
        let Some(Message::DeltaBatch { deltas, last_seq }) = decode(&frame) else {
            panic!("not read part by part");
        };
        assert_eq!(last_seq, 3);
        assert_eq!(deltas[0].id(), "s");
        assert!(matches!(&deltas[0], WireDelta::Unreadable { .. }));
        assert!(matches!(&deltas[1], WireDelta::Decoded(_)));
    }

    #[test]
    fn a_broken_envelope_is_not_rescued() {
        // lastSeq missing: the envelope is wrong whatever its deltas are.
        let frame = format!(
            r#"{{"type":"delta_batch","timestamp":1,"deltas":[{}]}}"#,
            good("a")
        );
        assert!(decode(&frame).is_none());
        assert!(decode(r#"{"type":"delta_batch","timestamp":1,"deltas":[1,2"#).is_none());
        assert!(decode(&format!("[{}]", nested(300))).is_none());
        assert!(decode(r#"{"type":"ping","timestamp":1}"#).is_none());
    }

    #[test]
    fn frames_of_other_types_do_not_carry_deltas() {
        assert!(!may_carry_deltas(r#"{"type":"ping","timestamp":"x"}"#));
        assert!(may_carry_deltas(
            r#"{"type":"sync_batch","timestamp":1,"deltas":5}"#
        ));
        assert!(may_carry_deltas("garbage"));
        assert!(may_carry_deltas(r#"{"timestamp":1}"#));
    }

    #[test]
    fn depth_of_ten_thousand_levels_does_not_overflow_the_stack() {
        let text = nested(10_000);
        assert_eq!(depth(&text), Some(10_000));
        let frame =
            format!(r#"{{"type":"delta","timestamp":1,"delta":{{"id":"x","extra":{text}}}}}"#);
        let Some(Message::Delta { delta, .. }) = decode(&frame) else {
            panic!("not read");
        };
        assert_eq!(delta.id(), "x");
    }
}
