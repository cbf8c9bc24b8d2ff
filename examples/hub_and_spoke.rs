//! Hub and spoke: a hub and three spokes edit one document together.
//!
//! ```text
//!     [hub]
//!    /  |  \
//!  [A] [B] [C]
//! ```
//!
//! `cargo run --example hub_and_spoke`
//!
//! Each spoke dials the hub (bidirectional, full initial sync); the hub relays what one
//! spoke writes to the others. Every spoke (and the hub) authors edits of `doc-1`; the
//! example waits until all four nodes hold the same set of delta ids, each stored once,
//! and fails naming the node that did not converge.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rhizome::federation::{InitialSync, LinkConfig, SyncMode};
use rhizome::server::Server;
use rhizome::{FederationLink, LinkStatus, Node, Pointer, Seq, Target};

const TIMEOUT: Duration = Duration::from_secs(15);
const EDITS_PER_NODE: i64 = 5;

/// Runs the demo and checks convergence.
///
/// # Errors
/// When a link does not come up or the nodes do not converge in time.
pub async fn run() -> Result<()> {
    let hub = serve("hub").await?;
    println!("hub serving {}/federation", hub.url());
    let mut spokes = Vec::new();
    let mut links = Vec::new();
    for name in ["spoke-a", "spoke-b", "spoke-c"] {
        let spoke = serve(name).await?;
        let link = spoke.node().connect_to_remote(
            &hub.url(),
            LinkConfig {
                mode: SyncMode::Bidirectional,
                initial_sync: InitialSync::Full,
                name: Some("hub".into()),
                ..Default::default()
            },
        )?;
        wait_connected(&link, name).await?;
        println!("{name} connected to the hub");
        spokes.push(spoke);
        links.push(link);
    }
    let nodes: Vec<&Node> = std::iter::once(hub.node())
        .chain(spokes.iter().map(Server::node))
        .collect();

    // Collaborative editing: every node appends lines to the same document, in turns.
    let mut written = BTreeSet::new();
    for line in 1..=EDITS_PER_NODE {
        for node in &nodes {
            written.insert(edit(node, line).await?);
        }
    }
    println!(
        "{} edits written: {EDITS_PER_NODE} on each of {} nodes",
        written.len(),
        nodes.len()
    );

    let started = Instant::now();
    for node in &nodes {
        wait_until(&format!("{} holds every edit", node.system_id()), || {
            Ok(ids(node)?.is_superset(&written))
        })
        .await?;
    }
    println!("converged in {:?}:", started.elapsed());
    for node in &nodes {
        let held = ids(node)?;
        ensure!(
            held == written,
            "{} holds a different set: {} ids, {} expected",
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
            "  {:8} {} deltas, identical id set, each stored once",
            node.system_id(),
            held.len()
        );
    }
    for (link, spoke) in links.iter().zip(&spokes) {
        let s = link.stats();
        println!(
            "  {} <-> hub: sent {}, received {}",
            spoke.node().system_id(),
            s.deltas_sent,
            s.deltas_received
        );
    }

    for spoke in spokes {
        spoke.shutdown().await.context("stopping a spoke")?;
    }
    hub.shutdown().await.context("stopping the hub")?;
    println!(
        "all four nodes converged to the same {} deltas",
        written.len()
    );
    Ok(())
}

/// A node on a temporary store, served on a free port.
async fn serve(system_id: &str) -> Result<Server> {
    let node = Node::in_memory(system_id).await?;
    Ok(Server::bind(node, "127.0.0.1:0").await?)
}

/// One line of the shared document, written on `node`; its id.
async fn edit(node: &Node, line: i64) -> Result<String> {
    let who = node.system_id();
    let d = node
        .create_delta(
            &format!("user@{who}"),
            vec![
                Pointer::new("document", Target::reference_in("doc-1", "lines")),
                Pointer::new("line", Target::from(line)),
                Pointer::new("text", Target::from(format!("line {line} from {who}"))),
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

async fn wait_connected(link: &FederationLink, who: &str) -> Result<()> {
    wait_until(&format!("{who}'s link is connected"), || {
        Ok(link.status() == LinkStatus::Connected)
    })
    .await
    .with_context(|| {
        format!(
            "{who} did not connect to the hub (last error: {:?})",
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
