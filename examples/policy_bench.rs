//! What trust policies cost: per delta on the admission path, and on a link end to end.
//!
//! `cargo run --release --example policy_bench [-- --deltas N --rounds R --only eval|link]`
//!
//! 1. **Evaluation**: the same N generated deltas (three pointers, 16 authors, 4 systems)
//!    are judged by [`Admission::judge`], the function every remote delta goes through,
//!    under four configurations: (a) nothing to check, (b) the declarative
//!    [`TrustPolicy`] (author and system allow-lists, max clock skew), (c) one trivial
//!    Rhai script, (d) three realistic Rhai scripts, and each of (d)'s scripts alone.
//!    Every delta passes every configuration, so each one does its full work (a refusal
//!    would stop early).
//! 2. **Link**: two in-process nodes on temporary stores over a real loopback WebSocket.
//!    The receiver pulls from the source, once with the three scripts of (d) as trust
//!    policies and once without; every delta is made to pass them. *Initial sync*: the
//!    source holds N deltas, timed from `connect_to_remote` until the receiver's head is N.
//!    *Live*: the link is up and caught up first, then N deltas are ingested on the source
//!    in batches of 1000, timed until the receiver holds them all.
//!
//! Each figure is the median of R rounds (default 3). Nothing here asserts on timing; the checks
//! only make sure each run measured what it claims (no refusals, the scripts ran).

#[path = "bench/stats.rs"]
mod stats;

use std::hint::black_box;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use rhizome::admission::{Admission, Judged, Rules};
use rhizome::delta::{new_delta, Signed};
use rhizome::federation::{InitialSync, LinkConfig, SyncMode};
use rhizome::policy::{LinkContext, PolicyDirs, PolicySet};
use rhizome::Server;
use rhizome::{
    Delta, Federation, FederationLink, LinkStatus, Node, NodeConfig, Origin, Pointer, Target,
};
use rhizome::{IngestOutcome, Storage, TrustPolicy};
use tempfile::TempDir;

use stats::{median, thousands};

// The `rhizome` binary runs with mimalloc, and judging a delta with scripts allocates a
// lot (the delta as a Rhai map, each script's scope): measure with the same allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Distinct authors and systems among the generated deltas; all are on the allow-lists.
const AUTHORS: usize = 16;
const SYSTEMS: usize = 4;
/// The clock-skew limit, declarative and scripted alike.
const MAX_SKEW_MS: u64 = 60_000;
/// Deltas per `Node::ingest` call on the source, as a client posting arrays would send.
const INGEST_BATCH: usize = 1000;
/// How long a link may take to connect and finish its (empty) initial sync.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A run fails when the receiver's head stops moving this long: slow is fine, stuck is a bug.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Parser)]
#[command(about = "Cost of trust policies per delta and on a federation link")]
struct Args {
    /// Deltas per measurement.
    #[arg(long, default_value_t = 100_000)]
    deltas: usize,
    /// Rounds per figure; the median is printed.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Run one part only.
    #[arg(long, value_enum)]
    only: Option<Part>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// 1. evaluation cost per delta.
    Eval,
    /// 2. link throughput.
    Link,
}

/// The three realistic trust scripts of (d), as an operator would write them. Files run in
/// name order, hence the numbers.
fn realistic_scripts() -> Vec<(&'static str, String)> {
    let authors: Vec<String> = (0..AUTHORS).map(|i| format!("{:?}", author(i))).collect();
    vec![
        (
            "10-authors.rhai",
            format!(
                "// Only these authors are trusted.\nlet trusted = [{}];\ndelta.author in trusted\n",
                authors.join(", ")
            ),
        ),
        (
            "20-verified.rhai",
            r#"// Only deltas that carry a `verified` pointer.
if !has_role(delta, "verified") { reject("no verified pointer") }
true
"#
            .to_owned(),
        ),
        (
            "30-clock.rhai",
            format!(
                r#"// Nothing from the future (beyond some clock skew).
if delta.timestamp > now() + {MAX_SKEW_MS} {{ reject("timestamp in the future") }}
true
"#
            ),
        ),
    ]
}

/// Makes sure each realistic script refuses what it is meant to: a script that passed
/// everything by mistake would make the figures meaningless.
fn check_scripts_refuse(set: &PolicySet) -> Result<()> {
    let mut stranger = bench_delta(0);
    stranger.author = "mallory".into();
    let mut unverified = bench_delta(0);
    unverified.pointers.retain(|p| p.role != "verified");
    let mut future = bench_delta(0);
    future.timestamp += 10 * MAX_SKEW_MS;
    for (bad, script) in [
        (stranger, "10-authors.rhai"),
        (unverified, "20-verified.rhai"),
        (future, "30-clock.rhai"),
    ] {
        match bench_admission().judge(&Rules::default(), set, &bad, &Signed::Unsigned, &|_| None) {
            Some(Judged::Rejected { policy, .. }) if policy.ends_with(script) => {}
            other => bail!("{script} should refuse {bad:?}, got {other:?}"),
        }
    }
    Ok(())
}

/// Writes `scripts` into a fresh policies folder; the folder lives as long as the `TempDir`.
fn policies_dir(scripts: &[(&str, String)]) -> Result<TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("policy-bench-")
        .tempdir()
        .context("cannot create a temp dir for the scripts")?;
    for (name, source) in scripts {
        std::fs::write(dir.path().join(name), source)
            .with_context(|| format!("cannot write {name}"))?;
    }
    Ok(dir)
}

fn dirs(policies: &Path) -> PolicyDirs {
    PolicyDirs {
        policies: Some(policies.to_path_buf()),
        filters: None,
    }
}

/// Compiles `scripts` as the node would: written to a policies folder, then loaded. A
/// script that does not compile would reject everything and measure the wrong thing, so
/// it is an error here. The folder is gone afterwards; the set keeps what it compiled.
fn compiled(scripts: &[(&str, String)]) -> Result<PolicySet> {
    let dir = policies_dir(scripts)?;
    let set = PolicySet::load(&dirs(dir.path()), None).context("cannot load the scripts")?;
    if let Some(e) = set.errors().first() {
        bail!("a bench script does not compile: {e}");
    }
    Ok(set)
}

fn author(i: usize) -> String {
    format!("author-{}", i % AUTHORS)
}

/// A realistic delta that passes every policy here: a reference in a context, the
/// `verified` flag and a rating; timestamped now.
fn bench_delta(i: usize) -> Delta {
    new_delta(
        author(i),
        format!("system-{}", i % SYSTEMS),
        vec![
            Pointer::new(
                "item",
                Target::reference_in(format!("item-{}", i % 1000), "items"),
            ),
            Pointer::new("verified", true.into()),
            Pointer::new("rating", ((i % 5) as i64 + 1).into()),
        ],
    )
}

// ---- 1. evaluation cost per delta ----

/// What a remote delta on an inbound pull link is judged with (no pull filter).
fn bench_admission() -> Admission {
    Admission::new(
        LinkContext {
            id: "bench-link".into(),
            name: "bench-link".into(),
            remote_system: "bench-peer".into(),
            remote_url: String::new(),
            mode: "pull".into(),
            direction: "inbound".into(),
            peer: Default::default(),
        },
        None,
        true,
    )
}

struct EvalCase {
    label: String,
    trust: Rules,
    set: PolicySet,
}

/// Nanoseconds per delta to judge every delta once. A refusal would end that delta's
/// evaluation early and flatter the figure, so any refusal is an error.
fn time_eval(admission: &Admission, case: &EvalCase, deltas: &[Delta]) -> Result<f64> {
    // Warm-up: caches, branch predictors, the allocator's free lists.
    for d in deltas.iter().take(deltas.len() / 100) {
        black_box(admission.judge(&case.trust, &case.set, d, &Signed::Unsigned, &|_| None));
    }
    let start = Instant::now();
    let mut refused = 0usize;
    for d in deltas {
        let verdict = admission.judge(
            &case.trust,
            &case.set,
            black_box(d),
            &Signed::Unsigned,
            &|_| None,
        );
        if black_box(verdict).is_some() {
            refused += 1;
        }
    }
    let nanos = start.elapsed().as_nanos() as f64;
    ensure!(refused == 0, "{}: {refused} deltas refused", case.label);
    Ok(nanos / deltas.len() as f64)
}

fn bench_eval(args: &Args) -> Result<()> {
    let deltas: Vec<Delta> = (0..args.deltas).map(bench_delta).collect();
    let declarative = TrustPolicy {
        trusted_authors: Some((0..AUTHORS).map(author).collect()),
        trusted_systems: Some((0..SYSTEMS).map(|i| format!("system-{i}")).collect()),
        max_clock_skew_ms: Some(MAX_SKEW_MS),
        ..Default::default()
    };
    let realistic = compiled(&realistic_scripts())?;
    check_scripts_refuse(&realistic)?;
    // (c) and (d) run with the declarative policy open, so they show the scripts' own cost.
    let open = TrustPolicy::default;
    let case = |label: &str, trust: TrustPolicy, set: PolicySet| EvalCase {
        label: label.to_owned(),
        trust: Rules {
            trust: std::sync::Arc::new(trust),
            ..Default::default()
        },
        set,
    };
    let mut cases = vec![
        case(
            "(a) nothing to check (baseline)",
            open(),
            PolicySet::empty(),
        ),
        case(
            "(b) declarative TrustPolicy",
            declarative,
            PolicySet::empty(),
        ),
        case(
            "(c) 1 Rhai script: `true`",
            open(),
            compiled(&[("10-true.rhai", "true\n".to_owned())])?,
        ),
        case("(d) 3 Rhai scripts (realistic)", open(), realistic),
    ];
    // (d)'s scripts one at a time: which idiom costs what. Each still pays for turning
    // the delta into a Rhai map, as (c) does.
    for script in realistic_scripts() {
        let label = format!("  (d) only {}", script.0);
        cases.push(case(&label, open(), compiled(&[script])?));
    }
    let admission = bench_admission();
    // Rounds interleave the cases, so a slow moment of the machine hits all of them alike.
    let mut nanos = vec![Vec::new(); cases.len()];
    for _ in 0..args.rounds {
        for (case, out) in cases.iter().zip(&mut nanos) {
            out.push(time_eval(&admission, case, &deltas)?);
        }
    }
    let nanos: Vec<f64> = nanos.into_iter().map(median).collect();
    let reference = nanos[1];

    println!(
        "\n1. evaluation per delta: Admission::judge on {} deltas ({AUTHORS} authors, {SYSTEMS} \
         systems, 3 pointers), rounds: {}",
        thousands(args.deltas as f64),
        args.rounds
    );
    println!(
        "{:<36} {:>10} {:>14} {:>10}",
        "configuration", "ns/delta", "deltas/s", "cost/(b)"
    );
    for (case, ns) in cases.iter().zip(&nanos) {
        println!(
            "{:<36} {:>10} {:>14} {:>9.2}x",
            case.label,
            thousands(*ns),
            thousands(1e9 / ns),
            ns / reference
        );
    }
    println!("(b): authors and systems allow-lists plus max clock skew {MAX_SKEW_MS} ms.");
    println!(
        "(d): author allow-list (array `in`), has_role(delta, \"verified\"), no future \
         timestamps (now()); `only`: one of them alone."
    );
    Ok(())
}

// ---- 2. link throughput ----

/// A node on a temporary store, served on a free loopback port.
async fn start_node(system_id: &str, policies: Option<&Path>) -> Result<Server> {
    let node = Node::open(NodeConfig {
        storage: Storage::Memory,
        system_id: Some(system_id.to_owned()),
        policies: policies.map(dirs).unwrap_or_default(),
        ..Default::default()
    })
    .await
    .with_context(|| format!("cannot open node {system_id}"))?;
    let fed = Federation::new(node, Default::default())?;
    Server::bind(fed, "127.0.0.1:0")
        .await
        .with_context(|| format!("cannot serve node {system_id}"))
}

/// Ingests `deltas` as local deltas in batches; each must be stored (fresh ids).
async fn ingest(node: &Node, deltas: &[Delta]) -> Result<()> {
    for batch in deltas.chunks(INGEST_BATCH) {
        let outcomes = node
            .ingest(batch.to_vec(), Origin::Local)
            .await
            .context("ingest on the source")?;
        if let Some(o) = outcomes
            .iter()
            .find(|o| !matches!(o, IngestOutcome::Stored(_)))
        {
            bail!("the source did not store a bench delta: {o:?}");
        }
    }
    Ok(())
}

/// Waits until the receiver's log holds `n` deltas, failing if it stops growing.
async fn wait_head(node: &Node, link: &FederationLink, n: u64) -> Result<()> {
    let mut head = node.store().watch_head();
    loop {
        let now = head.borrow_and_update().0;
        if now >= n {
            return Ok(());
        }
        match tokio::time::timeout(STALL_TIMEOUT, head.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => bail!("the receiver's store closed at {now} of {n} deltas"),
            // Refused deltas never arrive: the link's counters and status say why.
            Err(_) => bail!(
                "the receiver is stuck at {now} of {n} deltas for {}s; link: {:?}",
                STALL_TIMEOUT.as_secs(),
                link.info()
            ),
        }
    }
}

/// Waits until the link is up and its initial sync is complete. A pulling link shows
/// `connected` for an instant before `syncing`, so the sync's completion time is what
/// proves the source has placed its live cursor.
async fn wait_synced(link: &FederationLink) -> Result<()> {
    let mut status = link.watch_status();
    let synced = status.wait_for(|s| {
        *s == LinkStatus::Error
            || (*s == LinkStatus::Connected && link.stats().last_sync_timestamp.is_some())
    });
    // The watch guard is dropped here, before `link.info()` reads the status again.
    let connected = matches!(
        tokio::time::timeout(CONNECT_TIMEOUT, synced).await,
        Ok(Ok(s)) if *s == LinkStatus::Connected
    );
    ensure!(
        connected,
        "the link did not connect and sync within {}s: {:?}",
        CONNECT_TIMEOUT.as_secs(),
        link.info()
    );
    Ok(())
}

/// One link run: fresh nodes, the receiver with or without the trust scripts. Returns
/// deltas per second at the receiver.
async fn link_run(n: usize, live: bool, policies: Option<&Path>) -> Result<f64> {
    let source = start_node("bench-source", None).await?;
    let receiver = start_node("bench-receiver", policies).await?;
    let deltas: Vec<Delta> = (0..n).map(bench_delta).collect();
    let config = LinkConfig {
        mode: SyncMode::Pull,
        initial_sync: if live {
            InitialSync::None
        } else {
            InitialSync::Full
        },
        ..Default::default()
    };
    let secs = if live {
        let link = receiver
            .federation()
            .connect_to_remote(&source.url(), config)
            .context("connect")?;
        wait_synced(&link).await?;
        let start = Instant::now();
        ingest(source.node(), &deltas).await?;
        wait_head(receiver.node(), &link, n as u64).await?;
        start.elapsed().as_secs_f64()
    } else {
        ingest(source.node(), &deltas).await?;
        let start = Instant::now();
        let link = receiver
            .federation()
            .connect_to_remote(&source.url(), config)
            .context("connect")?;
        wait_head(receiver.node(), &link, n as u64).await?;
        start.elapsed().as_secs_f64()
    };
    // The figure is only about scripts if they really judged every delta.
    let evaluations = receiver
        .node()
        .policies()
        .current()
        .counters()
        .evaluations
        .load(std::sync::atomic::Ordering::Relaxed);
    let expected = if policies.is_some() { 3 * n as u64 } else { 0 };
    ensure!(
        evaluations == expected,
        "{evaluations} script evaluations, expected {expected}"
    );
    receiver.shutdown().await.context("receiver shutdown")?;
    source.shutdown().await.context("source shutdown")?;
    Ok(n as f64 / secs)
}

async fn bench_link(args: &Args) -> Result<()> {
    let scripts = policies_dir(&realistic_scripts())?;
    let n = args.deltas;
    println!(
        "\n2. link throughput: {} deltas, receiver pulls from source, in-process, temporary \
         stores, rounds: {}",
        thousands(n as f64),
        args.rounds
    );
    let mut rows = Vec::new();
    for (label, live) in [("initial sync (full)", false), ("live stream", true)] {
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for round in 0..args.rounds {
            // Alternate which runs first, so neither always gets the warmer machine.
            for scripted in [round % 2 == 1, round % 2 == 0] {
                let rate = link_run(n, live, scripted.then(|| scripts.path())).await?;
                println!(
                    "  {label}, round {}, {}: {} deltas/s",
                    round + 1,
                    if scripted { "3 scripts" } else { "no scripts" },
                    thousands(rate)
                );
                if scripted { &mut with } else { &mut without }.push(rate);
            }
        }
        rows.push((label, median(without), median(with)));
    }
    println!(
        "\n{:<22} {:>22} {:>22} {:>8}",
        "scenario", "deltas/s, no scripts", "deltas/s, 3 scripts", "ratio"
    );
    for (label, without, with) in rows {
        println!(
            "{:<22} {:>22} {:>22} {:>7.2}x",
            label,
            thousands(without),
            thousands(with),
            with / without
        );
    }
    println!("(ratio: with scripts / without; the receiver's scripts are those of (d))");
    Ok(())
}

/// Prints the error chain on one line and exits 1, as the `rhizome` binary does.
fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    ensure!(
        args.deltas > 0 && args.rounds > 0,
        "--deltas and --rounds must be positive"
    );
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; use `cargo run --release` for meaningful figures");
    }
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    println!("policy bench: {cores} cores");
    // Part 1 is plain CPU work on this thread: no runtime competing for the cores.
    if args.only != Some(Part::Link) {
        bench_eval(&args)?;
    }
    if args.only != Some(Part::Eval) {
        let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
        runtime.block_on(bench_link(&args))?;
    }
    Ok(())
}
