//! The examples, run as tests so they cannot rot. Each example checks itself: it
//! returns an error naming what did not happen (a node that did not converge, a
//! delta that crossed a policy it should not have).

// Each example is its own crate and declares `mod common;` (examples/common/mod.rs), so
// each module below brings its own copy of that file. The copies hold only functions
// and constants, no state to disagree on: loading the file more than once is harmless.
#![allow(clippy::duplicate_mod)]

use std::time::Duration;

// Each example's `main` is for `cargo run --example`.
#[allow(dead_code)]
#[path = "../../examples/simple_client.rs"]
mod simple_client;
// simple_client includes simple_server's file for its demo: the same module serves here.
use simple_client::simple_server;

#[allow(dead_code)]
#[path = "../../examples/hub_and_spoke.rs"]
mod hub_and_spoke;

#[allow(dead_code)]
#[path = "../../examples/trust_policies.rs"]
mod trust_policies;

#[allow(dead_code)]
#[path = "../../examples/bridge.rs"]
mod bridge;

#[allow(dead_code)]
#[path = "../../examples/peer_to_peer.rs"]
mod peer_to_peer;

#[allow(dead_code)]
#[path = "../../examples/hierarchical.rs"]
mod hierarchical;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_server_serves_and_authors_ticks() -> anyhow::Result<()> {
    simple_server::run_for("127.0.0.1:0", Some(Duration::from_millis(1500)), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_client_demo_syncs_broadcasts_and_reconnects() -> anyhow::Result<()> {
    simple_client::demo().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_spoke_converges() -> anyhow::Result<()> {
    hub_and_spoke::run().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_policies_decide_and_reload() -> anyhow::Result<()> {
    trust_policies::run().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_lets_through_only_what_its_scripts_allow() -> anyhow::Result<()> {
    bridge::run().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_to_peer_mesh_converges_without_echo() -> anyhow::Result<()> {
    peer_to_peer::run().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hierarchical_delta_reaches_every_level() -> anyhow::Result<()> {
    hierarchical::run().await
}
