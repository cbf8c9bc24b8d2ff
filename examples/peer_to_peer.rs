//! Peer to peer: four peers in a full mesh, no central node.
//!
//! ```text
//!   [A] ─── [B]
//!    │   ×   │
//!   [D] ─── [C]
//! ```
//!
//! `cargo run --example peer_to_peer`
//!
//! Each pair of peers is linked once (six bidirectional links), so every delta reaches a
//! peer by several paths. Every peer authors deltas; the example checks that all four
//! converge, that each delta is stored exactly once on each peer (the copies arriving by
//! a second path are recognised as duplicates), and that there is no echo storm: once
//! converged, the links fall quiet, having sent each delta at most once per link.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::{
    author_delta, check_holds_exactly, dial, serve, wait_all_hold, wait_connected, wait_until,
};
use rhizome::{Node, Pointer, Target};

const PEERS: [&str; 4] = ["peer-a", "peer-b", "peer-c", "peer-d"];
const DELTAS_PER_PEER: usize = 10;
/// How long the links must send nothing for the mesh to count as quiet.
const QUIET: Duration = Duration::from_millis(500);

/// Runs the demo and checks convergence without an echo storm.
///
/// # Errors
/// When a link does not come up, the peers do not converge, a delta is stored twice or
/// the links keep sending after convergence.
pub async fn run() -> Result<()> {
    let mut peers = Vec::new();
    for name in PEERS {
        peers.push(serve(name).await?);
    }
    // A-B, B-C, C-D, D-A around the square, A-C and B-D across it.
    let pairs = [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2), (1, 3)];
    let mut links = Vec::new();
    for (i, j) in pairs {
        let link = dial(peers[i].federation(), &peers[j], PEERS[j])?;
        links.push((PEERS[i], PEERS[j], link));
    }
    for (a, b, link) in &links {
        wait_connected(link, &format!("{a} <-> {b}")).await?;
        println!("{a} <-> {b} connected");
    }

    let mut written = BTreeSet::new();
    for peer in &peers {
        for i in 0..DELTAS_PER_PEER {
            written.insert(note(peer.node(), i).await?);
        }
    }
    println!(
        "{} deltas written, {DELTAS_PER_PEER} on each peer",
        written.len()
    );

    let nodes: Vec<&Node> = peers.iter().map(|p| p.node()).collect();
    let started = Instant::now();
    wait_all_hold(&nodes, &written).await?;
    println!("converged in {:?}", started.elapsed());

    // No echo storm: the total sent stops moving, and stays under one send per delta
    // per link end.
    let sent_total = || -> u64 {
        peers
            .iter()
            .flat_map(|p| p.federation().get_federation_links())
            .map(|l| l.stats().deltas_sent)
            .sum()
    };
    let mut last = (sent_total(), Instant::now());
    wait_until(&format!("the links stay quiet for {QUIET:?}"), || {
        let now = sent_total();
        if now != last.0 {
            last = (now, Instant::now());
        }
        Ok(last.1.elapsed() >= QUIET)
    })
    .await?;
    let sent = last.0;
    let ceiling = (written.len() * links.len() * 2) as u64;
    ensure!(
        sent <= ceiling,
        "echo storm: {sent} deltas sent for {} deltas over {} links (at most {ceiling})",
        written.len(),
        links.len()
    );
    println!(
        "no echo storm: {sent} deltas sent in all over {} links (at most {ceiling}), then quiet",
        links.len()
    );

    for node in &nodes {
        check_holds_exactly(node, &written)?;
        println!(
            "  {}: {} deltas, each stored once ({} copies from a second path dropped as duplicates)",
            node.system_id(),
            written.len(),
            node.store().duplicates()
        );
    }

    for peer in peers {
        peer.shutdown().await.context("stopping a peer")?;
    }
    println!(
        "the mesh converged: every peer holds the same {} deltas",
        written.len()
    );
    Ok(())
}

/// A note authored on `node`; its id.
async fn note(node: &Node, i: usize) -> Result<String> {
    let who = node.system_id();
    let pointers = vec![
        Pointer::new("board", Target::reference_in("board-1", "notes")),
        Pointer::new("text", Target::from(format!("note {i} from {who}"))),
    ];
    author_delta(node, &format!("user@{who}"), pointers).await
}

#[tokio::main]
async fn main() -> Result<()> {
    run().await
}
