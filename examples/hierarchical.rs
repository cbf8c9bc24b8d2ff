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

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rhizome::events::NodeEvent;
use rhizome::federation::{InitialSync, LinkConfig, SyncMode};
use rhizome::server::Server;
use rhizome::{LinkStatus, Node, Pointer, Seq, Target};
use tokio::sync::broadcast::error::RecvError;

const TIMEOUT: Duration = Duration::from_secs(15);

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
        let parent_url = servers
            .iter()
            .find(|s| s.node().system_id() == parent)
            .map(Server::url)
            .with_context(|| format!("{parent} is started before {name}"))?;
        let link = server.node().connect_to_remote(
            &parent_url,
            LinkConfig {
                mode: SyncMode::Bidirectional,
                initial_sync: InitialSync::Full,
                name: Some(parent.into()),
                ..Default::default()
            },
        )?;
        servers.push(server);
        links.push((name, parent, link));
    }
    for (name, parent, link) in &links {
        wait_until(&format!("{name} is connected to {parent}"), || {
            Ok(link.status() == LinkStatus::Connected)
        })
        .await
        .with_context(|| {
            format!(
                "{name} did not connect to {parent} (last error: {:?})",
                link.info().last_error
            )
        })?;
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
    for node in &nodes {
        wait_until(
            &format!("{} holds every leaf's delta", node.system_id()),
            || Ok(ids(node)?.is_superset(&written)),
        )
        .await?;
    }
    for node in &nodes {
        let held = ids(node)?;
        ensure!(
            held == written,
            "{} holds {} ids, {} expected",
            node.system_id(),
            held.len(),
            written.len()
        );
        ensure!(
            node.store().head().0 == held.len() as u64,
            "{} stored some delta twice",
            node.system_id()
        );
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

async fn serve(system_id: &str) -> Result<Server> {
    let node = Node::in_memory(system_id).await?;
    Ok(Server::bind(node, "127.0.0.1:0").await?)
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
    let d = node
        .create_delta(
            &format!("sensor@{}", node.system_id()),
            vec![
                Pointer::new("station", Target::reference_in("stations", "readings")),
                Pointer::new("text", Target::from(text)),
            ],
        )
        .await
        .with_context(|| format!("writing on {}", node.system_id()))?;
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
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    run().await
}
