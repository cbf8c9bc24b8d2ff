//! Hierarchical: a global root, two regional hubs, two leaves under each.
//!
//! ```text
//!         [global]
//!         /      \
//!     [us]        [eu]
//!     /  \        /  \
//! [leaf-a][leaf-b][leaf-c][leaf-d]
//! ```
//!
//! `cargo run --example hierarchical`
//!
//! Each regional hub dials the root and each leaf dials its regional hub, so no node has
//! more than three links. A delta written on `leaf-a` climbs to `us`, then `global`, then
//! comes down through `eu` to the other region's leaves; the example prints when it was
//! stored on each node (from each node's `delta:stored` event). Then every leaf writes one delta and all seven nodes must converge.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::{
    author_delta, check_holds_exactly, dial, serve, wait_all_hold, wait_connected, TIMEOUT,
};
use rhizome::events::NodeEvent;
use rhizome::Server;
use rhizome::{Node, Pointer, Target};
use tokio::sync::broadcast::error::RecvError;

/// Who dials whom: (node, its parent).
const TREE: [(&str, &str); 6] = [
    ("us", "global"),
    ("eu", "global"),
    ("leaf-a", "us"),
    ("leaf-b", "us"),
    ("leaf-c", "eu"),
    ("leaf-d", "eu"),
];

/// Runs the demo and checks that deltas reach every level.
///
/// # Errors
/// When a link does not come up or a delta does not reach every node in time.
pub async fn run() -> Result<()> {
    let mut servers = vec![serve("global").await?];
    let mut links = Vec::new();
    for (name, parent) in TREE {
        let server = serve(name).await?;
        let parent_server = servers
            .iter()
            .find(|s| s.node().system_id() == parent)
            .with_context(|| format!("{parent} is started before {name}"))?;
        let link = dial(server.federation(), parent_server, parent)?;
        servers.push(server);
        links.push((name, parent, link));
    }
    for (name, parent, link) in &links {
        wait_connected(link, &format!("{name} -> {parent}")).await?;
        println!("{name} -> {parent} connected");
    }
    let nodes: Vec<&Node> = servers.iter().map(Server::node).collect();

    // One delta from one leaf, followed through the tree: each node's `delta:stored`
    // event tells when it arrived there.
    let leaf_a = node_named(&nodes, "leaf-a")?;
    let watchers: Vec<_> = nodes.iter().map(|n| (n.system_id(), n.events())).collect();
    let started = Instant::now();
    let id = report(leaf_a, "a sensor reading from leaf-a").await?;
    println!("leaf-a wrote {id}; it was stored on:");
    let mut arrivals = Vec::new();
    for (name, events) in watchers {
        arrivals.push((name, tokio::spawn(stored_at(events, id.clone(), started))));
    }
    let mut reached = Vec::new();
    for (name, arrival) in arrivals {
        let after = arrival
            .await
            .context("a watcher task failed")?
            .with_context(|| format!("the delta from leaf-a never reached {name}"))?;
        reached.push((after, name));
    }
    reached.sort();
    for (after, name) in &reached {
        println!("  {name:7} after {after:?}");
    }

    // Every leaf writes; every node converges to the same set.
    let mut written: BTreeSet<String> = [id].into();
    for leaf in ["leaf-a", "leaf-b", "leaf-c", "leaf-d"] {
        let node = node_named(&nodes, leaf)?;
        written.insert(report(node, &format!("a reading from {leaf}")).await?);
    }
    wait_all_hold(&nodes, &written).await?;
    for node in &nodes {
        check_holds_exactly(node, &written)?;
    }
    println!(
        "all {} nodes hold the same {} deltas, each stored once",
        nodes.len(),
        written.len()
    );

    // Leaves first, the root last: each dialer closes its link before its parent stops.
    for server in servers.into_iter().rev() {
        server.shutdown().await.context("stopping a node")?;
    }
    Ok(())
}

/// When (after `started`) the delta `id` is stored, by the node's events; `None` when it
/// is not stored within [`TIMEOUT`].
async fn stored_at(
    mut events: tokio::sync::broadcast::Receiver<NodeEvent>,
    id: String,
    started: Instant,
) -> Option<Duration> {
    let stored = async {
        loop {
            match events.recv().await {
                Ok(NodeEvent::DeltaStored { delta_id, .. }) if delta_id == id => {
                    return Some(started.elapsed())
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    };
    tokio::time::timeout(TIMEOUT, stored).await.ok().flatten()
}

fn node_named<'a>(nodes: &[&'a Node], name: &str) -> Result<&'a Node> {
    nodes
        .iter()
        .copied()
        .find(|n| n.system_id() == name)
        .with_context(|| format!("no node named {name}"))
}

/// A reading authored on `node`; its id.
async fn report(node: &Node, text: &str) -> Result<String> {
    let pointers = vec![
        Pointer::new("station", Target::reference_in("stations", "readings")),
        Pointer::new("text", Target::from(text)),
    ];
    author_delta(node, &format!("sensor@{}", node.system_id()), pointers).await
}

#[tokio::main]
async fn main() -> Result<()> {
    run().await
}
