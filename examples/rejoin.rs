//! A node rejoining with most of the data: what a link without a cursor carries when the
//! two nodes already share all but a few deltas, with reconciliation and without.
//!
//! `cargo run --release --example rejoin -- --deltas N --missing M [--extra E]
//!  [--no-reconcile] [--json]`
//!
//! Node A holds N deltas of ~390 bytes (ingested through the library, `Origin::Local`);
//! node B holds the same N minus M of them (every N/M-th), plus E of its own, as a node
//! restored from an older backup would. B then dials A (bidirectional, full initial
//! sync, no cursor on either side) and the clock runs until both hold everything. The
//! figures: time, and deltas and bytes received over the link on each side
//! (`deltasReceived`, `bytesReceived`). `--no-reconcile` turns the feature off
//! on both nodes: the link then replays each log in full, as before the feature.

mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Parser;
use rhizome::{Delta, Node, NodeConfig, Origin, Pointer, ServerOptions, Storage, Target};
use serde_json::json;

use common::{dial, serve_with_options, wait_connected};

#[cfg(not(test))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    about = "A node rejoining with most of the data: link traffic with and without reconciliation"
)]
struct Args {
    /// Deltas on node A.
    #[arg(long, default_value_t = 100_000)]
    deltas: usize,
    /// Of those, how many node B lacks.
    #[arg(long, default_value_t = 1_000)]
    missing: usize,
    /// Deltas only node B holds.
    #[arg(long, default_value_t = 0)]
    extra: usize,
    /// Both nodes without the `reconcile` feature (a full replay each way).
    #[arg(long)]
    no_reconcile: bool,
    /// Print the figures as one JSON line on stdout.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.missing <= args.deltas, "--missing is at most --deltas");
    let options = || ServerOptions {
        reconcile: !args.no_reconcile,
        ..Default::default()
    };
    let node = |name: &str| NodeConfig {
        storage: Storage::Memory,
        system_id: Some(name.into()),
        ..Default::default()
    };
    let a = serve_with_options(node("rejoin-a"), options()).await?;
    let b = serve_with_options(node("rejoin-b"), options()).await?;

    let all: Vec<Delta> = (0..args.deltas).map(|i| make_delta("alice", i)).collect();
    let every = args.deltas.checked_div(args.missing).unwrap_or(usize::MAX);
    let (lacking, kept): (Vec<_>, Vec<_>) = all
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| every != usize::MAX && i % every == 0 && i / every < args.missing);
    load(a.node(), all).await?;
    load(b.node(), kept.into_iter().map(|(_, d)| d).collect()).await?;
    load(
        b.node(),
        (0..args.extra).map(|i| make_delta("bob", i)).collect(),
    )
    .await?;
    let total = (args.deltas + args.extra) as u64;

    let started = Instant::now();
    let link = dial(b.federation(), &a, "rejoin")?;
    wait_connected(&link, "rejoin-b -> rejoin-a").await?;
    let deadline = started + Duration::from_secs(300);
    while held(a.node()) < total || held(b.node()) < total {
        ensure!(
            Instant::now() < deadline,
            "not converged: a holds {}, b holds {}, of {total}",
            held(a.node()),
            held(b.node())
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let converged = started.elapsed();
    // Counters settle once the last answers are in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b_side = link.stats();
    let a_side = a
        .federation()
        .get_federation_links()
        .pop()
        .context("a's end of the link")?
        .stats();
    let delta_bytes = make_delta("alice", 0).to_json().len();
    let report = json!({
        "deltas": args.deltas,
        "missing": lacking.len(),
        "extra": args.extra,
        "reconcile": !args.no_reconcile,
        "convergedSecs": converged.as_secs_f64(),
        "bReceivedDeltas": b_side.deltas_received,
        "bReceivedBytes": b_side.bytes_received,
        "aReceivedDeltas": a_side.deltas_received,
        "aReceivedBytes": a_side.bytes_received,
        "reconciledMissing": b_side.reconciled_missing + a_side.reconciled_missing,
        "deltaBytes": delta_bytes,
    });
    let bytes = b_side.bytes_received + a_side.bytes_received;
    let differences = (lacking.len() + args.extra).max(1) as u64;
    println!(
        "{} deltas, b lacks {}, holds {} of its own; reconcile {}",
        args.deltas,
        lacking.len(),
        args.extra,
        if args.no_reconcile { "off" } else { "on" }
    );
    println!(
        "converged in {:.3} s; received over the link: b {} deltas / {} bytes, a {} deltas / {} bytes",
        converged.as_secs_f64(),
        b_side.deltas_received,
        b_side.bytes_received,
        a_side.deltas_received,
        a_side.bytes_received
    );
    println!(
        "{} bytes in all: {:.0} per difference, {:.1}x a delta of {delta_bytes} bytes",
        bytes,
        bytes as f64 / differences as f64,
        bytes as f64 / differences as f64 / delta_bytes as f64
    );
    if args.json {
        println!("{report}");
    }
    Ok(())
}

fn held(node: &Node) -> u64 {
    node.store().head().0
}

async fn load(node: &Node, deltas: Vec<Delta>) -> Result<()> {
    for chunk in deltas.chunks(1000) {
        node.ingest(chunk.to_vec(), Origin::Local)
            .await
            .context("loading a node")?;
    }
    Ok(())
}

/// The `i`th delta of `author`, ~390 bytes of JSON.
fn make_delta(author: &str, i: usize) -> Delta {
    Delta {
        id: uuid::Uuid::new_v4().to_string(),
        timestamp: 1_700_000_000_000 + i as u64,
        author: author.to_owned(),
        system: "rejoin".to_owned(),
        pointers: vec![
            Pointer::new(
                "item",
                Target::reference_in(format!("item-{:06}", i % 100_000), "items"),
            ),
            Pointer::new(
                "text",
                Target::from("a realistic short text value, ".repeat(6)),
            ),
        ],
        extra: Default::default(),
    }
}
