use serde_json::{json, Value};

use super::*;

fn valid() -> Value {
    json!({"id": "d1", "timestamp": 1795483208095u64, "author": "carol", "system": "node-b",
           "pointers": [{"role": "on", "target": {"id": "prod_1", "context": "comments"}},
                        {"role": "text", "target": "hello"},
                        {"role": "n", "target": 2.5},
                        {"role": "ok", "target": false}]})
}

fn err_of(v: Value) -> InvalidDelta {
    Delta::from_value(&v).expect_err("should be invalid")
}

#[test]
fn valid_delta_roundtrips_in_the_wire_shape() {
    let d = Delta::from_value(&valid()).unwrap();
    assert_eq!(d.pointers.len(), 4);
    assert_eq!(
        d.pointers[0].target,
        Target::reference_in("prod_1", "comments")
    );
    let back: Value = serde_json::from_str(&d.to_json()).unwrap();
    assert_eq!(back, valid());
}

#[test]
fn every_rule_names_its_field() {
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Mutation, &str, &str)> = vec![
        (Box::new(|v| v["id"] = json!("")), "id", "non-empty"),
        (
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("id");
            }),
            "id",
            "required",
        ),
        (Box::new(|v| v["id"] = json!(7)), "id", "must be a string"),
        (Box::new(|v| v["author"] = json!("")), "author", "non-empty"),
        (Box::new(|v| v["system"] = json!("")), "system", "non-empty"),
        (
            Box::new(|v| v["timestamp"] = json!(0)),
            "timestamp",
            "positive",
        ),
        (
            Box::new(|v| v["timestamp"] = json!(-5)),
            "timestamp",
            "positive",
        ),
        (
            Box::new(|v| v["timestamp"] = json!("now")),
            "timestamp",
            "number",
        ),
        (
            Box::new(|v| v["timestamp"] = json!(1.5)),
            "timestamp",
            "whole number",
        ),
        (
            Box::new(|v| v["pointers"] = json!("not-an-array")),
            "pointers",
            "array",
        ),
        (
            Box::new(|v| v["pointers"][1]["role"] = json!("")),
            "pointers[1].role",
            "non-empty",
        ),
        (
            Box::new(|v| v["pointers"][1] = json!({"target": "x"})),
            "pointers[1].role",
            "required",
        ),
        (
            Box::new(|v| v["pointers"][1] = json!({"role": "x"})),
            "pointers[1].target",
            "required",
        ),
        (
            Box::new(|v| v["pointers"][1]["target"] = json!(null)),
            "pointers[1].target",
            "got null",
        ),
        (
            Box::new(|v| v["pointers"][1]["target"] = json!([1])),
            "pointers[1].target",
            "got an array",
        ),
        (
            Box::new(|v| v["pointers"][0]["target"] = json!({"id": ""})),
            "pointers[0].target.id",
            "non-empty",
        ),
        (
            Box::new(|v| v["pointers"][0]["target"] = json!({"context": "c"})),
            "pointers[0].target.id",
            "required",
        ),
        (
            Box::new(|v| v["pointers"][0]["target"] = json!({"id": "x", "context": ""})),
            "pointers[0].target.context",
            "non-empty",
        ),
        (
            Box::new(|v| v["pointers"][0]["target"] = json!({"id": "x", "foo": 1})),
            "pointers[0].target.foo",
            "not a reference field",
        ),
        (
            Box::new(|v| v["pointers"][0] = json!("x")),
            "pointers[0]",
            "must be an object",
        ),
    ];
    for (mutate, field, reason) in cases {
        let mut v = valid();
        mutate(&mut v);
        let e = err_of(v.clone());
        assert_eq!(e.field, field, "for {v}: {e}");
        assert!(
            e.reason.contains(reason),
            "for {v}: reason {:?} lacks {reason:?}",
            e.reason
        );
    }
    assert_eq!(err_of(json!(null)).field, "");
    assert!(Delta::parse("{nope")
        .unwrap_err()
        .reason
        .contains("not valid JSON"));
}

#[test]
fn empty_pointer_array_is_valid() {
    let mut v = valid();
    v["pointers"] = json!([]);
    assert!(Delta::from_value(&v).is_ok());
}

#[test]
fn legacy_pointers_are_normalised() {
    let mut v = valid();
    v["pointers"] = json!([
        {"localContext": "name", "target": {"id": "e1"}, "targetContext": "names"},
        {"localContext": "text", "target": "hi"},
        {"localContext": "verified", "target": true},
    ]);
    let d = Delta::from_value(&v).unwrap();
    assert_eq!(
        d.pointers[0],
        Pointer::new("name", Target::reference_in("e1", "names"))
    );
    assert_eq!(d.pointers[1], Pointer::new("text", "hi".into()));
    let out: Value = serde_json::from_str(&d.to_json()).unwrap();
    assert_eq!(
        out["pointers"][0],
        json!({"role": "name", "target": {"id": "e1", "context": "names"}})
    );

    v["pointers"] = json!([{"localContext": "x", "target": "prim", "targetContext": "c"}]);
    assert_eq!(err_of(v.clone()).field, "pointers[0].targetContext");
    v["pointers"] = json!([{"localContext": "", "target": "prim"}]);
    assert_eq!(err_of(v).field, "pointers[0].role");
}

#[test]
fn unknown_top_level_fields_are_kept_in_order() {
    let text = r#"{"id":"d","timestamp":5,"author":"a","system":"s","pointers":[],"zeta":1,"alpha":{"x":[1,2]}}"#;
    let d = Delta::parse(text).unwrap();
    assert_eq!(d.to_json(), text);
}

#[test]
fn negation_of_a_negation() {
    let original = new_delta("alice", "sys", vec![Pointer::new("name", "x".into())]);
    let n1 = negate(&original.id, "bob", "sys", Some("wrong"));
    let n2 = negate(&n1.id, "alice", "sys", None);
    validate(&n1).unwrap();
    validate(&n2).unwrap();
    assert_eq!(
        n1.negated_ids().collect::<Vec<_>>(),
        vec![original.id.as_str()]
    );
    assert_eq!(n2.negated_ids().collect::<Vec<_>>(), vec![n1.id.as_str()]);
    assert_eq!(n1.pointers[1], Pointer::new(REASON_ROLE, "wrong".into()));
    assert_eq!(
        n1.pointers[0].target,
        Target::reference_in(&original.id, NEGATED_BY_CONTEXT)
    );
    assert!(uuid::Uuid::parse_str(&n2.id).is_ok());
}

/// Every delta in the reference implementation's frames decodes, except the ones the
/// frames' notes call invalid.
#[test]
fn reference_frames_deltas_decode() {
    let text = include_str!("../../tests/fixtures/reference-frames.jsonl");
    let mut decoded = 0;
    let mut refused = Vec::new();
    for line in text.lines() {
        let rec: Value = serde_json::from_str(line).unwrap();
        let Ok(frame) = serde_json::from_str::<Value>(rec["frame"].as_str().unwrap()) else {
            continue;
        };
        let mut deltas: Vec<&Value> = Vec::new();
        if let Some(d) = frame.get("delta") {
            deltas.push(d);
        }
        if let Some(Value::Array(ds)) = frame.get("deltas") {
            deltas.extend(ds.iter());
        }
        for d in deltas {
            match Delta::from_value(d) {
                Ok(delta) => {
                    decoded += 1;
                    // Re-encoding gives back the same JSON (current pointer form, same fields).
                    assert_eq!(serde_json::from_str::<Value>(&delta.to_json()).unwrap(), *d);
                }
                Err(e) => refused.push((rec["note"].as_str().unwrap_or("").to_owned(), e)),
            }
        }
    }
    assert_eq!(decoded, 143, "every valid delta in the fixture decodes");
    let fields: Vec<&str> = refused.iter().map(|(_, e)| e.field.as_str()).collect();
    assert_eq!(
        fields,
        vec!["", "pointers[0].target.id", "pointers"],
        "{refused:?}"
    );
}
