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

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rhizome::federation::{InitialSync, LinkConfig, SyncMode};
use rhizome::server::Server;
use rhizome::{FederationLink, LinkStatus, Node, Pointer, Seq, Target};

const TIMEOUT: Duration = Duration::from_secs(15);
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
        let link = peers[i].node().connect_to_remote(
            &peers[j].url(),
            LinkConfig {
                mode: SyncMode::Bidirectional,
                initial_sync: InitialSync::Full,
                name: Some(PEERS[j].into()),
                ..Default::default()
            },
        )?;
        links.push((PEERS[i], PEERS[j], link));
    }
    for (a, b, link) in &links {
        wait_connected(link, a, b).await?;
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

    let started = Instant::now();
    for peer in &peers {
        let node = peer.node();
        wait_until(&format!("{} holds every delta", node.system_id()), || {
            Ok(ids(node)?.is_superset(&written))
        })
        .await?;
    }
    println!("converged in {:?}", started.elapsed());

    // No echo storm: the total sent stops moving, and stays under one send per delta
    // per link end.
    let sent_total = || -> u64 {
        peers
            .iter()
            .flat_map(|p| p.node().get_federation_links())
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

    for peer in &peers {
        let node = peer.node();
        let held = ids(node)?;
        ensure!(
            held == written,
            "{} holds {} ids, {} expected",
            node.system_id(),
            held.len(),
            written.len()
        );
        let log = node.store().head().0;
        ensure!(
            log == held.len() as u64,
            "{} stored some delta twice ({log} log entries for {} ids)",
            node.system_id(),
            held.len()
        );
        println!(
            "  {}: {} deltas, each stored once ({} copies from a second path dropped as duplicates)",
            node.system_id(),
            held.len(),
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

async fn serve(system_id: &str) -> Result<Server> {
    let node = Node::in_memory(system_id).await?;
    Ok(Server::bind(node, "127.0.0.1:0").await?)
}

/// A note authored on `node`; its id.
async fn note(node: &Node, i: usize) -> Result<String> {
    let who = node.system_id();
    let d = node
        .create_delta(
            &format!("user@{who}"),
            vec![
                Pointer::new("board", Target::reference_in("board-1", "notes")),
                Pointer::new("text", Target::from(format!("note {i} from {who}"))),
            ],
        )
        .await
        .with_context(|| format!("writing on {who}"))?;
    Ok(d.delta.id)
}

fn ids(node: &Node) -> Result<BTreeSet<String>> {
    Ok(node
        .store()
        .scan_after(Seq(0), usize::MAX)?
        .into_iter()
        .map(|d| d.delta.id)
        .collect())
}

async fn wait_connected(link: &FederationLink, a: &str, b: &str) -> Result<()> {
    wait_until(&format!("{a} <-> {b} is connected"), || {
        Ok(link.status() == LinkStatus::Connected)
    })
    .await
    .with_context(|| {
        format!(
            "{a} did not connect to {b} (last error: {:?})",
            link.info().last_error
        )
    })
}

/// Polls `check` until it holds; fails naming `what` after [`TIMEOUT`].
async fn wait_until(what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {TIMEOUT:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    run().await
}
