//! Data lifecycle figures (issue 20): import and export of N deltas, backup, and the
//! store's bytes per delta before and after compaction, each through the `rhizome`
//! binary as an operator runs it, durable stores in a temp dir.
//!
//! `cargo build --release --bin rhizome --example lifecycle_bench &&
//!  target/release/examples/lifecycle_bench [--deltas N] [--rhizome PATH]`
//!
//! In order, on one set of N deltas (the `bench` example's realistic deltas):
//! 1. the store bound: the node's store alone appending N deltas, 1000 per fsynced batch
//!    (`bench store`, in this process);
//! 2. `import FILE --data A --trust`: into a stopped node's new data directory;
//! 3. `compact --data A`: its size on disk before and after, per delta;
//! 4. `export --data A --out F` (plain, then `.gz`);
//! 5. `backup DIR` of A while it serves (`POST /backup`);
//! 6. `import F --url` into a running empty node (`POST /import`).
//!
//! Peak RSS is each `rhizome` process's own `VmHWM`, sampled every 10 ms while it
//! runs. The table is Markdown, ready for BENCHMARKS.md.

#[allow(dead_code)]
#[path = "bench/bounds.rs"]
mod bounds;
#[allow(dead_code)]
#[path = "bench/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "bench/node.rs"]
mod node;
#[allow(dead_code)]
#[path = "bench/signing.rs"]
mod signing;
#[allow(dead_code)]
#[path = "bench/stats.rs"]
mod stats;

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clap::Parser;
use serde_json::Value;

use stats::thousands;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Export, import, backup and compaction of N deltas through the rhizome binary")]
struct Args {
    /// Deltas in the set.
    #[arg(long, default_value_t = 1_000_000)]
    deltas: usize,
    /// The `rhizome` binary (default: `target/<profile>/rhizome`).
    #[arg(long, env = "RHIZOME_BIN", value_name = "PATH")]
    rhizome: Option<PathBuf>,
}

/// What one `rhizome` command took.
struct Ran {
    secs: f64,
    rss_kib: u64,
    out: String,
}

/// Runs `rhizome ARGS` to its end; fails unless it exits 0.
fn rhizome(bin: &Path, args: &[&str]) -> Result<Ran> {
    let started = Instant::now();
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let pid = child.id() as libc::pid_t;
    // The child's peak RSS, sampled from its `VmHWM` while it runs: `ru_maxrss` from
    // `wait4` would count this process's own peak, as the child shares our memory
    // between being spawned and its `exec` (and Linux keeps that mm's high-water mark).
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while let Some(kib) = vm_hwm_kib(pid as u32) {
            peak = peak.max(kib);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        peak
    });
    // Read both pipes before reaping, so a full pipe cannot stall the child.
    let mut stdout = child.stdout.context("stdout")?;
    let mut stderr = child.stderr.context("stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out)?;
    let err = err_reader.join().unwrap_or_default();
    let mut status = 0;
    // SAFETY: the pid is our own child, reaped here only (its `Child` handle was
    // consumed above and is never waited on).
    let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
    let secs = started.elapsed().as_secs_f64();
    let rss_kib = sampler.join().unwrap_or(0);
    ensure!(reaped == pid, "waitpid failed for rhizome {args:?}");
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "rhizome {args:?} failed: {err}"
    );
    Ok(Ran { secs, rss_kib, out })
}

/// A `rhizome serve` process on a free port.
struct Serving {
    child: std::process::Child,
    url: String,
    token_file: String,
}

impl Serving {
    fn start(bin: &Path, data: &Path) -> Result<Serving> {
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let v: Value = serde_json::from_str(&line).context("serve's first line")?;
        Ok(Serving {
            url: v["listening"].as_str().context("listening")?.to_owned(),
            token_file: v["adminTokenFile"]
                .as_str()
                .context("token file")?
                .to_owned(),
            child,
        })
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        vm_hwm_kib(self.child.id())
    }

    fn stop(mut self) -> Result<()> {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let status = self.child.wait()?;
        ensure!(status.success(), "serve did not stop cleanly: {status}");
        Ok(())
    }
}

/// A live process's peak RSS (`VmHWM`); `None` once it has exited.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: u64) -> String {
    format!("{:.0}", kib as f64 / 1024.0)
}

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
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; build with --release for meaningful figures");
    }
    let n = args.deltas;
    ensure!(n > 0, "--deltas must be positive");
    let bin = node::node_binary(args.rhizome.as_deref())?;
    let tmp = tempfile::Builder::new()
        .prefix("rhizome-lifecycle-bench-")
        .tempdir()?;
    let dir = |name: &str| tmp.path().join(name);
    let path = |p: &PathBuf| p.to_str().unwrap_or_default().to_owned();

    eprintln!("store bound: appending {n} deltas...");
    let bound = bounds::store_bound(n, false)?.rate;

    let file = dir("deltas.jsonl");
    {
        let mut w = BufWriter::new(std::fs::File::create(&file)?);
        let tag = load::fresh_tag();
        let mut line = String::new();
        for i in 0..n {
            line.clear();
            load::write_delta(&mut line, &tag, i, load::now_micros());
            line.push('\n');
            w.write_all(line.as_bytes())?;
        }
        w.flush()?;
    }
    let file_bytes = std::fs::metadata(&file)?.len();
    let mut rows: Vec<String> = Vec::new();
    let row = |what: &str, secs: f64, rss: String, note: String| {
        format!(
            "| {what} | {} | {} | {secs:.1} | {rss} | {note} |",
            thousands(n as f64),
            thousands(n as f64 / secs)
        )
    };

    let a = dir("a");
    eprintln!("import --data (offline, --trust)...");
    let ran = rhizome(
        &bin,
        &["import", &path(&file), "--data", &path(&a), "--trust"],
    )?;
    let summary: Value = serde_json::from_str(ran.out.trim())?;
    ensure!(summary["stored"] == n, "import stored {summary}");
    rows.push(row(
        "import, stopped node (`--data --trust`)",
        ran.secs,
        mib(ran.rss_kib),
        format!("{:.2} of the store bound", n as f64 / ran.secs / bound),
    ));

    eprintln!("compact --data...");
    let ran = rhizome(&bin, &["compact", "--data", &path(&a)])?;
    let c: Value = serde_json::from_str(ran.out.trim())?;
    let per = |k: &str| c[k].as_u64().unwrap_or(0) as f64 / n as f64;
    let (before, after) = (per("bytesBefore"), per("bytesAfter"));
    let compact_row = format!(
        "| compact (`--data`) | {} | - | {:.1} | {} | store {before:.0} bytes/delta before, {after:.0} after ({:.0} MiB per million deltas after); the JSON lines file holds {:.0} bytes/delta |",
        thousands(n as f64),
        ran.secs,
        mib(ran.rss_kib),
        after * 1e6 / 1048576.0,
        file_bytes as f64 / n as f64
    );

    eprintln!("export --data...");
    let out = dir("out.jsonl");
    let ran = rhizome(&bin, &["export", "--data", &path(&a), "--out", &path(&out)])?;
    let same = same_bytes(&out, &file)?;
    rows.push(row(
        "export, stopped node (`--data`, plain)",
        ran.secs,
        mib(ran.rss_kib),
        if same {
            "byte-identical to the imported file".into()
        } else {
            "NOT byte-identical to the imported file".into()
        },
    ));
    let gz = dir("out.jsonl.gz");
    let ran = rhizome(&bin, &["export", "--data", &path(&a), "--out", &path(&gz)])?;
    let gz_bytes = std::fs::metadata(&gz)?.len();
    rows.push(row(
        "export, stopped node (`--data`, `.gz`)",
        ran.secs,
        mib(ran.rss_kib),
        format!("{:.0} bytes/delta compressed", gz_bytes as f64 / n as f64),
    ));
    rows.push(compact_row);

    eprintln!("backup of a serving node...");
    let node = Serving::start(&bin, &a)?;
    let copy = dir("copy");
    let ran = rhizome(
        &bin,
        &[
            "backup",
            &path(&copy),
            "--url",
            &node.url,
            "--token-file",
            &node.token_file,
        ],
    )?;
    let b: Value = serde_json::from_str(ran.out.trim())?;
    let node_rss = node.peak_rss_kib().map_or("-".to_owned(), mib);
    node.stop()?;
    rows.push(format!(
        "| backup of a serving node (`POST /backup`) | {} | {} | {:.1} | node {node_rss} | copy {:.0} bytes/delta |",
        thousands(n as f64),
        thousands(n as f64 / (b["millis"].as_f64().unwrap_or(1.0) / 1000.0)),
        b["millis"].as_f64().unwrap_or(0.0) / 1000.0,
        b["bytes"].as_u64().unwrap_or(0) as f64 / n as f64
    ));

    eprintln!("import --url into a serving node...");
    let fresh = dir("fresh");
    let node = Serving::start(&bin, &fresh)?;
    let ran = rhizome(
        &bin,
        &[
            "import",
            &path(&out),
            "--url",
            &node.url,
            "--token-file",
            &node.token_file,
        ],
    )?;
    let summary: Value = serde_json::from_str(ran.out.trim())?;
    ensure!(summary["stored"] == n, "import stored {summary}");
    let node_rss = node.peak_rss_kib().map_or("-".to_owned(), mib);
    node.stop()?;
    rows.push(row(
        "import, serving node (`--url`, `POST /import`)",
        ran.secs,
        format!("import {} / node {node_rss}", mib(ran.rss_kib)),
        format!("{:.2} of the store bound", n as f64 / ran.secs / bound),
    ));

    println!(
        "\nstore bound: {} deltas/s (N = {})",
        thousands(bound),
        thousands(n as f64)
    );
    println!(
        "load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!("\n| step | N | deltas/s | s | peak RSS MiB | note |");
    println!("|---|---:|---:|---:|---:|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}

/// Whether two files hold the same bytes, read a block at a time.
fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read;
    let (mut a, mut b) = (
        BufReader::new(std::fs::File::open(a)?),
        BufReader::new(std::fs::File::open(b)?),
    );
    let (mut x, mut y) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(b.read(&mut y)? == 0);
        }
        let mut got = 0;
        while got < n {
            let m = b.read(&mut y[got..n])?;
            if m == 0 {
                return Ok(false);
            }
            got += m;
        }
        if x[..n] != y[..n] {
            return Ok(false);
        }
    }
}
