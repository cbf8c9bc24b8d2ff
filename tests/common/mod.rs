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
