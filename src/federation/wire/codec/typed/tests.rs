//! The typed frame reader against the `Value` path: the same `Message` or the same error.

use serde_json::{json, Value};

use super::super::{decode_through_value as decode_slow, encode, BatchKind, DecodeError, Outbound};
use crate::delta::json::tests::{all_texts, valid_texts};
use crate::federation::wire::{Message, WireDelta};

/// The typed reader, falling back to the `Value` path: what `wire::decode` does before
/// it tries a refused frame part by part.
fn decode(text: &str) -> Result<Message, DecodeError> {
    match super::decode(text) {
        Some(m) => Ok(m),
        None => decode_slow(text),
    }
}

fn encode_delta_raw(delta: &str, seq: Option<u64>) -> String {
    encode(Outbound::delta(delta, seq))
}

fn encode_batch_raw(kind: BatchKind, deltas: &[&str], last_seq: Option<u64>) -> String {
    encode(Outbound::batch(kind, deltas, last_seq))
}

/// Every delta text inside each of the delta-carrying frames.
fn frames_around(delta: &str) -> Vec<String> {
    vec![
        encode_delta_raw(delta, Some(3)),
        encode_delta_raw(delta, None),
        encode_batch_raw(
            BatchKind::Sync {
                batch_number: 1,
                is_last: false,
            },
            &[delta, delta],
            Some(9),
        ),
        encode_batch_raw(BatchKind::Live, &[delta], Some(4)),
        encode_batch_raw(
            BatchKind::Response {
                request_id: 7,
                last: true,
            },
            &[delta, delta],
            None,
        ),
    ]
}

/// Envelopes of the delta-carrying frames with one top-level field removed or retyped, plus
/// text-level oddities.
fn envelope_cases() -> Vec<String> {
    let d = json!({"id": "d", "timestamp": 5, "author": "a", "system": "s", "pointers": []});
    let bases = [
        json!({"type": "delta", "timestamp": 1, "delta": d, "seq": 2}),
        json!({"type": "sync_batch", "timestamp": 1, "deltas": [d, d], "batchNumber": 0, "isLastBatch": true, "lastSeq": 2}),
        json!({"type": "delta_batch", "timestamp": 1.5, "deltas": [d], "lastSeq": 2}),
        json!({"type": "delta_response", "timestamp": 1, "deltas": [d], "requestId": 3, "last": false}),
    ];
    let samples = [
        json!(null),
        json!(-1),
        json!(0),
        json!(1.5),
        json!(1e3),
        json!(""),
        json!("delta"),
        json!("ping"),
        json!([]),
        json!([d]),
        json!({}),
        json!(d),
        json!(true),
    ];
    let mut out = Vec::new();
    for base in &bases {
        let obj = base.as_object().unwrap();
        out.push(base.to_string());
        for k in obj.keys() {
            let mut without = obj.clone();
            without.shift_remove(k);
            out.push(Value::Object(without).to_string());
            for s in &samples {
                let mut with = obj.clone();
                with.insert(k.clone(), s.clone());
                out.push(Value::Object(with).to_string());
            }
        }
        for extra in [
            "delta",
            "deltas",
            "seq",
            "lastSeq",
            "batchNumber",
            "isLastBatch",
            "x",
        ] {
            let mut with = obj.clone();
            if !with.contains_key(extra) {
                with.insert(extra.into(), json!({"unknown": [1, "\u{e9}"]}));
                out.push(Value::Object(with).to_string());
            }
        }
        let text = base.to_string();
        let inner = &text[1..text.len() - 1];
        for dup in [
            r#""type":"ping""#,
            r#""timestamp":2"#,
            r#""delta":{}"#,
            r#""deltas":[]"#,
            r#""seq":1"#,
            r#""lastSeq":1"#,
            r#""x":1,"x":2"#,
            r#""$serde_json::private::Number":"1""#,
            r#""u":"\ud800""#,
        ] {
            out.push(format!("{{{inner},{dup}}}"));
            out.push(format!("{{{dup},{inner}}}"));
        }
        out.push(format!("{text} x"));
        out.push(format!(" {text}\n"));
        // Nesting around serde_json's depth limit, in a delta and in an unknown field.
        for depth in [122, 123, 124, 125, 126, 127, 128] {
            let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            out.push(format!(r#"{{{inner},"deep":{nested}}}"#));
            let deep_delta = format!(
                r#"{{"id":"d","timestamp":5,"author":"a","system":"s","pointers":[],"deep":{nested}}}"#
            );
            out.extend(frames_around(&deep_delta));
        }
    }
    out
}

fn reference_frames() -> Vec<String> {
    let text = include_str!("../../../../../tests/fixtures/reference-frames.jsonl");
    text.lines()
        .map(|line| {
            let rec: Value = serde_json::from_str(line).unwrap();
            rec["frame"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn fast_and_value_paths_agree_exactly() {
    let mut texts = reference_frames();
    texts.extend(envelope_cases());
    for d in all_texts() {
        texts.extend(frames_around(&d));
    }
    assert!(texts.len() > 8000, "{} cases", texts.len());
    for text in &texts {
        assert_eq!(decode(text), decode_slow(text), "on {text}");
    }
}

/// The speed-up is real only if the frames senders write take the fast path.
#[test]
fn delta_frames_take_the_fast_path() {
    for d in valid_texts() {
        for frame in frames_around(d.trim()) {
            assert!(super::decode(&frame).is_some(), "slow path for {frame}");
        }
    }
    // Every reference frame carrying only well-shaped deltas is read on the fast path.
    let mut fast = 0;
    for frame in reference_frames() {
        let deltas = match decode_slow(&frame) {
            Ok(Message::Delta { delta, .. }) => vec![delta],
            Ok(Message::SyncBatch { deltas, .. } | Message::DeltaBatch { deltas, .. }) => deltas,
            _ => continue,
        };
        if deltas.iter().all(|d| matches!(d, WireDelta::Decoded(_))) {
            assert!(super::decode(&frame).is_some(), "slow path for {frame}");
            fast += 1;
        }
    }
    assert!(fast >= 12, "{fast} reference frames on the fast path");
}
