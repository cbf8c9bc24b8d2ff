//! `slowloris`: a node held at its connection cap by sockets that each sent half a request
//! head and nothing more (issue 14, finding 3), and how `/status` answers meanwhile.
//!
//! One node (`rhizome serve`, default `[server]` settings: the cap derived from the
//! descriptor limit, 30 s header timeout). `/status` is timed with a new connection per
//! request, first on the idle node, then while the sockets are held: `cap + BEYOND_CAP`
//! sockets are opened; those over the cap meet the reserve (answered within 2 s, or
//! closed). Then SIGTERM, with every socket still open, timed until the process exits.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::load::quantile;
use crate::node::NodeProc;
use crate::scenarios::Ctx;
use crate::stats::thousands;

/// The request: a head that never ends.
const HALF_HEAD: &[u8] = b"GET /status HTTP/1.1\r\nHost: x\r\n";
/// Sockets opened beyond the cap: they meet the reserve, then the door.
const BEYOND_CAP: usize = 1000;
/// `/status` requests timed in each phase.
const PROBES: usize = 300;
/// Sockets being connected at once.
const CONNECTING: usize = 256;
/// Longer than the reserve's 2 s: what is left open after it is held under the cap.
const SETTLE: Duration = Duration::from_secs(4);

/// `/status` timings of one phase.
pub struct Probes {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub failed: usize,
}

pub struct Slowloris {
    pub cap: u64,
    pub opened: usize,
    /// Sockets still open on our side after [`SETTLE`].
    pub held: usize,
    /// The node's own count of sockets open, and of connections refused.
    pub node_open: u64,
    pub node_refused: u64,
    pub idle: Probes,
    pub loaded: Probes,
    pub rss_idle_kib: Option<u64>,
    pub rss_loaded_kib: Option<u64>,
    pub sigterm: Duration,
}

pub async fn run(ctx: &Ctx) -> Result<Slowloris> {
    let _ = rhizome::server::fd_limit::raise_nofile_limit();
    let mut node = NodeProc::spawn(&ctx.bin, "slowloris", ctx.memory, &[]).await?;
    // A new connection per request: over the cap, every client is a new connection.
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .context("cannot build the HTTP client")?;
    let cap = metric(&fresh, &node, "rhizome_connections_limit").await?;
    let idle = probe_status(&fresh, &node).await;
    let rss_idle_kib = node.rss_kib();

    let want = usize::try_from(cap)? + BEYOND_CAP;
    let started = Instant::now();
    let mut sockets: Vec<TcpStream> = stream::iter(0..want)
        .map(|_| half_sent(&node.url))
        .buffer_unordered(CONNECTING)
        .filter_map(|s| async move { s.ok() })
        .collect()
        .await;
    let opened = sockets.len();
    println!(
        "  slowloris: {opened} of {want} sockets opened in {:.1} s (cap {cap})",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(SETTLE).await;
    node.ensure_running()?;
    let held = still_open(&mut sockets).await;
    let node_open = metric(&fresh, &node, "rhizome_connections_open").await?;
    let loaded = probe_status(&fresh, &node).await;
    let rss_loaded_kib = node.rss_kib();
    let node_refused = metric(&fresh, &node, "rhizome_connections_refused_total").await?;
    let sigterm = node.terminate(Duration::from_secs(60)).await?;
    drop(sockets);
    Ok(Slowloris {
        cap,
        opened,
        held,
        node_open,
        node_refused,
        idle,
        loaded,
        rss_idle_kib,
        rss_loaded_kib,
        sigterm,
    })
}

async fn half_sent(url: &str) -> Result<TcpStream> {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(HALF_HEAD).await?;
    Ok(s)
}

/// How many of `sockets` the node has not closed (a read that waits is an open socket).
async fn still_open(sockets: &mut [TcpStream]) -> usize {
    join_all(sockets.iter_mut().map(|s| async move {
        let mut buf = [0u8; 64];
        tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf))
            .await
            .is_err()
    }))
    .await
    .into_iter()
    .filter(|open| *open)
    .count()
}

async fn probe_status(client: &reqwest::Client, node: &NodeProc) -> Probes {
    let url = format!("{}/status", node.url);
    let mut ms = Vec::with_capacity(PROBES);
    let mut failed = 0;
    for _ in 0..PROBES {
        let t = Instant::now();
        let answered = match client.get(&url).send().await {
            Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
            Err(_) => false,
        };
        if answered {
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        } else {
            failed += 1;
        }
    }
    Probes {
        p50_ms: quantile(&mut ms, 0.5).unwrap_or(f64::NAN),
        p99_ms: quantile(&mut ms, 0.99).unwrap_or(f64::NAN),
        failed,
    }
}

/// An unlabelled sample of the node's `/metrics`.
async fn metric(client: &reqwest::Client, node: &NodeProc, name: &str) -> Result<u64> {
    let url = format!("{}/metrics", node.url);
    let text = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .with_context(|| format!("{name} is not in /metrics"))?
        .trim()
        .parse()
        .with_context(|| format!("{name} is not a number"))
}

/// The section printed after the throughput table.
pub fn print(s: &Slowloris) {
    let mib = |k: Option<u64>| k.map_or("-".to_owned(), |k| format!("{:.0}", k as f64 / 1024.0));
    println!(
        "\n| slowloris | cap | sockets opened | held | node: open / refused | \
         /status p50 / p99 ms idle | held | /status failed idle / held | RSS MiB idle / held | \
         SIGTERM to exit s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| half-sent heads | {} | {} | {} | {} / {} | {:.1} / {:.1} | {:.1} / {:.1} | {} / {} | {} / {} | {:.2} |",
        thousands(s.cap as f64),
        thousands(s.opened as f64),
        thousands(s.held as f64),
        thousands(s.node_open as f64),
        thousands(s.node_refused as f64),
        s.idle.p50_ms,
        s.idle.p99_ms,
        s.loaded.p50_ms,
        s.loaded.p99_ms,
        s.idle.failed,
        s.loaded.failed,
        mib(s.rss_idle_kib),
        mib(s.rss_loaded_kib),
        s.sigterm.as_secs_f64(),
    );
}
