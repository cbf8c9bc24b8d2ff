//! A [`ScriptDelta`] against the map it replaced: the same expressions give the same
//! values (or both fail), so operators' scripts behave as before.

use rhai::{Dynamic, Engine, Scope};

use super::*;
use crate::delta::new_delta;
use crate::policy::engine::sandboxed_engine;
use crate::policy::set::compile;

/// The map scripts used to get (the representation before [`ScriptDelta`]).
fn as_plain_map(d: &Delta) -> Dynamic {
    ScriptDelta::new(d.clone()).to_map().into()
}

/// Compiled and run as the node does (see `PolicySet::run`).
fn eval(engine: &Engine, delta: Dynamic, script: &str) -> Result<String, String> {
    let ast = compile(engine, script).map_err(|e| e.to_string())?;
    let mut scope = Scope::new();
    scope.push_constant_dynamic("delta", delta);
    scope.push_constant_dynamic("link", Dynamic::UNIT);
    engine
        .eval_ast_with_scope::<Dynamic>(&mut scope, &ast)
        .map(|v| format!("{v:?} ({})", engine.map_type_name(v.type_name())))
        .map_err(|e| e.to_string())
}

fn sample() -> Delta {
    new_delta(
        "alice",
        "sys-1",
        vec![
            Pointer::new("verified", Target::Bool(true)),
            Pointer::new("about", Target::reference_in("prod_1", "reviews")),
            Pointer::new("rating", Target::Number(5.into())),
            Pointer::new(
                "score",
                Target::Number(serde_json::Number::from_f64(2.5).unwrap()),
            ),
            Pointer::new("note", Target::String("hi".into())),
        ],
    )
}

const EXPRESSIONS: &[&str] = &[
    "delta.author",
    "delta.id",
    "delta.system",
    "delta.timestamp > 0",
    "delta.pointers",
    "delta.pointers.len()",
    "delta.pointers[1].target.context",
    "delta.pointers[1].role",
    "delta.pointers[99].role",
    "let n = 0; for p in delta.pointers { if p.role == \"rating\" { n += p.target } } n",
    "delta.pointers.map(|p| p.role)",
    "delta.pointers.filter(|p| p.role == \"note\").len()",
    "delta[\"author\"]",
    "type_of(delta)",
    "type_of(delta.pointers)",
    "delta.author in [\"bob\", \"alice\"]",
    "delta.system in [\"bob\", \"alice\"]",
    "\"author\" in delta",
    "\"nope\" in delta",
    "delta.len()",
    "delta.is_empty()",
    "delta.keys()",
    "delta.values().len()",
    "delta.get(\"author\")",
    "delta.to_json()",
    "delta.to_string()",
    "delta.to_debug()",
    "`${delta}`",
    "`${delta.author} at ${delta.timestamp}`",
    "delta == delta",
    "delta != delta",
    "let d = delta; d == delta",
    "let d = delta; d.remove(\"author\"); [d.len(), delta.len()]",
    "let d = delta; d += #{x: 1}; d.x",
    "let d = delta; d.clear(); d.len()",
    "let m = #{x: 1}; m += delta; m.len()",
    "(delta + #{x: 1}).len()",
    "#{} == delta",
    "delta.remove(\"author\")",
    "delta.clear()",
    "delta += #{x: 1}",
    "has_role(delta, \"verified\")",
    "has_role(delta, \"nope\")",
    "pointer(delta, \"rating\") == 5",
    "pointer(delta, \"score\")",
    "pointer(delta, \"about\").context",
    "pointer(delta, \"missing\")",
    "targets(delta, \"prod_1\")",
    "targets(delta, \"prod_2\")",
    "has_role(#{pointers: [#{role: \"a\"}]}, \"a\")",
    "fn f(d) { d.author + \"!\" } f(delta)",
    "delta.map(|v| 1).len()",
    "delta.filter(|k, v| k == \"author\")",
    "delta.author.len()",
    "delta.timestamp + 1 > delta.timestamp",
    "switch delta.author { \"alice\" => 1, _ => 2 }",
    "delta.pointers.len() > 32",
];

#[test]
fn a_script_delta_behaves_as_the_map_it_replaces() {
    let engine = sandboxed_engine();
    let d = sample();
    let mut differences = Vec::new();
    for expr in EXPRESSIONS {
        let map = eval(&engine, as_plain_map(&d), expr);
        let lazy = eval(&engine, Dynamic::from(ScriptDelta::new(d.clone())), expr);
        if map != lazy {
            differences.push(format!("{expr}\n  map:   {map:?}\n  delta: {lazy:?}"));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

/// A field a delta does not have is an error naming it (a map gave `()`), however it
/// is read; asking whether it is there is not.
#[test]
fn an_unknown_field_is_an_error_that_names_it_issue_16() {
    let engine = sandboxed_engine();
    let d = || Dynamic::from(ScriptDelta::new(sample()));
    for expr in [
        "delta.autor",
        "delta[\"autor\"]",
        "delta.autor != \"mallory\"",
    ] {
        let err = eval(&engine, d(), expr).unwrap_err();
        assert!(
            err.contains(
                "delta has no field `autor` (fields: id, timestamp, author, system, pointers, signer)"
            ),
            "{expr}: {err}"
        );
    }
    assert_eq!(
        eval(&engine, d(), "\"autor\" in delta").unwrap(),
        "false (bool)"
    );
    assert_eq!(
        eval(&engine, d(), "delta.get(\"autor\")").unwrap(),
        "() (())"
    );
}

/// Changing the delta was an error before (it is a constant) and still is, though the
/// message differs; an index of the wrong type likewise.
const STILL_ERRORS: &[&str] = &[
    "delta[0]",
    "delta.author = \"eve\"",
    "delta[\"author\"] = \"eve\"",
];

/// What changed: a copy of `delta` is read-only too (assigning to one of its fields is an
/// error; build a map instead), and changing a field's value in place (`push` on
/// `delta.pointers`) changes a copy, not the delta.
const READ_ONLY: &[(&str, &str)] = &[
    (
        "let d = delta; d.author = \"eve\"; d.author",
        "No writable property 'author'",
    ),
    (
        "let d = delta; d[\"extra\"] = 1; d.extra",
        "Indexer unavailable",
    ),
    (
        "fn g(d) { d.author = \"x\"; d.author } g(delta)",
        "No writable property 'author'",
    ),
];
const CHANGES_A_COPY: &[(&str, &str)] = &[
    ("delta.pointers.push(1); delta.pointers.len()", "5 (i64)"),
    (
        "let d = delta; d.pointers.push(1); d.pointers.len()",
        "5 (i64)",
    ),
    (
        "delta.pointers[0].role = \"x\"; delta.pointers[0].role",
        "\"verified\" (string)",
    ),
];

#[test]
fn changing_the_delta_fails_or_changes_nothing() {
    let engine = sandboxed_engine();
    let d = sample();
    let lazy = || Dynamic::from(ScriptDelta::new(d.clone()));
    for expr in STILL_ERRORS {
        assert!(eval(&engine, as_plain_map(&d), expr).is_err(), "{expr}");
        assert!(eval(&engine, lazy(), expr).is_err(), "{expr}");
    }
    for (expr, error) in READ_ONLY {
        let got = eval(&engine, lazy(), expr);
        assert!(
            got.as_ref().is_err_and(|e| e.contains(error)),
            "{expr}: {got:?}"
        );
    }
    for (expr, value) in CHANGES_A_COPY {
        assert_eq!(eval(&engine, lazy(), expr).as_deref(), Ok(*value), "{expr}");
    }
}

#[test]
fn a_huge_timestamp_saturates_instead_of_turning_negative() {
    let mut d = sample();
    d.timestamp = u64::MAX;
    let engine = sandboxed_engine();
    let v = eval(
        &engine,
        Dynamic::from(ScriptDelta::new(d)),
        "delta.timestamp",
    );
    assert_eq!(v, Ok(format!("{} (i64)", i64::MAX)));
}
