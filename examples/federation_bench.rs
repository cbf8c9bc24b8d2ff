//! Federation throughput between two `rhizome serve` processes over loopback.
//!
//! `cargo build --release && cargo run --release --example federation_bench --
//!  [--deltas N[,N...]] [--scenario sync|live|all] [--memory]`
//!
//! - **sync**: N deltas are posted to node A (`POST /deltas`, arrays of `--batch`), then node B
//!   starts with `--connect A --mode pull --initial-sync full`; timed from B's spawn until B's
//!   `GET /status` `store.head` reaches N. The load into A is reported on its own row.
//! - **live**: B starts with `--connect A --mode bidirectional --initial-sync none`; once both
//!   ends report the link `connected`, N deltas are posted to A as fast as the API takes them;
//!   timed until B holds them all, with A's own ingest time on its own row.
//! - **RSS**: peak resident set (`VmHWM` in `/proc/PID/status`, Linux) of each node, read just
//!   before it is killed.
//!
//! The nodes are separate processes running `target/release/rhizome`, next to this example's
//! own executable. `cargo run --example` does not build that binary, so build it first; a
//! stale binary would measure old code. Stores are durable fjall databases in temp dirs
//! unless `--memory`. Node logs (stderr, `RUST_LOG=warn` unless set) go to a file in the
//! node's temp dir and their tail is shown when a node fails.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::task::JoinSet;

/// How long a node may take to print its `listening` line, and a link to connect.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// A run fails when B's head stops moving for this long: slow is fine, stuck is a bug.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How often B's head is polled; small next to the shortest run (about a second).
const POLL_EVERY: Duration = Duration::from_millis(20);

#[derive(Parser)]
#[command(about = "Federation throughput between two rhizome processes over loopback")]
struct Args {
    /// Deltas per run; a comma list runs each size.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000, 1_000_000])]
    deltas: Vec<usize>,
    #[arg(long, value_enum, default_value = "all")]
    scenario: Scenario,
    /// Run both nodes with `--memory` (no fsync) instead of durable stores.
    #[arg(long)]
    memory: bool,
    /// Deltas per `POST /deltas` array.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Requests in flight while posting, so the node's group commit has work to merge.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    Sync,
    Live,
    All,
}

/// One line of the final table.
struct Row {
    scenario: &'static str,
    n: usize,
    secs: f64,
    rss_a: Option<u64>,
    rss_b: Option<u64>,
}

/// A `rhizome serve` child process. Dropping it kills the process (also on error paths),
/// then removes its temp dir.
struct Node {
    name: &'static str,
    child: Child,
    url: String,
    log: PathBuf,
    /// Holds the store and the log; removed after `Drop for Node` has killed the process.
    _dir: TempDir,
}

impl Node {
    async fn spawn(bin: &Path, name: &'static str, memory: bool, extra: &[&str]) -> Result<Node> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("federation-bench-{name}-"))
            .tempdir()
            .context("cannot create a temp dir")?;
        let log = dir.path().join("node.log");
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        if memory {
            cmd.arg("--memory");
        } else {
            cmd.arg("--data").arg(dir.path().join("data"));
        }
        if std::env::var_os("RUST_LOG").is_none() {
            // Info logs per link and batch would cost the nodes time we are measuring.
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = cmd
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).context("cannot create the node's log file")?)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child
            .stdout
            .take()
            .context("the node's stdout is not piped")?;
        let mut node = Node {
            name,
            child,
            url: String::new(),
            log,
            _dir: dir,
        };
        // A blocking read in a thread: a node that hangs before listening must not hang us.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = tx.send(reader.read_line(&mut line).map(|_| line));
            // Keep reading: a later println into a closed pipe would kill the node.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = match tokio::time::timeout(STARTUP_TIMEOUT, rx).await {
            Ok(Ok(Ok(line))) if !line.is_empty() => line,
            _ => return Err(node.failure("did not print its listening line")),
        };
        let first: Value = serde_json::from_str(&line)
            .with_context(|| format!("node {name}'s first line is not JSON: {line:?}"))?;
        node.url = first["listening"]
            .as_str()
            .with_context(|| format!("node {name}'s first line has no `listening`: {line:?}"))?
            .to_owned();
        Ok(node)
    }

    /// An error saying what went wrong, with the node's exit status and log tail.
    fn failure(&mut self, what: &str) -> anyhow::Error {
        let exit = match self.child.try_wait() {
            Ok(Some(status)) => format!("exited with {status}"),
            _ => "still running".to_owned(),
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        anyhow!(
            "node {} {what} ({exit}); last log lines:\n{tail}",
            self.name
        )
    }

    fn ensure_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            _ => Err(self.failure("stopped")),
        }
    }

    /// Peak resident set in KiB, from the kernel's high-water mark (Linux only).
    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
        line.trim().strip_suffix("kB")?.trim().parse().ok()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SIGKILL: nothing on these stores is worth a graceful shutdown, and it cannot hang.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/<profile>/rhizome`, next to `target/<profile>/examples/federation_bench`.
fn node_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this example's own path")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .with_context(|| format!("unexpected example path {}", exe.display()))?;
    let bin = profile_dir.join(format!("rhizome{}", std::env::consts::EXE_SUFFIX));
    ensure!(
        bin.is_file(),
        "{} not found: run `cargo build --release` first (`cargo run --example` builds the \
         example only, not the rhizome binary)",
        bin.display()
    );
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(b), Some(e)) = (modified(&bin), modified(&exe)) {
        if b < e {
            eprintln!(
                "note: {} is older than this example; if src/ changed since, run \
                 `cargo build --release` so the nodes run the current code",
                bin.display()
            );
        }
    }
    Ok(bin)
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
}

/// A realistic delta: a reference in a context, a number and a short text (as store_bench).
fn delta(tag: &str, i: usize, timestamp: u64) -> Value {
    json!({
        "id": format!("{tag}-{i}"),
        "timestamp": timestamp,
        "author": format!("author-{}", i % 16),
        "system": "federation-bench",
        "pointers": [
            {"role": "item", "target": {"id": format!("item-{}", i % 1000), "context": "items"}},
            {"role": "n", "target": i},
            {"role": "text", "target": "a realistic short text value"},
        ],
    })
}

/// Posts N fresh deltas to `url` in arrays, `concurrency` requests in flight; returns when
/// every request was acknowledged (the node acknowledges after its fsync).
async fn post_all(client: &reqwest::Client, url: &str, n: usize, args: &Args) -> Result<f64> {
    // A fresh id prefix per run, so no delta is ever a duplicate of an earlier run's.
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let next_chunk = Arc::new(AtomicUsize::new(0));
    let batch = args.batch.max(1);
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, url, tag, next_chunk) = (
            client.clone(),
            format!("{url}/deltas"),
            tag.clone(),
            next_chunk.clone(),
        );
        workers.spawn(async move {
            loop {
                let first = next_chunk.fetch_add(1, Ordering::Relaxed) * batch;
                if first >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let timestamp = now_millis();
                let body: Vec<Value> = (first..n.min(first + batch))
                    .map(|i| delta(&tag, i, timestamp))
                    .collect();
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&body)?)
                    .send()
                    .await
                    .with_context(|| format!("POST {url}"))?;
                let status = response.status();
                if !status.is_success() {
                    let text = response.text().await.unwrap_or_default();
                    bail!("POST {url}: {status}: {text}");
                }
            }
        });
    }
    // Dropping the set on the first error aborts the other workers.
    while let Some(done) = workers.join_next().await {
        done.context("a posting task panicked")??;
    }
    Ok(start.elapsed().as_secs_f64())
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value> {
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    ensure!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    response
        .json()
        .await
        .with_context(|| format!("GET {url}: not JSON"))
}

async fn head(client: &reqwest::Client, node: &Node) -> Result<u64> {
    let status = get_json(client, &format!("{}/status", node.url)).await?;
    status["store"]["head"]
        .as_u64()
        .with_context(|| format!("node {}: /status has no store.head: {status}", node.name))
}

async fn links(client: &reqwest::Client, node: &Node) -> Result<Vec<Value>> {
    let body = get_json(client, &format!("{}/links", node.url)).await?;
    Ok(body["links"].as_array().cloned().unwrap_or_default())
}

/// Waits until the node holds `n` deltas; fails if its head stops moving or it dies.
async fn wait_for_head(client: &reqwest::Client, node: &mut Node, n: u64) -> Result<()> {
    let (mut last, mut last_moved) = (0, Instant::now());
    loop {
        node.ensure_running()?;
        let h = head(client, node).await?;
        if h >= n {
            return Ok(());
        }
        if h > last {
            (last, last_moved) = (h, Instant::now());
        } else if last_moved.elapsed() > STALL_TIMEOUT {
            let links = links(client, node).await.unwrap_or_default();
            bail!(
                "node {} stuck at {h} of {n} deltas for {}s; its links: {}",
                node.name,
                STALL_TIMEOUT.as_secs(),
                Value::Array(links)
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Waits until the node shows a link with status `connected`.
async fn wait_connected(client: &reqwest::Client, node: &mut Node) -> Result<()> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        node.ensure_running()?;
        let links = links(client, node).await?;
        if links.iter().any(|l| l["status"] == "connected") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "node {} has no connected link after {}s; its links: {}",
                node.name,
                STARTUP_TIMEOUT.as_secs(),
                Value::Array(links)
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

async fn run_sync(client: &reqwest::Client, bin: &Path, n: usize, args: &Args) -> Result<Vec<Row>> {
    let mut a = Node::spawn(bin, "A", args.memory, &[]).await?;
    let load = post_all(client, &a.url, n, args).await?;
    let stored = head(client, &a).await?;
    ensure!(stored == n as u64, "node A stored {stored} of {n} deltas");
    let rss_a_loaded = a.peak_rss_kib();
    println!("  sync  N={n}: A loaded in {load:.2}s, starting B");

    // The clock includes B's process start and store open: what an operator waits for.
    let start = Instant::now();
    let extra = [
        "--connect",
        a.url.as_str(),
        "--mode",
        "pull",
        "--initial-sync",
        "full",
    ];
    let mut b = Node::spawn(bin, "B", args.memory, &extra).await?;
    wait_for_head(client, &mut b, n as u64).await?;
    let secs = start.elapsed().as_secs_f64();
    a.ensure_running()?;
    println!("  sync  N={n}: B caught up in {secs:.2}s");
    Ok(vec![
        Row {
            scenario: "load A (HTTP, no link)",
            n,
            secs: load,
            rss_a: rss_a_loaded,
            rss_b: None,
        },
        Row {
            scenario: "initial sync A -> B",
            n,
            secs,
            rss_a: a.peak_rss_kib(),
            rss_b: b.peak_rss_kib(),
        },
    ])
}

async fn run_live(client: &reqwest::Client, bin: &Path, n: usize, args: &Args) -> Result<Vec<Row>> {
    let mut a = Node::spawn(bin, "A", args.memory, &[]).await?;
    let extra = [
        "--connect",
        a.url.as_str(),
        "--mode",
        "bidirectional",
        "--initial-sync",
        "none",
    ];
    let mut b = Node::spawn(bin, "B", args.memory, &extra).await?;
    // Both ends: with --initial-sync none, a delta A stores before its side of the link is
    // live is, by design, never sent.
    wait_connected(client, &mut b).await?;
    wait_connected(client, &mut a).await?;

    let start = Instant::now();
    let ingest = post_all(client, &a.url, n, args).await?;
    wait_for_head(client, &mut b, n as u64).await?;
    let secs = start.elapsed().as_secs_f64();
    a.ensure_running()?;
    println!("  live  N={n}: A acknowledged in {ingest:.2}s, B held all after {secs:.2}s");
    let (rss_a, rss_b) = (a.peak_rss_kib(), b.peak_rss_kib());
    Ok(vec![
        Row {
            scenario: "live: ingest into A",
            n,
            secs: ingest,
            rss_a,
            rss_b,
        },
        Row {
            scenario: "live: A -> B end to end",
            n,
            secs,
            rss_a,
            rss_b,
        },
    ])
}

fn thousands(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("-".to_owned(), |k| format!("{:.0}", k as f64 / 1024.0))
}

fn print_table(rows: &[Row]) {
    println!(
        "\n{:<26} {:>10} {:>10} {:>9} {:>10} {:>10}",
        "scenario", "N", "deltas/s", "seconds", "RSS A MiB", "RSS B MiB"
    );
    for r in rows {
        println!(
            "{:<26} {:>10} {:>10} {:>9.2} {:>10} {:>10}",
            r.scenario,
            thousands(r.n as u64),
            thousands((r.n as f64 / r.secs) as u64),
            r.secs,
            mib(r.rss_a),
            mib(r.rss_b)
        );
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
    let bin = node_binary()?;
    // No proxy: an HTTP_PROXY in the environment must not sit between us and loopback.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(STALL_TIMEOUT)
        .build()
        .context("cannot build the HTTP client")?;
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    println!(
        "federation bench: {} stores, {cores} cores, arrays of {}, {} requests in flight, nodes {}",
        if args.memory { "memory" } else { "durable" },
        args.batch,
        args.concurrency,
        bin.display()
    );

    // A failed run is reported and the others still run: one bad size keeps the table.
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for &n in &args.deltas {
        if matches!(args.scenario, Scenario::Sync | Scenario::All) {
            match run_sync(&client, &bin, n, &args).await {
                Ok(r) => rows.extend(r),
                Err(e) => failures.push(format!("sync N={n}: {e:#}")),
            }
        }
        if matches!(args.scenario, Scenario::Live | Scenario::All) {
            match run_live(&client, &bin, n, &args).await {
                Ok(r) => rows.extend(r),
                Err(e) => failures.push(format!("live N={n}: {e:#}")),
            }
        }
    }
    if !rows.is_empty() {
        print_table(&rows);
    }
    for f in &failures {
        eprintln!("\nFAILED {f}");
    }
    ensure!(failures.is_empty(), "{} run(s) failed", failures.len());
    Ok(())
}
