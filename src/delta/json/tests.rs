//! The typed reader against the `Value` path: the same `Delta` or the same error, over
//! valid deltas, every single-field mutation of them, and text-level oddities.

use serde_json::{json, Value};

use super::typed;
use crate::delta::Delta;

/// Valid deltas in every shape the `Value` path takes.
pub(crate) fn valid_texts() -> Vec<String> {
    let mut texts: Vec<String> = [
        json!({"id": "d1", "timestamp": 1795483208095u64, "author": "carol", "system": "node-b",
               "pointers": [{"role": "on", "target": {"id": "prod_1", "context": "comments"}},
                            {"role": "text", "target": "hello"},
                            {"role": "n", "target": 2.5},
                            {"role": "ok", "target": false},
                            {"role": "r", "target": {"id": "e"}}]}),
        json!({"id": "d2", "timestamp": 5, "author": "a", "system": "s", "pointers": [],
               "zeta": 1, "alpha": {"x": [1, 2, null]}, "beta": "b"}),
        json!({"pointers": [{"localContext": "name", "target": {"id": "e1"}, "targetContext": "names"},
                            {"localContext": "text", "target": "hi"},
                            {"target": true, "localContext": "v"},
                            {"targetContext": "c", "target": {"id": "e2"}, "localContext": "x"}],
               "system": "s", "author": "a", "timestamp": 7, "id": "d3"}),
    ]
    .iter()
    .map(Value::to_string)
    .collect();
    texts.extend(
        [
            // Numbers exactly as written; whole-number float timestamps.
            r#"{"id":"n","timestamp":1.0e3,"author":"a","system":"s","pointers":[{"role":"x","target":-0},{"role":"y","target":1.50},{"role":"z","target":123456789012345678901234567890}]}"#,
            r#"{"id":"n","timestamp":1000.0,"author":"a","system":"s","pointers":[{"role":"x","target":1E-7}]}"#,
            // Escapes in keys and values, unicode, whitespace.
            " {\"id\" : \"\\u00e9\\n\" ,\"timestamp\":1,\"author\":\"\u{1F600}\",\"system\":\"s\",\"pointers\":[ ],\"k\\u0065y\":\"\\ud83d\\ude00\"} \n",
            r#"{"id":"e","timestamp":1,"author":"a","system":"s","pointers":[{"role":"r\"q","target":{"context":"c","id":"i"}}]}"#,
            // Invalid by the rules, valid in shape: validation's errors.
            r#"{"id":"","timestamp":1,"author":"a","system":"s","pointers":[]}"#,
            r#"{"id":"x","timestamp":0,"author":"a","system":"s","pointers":[{"role":"","target":"t"}]}"#,
            r#"{"id":"x","timestamp":1,"author":"a","system":"s","pointers":[{"role":"r","target":{"id":"i","context":""}}]}"#,
            r#"{"id":"x","timestamp":1,"author":"a","system":"s","pointers":[{"role":"r","target":1e999}]}"#,
        ]
        .map(str::to_owned),
    );
    texts.push(format!(
        r#"{{"id":"{}","timestamp":1,"author":"a","system":"s","pointers":[]}}"#,
        "x".repeat(5000)
    ));
    texts
}

/// Every way of changing one field of `v`: removed, or replaced by each sample value.
fn mutations(v: &Value) -> Vec<Value> {
    let samples = [
        json!(null),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(1e20),
        json!(""),
        json!("x"),
        json!([]),
        json!([1]),
        json!({}),
        json!({"id": "x"}),
        json!({"id": "x", "context": 1}),
        json!(true),
        json!({"role": "r", "target": "t"}),
        json!({"$serde_json::private::Number": "12"}),
        json!({"$serde_json::private::RawValue": "\"s\""}),
    ];
    let mut out = Vec::new();
    match v {
        Value::Object(obj) => {
            for (k, child) in obj {
                let mut without = obj.clone();
                without.shift_remove(k);
                out.push(Value::Object(without));
                for s in &samples {
                    let mut with = obj.clone();
                    with.insert(k.clone(), s.clone());
                    out.push(Value::Object(with));
                }
                for m in mutations(child) {
                    let mut with = obj.clone();
                    with.insert(k.clone(), m);
                    out.push(Value::Object(with));
                }
            }
            for extra in [
                "role",
                "localContext",
                "targetContext",
                "target",
                "id",
                "other",
            ] {
                let mut with = obj.clone();
                if !with.contains_key(extra) {
                    with.insert(extra.into(), json!("added"));
                    out.push(Value::Object(with));
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                for m in mutations(child) {
                    let mut with = items.clone();
                    with[i] = m;
                    out.push(Value::Array(with));
                }
            }
        }
        _ => {}
    }
    out
}

/// Text-level cases a `Value` cannot express: duplicate keys, bad JSON, deep nesting.
fn odd_texts() -> Vec<String> {
    let base = r#""id":"d","timestamp":5,"author":"a","system":"s","pointers":[{"role":"r","target":{"id":"e"}}]"#;
    let mut texts: Vec<String> = [
        format!(r#"{{{base},"id":"other"}}"#),
        format!(r#"{{{base},"timestamp":6}}"#),
        format!(r#"{{{base},"pointers":[]}}"#),
        format!(r#"{{{base},"x":1,"x":2}}"#),
        format!(r#"{{"$serde_json::private::Number":"1",{base}}}"#),
        format!(r#"{{{base},"$serde_json::private::RawValue":"1"}}"#),
        format!(r#"{{{base}}} trailing"#),
        format!(r#"{{{base},}}"#),
        format!(r#"{{{base}"#),
        format!(r#"[{{{base}}}]"#),
        format!(r#"{{{base},"s":"\ud800"}}"#),
        r#"{"id":"d","timestamp":5,"author":"a","system":"s","pointers":[{"role":"r","role":"q","target":1}]}"#.into(),
        r#"{"id":"d","timestamp":5,"author":"a","system":"s","pointers":[{"role":"r","target":{"id":"e","id":"f"}}]}"#.into(),
        r#"{"id":"d","timestamp":5,"author":"a","system":"s","pointers":[{"localContext":"r","target":{"id":"e","context":"c"},"targetContext":"d"}]}"#.into(),
        r#"{"id":"d","timestamp":5,"author":"a","system":"s","pointers":[{"localContext":"r","targetContext":"d","target":"prim"}]}"#.into(),
        r#"{"id":"d","timestamp":5,"author":"a","system":"s","pointers":[{"role":"r","target":{"$serde_json::private::Number":"7"}}]}"#.into(),
        r#"{"id":"d","timestamp":5,"author":"a","system":"s","pointers":[{"role":"r","target":{"$serde_json::private::Number":"x"}}]}"#.into(),
        r#"{"id":"d","timestamp":-0,"author":"a","system":"s","pointers":[]}"#.into(),
        r#"{"id":"d","timestamp":18446744073709551616,"author":"a","system":"s","pointers":[]}"#.into(),
        r#"{"id":"d","timestamp":9.5e15,"author":"a","system":"s","pointers":[]}"#.into(),
        String::new(),
        "null".into(),
        "12".into(),
        "\"s\"".into(),
    ]
    .into();
    // Nesting at and around serde_json's depth limit, in an unknown field.
    for depth in [125, 126, 127, 128, 129] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        texts.push(format!(r#"{{{base},"deep":{nested}}}"#));
    }
    texts
}

/// All the texts the tests compare the two paths on.
pub(crate) fn all_texts() -> Vec<String> {
    let mut texts = valid_texts();
    for t in valid_texts() {
        let v: Value = serde_json::from_str(&t).unwrap();
        texts.extend(mutations(&v).iter().map(Value::to_string));
    }
    texts.extend(odd_texts());
    let fixtures = include_str!("../../../tests/fixtures/reference-frames.jsonl");
    for line in fixtures.lines() {
        let rec: Value = serde_json::from_str(line).unwrap();
        let Ok(frame) = serde_json::from_str::<Value>(rec["frame"].as_str().unwrap()) else {
            continue;
        };
        texts.extend(frame.get("delta").map(Value::to_string));
        if let Some(Value::Array(ds)) = frame.get("deltas") {
            texts.extend(ds.iter().map(Value::to_string));
        }
    }
    texts
}

#[test]
fn fast_and_value_paths_agree_exactly() {
    let texts = all_texts();
    assert!(texts.len() > 2000, "{} cases", texts.len());
    let (mut ok, mut err) = (0, 0);
    for text in &texts {
        let fast = Delta::parse(text);
        assert_eq!(fast, Delta::parse_through_value(text), "on {text}");
        if fast.is_ok() {
            ok += 1;
        } else {
            err += 1;
        }
    }
    assert!(ok > 200 && err > 1000, "{ok} valid, {err} invalid");
}

/// The speed-up is real only if valid deltas actually take the fast path.
#[test]
fn valid_deltas_take_the_fast_path() {
    for text in valid_texts() {
        assert!(
            typed::delta_from_str(&text).is_some(),
            "slow path for {text}"
        );
    }
    let v: Value = serde_json::from_str(&valid_texts()[0]).unwrap();
    for m in mutations(&v) {
        let text = m.to_string();
        // serde_json's private keys are left to the `Value` path on purpose.
        if Delta::parse_through_value(&text).is_ok() && !text.contains("$serde_json::private") {
            assert!(
                typed::delta_from_str(&text).is_some(),
                "slow path for {text}"
            );
        }
    }
}

#[test]
fn numbers_are_kept_as_written() {
    let d = Delta::parse(&valid_texts()[3]).unwrap();
    assert_eq!(d.timestamp, 1000);
    assert_eq!(
        d.to_json(),
        r#"{"id":"n","timestamp":1000,"author":"a","system":"s","pointers":[{"role":"x","target":-0},{"role":"y","target":1.50},{"role":"z","target":123456789012345678901234567890}]}"#
    );
}

#[test]
fn raw_values_decode_like_text() {
    let text = &valid_texts()[0];
    let raw: Box<serde_json::value::RawValue> = serde_json::from_str(text).unwrap();
    assert_eq!(Delta::parse(raw.get()), Delta::parse(text));
    let raw: Box<serde_json::value::RawValue> = serde_json::from_str(r#"{"id":1}"#).unwrap();
    assert_eq!(Delta::parse(raw.get()).unwrap_err().field, "pointers");
}
