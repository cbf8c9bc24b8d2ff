use serde_json::{json, Value};

use super::*;

/// Whether a raw JSON fragment is what we think it is.
fn is_json(text: &str) -> bool {
    serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok()
}

fn encode_delta_raw(delta: &str, seq: Option<u64>) -> String {
    encode(Outbound::delta(delta, seq))
}

fn encode_batch_raw(kind: BatchKind, deltas: &[&str], last_seq: Option<u64>) -> String {
    encode(Outbound::batch(kind, deltas, last_seq))
}

/// Every frame the reference implementation produced or accepted decodes, except the
/// malformed ones its notes describe, and those fail with the reason a peer should hear.
#[test]
fn reference_frames_decode() {
    let text = include_str!("../../../../tests/fixtures/reference-frames.jsonl");
    let mut ok = 0;
    let mut errors = Vec::new();
    for line in text.lines() {
        let rec: Value = serde_json::from_str(line).unwrap();
        let frame = rec["frame"].as_str().unwrap();
        if frame.starts_with("(binary frame)") {
            continue;
        }
        match decode(frame) {
            Ok(_) => ok += 1,
            Err(e) => errors.push((rec["note"].as_str().unwrap().to_owned(), e.0)),
        }
    }
    assert_eq!(ok, 105, "{errors:?}");
    let notes: Vec<&str> = errors
        .iter()
        .map(|(n, _)| n.split(' ').next().unwrap())
        .collect();
    assert_eq!(notes, vec!["A8", "A9", "A9c", "A10"], "{errors:?}");
    assert!(errors[0].1.contains("not valid JSON"));
    assert!(errors[1].1.contains("missing timestamp"));
    assert!(errors[2].1.contains("missing type"));
    assert!(errors[3].1.contains("Unknown message type: \"bogus\""));
}

#[test]
fn timestamp_zero_is_accepted_unlike_the_reference() {
    assert_eq!(
        decode(r#"{"type":"ping","timestamp":0}"#).unwrap(),
        Message::Ping
    );
}

#[test]
fn reference_client_hello_keeps_its_config() {
    let m = decode(r#"{"type":"hello","timestamp":1,"systemId":"c","protocol":"rhizomedb-federation-v1","config":{"mode":"pull"},"extra":1}"#).unwrap();
    match m {
        Message::Hello {
            system_id,
            config,
            rhizome,
            ..
        } => {
            assert_eq!(system_id, "c");
            assert_eq!(config, Some(json!({"mode": "pull"})));
            assert_eq!(rhizome, None);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_fields_are_named() {
    let e = decode(r#"{"type":"delta_nack","timestamp":1,"deltaId":"x"}"#).unwrap_err();
    assert!(
        e.0.contains("Invalid delta_nack message") && e.0.contains("reason"),
        "{e}"
    );
}

#[test]
fn raw_encoders_produce_decodable_frames() {
    let d = r#"{"id":"x","timestamp":1,"author":"a","system":"s","pointers":[]}"#;
    let frame = encode_delta_raw(d, Some(7));
    assert!(is_json(&frame));
    assert_eq!(
        decode(&frame).unwrap(),
        Message::Delta {
            delta: serde_json::from_str(d).unwrap(),
            seq: Some(7)
        }
    );
    let frame = encode_batch_raw(
        BatchKind::Sync {
            batch_number: 2,
            is_last: true,
        },
        &[d, d],
        Some(9),
    );
    match decode(&frame).unwrap() {
        Message::SyncBatch {
            deltas,
            batch_number,
            is_last_batch,
            last_seq,
        } => {
            assert_eq!(
                (deltas.len(), batch_number, is_last_batch, last_seq),
                (2, 2, true, Some(9))
            );
        }
        other => panic!("{other:?}"),
    }
    let frame = encode_batch_raw(BatchKind::Live, &[], Some(3));
    assert_eq!(
        decode(&frame).unwrap(),
        Message::DeltaBatch {
            deltas: vec![],
            last_seq: 3
        }
    );
    let frame = encode(&Message::Error {
        code: "X".into(),
        message: "m".into(),
        fatal: true,
    });
    let v: Value = serde_json::from_str(&frame).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["fatal"].as_bool()),
        (Some("error"), Some(true))
    );
    assert!(v["timestamp"].as_u64().unwrap() > 0);
}
