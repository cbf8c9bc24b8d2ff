//! The fuzz targets' entry points (`fuzz/src/lib.rs`, included below so both check the
//! same invariants) driven on stable by proptest for a bounded number of cases: arbitrary
//! strings, arbitrary bytes read as lossy UTF-8, and structure-aware mutations of the
//! real frames in `tests/fixtures/reference-frames.jsonl` (fields dropped, duplicated,
//! renamed or retyped, huge numbers, deep nesting, unicode). No input may panic; a delta
//! or filter object that is refused must name the field at fault; no script may run
//! longer than a bounded time. The real fuzzer (nightly, `fuzz/README.md`) goes further.

use crate::common;
#[path = "../../fuzz/src/lib.rs"]
mod entry;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use entry::Outcome;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use rhizome::{Delta, Node, Origin, Pointer, Target};
use serde_json::{json, Value};

/// Longest any one script may take to compile and judge one delta (debug build, busy
/// machine). The engine's own claim is "within milliseconds".
const SCRIPT_BUDGET: Duration = Duration::from_secs(3);

/// The reference frames, and the deltas and filters they carry, as seeds to mutate.
struct Seeds {
    /// Every captured text frame, malformed ones included.
    texts: Vec<String>,
    /// The frames that are JSON, as seeds to mutate.
    frames: Vec<Value>,
    deltas: Vec<Value>,
    filters: Vec<Value>,
}

fn seeds() -> &'static Seeds {
    static SEEDS: OnceLock<Seeds> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/reference-frames.jsonl"
        );
        let text = std::fs::read_to_string(path).expect("read the reference frames");
        let mut seeds = Seeds {
            texts: Vec::new(),
            frames: Vec::new(),
            deltas: Vec::new(),
            filters: Vec::new(),
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let record: Value = serde_json::from_str(line).expect("a fixture line is JSON");
            let text = record["frame"]
                .as_str()
                .expect("a fixture line has a frame");
            if text.starts_with("(binary frame)") {
                continue;
            }
            seeds.texts.push(text.to_owned());
            let Ok(frame) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if let Some(d) = frame.get("delta") {
                seeds.deltas.push(d.clone());
            }
            if let Some(Value::Array(ds)) = frame.get("deltas") {
                // A few per batch: the batches repeat one shape a hundred times.
                seeds.deltas.extend(ds.iter().take(3).cloned());
            }
            if let Some(f) = frame.get("filter") {
                seeds.filters.push(f.clone());
            }
            seeds.frames.push(frame);
        }
        // Legacy pointers and every filter field, which the captured frames lack.
        seeds.deltas.push(serde_json::json!({
            "id": "legacy-1", "timestamp": 1_700_000_000_000u64, "author": "bob", "system": "ts",
            "pointers": [
                {"localContext": "on", "target": {"id": "prod_1"}, "targetContext": "comments"},
                {"localContext": "text", "target": "héllo"},
                {"role": "n", "target": 1.5}
            ],
            "signature": "kept verbatim"
        }));
        seeds.filters.push(serde_json::json!({
            "ids": ["a"], "targetIds": ["prod_1"], "targetContexts": ["comments"],
            "authors": ["alice"], "systems": ["wire-server"],
            "timestampRange": {"start": 1, "end": 2_000_000_000_000u64}, "includeNegated": true
        }));
        seeds
    })
}

// ---------------------------------------------------------------------------------
// A JSON tree that can say what `serde_json::Value` cannot: duplicate keys, and number
// spellings of any size. Mutations pick a node by its pre-order position.
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Tree {
    /// A scalar, already spelled as JSON text (or as something that is almost JSON).
    Raw(String),
    Arr(Vec<Tree>),
    Obj(Vec<(String, Tree)>),
}

impl Tree {
    fn from_value(v: &Value) -> Tree {
        match v {
            Value::Array(items) => Tree::Arr(items.iter().map(Tree::from_value).collect()),
            Value::Object(map) => Tree::Obj(
                map.iter()
                    .map(|(k, v)| (k.clone(), Tree::from_value(v)))
                    .collect(),
            ),
            scalar => Tree::Raw(scalar.to_string()),
        }
    }

    fn string(s: &str) -> Tree {
        Tree::Raw(Value::from(s).to_string())
    }

    fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out);
        out
    }

    fn render_into(&self, out: &mut String) {
        match self {
            Tree::Raw(s) => out.push_str(s),
            Tree::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.render_into(out);
                }
                out.push(']');
            }
            Tree::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::from(k.as_str()).to_string());
                    out.push(':');
                    v.render_into(out);
                }
                out.push('}');
            }
        }
    }

    fn count(&self) -> usize {
        1 + match self {
            Tree::Raw(_) => 0,
            Tree::Arr(items) => items.iter().map(Tree::count).sum(),
            Tree::Obj(fields) => fields.iter().map(|(_, v)| v.count()).sum(),
        }
    }

    /// The node at pre-order position `n`.
    fn nth_mut(&mut self, mut n: usize) -> Option<&mut Tree> {
        fn go<'a>(t: &'a mut Tree, n: &mut usize) -> Option<&'a mut Tree> {
            if *n == 0 {
                return Some(t);
            }
            *n -= 1;
            match t {
                Tree::Raw(_) => None,
                Tree::Arr(items) => items.iter_mut().find_map(|c| go(c, n)),
                Tree::Obj(fields) => fields.iter_mut().find_map(|(_, c)| go(c, n)),
            }
        }
        go(self, &mut n)
    }

    /// A node chosen by `at` among all nodes.
    fn pick(&mut self, at: &Index) -> &mut Tree {
        let n = at.index(self.count());
        self.nth_mut(n).expect("a position below count() is a node")
    }

    /// Pre-order positions of the objects in the tree.
    fn object_positions(&self) -> Vec<usize> {
        fn go(t: &Tree, next: &mut usize, out: &mut Vec<usize>) {
            if matches!(t, Tree::Obj(_)) {
                out.push(*next);
            }
            *next += 1;
            match t {
                Tree::Raw(_) => {}
                Tree::Arr(items) => items.iter().for_each(|c| go(c, next, out)),
                Tree::Obj(fields) => fields.iter().for_each(|(_, c)| go(c, next, out)),
            }
        }
        let mut out = Vec::new();
        go(self, &mut 0, &mut out);
        out
    }

    /// An object chosen by `at` among the objects, if there is any.
    fn pick_object(&mut self, at: &Index) -> Option<&mut Vec<(String, Tree)>> {
        let positions = self.object_positions();
        if positions.is_empty() {
            return None;
        }
        match self.nth_mut(positions[at.index(positions.len())]) {
            Some(Tree::Obj(fields)) => Some(fields),
            _ => None,
        }
    }
}

/// One structure-aware change to a JSON document.
#[derive(Debug, Clone)]
enum Mutation {
    /// Remove a field of some object.
    Drop(Index, Index),
    /// Repeat a field of some object (same key), with its value or another one.
    Duplicate(Index, Index, Option<Tree>),
    /// Rename a field of some object.
    Rename(Index, Index, String),
    /// Replace a node with a value of another shape.
    Retype(Index, Tree),
    /// Replace a node with a number of an awkward size or spelling.
    Number(Index, &'static str),
    /// Wrap a node in this many arrays (or objects).
    Nest(Index, usize, bool),
    /// Replace a node with a string of arbitrary (or broken) unicode.
    Unicode(Index, Tree),
}

impl Mutation {
    fn apply(&self, tree: &mut Tree) {
        match self {
            Mutation::Drop(obj, field) => {
                if let Some(fields) = tree.pick_object(obj).filter(|f| !f.is_empty()) {
                    fields.remove(field.index(fields.len()));
                }
            }
            Mutation::Duplicate(obj, field, value) => {
                if let Some(fields) = tree.pick_object(obj).filter(|f| !f.is_empty()) {
                    let (k, v) = fields[field.index(fields.len())].clone();
                    fields.push((k, value.clone().unwrap_or(v)));
                }
            }
            Mutation::Rename(obj, field, name) => {
                if let Some(fields) = tree.pick_object(obj).filter(|f| !f.is_empty()) {
                    let i = field.index(fields.len());
                    fields[i].0.clone_from(name);
                }
            }
            Mutation::Retype(at, value) | Mutation::Unicode(at, value) => {
                *tree.pick(at) = value.clone();
            }
            Mutation::Number(at, spelling) => *tree.pick(at) = Tree::Raw((*spelling).to_owned()),
            Mutation::Nest(at, depth, as_arrays) => {
                let node = tree.pick(at);
                let mut wrapped = node.clone();
                for _ in 0..*depth {
                    wrapped = if *as_arrays {
                        Tree::Arr(vec![wrapped])
                    } else {
                        Tree::Obj(vec![("id".into(), wrapped)])
                    };
                }
                *node = wrapped;
            }
        }
    }
}

/// Field names worth renaming to: the other pointer form, the other case convention,
/// neighbouring message fields, and oddities.
const NAMES: &[&str] = &[
    "id",
    "role",
    "target",
    "context",
    "localContext",
    "targetContext",
    "type",
    "timestamp",
    "systemId",
    "system_id",
    "delta",
    "deltas",
    "lastSeq",
    "includeNegated",
    "authors",
    "timestampRange",
    "__proto__",
    "",
    "ïd",
];

/// Numbers past every integer limit, negative zero, floats that look whole, and text
/// that is not quite a number.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-0.0",
    "1.5",
    "-1",
    "9007199254740993",
    "8999999999999999.0",
    "9.0e15",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "1234567890123456789012345678901234567890e-20",
    "1e308",
    "1e309",
    "-1e309",
    "4.9e-324",
    "1e-400",
    "0x10",
    "NaN",
    "Infinity",
    "01",
    "1.",
    ".5",
];

fn tree_value() -> impl Strategy<Value = Tree> {
    prop_oneof![
        Just(Tree::Raw("null".into())),
        Just(Tree::Raw("true".into())),
        Just(Tree::Raw("false".into())),
        Just(Tree::Raw("0".into())),
        Just(Tree::Raw("42".into())),
        Just(Tree::string("")),
        Just(Tree::string("x")),
        Just(Tree::Arr(vec![])),
        Just(Tree::Obj(vec![])),
        Just(Tree::Arr(vec![
            Tree::string("alice"),
            Tree::Raw("1".into())
        ])),
        Just(Tree::Obj(vec![("id".into(), Tree::string("prod_1"))])),
        Just(Tree::Obj(vec![
            ("role".into(), Tree::string("on")),
            ("target".into(), Tree::string("x")),
        ])),
        Just(Tree::Obj(vec![("start".into(), Tree::Raw("1".into()))])),
    ]
}

fn unicode_value() -> impl Strategy<Value = Tree> {
    prop_oneof![
        any::<String>().prop_map(|s| Tree::string(&s)),
        "\\PC{0,16}".prop_map(|s| Tree::string(&s)),
        Just(Tree::string("\u{0}")),
        Just(Tree::string("\u{feff}e\u{301}\u{202e}𝕏🦀")),
        Just(Tree::string(&"é".repeat(40_000))),
        // Escapes that are not valid UTF-16: a JSON parser must refuse them cleanly.
        Just(Tree::Raw(r#""\ud800""#.into())),
        Just(Tree::Raw(r#""\udc00x""#.into())),
        Just(Tree::Raw(r#""\u0000\ud83d\ude00""#.into())),
        Just(Tree::Raw("\"unterminated".into())),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), any::<Index>()).prop_map(|(o, f)| Mutation::Drop(o, f)),
        (
            any::<Index>(),
            any::<Index>(),
            proptest::option::of(tree_value())
        )
            .prop_map(|(o, f, v)| Mutation::Duplicate(o, f, v)),
        (any::<Index>(), any::<Index>(), select(NAMES)).prop_map(|(o, f, n)| Mutation::Rename(
            o,
            f,
            n.to_owned()
        )),
        (any::<Index>(), tree_value()).prop_map(|(at, v)| Mutation::Retype(at, v)),
        (any::<Index>(), select(NUMBERS)).prop_map(|(at, n)| Mutation::Number(at, n)),
        (
            any::<Index>(),
            prop_oneof![1usize..8, 120usize..140, 1000usize..1001],
            any::<bool>()
        )
            .prop_map(|(at, d, arrays)| Mutation::Nest(at, d, arrays)),
        (any::<Index>(), unicode_value()).prop_map(|(at, v)| Mutation::Unicode(at, v)),
    ]
}

/// A seed, changed by a few mutations, optionally cut short, as text.
fn mutated(seeds: Vec<Value>) -> impl Strategy<Value = String> {
    (
        select(seeds),
        proptest::collection::vec(mutation(), 1..5),
        proptest::option::weighted(0.1, any::<Index>()),
    )
        .prop_map(|(seed, mutations, cut)| {
            let mut tree = Tree::from_value(&seed);
            for m in &mutations {
                m.apply(&mut tree);
            }
            let mut text = tree.render();
            if let Some(cut) = cut {
                let mut at = cut.index(text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                text.truncate(at);
            }
            text
        })
}

/// Runs all four entry points on one input; the script under a stopwatch.
fn every_entry_point(text: &str) {
    entry::frame_decode(text);
    entry::delta_validate(text);
    entry::filter_parse(text);
    timed_script(text);
}

fn timed_script(source: &str) -> Outcome {
    let started = Instant::now();
    let outcome = entry::policy_script(source);
    let took = started.elapsed();
    assert!(
        took < SCRIPT_BUDGET,
        "script took {took:?} (budget {SCRIPT_BUDGET:?}):\n{source}"
    );
    outcome
}

/// `cases` by default (the whole file stays under ~20 s in debug); `PROPTEST_CASES=n`
/// runs longer hunts.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        every_entry_point(&text);
    }

    #[test]
    fn json_like_strings_never_panic(text in r#"[\[\]{}":,0-9a-zA-Z_.eE+\- \\]{0,80}"#) {
        every_entry_point(&text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        every_entry_point(&String::from_utf8_lossy(&bytes));
    }
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn mutated_reference_frames_never_panic(text in mutated(seeds().frames.clone())) {
        entry::frame_decode(&text);
    }

    #[test]
    fn mutated_deltas_are_refused_naming_the_field(text in mutated(seeds().deltas.clone())) {
        entry::delta_validate(&text);
    }

    #[test]
    fn mutated_filters_are_refused_naming_the_field(text in mutated(seeds().filters.clone())) {
        entry::filter_parse(&text);
    }
}

/// Pieces of Rhai a policy might contain, plus the sandbox's usual suspects. Sizes stay
/// small: `script_operation_limit_does_not_bound_wall_time` covers big ones.
const SCRIPT_PIECES: &[&str] = &[
    "true",
    "false",
    "delta.author == \"alice\"",
    "has_role(delta, \"verified\")",
    "pointer(delta, \"price\") > 1000",
    "pointer(delta, \"on\").context == \"comments\"",
    "targets(delta, \"prod_1\")",
    "delta.pointers.len() > 3",
    "delta.timestamp <= now()",
    "link.name == \"fuzz\"",
    "reject(\"no\")",
    "reject(\"\")",
    "accept()",
    "let x = 1;",
    "let s = \"é🦀\";",
    "`${delta.author} ${delta.pointers.len()}`",
    "delta.nope.nope",
    "delta.pointers[99]",
    "delta.pointers[-1].role",
    "delta.timestamp / 0",
    "9223372036854775807 + 1",
    "-9223372036854775807 - 2",
    "1 << 70",
    "2 ** 64",
    "1.0 / 0.0",
    "parse_int(\"99999999999999999999999\")",
    "\"é\".sub_string(1, 5)",
    "\"abc\"[-10]",
    "\"x\".pad(50, \"yz\")",
    "[1, 2, 3].map(|x| x * 2).len() == 3",
    "#{a: 1, b: [2]}.b[0]",
    "switch delta.author { \"alice\" => true, _ => false }",
    "loop { }",
    "while true { let y = 1; }",
    "fn f(x) { f(x + 1) } f(0)",
    "fn g() { delta } g()",
    "import \"std\" as s;",
    "eval(\"true\")",
    "print(delta); debug(link);",
    "throw \"boom\"",
    "undefined_variable",
    "delta = 1",
    "delta.author = \"mallory\"",
    "for p in delta.pointers { if p.role == \"on\" { return true; } }",
    "do { } until true",
    "blob(16).len()",
    "range(0, 10).len()",
    "Fn(\"reject\").call(\"via pointer\")",
    "}",
    "(",
    "\"unterminated",
    "// a comment",
    "/* an unclosed comment",
];

/// Statement and operator joints, weighted towards the ones that keep a script valid.
const SEPARATORS: &[&str] = &[
    "; ", "; ", "; ", ";\n", ";\n", " && ", " && ", " || ", " + ", " == ", ", ", " ", "",
];

fn script() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        8 => select(SCRIPT_PIECES).prop_map(str::to_owned),
        1 => "\\PC{0,12}",
    ];
    (
        proptest::collection::vec((piece, select(SEPARATORS)), 1..6),
        0usize..4,
        any::<bool>(),
    )
        .prop_map(|(pieces, nest, as_if)| {
            // Joints between pieces only: a trailing `;` would make every script end in `()`.
            let mut body = String::new();
            for (i, (piece, joint)) in pieces.into_iter().enumerate() {
                if i > 0 {
                    body.push_str(joint);
                }
                body.push_str(&piece);
            }
            for _ in 0..nest {
                body = if as_if {
                    format!("if delta.pointers.len() > 1 {{ {body} }} else {{ false }}")
                } else {
                    format!("({body})")
                };
            }
            body
        })
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn generated_scripts_never_panic_and_stop_in_time(source in script()) {
        timed_script(&source);
    }
}

/// Nesting far past the engine's expression-depth limit must be a compile error, not a
/// stack overflow (which would take the node's process down, not just the script).
#[test]
fn deeply_nested_scripts_are_refused_without_overflowing_the_stack() {
    let shapes: [(&str, &str, &str); 8] = [
        ("(", "1", ")"),
        ("[", "1", "]"),
        ("#{a: ", "1", "}"),
        ("{ ", "true", " }"),
        ("!", "true", ""),
        ("-", "1", ""),
        ("if true { ", "true", " }"),
        ("fn f() { ", "1", " }"),
    ];
    for (open, inner, close) in shapes {
        for depth in [60, 200, 5_000] {
            let source = format!("{}{inner}{}", open.repeat(depth), close.repeat(depth));
            timed_script(&source);
        }
    }
}

/// The captured frames go through the entry points as the protocol tests expect (105
/// of 109 text frames decode; the others are malformed on purpose), and so do the
/// deltas and filters they carry: the mutation tests start from inputs that get through.
#[test]
fn reference_frames_get_through_the_entry_points() {
    let seeds = seeds();
    let accepted =
        |outcomes: Vec<Outcome>| outcomes.iter().filter(|o| **o == Outcome::Accepted).count();
    let frames = seeds.texts.iter().map(|t| entry::frame_decode(t)).collect();
    assert_eq!((accepted(frames), seeds.texts.len()), (105, 109));
    // Refused on purpose: `"delta": null`, an empty target id, pointers not an array.
    let deltas = seeds.deltas.iter().map(entry::delta_value).collect();
    assert_eq!(accepted(deltas), seeds.deltas.len() - 3);
    // Refused on purpose: `"authors": {"length": 1}` and `"authors": "bob"`.
    let filters = seeds.filters.iter().map(entry::filter_value).collect();
    assert_eq!(accepted(filters), seeds.filters.len() - 2);
    assert_eq!(
        timed_script("has_role(delta, \"verified\")"),
        Outcome::Accepted
    );
    assert_eq!(timed_script("reject(\"no\")"), Outcome::Refused);
}

/// Refused deltas name the field, at each depth of the shape.
#[test]
fn delta_errors_name_the_field_at_fault() {
    let cases = [
        (
            r#"{"timestamp":1,"author":"a","system":"s","pointers":[]}"#,
            "id",
        ),
        (
            r#"{"id":"x","timestamp":-1,"author":"a","system":"s","pointers":[]}"#,
            "timestamp",
        ),
        (
            // Numbers are kept exactly as written, so an out-of-range one is refused
            // by the field that holds it rather than by the JSON parser.
            r#"{"id":"x","timestamp":1e309,"author":"a","system":"s","pointers":[]}"#,
            "timestamp",
        ),
        (
            r#"{"id":"x","timestamp":1,"author":7,"system":"s","pointers":[]}"#,
            "author",
        ),
        (
            r#"{"id":"x","timestamp":1,"author":"a","system":"s","pointers":{}}"#,
            "pointers",
        ),
        (
            r#"{"id":"x","timestamp":1,"author":"a","system":"s","pointers":[{"role":"r","target":[[1]]}]}"#,
            "pointers[0].target",
        ),
        (
            r#"{"id":"x","timestamp":1,"author":"a","system":"s","pointers":[{"localContext":"r","target":"v","targetContext":"c"}]}"#,
            "pointers[0].targetContext",
        ),
    ];
    for (text, field) in cases {
        let err = Delta::parse(text).expect_err(text);
        assert_eq!(err.field, field, "{text}: {err}");
        assert_eq!(entry::delta_validate(text), Outcome::Refused);
    }
}

// ---------------------------------------------------------------------------------
// Regressions: inputs that broke a guarantee, now fixed.
// ---------------------------------------------------------------------------------

/// Ids, authors, systems, target ids and contexts are index keys, and the store's keys
/// are limited (fjall: 65535 bytes). Validation bounds them (4 KiB), naming the field,
/// and an oversized one never reaches the store's writer.
#[test]
fn long_terms_are_refused_and_never_kill_the_store() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let node = Node::in_memory("fuzz").await.expect("node");
        let long = Delta {
            id: "long-target".into(),
            timestamp: 1,
            author: "alice".into(),
            system: "s".into(),
            pointers: vec![Pointer::new("on", Target::reference("x".repeat(70_000)))],
            extra: serde_json::Map::new(),
        };
        let refused = rhizome::delta::validate(&long).expect_err("a 70,000-byte target id");
        assert_eq!(refused.field, "pointers[0].target.id");
        // Whatever the node decides about this delta (store it or refuse it)...
        let _ = node.ingest(vec![long], Origin::Local).await;
        // ...the next ordinary delta must still be stored.
        let next = Delta {
            id: "after".into(),
            timestamp: 2,
            author: "alice".into(),
            system: "s".into(),
            pointers: vec![],
            extra: serde_json::Map::new(),
        };
        let outcome = node.ingest(vec![next], Origin::Local).await;
        assert!(
            matches!(outcome.as_deref(), Ok([rhizome::IngestOutcome::Stored(_)])),
            "the store no longer accepts writes: {outcome:?}"
        );
    });
}

/// The sandbox bounds wall time as well as operations: one operation on a 60 kB string
/// or a 10,000-element array costs far more than a comparison, so scripts built from
/// such operations must still be stopped (`DEFAULT_TIME_BUDGET`, 50 ms) rather than stall the
/// link that judges with them.
#[test]
fn script_operation_limit_bounds_wall_time_too() {
    let slow = [
        r#"let s = ""; s.pad(60000, "y"); let n = 0; while n < 1000000 { let t = s.replace("y", "z"); n += 1; } true"#,
        r#"let a = []; a.pad(9999, 1); let n = 0; while n < 1000000 { a.sort(); a.reverse(); n += 1; } true"#,
        r#"let s = ""; s.pad(60000, "y"); let n = 0; while n < 1000000 { let t = s.index_of("z"); n += 1; } true"#,
        r#"let s = ""; s.pad(60000, "y"); let n = 0; while n < 1000000 { let t = s.to_upper(); n += 1; } true"#,
    ];
    for source in slow {
        assert_eq!(timed_script(source), Outcome::Refused);
    }
}

/// Two nodes for the whole run, B pulling from A over a real link: what A accepts over
/// HTTP, B must receive. The runtime lives as long as the servers on it.
struct Linked {
    rt: tokio::runtime::Runtime,
    a: rhizome::Server,
    b: rhizome::Server,
    http: reqwest::Client,
}

fn linked() -> &'static Linked {
    static LINKED: OnceLock<Linked> = OnceLock::new();
    LINKED.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let (a, b) = rt.block_on(async {
            let a = common::start_node("accepts").await;
            let b = common::start_node("receives").await;
            let link = b
                .federation()
                .connect_to_remote(
                    &a.url(),
                    rhizome::LinkConfig {
                        mode: rhizome::federation::SyncMode::Pull,
                        ..Default::default()
                    },
                )
                .expect("a link");
            assert!(
                common::wait_status(
                    &link,
                    rhizome::LinkStatus::Connected,
                    Duration::from_secs(20)
                )
                .await
            );
            (a, b)
        });
        Linked {
            rt,
            a,
            b,
            http: reqwest::Client::new(),
        }
    })
}

/// Arbitrary JSON for a delta's unknown fields: unicode and control characters in
/// strings, extreme numbers, nesting on both sides of the depth limit.
fn json_tree() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::String),
        "[\\x00-\\x1f\"\\\\\u{7f}\u{2028}\u{fffd}]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(48, 96, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::btree_map("\\PC{0,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Deltas shaped like deltas, with content at and past the edges of the rules.
fn edgy_delta() -> impl Strategy<Value = String> {
    let ident = prop_oneof![
        16 => "[a-zA-Z0-9_:.\\-]{1,24}",
        6 => "\\PC{1,12}",
        1 => "[a-z]{0,3}[\\x00\\n\\r\\x1b][a-z]{0,3}",
    ];
    let target = prop_oneof![
        (ident.clone(), proptest::option::of(ident.clone())).prop_map(
            |(id, context)| match context {
                Some(c) => json!({"id": id, "context": c}),
                None => json!({"id": id}),
            }
        ),
        "\\PC{0,40}".prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
    ];
    let timestamp = prop_oneof![
        1u64..4_000_000_000_000,
        Just(rhizome::delta::MAX_SAFE_INTEGER),
        Just(rhizome::delta::MAX_SAFE_INTEGER + 1),
    ];
    (
        ident.clone(),
        timestamp,
        ident.clone(),
        ident.clone(),
        proptest::collection::vec((ident, target), 0..5),
        proptest::option::of(json_tree()),
    )
        .prop_map(|(id, timestamp, author, system, pointers, extra)| {
            let pointers: Vec<Value> = pointers
                .into_iter()
                .map(|(role, target)| json!({"role": role, "target": target}))
                .collect();
            let mut d = json!({"id": id, "timestamp": timestamp, "author": author,
                "system": system, "pointers": pointers});
            if let Some(extra) = extra {
                d["extra"] = extra;
            }
            d.to_string()
        })
}

proptest! {
    #![proptest_config(config(128))]

    /// What a default node stores, a default node receives: one set of limits on every
    /// way in, so nothing accepted over HTTP is refused (or blocks) on a link.
    #[test]
    fn any_delta_post_accepts_reaches_a_second_node(
        text in prop_oneof![mutated(seeds().deltas.clone()), edgy_delta()]
    ) {
        let l = linked();
        l.rt.block_on(async {
            let resp = l
                .http
                .post(format!("{}/deltas", l.a.url()))
                .header("content-type", "application/json")
                .body(text.clone())
                .send()
                .await
                .expect("POST /deltas");
            let accepted = resp.status().is_success();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if !accepted || body["status"] != "stored" {
                return;
            }
            let id = body["id"].as_str().expect("an accepted delta has an id").to_owned();
            let stored = l.a.node().get(&id).expect("get").expect("stored on A").delta;
            let arrived = common::wait_for(Duration::from_secs(20), || {
                l.b.node().get(&id).ok().flatten().is_some()
            })
            .await;
            assert!(arrived, "accepted by A, never reached B: {text}");
            let received = l.b.node().get(&id).expect("get").expect("on B").delta;
            assert_eq!(received, stored, "B holds another delta than A for {text}");
        });
    }
}
