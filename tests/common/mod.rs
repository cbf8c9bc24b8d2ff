//! Shared helpers for integration tests: real nodes on port 0, real sockets.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use rhizome::server::Server;
use rhizome::Node;

/// A node on a temporary store, served on a free port.
pub async fn start_node(system_id: &str) -> Server {
    let node = Node::in_memory(system_id).await.expect("temporary node");
    Server::bind(node, "127.0.0.1:0")
        .await
        .expect("bind port 0")
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn wait_for<F: FnMut() -> bool>(timeout: Duration, mut check: F) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// A node with a custom config, served on a free port.
pub async fn start_node_with(config: rhizome::NodeConfig) -> Server {
    let node = Node::open(config).await.expect("node");
    Server::bind(node, "127.0.0.1:0")
        .await
        .expect("bind port 0")
}

/// Every delta id in a node's log.
pub fn ids(node: &Node) -> std::collections::BTreeSet<String> {
    node.store()
        .scan_after(rhizome::Seq(0), usize::MAX)
        .expect("scan")
        .into_iter()
        .map(|d| d.delta.id)
        .collect()
}

/// Authors `n` deltas on `node` as `author`, each pointing at a distinct target.
pub async fn author(node: &Node, author: &str, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let d = node
            .create_delta(
                author,
                vec![rhizome::Pointer::new(
                    "about",
                    rhizome::Target::reference(format!("{author}-topic-{i}")),
                )],
            )
            .await
            .expect("create delta");
        out.push(d.delta.id);
    }
    out
}

/// Waits until `node` holds every id in `want`.
pub async fn wait_holds(
    node: &Node,
    want: &std::collections::BTreeSet<String>,
    timeout: Duration,
) -> bool {
    wait_for(timeout, || ids(node).is_superset(want)).await
}

/// Waits until the link reaches `status`.
pub async fn wait_status(
    link: &rhizome::FederationLink,
    status: rhizome::LinkStatus,
    timeout: Duration,
) -> bool {
    wait_for(timeout, || link.status() == status).await
}
