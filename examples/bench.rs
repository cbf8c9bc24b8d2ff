//! Federation throughput, delivery latency and memory between `rhizome serve` processes
//! over loopback, each figure set against two bounds measured in the same run.
//!
//! `cargo build --release && cargo run --release --example bench -- [SCENARIO] [--memory]
//!  [--deltas N] [--rate R] [--no-latency] [--rhizome PATH] [--link plain,tls,auth]
//!  [--rounds R] [--signing unsigned,signed]`
//!
//! Scenarios (`all`, the default, runs every one):
//! - `decode`: the JSON-decode bound: the same deltas' `sync_batch` frames parsed in this
//!   process, nothing stored (`bench/bounds.rs`).
//! - `store`: the store bound: the receiver's store writes alone (same keyspaces, batches
//!   of one frame, same fsync policy), no network (`bench/bounds.rs`).
//! - `verify`: the verification bound: ed25519 signatures of signed bench deltas checked
//!   by the crate alone, one thread per core (`bench/verify_bound.rs`); also measured
//!   whenever `sync` runs signed deltas.
//! - `sync`: A is loaded with N deltas over `POST /deltas` (its own row), then B starts
//!   with `--connect A --mode pull --initial-sync full`; timed from B's spawn until B's
//!   `store.head` is N. N = 100k and 1M.
//! - `live`: B linked to A (`bidirectional`, `--initial-sync full` of empty stores, so
//!   nothing posted later can be missed) before A holds anything; N deltas posted to A;
//!   timed from the first POST until B holds them all. N = 500k. `--rate` paces the
//!   posting, for latency below saturation.
//! - `live-policies`: `live` with three Rhai trust scripts on both nodes (those of
//!   `policy_bench`); checks that B's scripts judged every delta.
//! - `hub`: 10 spokes linked to one hub; N deltas posted to the hub; timed until every
//!   spoke holds them all. N = 100k.
//! - `slowloris`: one node held at its connection cap by sockets that sent half a request
//!   head; `/status` latency while they are held against the idle node's, and how long
//!   SIGTERM takes with them open (`bench/slowloris.rs`; its own table).
//!
//! `--link` runs `sync` and `live` over other links than plain HTTP: `tls` (https/wss with
//! a CA made for the run) and `auth` (both ends prove keys the other knows); several kinds
//! alternate within each of `--rounds` rounds, and a table gives each against `plain` in
//! the same round (`bench/links.rs`, `bench/compare.rs`).
//!
//! `--signing unsigned,signed` does the same for `sync` with signed deltas (each signed by
//! its author's key as A is loaded, `bench/signing.rs`): both kinds alternate within each
//! round, signed is set against unsigned of the same round and against the verification
//! bound, and a signed run fails unless B holds its deltas with signatures that verify.
//!
//! Every scenario runs its nodes as separate processes (`target/release/rhizome`, built by
//! `cargo build --release`, or the binary `--rhizome PATH` names), durable fjall stores in
//! temp dirs, or in-memory stores with `--memory`. Peak RSS is each node's `VmHWM`; CPU
//! seconds each node's user + system time, steadier than wall time on a shared machine.
//! Delivery latency: see `bench/load.rs` (probes, one delta in 100, looked up by id on the
//! receiver; late by at most one poll). Every row is also printed as a ratio to both bounds;
//! the table is Markdown, ready for BENCHMARKS.md.

#[path = "bench/bounds.rs"]
mod bounds;
#[path = "bench/compare.rs"]
mod compare;
#[path = "bench/links.rs"]
mod links;
#[path = "bench/load.rs"]
mod load;
#[path = "bench/node.rs"]
mod node;
#[path = "bench/scenarios.rs"]
mod scenarios;
#[path = "bench/signing.rs"]
mod signing;
#[path = "bench/slowloris.rs"]
mod slowloris;
#[path = "bench/stats.rs"]
mod stats;
#[path = "bench/verify_bound.rs"]
mod verify_bound;

use stats::thousands;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use compare::{Axis, Variant};
use links::LinkKind;
use scenarios::{Ctx, Latency};
use signing::{Signers, Signing};

// The nodes run with mimalloc; the bounds measured in this process must too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Federation throughput, latency and memory between rhizome processes")]
struct Args {
    #[arg(value_enum, default_value = "all")]
    scenario: Scenario,
    /// Run the nodes with `--memory` (no fsync), and the store bound without fsync.
    #[arg(long)]
    memory: bool,
    /// Deltas per run, for every scenario (default: 100k / 1M sync, 500k live, 100k hub).
    #[arg(long)]
    deltas: Option<usize>,
    /// Spokes of the hub.
    #[arg(long, default_value_t = 10)]
    spokes: usize,
    /// Deltas per `POST /deltas` array.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Requests in flight while posting, so the node's group commit has work to merge.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Post at this many deltas per second instead of as fast as the node takes them
    /// (latency below saturation).
    #[arg(long)]
    rate: Option<f64>,
    /// Do not ask receivers for probes (no latency figures): shows what probing costs.
    #[arg(long)]
    no_latency: bool,
    /// The `rhizome` binary the nodes run (default: `target/<profile>/rhizome`). Two builds
    /// compared with one bench: `--rhizome /tmp/old/rhizome`, then `--rhizome /tmp/new/rhizome`.
    #[arg(long, env = "RHIZOME_BIN", value_name = "PATH")]
    rhizome: Option<std::path::PathBuf>,
    /// The links `sync` and `live` run over, comma-separated: `plain` (http), `tls`
    /// (https/wss), `auth` (key proofs both ways). Several alternate within each round.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "plain",
        value_name = "KINDS"
    )]
    link: Vec<LinkKind>,
    /// Rounds of `sync` and `live` (each runs every `--link` kind once per round).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The deltas `sync` loads A with, comma-separated: `unsigned`, `signed` (each signed
    /// by its author's key). Several alternate within each round.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "unsigned",
        value_name = "KINDS"
    )]
    signing: Vec<Signing>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    Sync,
    Live,
    LivePolicies,
    Hub,
    Slowloris,
    Decode,
    Store,
    Verify,
    All,
}

impl Scenario {
    fn runs(self, which: Scenario) -> bool {
        self == which || self == Scenario::All
    }
}

/// One line of the table.
pub struct Row {
    scenario: String,
    n: usize,
    secs: Option<f64>,
    rate: f64,
    latency: Option<Latency>,
    rss_src: Option<u64>,
    rss_dst: Option<u64>,
    /// CPU seconds the source and the receiver(s) spent on the run.
    cpu: Option<(Option<f64>, Option<f64>)>,
}

impl Row {
    pub fn new(scenario: String, n: usize, (secs, rate): (f64, f64)) -> Row {
        Row {
            scenario,
            n,
            secs: Some(secs),
            rate,
            latency: None,
            rss_src: None,
            rss_dst: None,
            cpu: None,
        }
    }

    fn bound(scenario: String, n: usize, rate: f64) -> Row {
        Row {
            secs: None,
            ..Row::new(scenario, n, (0.0, rate))
        }
    }

    pub fn rss(self, src: Option<u64>, dst: Option<u64>) -> Row {
        Row {
            rss_src: src,
            rss_dst: dst,
            ..self
        }
    }

    pub fn cpu(self, src: Option<f64>, dst: Option<f64>) -> Row {
        Row {
            cpu: Some((src, dst)),
            ..self
        }
    }

    pub fn latency(self, latency: Option<Latency>) -> Row {
        Row { latency, ..self }
    }
}

/// The 1-minute load average (Linux): how busy the shared machine was around a run.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// What else used the machine during a run: the load average, and this process's own CPU
/// seconds since `bench_cpu_at_start` (generating and posting deltas, polling).
pub fn machine_note(bench_cpu_at_start: Option<f64>) -> String {
    let own = node::cpu_secs_of("self")
        .zip(bench_cpu_at_start)
        .map_or("?".to_owned(), |(now, start)| format!("{:.1}", now - start));
    format!("load average {}, bench process {own} CPU-s", load_average())
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("-".to_owned(), |k| format!("{:.0}", k as f64 / 1024.0))
}

fn print_table(rows: &[Row], decode: f64, store: &BTreeMap<usize, f64>) {
    println!(
        "\n| scenario | N | deltas/s | s | p50 ms | p99 ms | RSS src MiB | RSS dst MiB | \
         CPU s src / dst | / decode | / store |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let secs = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("{s:.2}"));
    let ratio = |rate: f64, bound: Option<f64>| {
        bound.map_or("-".to_owned(), |b| format!("{:.2}", rate / b))
    };
    for r in rows {
        let (p50, p99) = r
            .latency
            .as_ref()
            .map_or(("-".to_owned(), "-".to_owned()), |l| {
                (format!("{:.0}", l.p50_ms), format!("{:.0}", l.p99_ms))
            });
        println!(
            "| {} | {} | {} | {} | {p50} | {p99} | {} | {} | {} | {} | {} |",
            r.scenario,
            thousands(r.n as f64),
            thousands(r.rate),
            r.secs.map_or("-".to_owned(), |s| format!("{s:.2}")),
            mib(r.rss_src),
            mib(r.rss_dst),
            r.cpu.map_or("-".to_owned(), |(a, b)| format!(
                "{} / {}",
                secs(a),
                secs(b)
            )),
            ratio(r.rate, Some(decode)),
            ratio(r.rate, store.get(&r.n).copied()),
        );
    }
    for r in rows {
        if let Some(l) = &r.latency {
            println!(
                "latency of `{}`: {} probes, receivers asked every {:.1} ms on average",
                r.scenario, l.samples, l.mean_poll_ms
            );
        }
    }
}

/// Prints the error chain on one line and exits 1, as the `rhizome` binary does.
#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; use `cargo run --release` for meaningful figures");
    }
    anyhow::ensure!(
        args.deltas != Some(0)
            && args.batch > 0
            && args.rounds > 0
            && args.rate.is_none_or(|r| r > 0.0),
        "--deltas, --batch, --rounds and --rate must be positive"
    );
    let mut kinds = args.link.clone();
    kinds.sort();
    kinds.dedup();
    let mut signings = args.signing.clone();
    signings.sort();
    signings.dedup();
    let s = args.scenario;
    let sizes = |default: &[usize]| args.deltas.map_or(default.to_vec(), |n| vec![n]);
    let sync_sizes = if s.runs(Scenario::Sync) {
        sizes(&[100_000, 1_000_000])
    } else {
        vec![]
    };
    let live_sizes = if s.runs(Scenario::Live) || s.runs(Scenario::LivePolicies) {
        sizes(&[500_000])
    } else {
        vec![]
    };
    let hub_sizes = if s.runs(Scenario::Hub) {
        sizes(&[100_000])
    } else {
        vec![]
    };
    let mut store_sizes: Vec<usize> = [&sync_sizes[..], &live_sizes, &hub_sizes].concat();
    if s == Scenario::Store {
        store_sizes = sizes(&[100_000, 500_000, 1_000_000]);
    }
    store_sizes.sort_unstable();
    store_sizes.dedup();

    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    println!(
        "bench: {} stores, {cores} cores (load average {}), POST arrays of {}, {} in flight{}",
        if args.memory {
            "memory (no fsync)"
        } else {
            "durable (fsync per batch)"
        },
        load_average(),
        args.batch,
        args.concurrency,
        args.rate
            .map_or(String::new(), |r| format!(", paced at {r:.0} deltas/s")),
    );
    let mut rows = Vec::new();

    // The bounds first, in this process, while no node runs.
    let decode_n = args.deltas.unwrap_or(100_000).min(100_000);
    let d = tokio::task::spawn_blocking(move || bounds::decode_bound(decode_n, 3))
        .await
        .context("the decode bound panicked")??;
    println!(
        "  decode bound: {:.0} deltas/s (+ validation: {:.0})",
        d.decode, d.decode_validate
    );
    rows.push(
        Row::bound("decode bound: frames parsed".into(), decode_n, d.decode)
            .cpu(None, d.cpu_decode),
    );
    rows.push(
        Row::bound("decode + validation".into(), decode_n, d.decode_validate)
            .cpu(None, d.cpu_validate),
    );
    let mut store = BTreeMap::new();
    for &n in &store_sizes {
        let memory = args.memory;
        let bound = tokio::task::spawn_blocking(move || bounds::store_bound(n, memory))
            .await
            .context("the store bound panicked")??;
        println!("  store bound N={n}: {:.0} deltas/s", bound.rate);
        store.insert(n, bound.rate);
        let label = format!("store bound: appends of {}", bounds::FRAME_DELTAS);
        rows.push(Row::bound(label, n, bound.rate).cpu(None, bound.cpu));
    }

    let signers = Signers::new()?;
    // Round -> the verification bound measured just before that round's runs: the shared
    // host moves it by a third between minutes, so each signed run meets its own.
    let mut verify = BTreeMap::new();
    let signed_sync = !sync_sizes.is_empty() && signings.contains(&Signing::Signed);
    if s.runs(Scenario::Verify) && !signed_sync {
        let (rate, bound_rows) = measure_verify(&signers, None).await?;
        verify.insert(0, rate);
        rows.extend(bound_rows);
    }

    let mut failures = Vec::new();
    let mut slowloris = None;
    let mut runs = Vec::new();
    if !sync_sizes.is_empty()
        || !live_sizes.is_empty()
        || !hub_sizes.is_empty()
        || s.runs(Scenario::Slowloris)
    {
        let ctx = context(&args, signers)?;
        let mut record = |what: String, result: Result<Vec<Row>>| match result {
            Ok(r) => rows.extend(r),
            // One failed run is reported and the others still run: the table stays.
            Err(e) => {
                eprintln!("FAILED {what}: {e:#}");
                failures.push(what);
            }
        };
        for round in 0..args.rounds {
            if signed_sync {
                match measure_verify(&ctx.signers, Some(round)).await {
                    Ok((rate, bound_rows)) => {
                        verify.insert(round, rate);
                        record(String::new(), Ok(bound_rows));
                    }
                    Err(e) => record(format!("verification bound, round {}", round + 1), Err(e)),
                }
            }
            for &n in &sync_sizes {
                for variant in compare::order(&kinds, &signings, round) {
                    let what = format!("sync N={}", thousands(n as f64));
                    let result = scenarios::sync(&ctx, n, variant).await;
                    let label = format!(
                        "{what} ({} link, {} deltas, round {})",
                        variant.link.name(),
                        variant.signing.name(),
                        round + 1
                    );
                    if let Ok(r) = &result {
                        runs.extend(comparable(what, variant, round, r));
                    }
                    record(label, result);
                }
            }
            for &n in &live_sizes {
                if !s.runs(Scenario::Live) {
                    continue;
                }
                for variant in compare::order(&kinds, &[Signing::Unsigned], round) {
                    let what = format!("live N={}", thousands(n as f64));
                    let result = scenarios::live(&ctx, n, false, variant.link).await;
                    let label =
                        format!("{what} ({} link, round {})", variant.link.name(), round + 1);
                    if let Ok(r) = &result {
                        runs.extend(comparable(what, variant, round, r));
                    }
                    record(label, result);
                }
            }
        }
        for &n in &live_sizes {
            if s.runs(Scenario::LivePolicies) {
                let result = scenarios::live(&ctx, n, true, LinkKind::Plain).await;
                record(format!("live-policies N={n}"), result);
            }
        }
        for &n in &hub_sizes {
            record(
                format!("hub N={n}"),
                scenarios::hub(&ctx, n, args.spokes).await,
            );
        }
        if s.runs(Scenario::Slowloris) {
            match slowloris::run(&ctx).await {
                Ok(figures) => slowloris = Some(figures),
                Err(e) => {
                    eprintln!("FAILED slowloris: {e:#}");
                    failures.push("slowloris".to_owned());
                }
            }
        }
    }
    print_table(&rows, d.decode, &store);
    if kinds.len() > 1 || (args.rounds > 1 && signings.len() == 1) {
        compare::print(&runs, Axis::Link, &BTreeMap::new());
    }
    if signings.len() > 1 {
        compare::print(&runs, Axis::Signing, &verify);
    }
    if let Some(figures) = &slowloris {
        slowloris::print(figures);
    }
    println!("load average at the end: {}", load_average());
    anyhow::ensure!(failures.is_empty(), "failed: {}", failures.join(", "));
    Ok(())
}

/// Measures the verification bound (off the runtime), prints it, and gives the batch rate
/// (the bound) and the table's rows for it.
async fn measure_verify(signers: &Arc<Signers>, round: Option<usize>) -> Result<(f64, Vec<Row>)> {
    let signers = signers.clone();
    let count = verify_bound::VERIFY_DELTAS;
    let v = tokio::task::spawn_blocking(move || verify_bound::verify_bound(&signers, count))
        .await
        .context("the verification bound panicked")??;
    let per_core =
        |f: &verify_bound::Figure| f.per_core().map_or("?".to_owned(), |r| format!("{r:.0}"));
    let when = round.map_or(String::new(), |r| format!(", round {}", r + 1));
    println!(
        "  verification bound{when}, {} threads: verify_batch of {} {:.0}/s ({} per CPU-s), \
         verify_strict {:.0}/s ({} per CPU-s), rhizome verify_all {:.0}/s ({} per CPU-s)",
        v.threads,
        v.batch_size,
        v.batch.rate,
        per_core(&v.batch),
        v.single.rate,
        per_core(&v.single),
        v.rhizome.rate,
        per_core(&v.rhizome),
    );
    let figures = [
        (
            format!(
                "verify bound: ed25519 verify_batch of {}, {} threads{when}",
                v.batch_size, v.threads
            ),
            v.batch,
        ),
        (
            format!(
                "ed25519 verify_strict, one by one, {} threads{when}",
                v.threads
            ),
            v.single,
        ),
        (
            format!(
                "rhizome verify_all (+ signing bytes), {} threads{when}",
                v.threads
            ),
            v.rhizome,
        ),
    ];
    let rows = figures
        .into_iter()
        .map(|(label, figure)| {
            let cpu = figure.cpu_per_verification.map(|c| c * v.deltas as f64);
            Row::bound(label, v.deltas, figure.rate).cpu(None, cpu)
        })
        .collect();
    Ok((v.batch.rate, rows))
}

/// The comparison's figures of one run: its last row, the one a link carried.
fn comparable(what: String, variant: Variant, round: usize, rows: &[Row]) -> Option<compare::Run> {
    let row = rows.last()?;
    let (cpu_src, cpu_dst) = row.cpu.unwrap_or((None, None));
    Some(compare::Run {
        what,
        variant,
        round,
        rate: row.rate,
        cpu_src,
        cpu_dst,
    })
}

fn context(args: &Args, signers: Arc<Signers>) -> Result<Ctx> {
    let scripts = tempfile::Builder::new()
        .prefix("rhizome-bench-policies-")
        .tempdir()
        .context("cannot create a temp dir for the scripts")?;
    scenarios::write_scripts(scripts.path())?;
    let links = links::LinkFiles::new()?;
    Ok(Ctx {
        // No proxy: an HTTP_PROXY in the environment must not sit between us and loopback.
        client: links
            .http_client()?
            .no_proxy()
            .timeout(node::STALL_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .context("cannot build the HTTP client")?,
        bin: node::node_binary(args.rhizome.as_deref())?,
        memory: args.memory,
        posting: load::Posting {
            batch: args.batch,
            concurrency: args.concurrency,
            rate: args.rate,
        },
        latency: !args.no_latency,
        scripts,
        links,
        signers,
    })
}
