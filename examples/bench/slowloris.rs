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
    /// From the connection being up to the answer's last byte.
    pub served_p50_ms: f64,
    pub served_p99_ms: f64,
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
    let _ = rhizome::fd_limit::raise_nofile_limit();
    let mut node = NodeProc::spawn(&ctx.bin, "slowloris", ctx.memory, &[]).await?;
    // A new connection per request: over the cap, each is answered once and closed.
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .context("cannot build the HTTP client")?;
    let cap = metric(&fresh, &node, "rhizome_connections_limit").await?;
    let idle = probe_status(&node).await;
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
    let loaded = probe_status(&node).await;
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

/// Times `/status` on a new connection each time: the whole request (connect included),
/// and from the connection being up to the last byte of the answer. The second is the
/// node's part; the first also holds the client's `connect`, which on loopback slows down
/// as the same address holds thousands of connections (the kernel's port search).
async fn probe_status(node: &NodeProc) -> Probes {
    let addr = node.url.trim_start_matches("http://").to_owned();
    let (mut total, mut served) = (Vec::with_capacity(PROBES), Vec::with_capacity(PROBES));
    let mut failed = 0;
    for _ in 0..PROBES {
        let t = Instant::now();
        let answered = tokio::time::timeout(Duration::from_secs(5), async {
            let mut s = TcpStream::connect(&addr).await.ok()?;
            let up = Instant::now();
            s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).await.ok()?;
            answer.starts_with(b"HTTP/1.1 200").then(|| up.elapsed())
        })
        .await;
        match answered {
            Ok(Some(after_connect)) => {
                total.push(t.elapsed().as_secs_f64() * 1000.0);
                served.push(after_connect.as_secs_f64() * 1000.0);
            }
            _ => failed += 1,
        }
    }
    let q = |v: &mut Vec<f64>, q| quantile(v, q).unwrap_or(f64::NAN);
    Probes {
        p50_ms: q(&mut total, 0.5),
        p99_ms: q(&mut total, 0.99),
        served_p50_ms: q(&mut served, 0.5),
        served_p99_ms: q(&mut served, 0.99),
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
    let n = |v: f64| thousands(v);
    println!(
        "\n| slowloris | cap | sockets opened | held | node: open / refused | RSS MiB | \
         /status p50 / p99 ms | after connect p50 / p99 ms | /status failed | SIGTERM to exit s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| idle node | {} | - | - | - | {} | {:.2} / {:.2} | {:.2} / {:.2} | {} of {PROBES} | - |",
        n(s.cap as f64),
        mib(s.rss_idle_kib),
        s.idle.p50_ms,
        s.idle.p99_ms,
        s.idle.served_p50_ms,
        s.idle.served_p99_ms,
        s.idle.failed,
    );
    println!(
        "| half-sent heads held | {} | {} | {} | {} / {} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {} of {PROBES} | {:.2} |",
        n(s.cap as f64),
        n(s.opened as f64),
        n(s.held as f64),
        n(s.node_open as f64),
        n(s.node_refused as f64),
        mib(s.rss_loaded_kib),
        s.loaded.p50_ms,
        s.loaded.p99_ms,
        s.loaded.served_p50_ms,
        s.loaded.served_p99_ms,
        s.loaded.failed,
        s.sigterm.as_secs_f64(),
    );
}
