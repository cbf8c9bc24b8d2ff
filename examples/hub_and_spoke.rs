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

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{Context, Result};
use common::{author_delta, check_holds_exactly, dial, serve, wait_all_hold, wait_connected};
use rhizome::Server;
use rhizome::{Node, Pointer, Target};

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
        let link = dial(spoke.federation(), &hub, "hub")?;
        wait_connected(&link, &format!("{name} -> hub")).await?;
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
    wait_all_hold(&nodes, &written).await?;
    println!("converged in {:?}:", started.elapsed());
    for node in &nodes {
        check_holds_exactly(node, &written)?;
        println!(
            "  {:8} {} deltas, identical id set, each stored once",
            node.system_id(),
            written.len()
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

/// One line of the shared document, written on `node`; its id.
async fn edit(node: &Node, line: i64) -> Result<String> {
    let who = node.system_id();
    let pointers = vec![
        Pointer::new("document", Target::reference_in("doc-1", "lines")),
        Pointer::new("line", Target::from(line)),
        Pointer::new("text", Target::from(format!("line {line} from {who}"))),
    ];
    author_delta(node, &format!("user@{who}"), pointers).await
}

#[tokio::main]
async fn main() -> Result<()> {
    run().await
}
