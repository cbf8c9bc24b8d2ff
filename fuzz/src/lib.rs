//! The entry points the fuzz targets drive, one per untrusted-input path.
//!
//! `tests/it/fuzz_smoke.rs` includes this file as a module, so the nightly fuzzer
//! (`fuzz_targets/*.rs`) and the stable smoke test check exactly the same things.
//! Each entry point takes arbitrary text, sends it down the path a peer's frame, an
//! HTTP body or an operator's script takes, and panics (which is what a fuzzer
//! reports) only when one of these invariants breaks:
//! - nothing in rhizome panics, whatever the input;
//! - `wire::decode`'s typed reader for delta-carrying frames agrees with the
//!   derived `Message` decoder;
//! - what decodes encodes back to text that decodes to the same value (so what a node
//!   stores and forwards is what it received);
//! - a delta or filter that is a JSON object but invalid is refused with an error that
//!   names the field at fault (a peer or a user always learns which field and why);
//! - a script that does not compile rejects everything it judges (fail closed).
//!
//! Time is the caller's to bound: libFuzzer's `-timeout`, or a stopwatch in the smoke test.

use rhizome::delta::validate;
use rhizome::federation::wire::{self, Message, Outbound, WireDelta};
use rhizome::policy::{LinkContext, PolicyDirs, PolicySet, ScriptKind, Verdict};
use rhizome::DeltaFilter;
use rhizome::{Delta, Pointer, Target};
use serde_json::Value;

/// Whether an input got through (decoded, or a script accepted the delta) or was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Refused,
}

/// The top-level fields a delta error may name (`pointers[2].target.id` names `pointers`).
const DELTA_FIELDS: [&str; 5] = ["id", "timestamp", "author", "system", "pointers"];

/// The fields of a `DeltaFilter` on the wire.
const FILTER_FIELDS: [&str; 7] = [
    "ids",
    "targetIds",
    "targetContexts",
    "authors",
    "systems",
    "timestampRange",
    "includeNegated",
];

/// One federation frame as a peer sends it: `wire::decode`, then each delta and
/// filter the frame carries, as the link session judges them.
pub fn frame_decode(text: &str) -> Outcome {
    let decoded = wire::decode(text);
    // What serde's derived decoder accepts, the fast path accepts the same. (The derived
    // one buffers every value once more and gives up on very deep nesting the fast path
    // takes; the delta inside is then judged, and refused, by validation.) Numbers are
    // compared by value: the fast path keeps a number exactly as the peer wrote it
    // (`-0`, `1.50`), serde's buffered path may respell it.
    if let Some(Ok(derived)) = derived_decode(text) {
        assert_eq!(
            decoded.as_ref().ok().map(numbers_by_value),
            Some(numbers_by_value(&derived)),
            "the fast path and the derived decoder disagree on {text}"
        );
    }
    let msg = match decoded {
        Ok(msg) => msg,
        Err(e) => {
            assert!(!e.0.is_empty(), "a frame error must say what is wrong");
            return Outcome::Refused;
        }
    };
    // A delta no JSON reader takes is answered and counted, never stored or sent on:
    // it has no encoding to round-trip.
    if !carries_unreadable(&msg) {
        let encoded = wire::encode(&msg);
        let again = wire::decode(&encoded)
            .unwrap_or_else(|e| panic!("our own encoding {encoded} does not decode: {e}"));
        assert_eq!(
            again, msg,
            "a frame changed on a decode-encode-decode round trip"
        );
    }
    match &msg {
        Message::Delta { delta, .. } => {
            wire_delta(delta);
        }
        Message::SyncBatch { deltas, .. } | Message::DeltaBatch { deltas, .. } => {
            for d in deltas {
                wire_delta(d);
            }
        }
        Message::SyncRequest {
            filter: Some(filter),
            ..
        } => {
            filter_value(filter);
        }
        _ => {}
    }
    Outcome::Accepted
}

fn carries_unreadable(msg: &Message) -> bool {
    let unreadable = |d: &WireDelta| matches!(d, WireDelta::Unreadable { .. });
    match msg {
        Message::Delta { delta, .. } => unreadable(delta),
        Message::SyncBatch { deltas, .. } | Message::DeltaBatch { deltas, .. } => {
            deltas.iter().any(unreadable)
        }
        _ => false,
    }
}

/// `decode` reads `delta`, `sync_batch` and `delta_batch` frames by hand (they are most
/// of the traffic); serde's derived `Message` decoder is the specification it must match.
/// `None` for other frames, and for frames whose envelope `decode` refuses first.
fn derived_decode(text: &str) -> Option<Result<Message, serde_json::Error>> {
    let value: Value = serde_json::from_str(text).ok()?;
    let kind = value.get("type")?.as_str()?;
    let timestamp = value.get("timestamp")?.as_f64()?;
    let fast = matches!(kind, "delta" | "sync_batch" | "delta_batch");
    (fast && timestamp >= 0.0).then(|| serde_json::from_value(value))
}

/// A message as JSON with every number replaced by its `f64` value.
fn numbers_by_value(msg: &Message) -> Value {
    fn walk(v: Value) -> Value {
        match v {
            // `+ 0.0` folds -0 into 0.
            Value::Number(n) => n
                .as_f64()
                .map_or(Value::Null, |f| serde_json::json!(f + 0.0)),
            Value::Array(items) => Value::Array(items.into_iter().map(walk).collect()),
            Value::Object(map) => {
                Value::Object(map.into_iter().map(|(k, v)| (k, walk(v))).collect())
            }
            other => other,
        }
    }
    walk(serde_json::to_value(msg).unwrap_or(Value::Null))
}

/// A delta a frame carried, as the link session judges it: the same verdict as its JSON's.
fn wire_delta(delta: &WireDelta) -> Outcome {
    if let WireDelta::Unreadable { reason, .. } = delta {
        let e = delta.check().expect_err("an unreadable delta is refused");
        assert!(
            !reason.is_empty() && e.reason == *reason,
            "it says why: {e}"
        );
        return Outcome::Refused;
    }
    let value = serde_json::to_value(delta).unwrap_or(Value::Null);
    assert_eq!(
        delta.check(),
        Delta::from_value(&value),
        "a frame's delta and its JSON {value} are judged differently"
    );
    delta_value(&value)
}

/// One delta as JSON text (an HTTP body, a line of an import): `Delta::parse`.
pub fn delta_validate(text: &str) -> Outcome {
    let direct = Delta::parse(text);
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        let e = direct.expect_err("text that is not JSON cannot be a delta");
        assert!(!e.reason.is_empty(), "a delta error must say why");
        return Outcome::Refused;
    };
    // The typed fast path builds the same delta as the `Value` path, or the same error.
    assert_eq!(
        direct,
        Delta::from_value(&value),
        "Delta::parse and Delta::from_value disagree on {text}"
    );
    delta_value(&value)
}

/// A delta already parsed as JSON (a frame's `delta`, an element of a batch).
pub fn delta_value(value: &Value) -> Outcome {
    match Delta::from_value(value) {
        Ok(d) => {
            assert!(validate(&d).is_ok(), "a decoded delta must be valid: {d:?}");
            let json = d.to_json();
            let back = Delta::parse(&json)
                .unwrap_or_else(|e| panic!("a delta's own JSON {json} does not decode: {e}"));
            assert_eq!(back, d, "a delta changed on a JSON round trip");
            assert_eq!(back.to_json(), json, "a delta's JSON is not stable");
            // What a sender puts on the wire for a stored delta decodes to the same delta.
            let frame = wire::encode(Outbound::delta(&json, Some(1)));
            match wire::decode(&frame) {
                Ok(Message::Delta { delta, seq }) => {
                    assert_eq!(seq, Some(1));
                    assert_eq!(delta.check().ok(), Some(d));
                }
                other => panic!("a raw delta frame {frame} decoded to {other:?}"),
            }
            Outcome::Accepted
        }
        Err(e) => {
            assert!(!e.reason.is_empty(), "a delta error must say why: {e:?}");
            if let Some(obj) = value.as_object() {
                // A delta field, or an extra member of this delta (whose value can be
                // refused too: a number no peer can represent).
                let top = e.field.split(['.', '[']).next().unwrap_or_default();
                assert!(
                    DELTA_FIELDS.contains(&top) || obj.contains_key(top),
                    "the error for {value} does not name a delta field: {e:?}"
                );
            }
            Outcome::Refused
        }
    }
}

/// One filter as JSON text (a sync request's, a query's): `DeltaFilter::from_value`.
pub fn filter_parse(text: &str) -> Outcome {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => filter_value(&value),
        Err(_) => Outcome::Refused,
    }
}

/// A filter already parsed as JSON.
pub fn filter_value(value: &Value) -> Outcome {
    match DeltaFilter::from_value(value) {
        Ok(f) => {
            let json = serde_json::to_value(&f).expect("a filter serializes");
            let back = DeltaFilter::from_value(&json)
                .unwrap_or_else(|e| panic!("a filter's own JSON {json} does not decode: {e}"));
            assert_eq!(back, f, "a filter changed on a JSON round trip");
            let _ = f.matches(&sample_delta());
            Outcome::Accepted
        }
        Err(e) => {
            assert!(!e.message.is_empty(), "a filter error must say why");
            if value.is_object() {
                assert!(
                    names_filter_field(&e.message),
                    "the error for {value} does not name a filter field: {e}"
                );
            }
            Outcome::Refused
        }
    }
}

/// `authors: ...`, `timestampRange.start: ...`, `ids[2]: ...`, or serde's
/// ``unknown field `x`, expected one of ...``.
fn names_filter_field(message: &str) -> bool {
    let named_path = FILTER_FIELDS.iter().any(|f| {
        message
            .strip_prefix(f)
            .is_some_and(|rest| rest.starts_with([':', '.', '[']))
    });
    named_path || message.contains("unknown field `")
}

/// An operator's script, as the node loads it: written to a policies folder, compiled
/// and judged by `PolicySet` (the one evaluator for policies and filters) against a
/// fixed delta with the sandboxed engine.
pub fn policy_script(source: &str) -> Outcome {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).expect("create the policies folder");
    std::fs::write(policies.join("fuzz.rhai"), source).expect("write the script");
    let dirs = PolicyDirs {
        policies: Some(policies),
        filters: None,
    };
    let set = PolicySet::load(&dirs, None).expect("load a folder we just wrote");
    assert_eq!(set.scripts().len(), 1, "the script was not picked up");
    let compiled = set.errors().is_empty();
    let link = LinkContext {
        name: "fuzz".into(),
        ..Default::default()
    };
    let verdict = set.judge(ScriptKind::Trust, &link, &sample_delta());
    if !compiled {
        assert!(
            matches!(verdict, Verdict::Reject { .. }),
            "a script that does not compile accepted a delta"
        );
    }
    if verdict.is_accept() {
        Outcome::Accepted
    } else {
        Outcome::Refused
    }
}

/// A delta with a pointer of every kind, for filters to match and scripts to judge.
pub fn sample_delta() -> Delta {
    Delta {
        id: "5f1c2a8e-0000-4000-8000-000000000001".into(),
        timestamp: 1_795_483_360_411,
        author: "alice".into(),
        system: "wire-server".into(),
        pointers: vec![
            Pointer::new("product", Target::reference("prod_1")),
            Pointer::new("on", Target::reference_in("prod_1", "comments")),
            Pointer::new("name", Target::String("Widget Pro ✓".into())),
            Pointer::new("price", Target::Number(serde_json::Number::from(1999))),
            Pointer::new(
                "ratio",
                Target::Number(serde_json::Number::from_f64(0.25).unwrap_or(0.into())),
            ),
            Pointer::new("verified", Target::Bool(true)),
            Pointer::new("negates", Target::reference_in("other", "negated_by")),
        ],
        extra: serde_json::Map::new(),
    }
}
