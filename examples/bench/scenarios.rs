//! The federation scenarios: each starts fresh `rhizome serve` processes, loads them over
//! HTTP and times delivery to the receivers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use tempfile::TempDir;
use tokio::task::JoinSet;

use crate::compare::Variant;
use crate::links::{self, LinkFiles, LinkKind};
use crate::load::{self, Posting, Probed};
use crate::node::{get_json, head, wait_connected, wait_for_heads, NodeProc, STALL_TIMEOUT};
use crate::signing::{self, Signers, Signing};
use crate::Row;

/// How often a live receiver is asked for its probes: the latency figures are late by
/// up to this plus one query (the table's notes give the measured mean).
const PROBE_POLL_LIVE: Duration = Duration::from_millis(5);
/// Ten receivers asked as often would load the two cores: the hub's are asked less often.
const PROBE_POLL_HUB: Duration = Duration::from_millis(25);

/// What every scenario needs.
pub struct Ctx {
    pub client: reqwest::Client,
    pub bin: PathBuf,
    pub memory: bool,
    pub posting: Posting,
    /// Probe the receivers for delivery latency (off: to see what probing costs).
    pub latency: bool,
    /// The three trust scripts of `live-policies`, written once.
    pub scripts: TempDir,
    /// The certificates and node keys of the `tls` and `auth` links.
    pub links: LinkFiles,
    /// The authors' keys signed deltas are signed with.
    pub signers: Arc<Signers>,
}

/// Delivery latency of the probes of a run, all receivers together.
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub samples: usize,
    pub mean_poll_ms: f64,
}

/// The three trust scripts of `examples/policy_bench.rs` (d), which every bench delta passes.
pub fn write_scripts(dir: &Path) -> Result<()> {
    let authors: Vec<String> = (0..load::AUTHORS)
        .map(|i| format!("{:?}", load::author(i)))
        .collect();
    let scripts = [
        (
            "10-authors.rhai",
            format!(
                "// Only these authors are trusted.\nlet trusted = [{}];\ndelta.author in trusted\n",
                authors.join(", ")
            ),
        ),
        (
            "20-verified.rhai",
            "// Only deltas that carry a `verified` pointer.\n\
             if !has_role(delta, \"verified\") { reject(\"no verified pointer\") }\ntrue\n"
                .to_owned(),
        ),
        (
            "30-clock.rhai",
            "// Nothing from the future (beyond a minute of clock skew).\n\
             if delta.timestamp > now() + 60000 { reject(\"timestamp in the future\") }\ntrue\n"
                .to_owned(),
        ),
    ];
    for (name, source) in scripts {
        std::fs::write(dir.join(name), source).with_context(|| format!("cannot write {name}"))?;
    }
    Ok(())
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn latency(probed: Vec<Probed>) -> Option<Latency> {
    let polls: usize = probed.iter().map(|p| p.polls).sum();
    let mean_poll_ms =
        probed.iter().map(|p| p.mean_poll_ms).sum::<f64>() / probed.len().max(1) as f64;
    let mut all: Vec<f64> = probed.into_iter().flat_map(|p| p.latencies_ms).collect();
    let samples = all.len();
    Some(Latency {
        p50_ms: load::quantile(&mut all, 0.50)?,
        p99_ms: load::quantile(&mut all, 0.99)?,
        samples,
        mean_poll_ms: if polls == 0 { 0.0 } else { mean_poll_ms },
    })
}

/// Starts one probe poller per receiver; dropping the set aborts them.
fn start_probes(
    ctx: &Ctx,
    receivers: &[&NodeProc],
    tag: &str,
    n: usize,
    every: Duration,
) -> JoinSet<Result<Probed>> {
    let mut set = JoinSet::new();
    if !ctx.latency {
        return set;
    }
    for r in receivers {
        set.spawn(load::track_probes(
            ctx.client.clone(),
            r.url.clone(),
            tag.to_owned(),
            n,
            every,
        ));
    }
    set
}

/// Waits for the pollers; every probe is durable on every receiver by now, so they
/// finish within a poll or two.
async fn finish_probes(mut set: JoinSet<Result<Probed>>) -> Result<Option<Latency>> {
    let mut out = Vec::new();
    let gather = async {
        while let Some(done) = set.join_next().await {
            out.push(done.context("a probe poller panicked")??);
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(STALL_TIMEOUT, gather)
        .await
        .context("probes still missing on a receiver that holds every delta")??;
    Ok(latency(out))
}

/// `sync`: A is loaded over HTTP with no link, with signed deltas if `variant` says so;
/// then B starts pulling everything over a link of `variant`'s kind.
pub async fn sync(ctx: &Ctx, n: usize, variant: Variant) -> Result<Vec<Row>> {
    let Variant { link, signing } = variant;
    let bench_cpu = crate::node::cpu_secs_of("self");
    let client = &ctx.client;
    let acceptor = ctx.links.acceptor_args(link);
    let mut a = NodeProc::spawn(&ctx.bin, "A", ctx.memory, &acceptor).await?;
    let tag = load::fresh_tag();
    let signers = (signing == Signing::Signed).then(|| ctx.signers.clone());
    let load_secs = load::post_all(client, &a.url, &tag, n, ctx.posting, signers).await?;
    let stored = head(client, &a).await?;
    ensure!(stored == n as u64, "node A stored {stored} of {n} deltas");
    let (rss_a_loaded, cpu_a_loaded) = (a.peak_rss_kib(), a.cpu_secs());
    // From here on A's peak covers serving the sync only.
    let reset = a.reset_peak_rss();
    println!("  sync N={n}: A loaded in {load_secs:.2}s, starting B");

    // The clock includes B's process start and store open: what an operator waits for.
    let start = Instant::now();
    let mut extra = args(&[
        "--connect",
        &a.url,
        "--mode",
        "pull",
        "--initial-sync",
        "full",
    ]);
    extra.extend(ctx.links.dialer_args(link));
    let mut b = NodeProc::spawn(&ctx.bin, "B", ctx.memory, &extra).await?;
    println!("  sync N={n}: A is pid {}, B is pid {}", a.pid(), b.pid());
    wait_for_heads(client, &mut [&mut b], n as u64).await?;
    let secs = start.elapsed().as_secs_f64();
    a.ensure_running()?;
    links::check(link, client, &a, &b).await?;
    let verified = signing::check_counted(client, &b, n, signing).await?;
    let checked = signing::check_stored(client, &b, &tag, n, signing, &ctx.signers).await?;
    println!(
        "  sync N={n}: B caught up in {secs:.2}s ({}); B verified {verified} signatures, \
         {checked} of its deltas read back all {}",
        crate::machine_note(bench_cpu),
        match signing {
            Signing::Unsigned => "unsigned",
            Signing::Signed => "verify",
        }
    );
    Ok(vec![
        Row::new(
            format!(
                "load A: POST /deltas, no link{}{}",
                label_link(link),
                label_signing(signing)
            ),
            n,
            secs_rate(n, load_secs),
        )
        .rss(rss_a_loaded, None)
        .cpu(cpu_a_loaded, None),
        Row::new(
            format!(
                "sync A -> B (pull, full){}{}{}",
                label_link(link),
                label_signing(signing),
                if reset { "" } else { " [A peak incl. load]" }
            ),
            n,
            secs_rate(n, secs),
        )
        .rss(a.peak_rss_kib(), b.peak_rss_kib())
        .cpu(
            a.cpu_secs()
                .zip(cpu_a_loaded)
                .map(|(now, before)| now - before),
            b.cpu_secs(),
        ),
    ])
}

/// What a row's label says of its link: nothing for the plain link of the main tables.
fn label_link(link: LinkKind) -> String {
    match link {
        LinkKind::Plain => String::new(),
        other => format!(" [{} link]", other.name()),
    }
}

/// What a row's label says of its deltas: nothing for the unsigned ones of the main tables.
fn label_signing(signing: Signing) -> &'static str {
    match signing {
        Signing::Unsigned => "",
        Signing::Signed => " [signed]",
    }
}

fn secs_rate(n: usize, secs: f64) -> (f64, f64) {
    (secs, n as f64 / secs)
}

/// `live` / `live-policies`: B is linked to A (bidirectional, a link of kind `link`)
/// before A gets any delta; deltas posted to A flow to B as they are stored.
pub async fn live(ctx: &Ctx, n: usize, policies: bool, link: LinkKind) -> Result<Vec<Row>> {
    let bench_cpu = crate::node::cpu_secs_of("self");
    let client = &ctx.client;
    let scripts = ctx.scripts.path().display().to_string();
    let mut common = Vec::new();
    if policies {
        common = args(&["--policies", &scripts]);
    }
    let mut acceptor = ctx.links.acceptor_args(link);
    acceptor.extend(common.iter().cloned());
    let mut a = NodeProc::spawn(&ctx.bin, "A", ctx.memory, &acceptor).await?;
    let mut extra = args(&[
        "--connect",
        &a.url,
        "--mode",
        "bidirectional",
        "--initial-sync",
        "full",
    ]);
    extra.extend(common.iter().cloned());
    extra.extend(ctx.links.dialer_args(link));
    let mut b = NodeProc::spawn(&ctx.bin, "B", ctx.memory, &extra).await?;
    // Both stores are empty, so the full initial sync is instant and nothing posted
    // after this can be missed.
    wait_connected(client, &mut b, 1).await?;
    wait_connected(client, &mut a, 1).await?;
    links::check(link, client, &a, &b).await?;

    println!("  live N={n}: A is pid {}, B is pid {}", a.pid(), b.pid());
    let tag = load::fresh_tag();
    let probes = start_probes(ctx, &[&b], &tag, n, PROBE_POLL_LIVE);
    let start = Instant::now();
    let ingest = load::post_all(client, &a.url, &tag, n, ctx.posting, None).await?;
    wait_for_heads(client, &mut [&mut b], n as u64).await?;
    let secs = start.elapsed().as_secs_f64();
    a.ensure_running()?;
    let latency = finish_probes(probes).await?;
    println!(
        "  live N={n}: A acknowledged every POST in {ingest:.2}s, B held all after {secs:.2}s \
         ({})",
        crate::machine_note(bench_cpu)
    );
    let label = if policies {
        check_policies_ran(client, &b, n).await?;
        "live A -> B, 3 Rhai policies on B"
    } else {
        "live A -> B (bidirectional link)"
    };
    let label = format!("{label}{}", label_link(link));
    Ok(vec![Row::new(label, n, secs_rate(n, secs))
        .latency(latency)
        .rss(a.peak_rss_kib(), b.peak_rss_kib())
        .cpu(a.cpu_secs(), b.cpu_secs())])
}

/// The figure is only about scripts if they judged every delta and refused none.
async fn check_policies_ran(client: &reqwest::Client, node: &NodeProc, n: usize) -> Result<()> {
    let p = get_json(client, node, "/policies").await?;
    let evaluations = p["evaluations"].as_u64().unwrap_or(0);
    let rejections = p["rejections"].as_u64().unwrap_or(0);
    ensure!(
        evaluations >= 3 * n as u64 && rejections == 0,
        "node {}: {evaluations} script evaluations and {rejections} rejections for {n} deltas; \
         expected {} and 0: {p}",
        node.name,
        3 * n
    );
    Ok(())
}

/// `hub`: `spokes` nodes linked to one hub; deltas posted to the hub reach every spoke.
pub async fn hub(ctx: &Ctx, n: usize, spokes: usize) -> Result<Vec<Row>> {
    let bench_cpu = crate::node::cpu_secs_of("self");
    let client = &ctx.client;
    let mut h = NodeProc::spawn(&ctx.bin, "hub", ctx.memory, &[]).await?;
    let extra = args(&[
        "--connect",
        &h.url,
        "--mode",
        "bidirectional",
        "--initial-sync",
        "full",
    ]);
    let mut spoke_procs = Vec::with_capacity(spokes);
    for i in 0..spokes {
        spoke_procs
            .push(NodeProc::spawn(&ctx.bin, &format!("spoke{i}"), ctx.memory, &extra).await?);
    }
    wait_connected(client, &mut h, spokes).await?;
    for s in &mut spoke_procs {
        wait_connected(client, s, 1).await?;
    }

    let tag = load::fresh_tag();
    let receivers: Vec<&NodeProc> = spoke_procs.iter().collect();
    let probes = start_probes(ctx, &receivers, &tag, n, PROBE_POLL_HUB);
    let start = Instant::now();
    let ingest = load::post_all(client, &h.url, &tag, n, ctx.posting, None).await?;
    let mut refs: Vec<&mut NodeProc> = spoke_procs.iter_mut().collect();
    wait_for_heads(client, &mut refs, n as u64).await?;
    let secs = start.elapsed().as_secs_f64();
    h.ensure_running()?;
    let latency = finish_probes(probes).await?;
    println!(
        "  hub N={n}: the hub acknowledged every POST in {ingest:.2}s, all {spokes} spokes \
         held all after {secs:.2}s ({:.0} deliveries/s; {})",
        (n * spokes) as f64 / secs,
        crate::machine_note(bench_cpu)
    );
    let spoke_peak = spoke_procs.iter().filter_map(NodeProc::peak_rss_kib).max();
    let spoke_cpu: Vec<f64> = spoke_procs.iter().filter_map(NodeProc::cpu_secs).collect();
    // Per spoke, so the column reads like the other rows' receiver.
    let spoke_cpu =
        (!spoke_cpu.is_empty()).then(|| spoke_cpu.iter().sum::<f64>() / spoke_cpu.len() as f64);
    Ok(vec![Row::new(
        format!("hub -> {spokes} spokes (live)"),
        n,
        secs_rate(n, secs),
    )
    .latency(latency)
    .rss(h.peak_rss_kib(), spoke_peak)
    .cpu(h.cpu_secs(), spoke_cpu)])
}
