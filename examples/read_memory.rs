//! Memory of a node under large parallel reads (issue 14, finding 4), for BENCHMARKS.md.
//!
//! For each `rhizome` binary given, in turn: start `serve` on a fresh data directory,
//! load ~76 MB of 40 KB deltas, then have 8 clients each read the whole log at once
//! with `GET /deltas?limit=100000`, following `next` until the answer ends (an old node
//! answers in one page; a node that pages by bytes in several). Prints the node's RSS
//! before the reads, its peak (`VmHWM`) and its RSS 3 s and 15 s after the reads end.
//!
//! ```text
//! cargo run --release --example read_memory -- OLD/rhizome NEW/rhizome [--rounds 2]
//! ```
//! Binaries alternate (old, new, old, new...) so both see the same machine.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

const DELTA_BYTES: usize = 40 * 1024;
const DELTAS: usize = 1900;
const PER_REQUEST: usize = 40;
const READERS: usize = 8;

struct Node {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &PathBuf) -> Result<Node> {
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let first: Value = serde_json::from_str(&line).context("the listening line")?;
    let url = first["listening"].as_str().context("listening")?.to_owned();
    Ok(Node {
        child,
        url,
        _dir: dir,
    })
}

/// `VmRSS` and `VmHWM` of a process, in MiB.
fn memory(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} in /proc/{pid}/status"))?;
        let kib: f64 = line
            .split_whitespace()
            .nth(1)
            .context("a number")?
            .parse()?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

async fn load(client: &reqwest::Client, url: &str) -> Result<()> {
    let text = "x".repeat(DELTA_BYTES);
    for batch in 0..DELTAS / PER_REQUEST {
        let deltas: Vec<Value> = (0..PER_REQUEST)
            .map(|i| {
                json!({"id": format!("d-{batch}-{i}"), "timestamp": 1_700_000_000_000u64,
                       "author": "loader", "system": "bench",
                       "pointers": [{"role": "body", "target": text}]})
            })
            .collect();
        let res = client
            .post(format!("{url}/deltas"))
            .json(&deltas)
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("load: {}", res.status());
        }
    }
    Ok(())
}

/// Reads the whole log, page after page, keeping only each page's tail (for `next`).
async fn read_all(client: reqwest::Client, url: String) -> Result<usize> {
    let mut after: Option<u64> = None;
    let mut bytes = 0;
    loop {
        let mut q = vec![("limit", "100000".to_owned())];
        q.extend(after.map(|a| ("after", a.to_string())));
        let mut res = client.get(format!("{url}/deltas")).query(&q).send().await?;
        let mut tail: Vec<u8> = Vec::new();
        while let Some(chunk) = res.chunk().await? {
            bytes += chunk.len();
            tail.extend_from_slice(&chunk);
            let keep = tail.len().saturating_sub(256);
            tail.drain(..keep);
        }
        let tail = String::from_utf8_lossy(&tail);
        let next = tail
            .rsplit_once("\"next\":")
            .map(|(_, rest)| rest.trim_end_matches(['}', ' ', '\n']).to_owned())
            .context("no next in the answer")?;
        match next.parse::<u64>() {
            Ok(n) => after = Some(n),
            Err(_) => return Ok(bytes),
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut bins = Vec::new();
    let mut rounds = 1;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--rounds" {
            rounds = args.next().context("--rounds N")?.parse()?;
        } else {
            bins.push(PathBuf::from(a));
        }
    }
    if bins.is_empty() {
        bail!("usage: read_memory BIN... [--rounds N]");
    }
    let client = reqwest::Client::new();
    println!("binary | RSS before reads | peak RSS | RSS 3 s after | RSS 15 s after | read time | bytes per reader");
    for _ in 0..rounds {
        for bin in &bins {
            let node = start(bin)?;
            load(&client, &node.url).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let pid = node.child.id();
            let (before, _) = memory(pid)?;
            let started = Instant::now();
            let readers: Vec<_> = (0..READERS)
                .map(|_| tokio::spawn(read_all(client.clone(), node.url.clone())))
                .collect();
            let mut per_reader = 0;
            for r in readers {
                per_reader = r.await??;
            }
            let took = started.elapsed();
            tokio::time::sleep(Duration::from_secs(3)).await;
            let (after, peak) = memory(pid)?;
            // Past tokio's 10 s keep-alive of idle blocking threads (and their heaps).
            tokio::time::sleep(Duration::from_secs(12)).await;
            let (later, _) = memory(pid)?;
            println!(
                "{} | {before:.0} MiB | {peak:.0} MiB | {after:.0} MiB | {later:.0} MiB | {:.2} s | {:.1} MB",
                bin.display(),
                took.as_secs_f64(),
                per_reader as f64 / 1e6
            );
        }
    }
    Ok(())
}
