//! Federation between real nodes on port 0 over real WebSocket links.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{author, ids, start_node, wait_holds, wait_status};
use rhizome::federation::{InitialSync, LinkConfig, SyncMode};
use rhizome::LinkStatus;

const T: Duration = Duration::from_secs(15);

fn cfg(mode: SyncMode, initial_sync: InitialSync) -> LinkConfig {
    LinkConfig {
        mode,
        initial_sync,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_link_syncs_history_then_streams_both_ways() {
    let server = start_node("server").await;
    let client = start_node("client").await;
    let s_before: BTreeSet<_> = author(server.node(), "alice", 50)
        .await
        .into_iter()
        .collect();
    let c_before: BTreeSet<_> = author(client.node(), "bob", 30).await.into_iter().collect();

    let link = client
        .node()
        .connect_to_remote(
            &server.url(),
            cfg(SyncMode::Bidirectional, InitialSync::Full),
        )
        .unwrap();
    assert!(
        wait_status(&link, LinkStatus::Connected, T).await,
        "link never connected: {:?}",
        link.info()
    );
    assert!(
        wait_holds(client.node(), &s_before, T).await,
        "client lacks the server's history"
    );
    assert!(
        wait_holds(server.node(), &c_before, T).await,
        "server lacks the client's history"
    );

    let s_live: BTreeSet<_> = author(server.node(), "alice", 20)
        .await
        .into_iter()
        .collect();
    let c_live: BTreeSet<_> = author(client.node(), "bob", 20).await.into_iter().collect();
    assert!(wait_holds(client.node(), &s_live, T).await);
    assert!(wait_holds(server.node(), &c_live, T).await);
    assert_eq!(ids(client.node()), ids(server.node()));
    // Each delta stored exactly once on each side: the log length equals the id count.
    assert_eq!(
        client.node().store().head().0 as usize,
        ids(client.node()).len()
    );
    assert_eq!(
        server.node().store().head().0 as usize,
        ids(server.node()).len()
    );

    assert_eq!(link.remote_system_id().as_deref(), Some("server"));
    let stats = link.stats();
    assert_eq!(stats.deltas_received, 70, "{stats:?}");
    assert_eq!(stats.deltas_sent, 50, "{stats:?}");
    assert!(stats.bytes_sent > 0 && stats.bytes_received > 0 && stats.connected_at.is_some());
    let inbound = server.node().get_federation_links();
    assert_eq!(inbound.len(), 1);
    assert_eq!(inbound[0].remote_system_id().as_deref(), Some("client"));

    assert!(client.node().disconnect_from_remote(link.id()));
    assert!(common::wait_for(T, || client.node().get_federation_links().is_empty()).await);
    assert!(common::wait_for(T, || server.node().get_federation_links().is_empty()).await);
    client.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}
