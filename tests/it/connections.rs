//! Connections bounded (issue 14, finding 3): sockets that send half a request head are
//! closed after the header timeout, a node at its connection cap still answers `/status`
//! and carries its links, and shutdown does not wait for idle clients.
//! Real nodes on port 0, real sockets, bytes written by hand.

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rhizome::federation::{LinkConfig, ServerOptions};
use rhizome::Server;
use rhizome::{LinkStatus, NodeConfig, Storage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The slowloris request: a head that never ends.
const HALF_HEAD: &[u8] = b"GET /status HTTP/1.1\r\nHost: x\r\n";
/// A WebSocket upgrade to the federation endpoint, its head never finished.
const HALF_UPGRADE: &[u8] = b"GET /federation HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// Generous bound for anything that should happen "soon" on a loaded machine.
const EVENTUALLY: Duration = Duration::from_secs(15);

async fn node_with(id: &str, server: ServerOptions) -> Server {
    common::start_node_with_options(
        NodeConfig {
            storage: Storage::Memory,
            system_id: Some(id.into()),
            ..Default::default()
        },
        server,
    )
    .await
}

/// `n` sockets to `server`, each having sent `bytes`.
async fn half_sent(server: &Server, n: usize, bytes: &'static [u8]) -> Vec<TcpStream> {
    let addr = server.local_addr();
    join_all((0..n).map(|_| async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(bytes).await.expect("write half a head");
        s
    }))
    .await
}

/// Everything the server sends on `s` until it closes it, or `None` if it is still open
/// after `within`.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| got)
}

/// Whether all of `sockets` are closed by the server within `within` (waited together).
async fn all_closed(sockets: &mut [TcpStream], within: Duration) -> bool {
    join_all(sockets.iter_mut().map(|s| read_until_closed(s, within)))
        .await
        .iter()
        .all(Option::is_some)
}

/// The value of an unlabelled sample in the node's `/metrics`.
async fn metric(server: &Server, name: &str) -> u64 {
    let text = common::metrics_text(&server.url()).await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
        .parse()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_heads_and_upgrades_are_closed_after_the_header_timeout() {
    let server = node_with(
        "slow",
        ServerOptions {
            header_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await;
    let mut heads = half_sent(&server, 20, HALF_HEAD).await;
    let mut upgrades = half_sent(&server, 20, HALF_UPGRADE).await;
    let mut silent = half_sent(&server, 5, b"").await;
    // A keep-alive connection that got its answer and then says nothing more.
    let mut kept_alive = half_sent(&server, 1, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n").await;

    assert!(
        all_closed(&mut heads, EVENTUALLY).await,
        "half-sent request heads are still open"
    );
    assert!(
        all_closed(&mut upgrades, EVENTUALLY).await,
        "half-sent WebSocket upgrades are still open"
    );
    assert!(
        all_closed(&mut silent, EVENTUALLY).await,
        "silent sockets are still open"
    );
    let answered = read_until_closed(&mut kept_alive[0], EVENTUALLY)
        .await
        .expect("an idle keep-alive connection is closed");
    assert!(
        answered.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answered)
    );

    let stats = server.connection_stats();
    assert!(
        common::wait_for(EVENTUALLY, || stats.snapshot().header_timeouts >= 46).await,
        "{:?}",
        stats.snapshot()
    );
    assert!(metric(&server, "rhizome_connections_header_timeout_total").await >= 46);
    // The node still serves once they are gone.
    let status = reqwest::get(format!("{}/status", server.url()))
        .await
        .expect("GET /status");
    assert_eq!(status.status(), 200);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_body_stalls_is_closed_after_the_idle_timeout() {
    let server = node_with(
        "stalled",
        ServerOptions {
            idle_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await;
    let mut stalled = half_sent(
        &server,
        3,
        b"POST /deltas HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
Content-Length: 100\r\n\r\n{\"author\":",
    )
    .await;
    assert!(
        all_closed(&mut stalled, EVENTUALLY).await,
        "requests with a stalled body are still open"
    );
    assert!(server.connection_stats().snapshot().idle_timeouts >= 3);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_at_its_cap_still_answers_status_and_carries_its_links() {
    const CAP: usize = 40;
    let full = node_with(
        "full",
        ServerOptions {
            max_sockets: Some(CAP),
            ..Default::default()
        },
    )
    .await;
    let peer = common::start_node("peer").await;
    let link = peer
        .federation()
        .connect_to_remote(&full.url(), LinkConfig::default())
        .expect("link config");
    assert!(common::wait_status(&link, LinkStatus::Connected, EVENTUALLY).await);

    // The link holds one place; idle sockets take every other one, and some more wait
    // in the reserve above the cap.
    let stats = full.connection_stats().clone();
    let held = CAP - stats.snapshot().open;
    let _idle = half_sent(&full, held + 10, HALF_HEAD).await;
    assert!(
        common::wait_for(EVENTUALLY, || stats.snapshot().open >= CAP).await,
        "{:?}",
        stats.snapshot()
    );

    let started = Instant::now();
    let status = reqwest::get(format!("{}/status", full.url()))
        .await
        .expect("GET /status at the cap");
    assert_eq!(status.status(), 200);
    println!("/status at the cap answered in {:?}", started.elapsed());

    let refused = reqwest::get(format!("{}/deltas", full.url()))
        .await
        .expect("GET /deltas at the cap");
    assert_eq!(refused.status(), 503);
    let body: serde_json::Value = refused.json().await.expect("a JSON error");
    assert_eq!(body["error"], "OVERLOADED", "{body}");
    assert!(stats.snapshot().refused >= 1);
    // A monitor still sees the saturation.
    assert!(metric(&full, "rhizome_connections_open").await >= CAP as u64);
    assert!(metric(&full, "rhizome_connections_refused_total").await >= 1);

    // The link carries deltas both ways while the cap is held.
    let to_full: BTreeSet<String> = common::author(peer.node(), "alice", 20)
        .await
        .into_iter()
        .collect();
    let to_peer: BTreeSet<String> = common::author(full.node(), "bob", 20)
        .await
        .into_iter()
        .collect();
    assert!(common::wait_holds(full.node(), &to_full, EVENTUALLY).await);
    assert!(common::wait_holds(peer.node(), &to_peer, EVENTUALLY).await);
    assert!(
        stats.snapshot().open >= CAP,
        "the idle sockets under the cap are held (30 s header timeout): {:?}",
        stats.snapshot()
    );

    peer.shutdown().await.expect("peer shutdown");
    full.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_200_half_sent_sockets() {
    let server = common::start_node("busy").await;
    let mut sockets = half_sent(&server, 100, HALF_HEAD).await;
    sockets.extend(half_sent(&server, 100, HALF_UPGRADE).await);
    let stats = server.connection_stats().clone();
    assert!(
        common::wait_for(EVENTUALLY, || stats.snapshot().open >= 200).await,
        "{:?}",
        stats.snapshot()
    );

    let started = Instant::now();
    let shutdown = tokio::time::timeout(Duration::from_secs(20), server.shutdown()).await;
    let took = started.elapsed();
    shutdown
        .expect("shutdown returned within 20 s")
        .expect("shutdown");
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?} with 200 idle sockets"
    );
    assert!(
        all_closed(&mut sockets, Duration::from_secs(5)).await,
        "sockets still open after shutdown"
    );
    assert_eq!(stats.snapshot().open, 0);
}
