//! Convergence: whatever the order, the duplication and the batching in which a set of
//! deltas arrives, every node ends up with the same store: the same ids, the same head,
//! byte-identical delta JSON, the same query answers and the same negation answers.
//! And what the nodes agree on is right: it matches a model computed from the set alone.
//!
//! Each case generates a delta set (some negating others, targets shared between deltas,
//! unknown top-level fields, every target kind), then delivers it to three fresh nodes,
//! each with its own shuffle, duplicates, batch boundaries, pointer form (current or
//! legacy `localContext`), entry point (`Node::ingest` or `Node::ingest_json`) and
//! concurrency (one batch at a time, or all at once so the writer groups them). A fourth
//! node is fed node 0's log as raw JSON, as a federation link would forward it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use rhizome::delta::{NEGATED_BY_CONTEXT, NEGATES_ROLE};
use rhizome::store::{Durability, Query, ReadLimit};
use rhizome::{Delta, DeltaFilter, IngestOutcome, Node, Origin, Pointer, Seq, Target};
use rhizome::{NodeConfig, Storage};
use serde_json::{json, Map, Number, Value};

const AUTHORS: [&str; 3] = ["alice", "bob", "carol"];
const SYSTEMS: [&str; 2] = ["node-a", "node-b"];
/// Entity ids shared between deltas, so target queries select several.
const ENTITIES: [&str; 4] = ["prod_1", "prod_2", "user_1", "ünïcödé-✓"];
const CONTEXTS: [&str; 3] = ["comments", "reviews", "negated_by"];
/// `negates` among them: a `negates` pointer at an entity (or at a string) is legal and
/// must be indexed (or ignored) the same way everywhere.
const ROLES: [&str; 5] = ["on", "by", "text", "rating", NEGATES_ROLE];

/// How many nodes get their own delivery plan (the relay comes on top).
const NODES: usize = 3;

#[derive(Debug, Clone)]
enum TargetSpec {
    Entity(usize, Option<usize>),
    Text(String),
    Int(i64),
    /// `n / 100`: decimals that serde_json reads back exactly. Arbitrary floats do not
    /// survive decoding today; see `numbers_keep_the_value_their_author_sent`.
    Cents(i64),
    Bool(bool),
}

#[derive(Debug, Clone)]
struct DeltaSpec {
    author: usize,
    system: usize,
    timestamp: u64,
    pointers: Vec<(usize, TargetSpec)>,
    /// What this delta negates: an earlier delta of the set (by position among the
    /// earlier ones), or `None` for an id that is never stored. Only earlier ones: ids
    /// are not content hashes, so cycles are possible on the wire, but they hang
    /// `is_negated` today (see `negation_cycles_are_answered_in_bounded_time`).
    negates: Vec<Option<Index>>,
    /// Unknown top-level fields, which every node must keep verbatim.
    extra: bool,
}

/// One copy of a delta on its way to a node.
#[derive(Debug, Clone)]
struct Copy {
    delta: usize,
    /// Sent in the legacy pointer form (`localContext` / `targetContext`).
    legacy: bool,
    /// The batch this copy starts is parsed from JSON text rather than from a `Value`.
    json: bool,
    /// A batch ends after this copy.
    cut: bool,
}

#[derive(Debug, Clone)]
struct Plan {
    /// Every delta at least once, some more than once, shuffled.
    copies: Vec<Copy>,
    /// All batches submitted at once (the store's writer groups them) or one by one.
    concurrent: bool,
}

fn target_spec() -> impl Strategy<Value = TargetSpec> {
    prop_oneof![
        4 => (0..ENTITIES.len(), proptest::option::of(0..CONTEXTS.len()))
            .prop_map(|(e, c)| TargetSpec::Entity(e, c)),
        1 => "\\PC{0,8}".prop_map(TargetSpec::Text),
        1 => any::<i64>().prop_map(TargetSpec::Int),
        1 => (-10_000_000i64..10_000_000).prop_map(TargetSpec::Cents),
        1 => any::<bool>().prop_map(TargetSpec::Bool),
    ]
}

fn delta_spec() -> impl Strategy<Value = DeltaSpec> {
    let timestamp = prop_oneof![
        8 => 1u64..4_000_000_000_000,
        1 => Just(1u64),
        1 => Just(rhizome::delta::MAX_SAFE_INTEGER),
    ];
    let negates = prop_oneof![
        3 => Just(Vec::new()),
        2 => vec(proptest::option::weighted(0.85, any::<Index>()), 1..3),
    ];
    (
        0..AUTHORS.len(),
        0..SYSTEMS.len(),
        timestamp,
        vec((0..ROLES.len(), target_spec()), 0..4),
        negates,
        proptest::bool::weighted(0.25),
    )
        .prop_map(
            |(author, system, timestamp, pointers, negates, extra)| DeltaSpec {
                author,
                system,
                timestamp,
                pointers,
                negates,
                extra,
            },
        )
}

fn plan(n: usize) -> impl Strategy<Value = Plan> {
    (vec(0..n, 0..=n), any::<bool>())
        .prop_flat_map(move |(extra, concurrent)| {
            let order: Vec<usize> = (0..n).chain(extra).collect();
            let flags = vec(
                (any::<bool>(), any::<bool>(), proptest::bool::weighted(0.35)),
                order.len(),
            );
            (Just(order).prop_shuffle(), flags, Just(concurrent))
        })
        .prop_map(|(order, flags, concurrent)| Plan {
            copies: order
                .into_iter()
                .zip(flags)
                .map(|(delta, (legacy, json, cut))| Copy {
                    delta,
                    legacy,
                    json,
                    cut,
                })
                .collect(),
            concurrent,
        })
}

fn scenario() -> impl Strategy<Value = (Vec<DeltaSpec>, Vec<Plan>)> {
    vec(delta_spec(), 1..12).prop_flat_map(|specs| {
        let n = specs.len();
        (Just(specs), vec(plan(n), NODES))
    })
}

fn delta_id(i: usize) -> String {
    format!("delta-{i:02}")
}

fn build(specs: &[DeltaSpec]) -> Vec<Delta> {
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let mut pointers: Vec<Pointer> = spec
                .negates
                .iter()
                .enumerate()
                .map(|(k, target)| {
                    let negated = match target {
                        Some(at) if i > 0 => delta_id(at.index(i)),
                        _ => format!("never-stored-{i}-{k}"),
                    };
                    Pointer::new(
                        NEGATES_ROLE,
                        Target::reference_in(negated, NEGATED_BY_CONTEXT),
                    )
                })
                .collect();
            pointers.extend(spec.pointers.iter().map(|(role, t)| {
                let target = match t {
                    TargetSpec::Entity(e, None) => Target::reference(ENTITIES[*e]),
                    TargetSpec::Entity(e, Some(c)) => {
                        Target::reference_in(ENTITIES[*e], CONTEXTS[*c])
                    }
                    TargetSpec::Text(s) => Target::String(s.clone()),
                    TargetSpec::Int(n) => Target::Number((*n).into()),
                    TargetSpec::Cents(n) => Target::Number(
                        Number::from_f64(*n as f64 / 100.0).expect("a finite decimal"),
                    ),
                    TargetSpec::Bool(b) => Target::Bool(*b),
                };
                Pointer::new(ROLES[*role], target)
            }));
            let mut extra = Map::new();
            if spec.extra {
                // Fields no version gives a meaning (`signature` has one: signed deltas).
                extra.insert("attestation".into(), json!(format!("att-{i}")));
                extra.insert("meta".into(), json!({"z": 1, "a": [true, null, "é"]}));
            }
            Delta {
                id: delta_id(i),
                timestamp: spec.timestamp,
                author: AUTHORS[spec.author].into(),
                system: SYSTEMS[spec.system].into(),
                pointers,
                extra,
            }
        })
        .collect()
}

/// The same delta in the legacy pointer form, unknown fields first and known fields in
/// reverse order (order must not matter). References carry their context either as
/// `targetContext` or inside the target, both legal.
fn legacy_json(d: &Delta) -> Value {
    let pointers: Vec<Value> = d
        .pointers
        .iter()
        .enumerate()
        .map(|(k, p)| match &p.target {
            Target::Reference(r) => match &r.context {
                Some(c) if k % 2 == 0 => {
                    json!({"localContext": p.role, "target": {"id": r.id}, "targetContext": c})
                }
                Some(c) => json!({"localContext": p.role, "target": {"id": r.id, "context": c}}),
                None => json!({"localContext": p.role, "target": {"id": r.id}}),
            },
            primitive => json!({"localContext": p.role, "target": primitive}),
        })
        .collect();
    let mut m = d.extra.clone();
    m.insert("pointers".into(), Value::Array(pointers));
    m.insert("system".into(), json!(d.system));
    m.insert("author".into(), json!(d.author));
    m.insert("timestamp".into(), json!(d.timestamp));
    m.insert("id".into(), json!(d.id));
    Value::Object(m)
}

enum Batch {
    Deltas(Vec<Delta>),
    Json(Vec<Value>),
}

async fn ingest(node: &Node, batch: Batch, origin: Origin) -> Vec<IngestOutcome> {
    let outcomes = match batch {
        Batch::Deltas(ds) => node.ingest(ds, origin).await,
        Batch::Json(vs) => {
            // Through the text parser, as deltas arriving in frames or HTTP bodies are.
            let parsed = vs
                .iter()
                .map(|v| Delta::parse(&v.to_string()).expect("a valid delta"))
                .collect();
            node.ingest(parsed, origin).await
        }
    };
    outcomes.expect("the store accepts writes")
}

/// Delivers `deltas` to `node` as `plan` says; returns every copy's outcome.
async fn deliver(node: &Node, deltas: &[Delta], plan: &Plan) -> Vec<IngestOutcome> {
    let mut batches = Vec::new();
    let mut current: Option<Batch> = None;
    for copy in &plan.copies {
        let d = &deltas[copy.delta];
        let wire = if copy.legacy {
            legacy_json(d)
        } else {
            serde_json::to_value(d).expect("a delta serializes")
        };
        let batch = current.get_or_insert_with(|| {
            if copy.json {
                Batch::Json(Vec::new())
            } else {
                Batch::Deltas(Vec::new())
            }
        });
        match batch {
            Batch::Json(vs) => vs.push(wire),
            // Decoded here, so the legacy form reaches `ingest` as a `Delta` too.
            Batch::Deltas(ds) => ds.push(Delta::from_value(&wire).expect("a valid delta")),
        }
        if copy.cut {
            batches.extend(current.take());
        }
    }
    batches.extend(current.take());

    let mut outcomes = Vec::new();
    if plan.concurrent {
        let mut tasks = tokio::task::JoinSet::new();
        for batch in batches {
            let node = node.clone();
            tasks.spawn(async move { ingest(&node, batch, Origin::Local).await });
        }
        while let Some(done) = tasks.join_next().await {
            outcomes.extend(done.expect("an ingest task"));
        }
    } else {
        for batch in batches {
            outcomes.extend(ingest(node, batch, Origin::Local).await);
        }
    }
    outcomes
}

/// Feeds `relay` the log of `source` as raw JSON, in log order and small batches, the
/// way a federation sender forwards stored deltas.
async fn relay(source: &Node, relay: &Node) -> Vec<IngestOutcome> {
    let log = source
        .store()
        .read_log(Seq(0), ReadLimit::All, None)
        .expect("scan the log")
        .records;
    let mut outcomes = Vec::new();
    for chunk in log.chunks(3) {
        let values = chunk
            .iter()
            .map(|r| serde_json::from_str(r.json()).expect("stored JSON parses"))
            .collect();
        let origin = Origin::Remote {
            system: source.system_id().to_owned(),
        };
        outcomes.extend(ingest(relay, Batch::Json(values), origin).await);
    }
    outcomes
}

/// The filters every node is asked, in their wire form.
fn filters() -> Vec<DeltaFilter> {
    [
        json!({}),
        json!({"includeNegated": true}),
        json!({"authors": ["alice"]}),
        json!({"authors": ["bob", "carol"], "includeNegated": true}),
        json!({"targetIds": ["prod_1"]}),
        json!({"targetIds": ["prod_2", "ünïcödé-✓"], "includeNegated": true}),
        json!({"targetIds": ["delta-00", "delta-01"], "includeNegated": true}),
        json!({"targetContexts": ["comments"]}),
        json!({"systems": ["node-b"], "includeNegated": false}),
        json!({"timestampRange": {"start": 1_000_000_000_000u64, "end": 3_000_000_000_000u64}}),
        json!({"ids": ["delta-00", "delta-03", "delta-99"]}),
        json!({"authors": ["alice"], "targetIds": ["prod_1", "user_1"]}),
    ]
    .iter()
    .map(|f| DeltaFilter::from_value(f).expect("a valid filter"))
    .collect()
}

/// Ids whose negation is asked about: every delta, entities (which `negates` pointers
/// may target) and ids never stored.
fn probes(deltas: &[Delta]) -> Vec<String> {
    let mut ids: Vec<String> = deltas.iter().map(|d| d.id.clone()).collect();
    ids.extend(ENTITIES.iter().map(|e| (*e).to_owned()));
    ids.extend(["never-stored-1-0".to_owned(), "delta-99".to_owned()]);
    ids
}

/// What a node holds, in a form two nodes can be compared by.
#[derive(Debug, PartialEq)]
struct Snapshot {
    head: Seq,
    /// Id -> the delta JSON as stored in the log.
    stored: BTreeMap<String, String>,
    /// Id -> `is_negated`.
    negated: BTreeMap<String, bool>,
    /// Id -> the ids of its negations.
    negations: BTreeMap<String, BTreeSet<String>>,
    /// Each filter's result ids (as a set: log order differs between nodes).
    queries: Vec<BTreeSet<String>>,
}

async fn snapshot(node: &Node, deltas: &[Delta]) -> Snapshot {
    let store = node.store();
    let log = store
        .read_log(Seq(0), ReadLimit::All, None)
        .expect("scan the log")
        .records;
    let stored: BTreeMap<String, String> = log
        .into_iter()
        .map(|r| {
            let json = r.json().to_owned();
            let d = Delta::parse(&json).expect("stored JSON is a valid delta");
            let by_id = node.get(&d.id).expect("get").expect("a logged id is found");
            assert_eq!(by_id.delta, d, "get({}) disagrees with the log", d.id);
            (d.id, json)
        })
        .collect();
    let mut negated = BTreeMap::new();
    let mut negations = BTreeMap::new();
    for id in probes(deltas) {
        negated.insert(id.clone(), store.is_negated(&id).expect("is_negated"));
        let of: BTreeSet<String> = store
            .negations_of(&id)
            .expect("negations_of")
            .into_iter()
            .map(|d| d.delta.id)
            .collect();
        negations.insert(id, of);
    }
    let mut queries = Vec::new();
    for filter in filters() {
        let q = Query {
            filter,
            ..Query::default()
        };
        let found = node.query(q).await.expect("query");
        queries.push(found.into_iter().map(|d| d.delta.id).collect());
    }
    Snapshot {
        head: store.head(),
        stored,
        negated,
        negations,
        queries,
    }
}

/// The store every node should converge to, from the delta set alone. Negation as the
/// spec has it: a delta is negated when a stored negation of it is not itself negated.
fn model(deltas: &[Delta]) -> Snapshot {
    let mut negations: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in deltas {
        for negated in d.negated_ids() {
            negations
                .entry(negated.to_owned())
                .or_default()
                .insert(d.id.clone());
        }
    }
    fn is_negated(id: &str, negations: &BTreeMap<String, BTreeSet<String>>) -> bool {
        // Terminates: negations only point at earlier deltas or at ids never stored.
        negations
            .get(id)
            .is_some_and(|by| by.iter().any(|n| !is_negated(n, negations)))
    }
    let probe_ids = probes(deltas);
    Snapshot {
        head: Seq(deltas.len() as u64),
        stored: deltas.iter().map(|d| (d.id.clone(), d.to_json())).collect(),
        negated: probe_ids
            .iter()
            .map(|id| (id.clone(), is_negated(id, &negations)))
            .collect(),
        negations: probe_ids
            .iter()
            .map(|id| (id.clone(), negations.get(id).cloned().unwrap_or_default()))
            .collect(),
        queries: filters()
            .iter()
            .map(|f| {
                deltas
                    .iter()
                    .filter(|d| f.matches(d))
                    .filter(|d| f.include_negated() || !is_negated(&d.id, &negations))
                    .map(|d| d.id.clone())
                    .collect()
            })
            .collect(),
    }
}

/// Fresh nodes, opened side by side: even ones in memory, odd ones on fjall in a
/// temporary directory (no fsync), so converging is also the two store backends
/// agreeing with each other and with the model.
async fn open_nodes(count: usize) -> (Vec<Node>, Vec<tempfile::TempDir>) {
    let mut dirs = Vec::new();
    let mut opening = tokio::task::JoinSet::new();
    for k in 0..count {
        let system_id = format!("node-{k}");
        let storage = if k % 2 == 0 {
            Storage::Memory
        } else {
            let dir = tempfile::tempdir().expect("a temp dir");
            let path = dir.path().join("data");
            dirs.push(dir);
            Storage::Path(path)
        };
        let config = NodeConfig {
            storage,
            system_id: Some(system_id),
            durability: Some(Durability::Buffered),
            ..Default::default()
        };
        opening.spawn(async move { (k, Node::open(config).await) });
    }
    let mut nodes = Vec::new();
    while let Some(opened) = opening.join_next().await {
        let (k, node) = opened.expect("an open task");
        nodes.push((k, node.expect("a node")));
    }
    nodes.sort_by_key(|(k, _)| *k);
    (nodes.into_iter().map(|(_, node)| node).collect(), dirs)
}

/// Closes the nodes, side by side, then removes the directories of those on disk.
fn close(nodes: Vec<Node>, dirs: Vec<tempfile::TempDir>) {
    std::thread::scope(|s| {
        for node in nodes {
            s.spawn(move || {
                node.close();
                drop(node);
            });
        }
    });
    drop(dirs);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

proptest! {
    // 24 cases keep this under ~30 s in debug; `PROPTEST_CASES=n` runs longer hunts.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(24),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_order_duplication_and_batching_converges((specs, plans) in scenario()) {
        let deltas = build(&specs);
        let n = deltas.len();
        let expected = model(&deltas);
        let rt = runtime();
        let (nodes, dirs) = rt.block_on(open_nodes(NODES + 1));
        let snapshots = rt.block_on(async {
            for (k, plan) in plans.iter().enumerate() {
                let outcomes = deliver(&nodes[k], &deltas, plan).await;
                let stored = outcomes
                    .iter()
                    .filter(|o| matches!(o, IngestOutcome::Stored(_)))
                    .count();
                let duplicates = outcomes
                    .iter()
                    .filter(|o| matches!(o, IngestOutcome::Duplicate(_)))
                    .count();
                assert_eq!(
                    (stored, duplicates),
                    (n, plan.copies.len() - n),
                    "node-{k}: each delta stored once, every other copy a duplicate: {outcomes:?}"
                );
            }
            let outcomes = relay(&nodes[0], &nodes[NODES]).await;
            assert!(
                outcomes.iter().all(|o| matches!(o, IngestOutcome::Stored(_))),
                "relay: {outcomes:?}"
            );
            let mut snapshots = Vec::new();
            for node in &nodes {
                snapshots.push(snapshot(node, &deltas).await);
            }
            snapshots
        });
        close(nodes, dirs);
        for (k, snap) in snapshots.iter().enumerate().skip(1) {
            prop_assert_eq!(snap, &snapshots[0], "node {} differs from node 0", k);
        }
        prop_assert_eq!(&snapshots[0], &expected, "the nodes agree, on the wrong store");
    }
}

// ---------------------------------------------------------------------------------
// Regressions: guarantees that property testing found broken, now fixed.
// ---------------------------------------------------------------------------------

/// A negation, as `rhizome::delta::negate` makes it.
fn negation(id: &str, negated: &[&str]) -> Delta {
    Delta {
        id: id.into(),
        timestamp: 1,
        author: "mallory".into(),
        system: "elsewhere".into(),
        pointers: negated
            .iter()
            .map(|n| Pointer::new(NEGATES_ROLE, Target::reference_in(*n, NEGATED_BY_CONTEXT)))
            .collect(),
        extra: Map::new(),
    }
}

/// Negations can form cycles, and delta ids are chosen by their authors, so a peer can
/// send four deltas that negate each other crosswise (P1 and P2 each negate Q1 and Q2,
/// which each negate P1 and P2). A plain depth-bounded recursion makes ~2^32 store reads
/// for that; `is_negated` memoises per (delta, depth) and answers at once.
#[test]
fn negation_cycles_are_answered_in_bounded_time() {
    let rt = runtime();
    let node = rt.block_on(async {
        let node = Node::in_memory("cycle").await.expect("a node");
        let cycle = vec![
            negation("P1", &["Q1", "Q2"]),
            negation("P2", &["Q1", "Q2"]),
            negation("Q1", &["P1", "P2"]),
            negation("Q2", &["P1", "P2"]),
        ];
        node.ingest(cycle, Origin::Local).await.expect("ingest");
        node
    });
    let store = node.store().clone();
    let (tx, rx) = mpsc::channel();
    // A plain thread, so a hang fails this test instead of blocking the runtime's drop.
    std::thread::spawn(move || {
        let _ = tx.send(store.is_negated("P1"));
    });
    let answer = rx.recv_timeout(Duration::from_secs(5));
    assert!(
        answer.is_ok(),
        "is_negated(\"P1\") did not answer within 5 s"
    );
}

/// A one-pointer delta whose target is `number`, spelled as given.
fn with_number(number: &str) -> String {
    format!(
        r#"{{"id":"n-{number}","timestamp":1,"author":"a","system":"js","pointers":[{{"role":"x","target":{number}}}]}}"#
    )
}

/// A number target keeps the value its author sent: serde_json is built with
/// `float_roundtrip` and `arbitrary_precision`, so `0.009099999999999999` (a JavaScript
/// peer's value) is not stored and forwarded as `0.0091`, a different number.
#[test]
fn numbers_keep_the_value_their_author_sent() {
    // What the author asserted: the exact value of the text (Rust's own parser is exact).
    let asserted: f64 = "0.009099999999999999".parse().expect("a float");
    let d = Delta::parse(&with_number("0.009099999999999999")).expect("a valid delta");
    let kept = match &d.pointers[0].target {
        Target::Number(n) => n.as_f64(),
        other => panic!("{other:?}"),
    };
    assert_eq!(kept, Some(asserted), "stored as {}", d.to_json());
}

/// Two nodes store the same JSON for the same delta id, even for a 39-digit integer
/// target that no f64 holds exactly (numbers are kept as written).
#[test]
fn relayed_numbers_are_stored_identically() {
    runtime().block_on(async {
        let first = Node::in_memory("first").await.expect("a node");
        let second = Node::in_memory("second").await.expect("a node");
        let text = with_number("123456789012345678901234567890123456789");
        let parsed = Delta::parse(&text).expect("a valid delta");
        first
            .ingest(vec![parsed], Origin::Local)
            .await
            .expect("ingest");
        relay(&first, &second).await;
        let stored = |node: &Node| {
            node.store()
                .read_log(Seq(0), ReadLimit::Batch(1), None)
                .expect("scan")
                .records
                .pop()
                .map(|r| r.json().to_owned())
        };
        assert_eq!(stored(&first), stored(&second), "the hop changed the delta");
    });
}
