//! Mesh simulator: N real nodes linked in a full mesh or a random K-regular topology,
//! M deltas posted to each, timed until every node holds every delta, with what the
//! links carried to get there.
//!
//! `cargo run --release --example mesh -- --nodes N --degree K --deltas M [--seed S]
//!  [--memory|--durable] [--delta-bytes B] [--batch B] [--timeout SECS] [--long-ids]
//!  [--no-announce] [--json]`
//!
//! - Nodes: `rhizome::Node` + `Federation` + `Server` in this process, each on
//!   127.0.0.1 port 0, in memory (`--memory`, the default) or on a durable fjall store
//!   with fsync in a temporary directory (`--durable`).
//! - Topology: `--degree N-1` (the default) links every pair; any other K draws a random
//!   connected K-regular graph from `--seed` (`mesh/topology.rs` says how). Each edge is
//!   one bidirectional link dialed by its lower-numbered node, with a full initial sync of
//!   the still empty stores, so nothing posted afterwards can be missed.
//! - Load: once every link is up, each node is given its M deltas through the library's
//!   ingest path (`Node::ingest`, `Origin::Local`, the path `POST /deltas` ends in) in
//!   batches of `--batch`, all nodes at once. Every delta is new. Ids are random UUIDs,
//!   as the reference implementation makes them; `--long-ids` makes them 51 characters
//!   (a run tag, the node, a counter) instead. Each delta is padded to `--delta-bytes` of
//!   JSON (default 330, the size of the figures) whatever its id.
//! - Relaying: nodes offer the `announce` feature (relayed deltas as ids, bodies on
//!   request) unless `--no-announce`, which makes every node relay bodies to every
//!   neighbour as before the feature.
//! - Converged: when every node's store holds N*M deltas (its head, polled every 10 ms;
//!   ids are unique and the store keeps each once, so N*M stored means all of them). The
//!   clock starts with the first ingest. `--timeout` (default 300 s) fails the run with a
//!   non-zero exit, naming how far each node got.
//! - Then the links must fall quiet (no delta received for 500 ms) before the counters
//!   are read, so copies still in flight at convergence are counted too.
//!
//! Figures: deltas received over links (the sum of every link end's `deltasReceived`,
//! duplicates included) against those needed, N*(N-1)*M (each node must receive the
//! (N-1)*M deltas it did not author); the copies the stores dropped as duplicates; the
//! WebSocket payload bytes received over links (`bytesReceived`, every frame); the ids
//! announced and asked for (`announcedIn`, `requestedOut`); and the
//! process's peak RSS (`VmHWM`, all nodes together). `--json` prints the figures as one
//! JSON line on stdout, the human report going to stderr.

mod common;
#[path = "mesh/topology.rs"]
pub mod topology;
// Shared with the other benchmarks; the median is theirs.
#[allow(dead_code)]
#[path = "bench/stats.rs"]
mod stats;
use stats::thousands;

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::Parser;
use rhizome::{Delta, IngestOutcome, Node, NodeConfig, Origin, Pointer, Server, Storage, Target};
use serde_json::json;
use tokio::task::JoinSet;

use common::{dial, serve_with_options, wait_connected};
use topology::Topology;

// The `rhizome` binary runs its nodes with mimalloc: so do these, for comparable memory.
#[cfg(not(test))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often convergence and quiet are polled.
const POLL: Duration = Duration::from_millis(10);
/// How long no delta may arrive anywhere for the links to count as quiet.
const QUIET: Duration = Duration::from_millis(500);
/// Distinct authors of the generated deltas.
const AUTHORS: usize = 16;

#[derive(Parser)]
#[command(about = "N nodes in a mesh on loopback: convergence time and link traffic")]
struct Args {
    /// Nodes in the mesh.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Links per node: nodes - 1 (the default) is a full mesh, less a random regular graph.
    #[arg(long)]
    degree: Option<usize>,
    /// Deltas posted to each node.
    #[arg(long, default_value_t = 10_000)]
    deltas: usize,
    /// Seed of the random topology.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stores in memory (the default).
    #[arg(long, conflicts_with = "durable")]
    memory: bool,
    /// Durable fjall stores with fsync, in a temporary directory.
    #[arg(long)]
    durable: bool,
    /// Size of each delta's JSON, reached by padding a text value.
    #[arg(long, default_value_t = 330)]
    delta_bytes: usize,
    /// Deltas per ingest call.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Seconds to wait for convergence before failing.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Ids of 51 characters instead of UUIDs.
    #[arg(long)]
    long_ids: bool,
    /// Nodes do not offer the `announce` feature: relayed deltas go in full.
    #[arg(long)]
    no_announce: bool,
    /// Print the figures as one JSON line on stdout (the report goes to stderr).
    #[arg(long)]
    json: bool,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    pub degree: usize,
    pub deltas: usize,
    pub seed: u64,
    pub durable: bool,
    pub delta_bytes: usize,
    pub batch: usize,
    pub timeout: Duration,
    pub long_ids: bool,
    pub announce: bool,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub nodes: usize,
    pub degree: usize,
    pub links: usize,
    pub topology: String,
    pub deltas_per_node: usize,
    /// The JSON size of each delta.
    pub delta_bytes: usize,
    pub loaded: Duration,
    pub converged: Duration,
    /// Deltas received over links, duplicates included.
    pub received: u64,
    /// N*(N-1)*M: what each node did not author, summed over nodes.
    pub needed: u64,
    /// Copies the stores dropped because they already held them.
    pub duplicates: u64,
    pub bytes_received: u64,
    /// Relayed deltas announced by id, summed over receiving link ends.
    pub announced: u64,
    /// Deltas asked for by id, summed over asking link ends.
    pub requested: u64,
    pub peak_rss_bytes: Option<u64>,
}

impl Report {
    pub fn ratio(&self) -> f64 {
        self.received as f64 / self.needed as f64
    }

    pub fn bytes_per_needed(&self) -> f64 {
        self.bytes_received as f64 / self.needed as f64
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "nodes": self.nodes,
            "degree": self.degree,
            "links": self.links,
            "topology": self.topology,
            "deltasPerNode": self.deltas_per_node,
            "deltaBytes": self.delta_bytes,
            "loadedSecs": self.loaded.as_secs_f64(),
            "convergedSecs": self.converged.as_secs_f64(),
            "received": self.received,
            "needed": self.needed,
            "ratio": self.ratio(),
            "duplicates": self.duplicates,
            "bytesReceived": self.bytes_received,
            "bytesPerNeeded": self.bytes_per_needed(),
            "bytesPerNeededOverDeltaBytes": self.bytes_per_needed() / self.delta_bytes as f64,
            "announced": self.announced,
            "requested": self.requested,
            "peakRssBytes": self.peak_rss_bytes,
        })
    }

    fn print(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mb = |b: u64| format!("{:.0} MB", b as f64 / 1e6);
        writeln!(
            out,
            "loaded in {:.2} s: {} deltas of {} bytes on each node (library ingest, all nodes at once)",
            self.loaded.as_secs_f64(),
            thousands(self.deltas_per_node as f64),
            self.delta_bytes
        )?;
        writeln!(
            out,
            "converged in {:.2} s: every node holds {} deltas",
            self.converged.as_secs_f64(),
            thousands((self.nodes * self.deltas_per_node) as f64)
        )?;
        writeln!(
            out,
            "received over links: {} deltas for {} needed ({:.2}x), {} dropped as duplicates",
            thousands(self.received as f64),
            thousands(self.needed as f64),
            self.ratio(),
            thousands(self.duplicates as f64)
        )?;
        writeln!(
            out,
            "bytes received over links: {} ({:.0} bytes per delta needed, {:.2}x a delta's {} bytes)",
            mb(self.bytes_received),
            self.bytes_per_needed(),
            self.bytes_per_needed() / self.delta_bytes as f64,
            self.delta_bytes
        )?;
        writeln!(
            out,
            "announced by id: {} ({:.2} per delta needed); asked for by id: {}",
            thousands(self.announced as f64),
            self.announced as f64 / self.needed as f64,
            thousands(self.requested as f64)
        )?;
        match self.peak_rss_bytes {
            Some(b) => writeln!(out, "peak RSS: {} (VmHWM, all nodes)", mb(b))?,
            None => writeln!(out, "peak RSS: unknown (no VmHWM in /proc/self/status)")?,
        }
        writeln!(out)?;
        writeln!(out, "| nodes | topology | converged in | deltas received over links | needed | ratio | bytes received | peak RSS |")?;
        writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|")?;
        writeln!(
            out,
            "| {} | {} | {:.2} s | {} | {} | {:.1}x | {} | {} |",
            self.nodes,
            self.topology,
            self.converged.as_secs_f64(),
            thousands(self.received as f64),
            thousands(self.needed as f64),
            self.ratio(),
            mb(self.bytes_received),
            self.peak_rss_bytes.map_or("-".into(), mb)
        )
    }
}

/// Builds the mesh, loads it, waits for convergence and quiet, and measures.
///
/// # Errors
/// When the topology cannot exist, a node or link does not start, an ingest fails, the
/// mesh does not converge within the timeout, or a node ends up holding more deltas
/// than were written.
pub async fn run(opts: &Options) -> Result<Report> {
    ensure!(opts.batch > 0, "--batch must be at least 1");
    let topology = Topology::regular(opts.nodes, opts.degree, opts.seed).map_err(|e| anyhow!(e))?;
    let described = if opts.degree + 1 == opts.nodes {
        "full mesh".to_owned()
    } else {
        format!("random {}-regular, seed {}", opts.degree, opts.seed)
    };
    let dir = tempfile::tempdir().context("making a directory for the stores")?;
    let names: Vec<String> = (0..opts.nodes).map(|i| format!("mesh-{i:03}")).collect();
    let mut servers = Vec::new();
    for name in &names {
        let storage = if opts.durable {
            Storage::Path(dir.path().join(name))
        } else {
            Storage::Memory
        };
        let config = NodeConfig {
            storage,
            system_id: Some(name.clone()),
            ..Default::default()
        };
        let options = rhizome::ServerOptions {
            announce_relayed: opts.announce,
            ..Default::default()
        };
        servers.push(serve_with_options(config, options).await?);
    }
    let mut links = Vec::new();
    for &(a, b) in &topology.edges {
        let link = dial(servers[a].federation(), &servers[b], &names[b])?;
        links.push((a, b, link));
    }
    for (a, b, link) in &links {
        wait_connected(link, &format!("{} <-> {}", names[*a], names[*b])).await?;
    }

    let total = (opts.nodes * opts.deltas) as u64;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let ids = IdForm {
        tag: tag.clone(),
        long: opts.long_ids,
    };
    let padding = padding(&ids, opts.delta_bytes);
    let delta_bytes = make_delta(&ids, &names[0], 0, now_ms(), &padding)
        .to_json()
        .len();

    let started = Instant::now();
    let mut loads = JoinSet::new();
    for server in &servers {
        let (node, ids, padding) = (server.node().clone(), ids.clone(), padding.clone());
        let (deltas, batch) = (opts.deltas, opts.batch);
        loads.spawn(async move { load(&node, &ids, &padding, deltas, batch).await });
    }
    let mut loaded = None;
    let deadline = started + opts.timeout;
    loop {
        while let Some(done) = loads.try_join_next() {
            done.context("a load task failed")??;
        }
        if loaded.is_none() && loads.is_empty() {
            loaded = Some(started.elapsed());
        }
        if loaded.is_some() && servers.iter().all(|s| held(s.node()) >= total) {
            break;
        }
        if Instant::now() >= deadline {
            let counts: Vec<String> = servers
                .iter()
                .map(|s| format!("{} {}", s.node().system_id(), held(s.node())))
                .collect();
            bail!(
                "not converged after {:?}: each node should hold {total}, they hold: {}",
                opts.timeout,
                counts.join(", ")
            );
        }
        tokio::time::sleep(POLL).await;
    }
    let converged = started.elapsed();
    let loaded = loaded.unwrap_or(converged);

    let received = || -> u64 { link_sum(&servers, |s| s.deltas_received) };
    let mut last = (received(), Instant::now());
    while last.1.elapsed() < QUIET {
        ensure!(
            Instant::now() < deadline + QUIET,
            "the links kept receiving deltas after convergence: {} and counting",
            last.0
        );
        tokio::time::sleep(POLL).await;
        let now = received();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    for server in &servers {
        let node = server.node();
        ensure!(
            held(node) == total,
            "{} holds {} deltas, {total} were written",
            node.system_id(),
            held(node)
        );
    }
    let report = Report {
        nodes: opts.nodes,
        degree: opts.degree,
        links: links.len(),
        topology: described,
        deltas_per_node: opts.deltas,
        delta_bytes,
        loaded,
        converged,
        received: last.0,
        needed: total * (opts.nodes as u64 - 1),
        duplicates: servers.iter().map(|s| s.node().store().duplicates()).sum(),
        bytes_received: link_sum(&servers, |s| s.bytes_received),
        announced: link_sum(&servers, |s| s.announced_in),
        requested: link_sum(&servers, |s| s.requested_out),
        peak_rss_bytes: peak_rss(),
    };
    drop(links);
    for server in servers {
        server.shutdown().await.context("stopping a node")?;
    }
    Ok(report)
}

/// Deltas `node` holds: its log head, with no archival and one entry per stored delta.
fn held(node: &Node) -> u64 {
    node.store().head().0
}

/// A link counter summed over every link end of every node.
fn link_sum(
    servers: &[Server],
    counter: impl Fn(&rhizome::federation::LinkStatsSnapshot) -> u64,
) -> u64 {
    servers
        .iter()
        .flat_map(|s| s.federation().get_federation_links())
        .map(|l| counter(&l.stats()))
        .sum()
}

/// Ingests `deltas` new deltas on `node`, `batch` at a time; each must be stored.
async fn load(node: &Node, ids: &IdForm, padding: &str, deltas: usize, batch: usize) -> Result<()> {
    let system = node.system_id().to_owned();
    for start in (0..deltas).step_by(batch) {
        let now = now_ms();
        let chunk: Vec<Delta> = (start..deltas.min(start + batch))
            .map(|i| make_delta(ids, &system, i, now, padding))
            .collect();
        let outcomes = node
            .ingest(chunk, Origin::Local)
            .await
            .with_context(|| format!("ingesting on {system}"))?;
        if let Some(other) = outcomes
            .iter()
            .find(|o| !matches!(o, IngestOutcome::Stored(_)))
        {
            bail!("{system} did not store a delta of its load: {other:?}");
        }
    }
    Ok(())
}

/// How the deltas of a run are named.
#[derive(Clone)]
struct IdForm {
    tag: String,
    /// `{tag}-{system}-{i:09}` (51 characters) rather than a random UUID (36).
    long: bool,
}

impl IdForm {
    fn id(&self, system: &str, i: usize) -> String {
        if self.long {
            format!("{}-{system}-{i:09}", self.tag)
        } else {
            uuid::Uuid::new_v4().to_string()
        }
    }
}

/// The `i`th delta authored on `system`: a reference in a context, a flag and a text.
/// Every field has a fixed width, so all deltas of a run weigh the same.
fn make_delta(ids: &IdForm, system: &str, i: usize, now_ms: u64, padding: &str) -> Delta {
    Delta {
        id: ids.id(system, i),
        timestamp: now_ms,
        author: format!("author-{:02}", i % AUTHORS),
        system: system.to_owned(),
        pointers: vec![
            Pointer::new(
                "item",
                Target::reference_in(format!("item-{:03}", i % 1000), "items"),
            ),
            Pointer::new("verified", Target::from(true)),
            Pointer::new("text", Target::from(padding)),
        ],
        extra: Default::default(),
    }
}

/// The text that brings a delta to `bytes` of JSON (as short as it gets, at least one
/// character, when `bytes` is below a delta's fixed part).
fn padding(ids: &IdForm, bytes: usize) -> String {
    let bare = make_delta(ids, "mesh-000", 0, now_ms(), "x")
        .to_json()
        .len();
    "a realistic short text value, "
        .chars()
        .cycle()
        .take(bytes.saturating_sub(bare) + 1)
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The process's peak resident set (`VmHWM`), where /proc has it.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let opts = Options {
        nodes: args.nodes,
        degree: args.degree.unwrap_or(args.nodes.saturating_sub(1)),
        deltas: args.deltas,
        seed: args.seed,
        durable: args.durable,
        delta_bytes: args.delta_bytes,
        batch: args.batch,
        timeout: Duration::from_secs(args.timeout),
        long_ids: args.long_ids,
        announce: !args.no_announce,
    };
    let store = if opts.durable {
        "durable stores (fsync)"
    } else {
        "in memory"
    };
    let mut human: Box<dyn std::io::Write> = if args.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    writeln!(
        human,
        "mesh: {} nodes, degree {}, {} deltas posted to each, {store}",
        opts.nodes, opts.degree, opts.deltas
    )?;
    let report = run(&opts).await?;
    writeln!(
        human,
        "topology: {}, {} bidirectional links",
        report.topology, report.links
    )?;
    report.print(&mut human)?;
    if args.json {
        println!("{}", report.json());
    }
    Ok(())
}
