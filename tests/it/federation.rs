//! Federation between real nodes on port 0 over real WebSocket links.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{author, ids, start_node, wait_holds, wait_status};
use rhizome::federation::{InitialSync, LinkConfig, SyncMode};
use rhizome::Server;
use rhizome::{FederationLink, LinkStatus, Node};

const T: Duration = Duration::from_secs(15);

fn cfg(mode: SyncMode, initial_sync: InitialSync) -> LinkConfig {
    LinkConfig {
        mode,
        initial_sync,
        ..Default::default()
    }
}

/// The usual link: both ways, full initial sync.
fn bidirectional() -> LinkConfig {
    cfg(SyncMode::Bidirectional, InitialSync::Full)
}

/// `from` dials `to` with `config`; the link, once connected.
async fn connected(from: &Server, to: &Server, config: LinkConfig) -> FederationLink {
    let link = from
        .federation()
        .connect_to_remote(&to.url(), config)
        .expect("a valid link config");
    assert!(
        wait_status(&link, LinkStatus::Connected, T).await,
        "{} -> {} never connected: {:?}",
        from.node().system_id(),
        to.node().system_id(),
        link.info()
    );
    link
}

/// Asserts that `node` holds none of `sent`: they should not have crossed (`why`).
fn assert_holds_none(node: &Node, sent: &BTreeSet<String>, why: &str) {
    assert!(ids(node).is_disjoint(sent), "{why}");
}

/// Sends `request`; the JSON it is answered with.
async fn answer(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// `n` deltas authored on `node` as `author`; their ids.
async fn authored(node: &Node, author: &str, n: usize) -> BTreeSet<String> {
    common::author(node, author, n).await.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_link_syncs_history_then_streams_both_ways() {
    let server = start_node("server").await;
    let client = start_node("client").await;
    let s_before = authored(server.node(), "alice", 50).await;
    let c_before = authored(client.node(), "bob", 30).await;

    let link = connected(&client, &server, bidirectional()).await;
    assert!(
        wait_holds(client.node(), &s_before, T).await,
        "client lacks the server's history"
    );
    assert!(
        wait_holds(server.node(), &c_before, T).await,
        "server lacks the client's history"
    );

    let s_live = authored(server.node(), "alice", 20).await;
    let c_live = authored(client.node(), "bob", 20).await;
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
    let inbound = server.federation().get_federation_links();
    assert_eq!(inbound.len(), 1);
    assert_eq!(inbound[0].remote_system_id().as_deref(), Some("client"));

    assert!(client.federation().disconnect_from_remote(link.id()));
    assert!(common::wait_for(T, || client.federation().get_federation_links().is_empty()).await);
    assert!(common::wait_for(T, || server.federation().get_federation_links().is_empty()).await);
    client.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_modes_only_carry_one_way() {
    let server = start_node("server").await;
    let pusher = start_node("pusher").await;
    let puller = start_node("puller").await;
    let s_ids = authored(server.node(), "srv", 10).await;
    let push_ids = authored(pusher.node(), "push", 10).await;
    let pull_ids = authored(puller.node(), "pull", 10).await;

    let push = connected(&pusher, &server, cfg(SyncMode::Push, InitialSync::Full)).await;
    let pull = connected(&puller, &server, cfg(SyncMode::Pull, InitialSync::Full)).await;
    // The pusher's deltas reach the server (and from there the puller: relay).
    assert!(wait_holds(server.node(), &push_ids, T).await);
    assert!(wait_holds(puller.node(), &s_ids, T).await);
    assert!(wait_holds(puller.node(), &push_ids, T).await);
    let live = authored(server.node(), "srv", 5).await;
    assert!(wait_holds(puller.node(), &live, T).await);
    // Settle, then check nothing flowed against the mode.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_holds_none(pusher.node(), &s_ids, "a push link received deltas");
    assert_holds_none(server.node(), &pull_ids, "a pull link sent deltas");
    assert_eq!(push.stats().deltas_received, 0);
    assert_eq!(pull.stats().deltas_sent, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_mode_peer_that_sends_deltas_is_refused() {
    let server = start_node("server").await;
    let mut peer = common::RawPeer::connect(&server.url()).await;
    let ack = peer
        .hello("foreign-puller", serde_json::json!({"mode": "pull"}))
        .await;
    assert_eq!(ack["systemId"], "server");
    assert!(
        ack.get("rhizome").is_none(),
        "a v1 peer must not get our extension: {ack}"
    );
    peer.send(serde_json::json!({"type": "delta", "timestamp": 1,
        "delta": common::delta_json("d-1", "mallory", "foreign-puller")}))
        .await;
    let nack = peer.recv_type("delta_nack").await;
    assert_eq!(nack["deltaId"], "d-1");
    assert!(
        nack["reason"].as_str().unwrap().contains("pull mode"),
        "{nack}"
    );
    let err = peer.recv_type("error").await;
    assert_eq!(err["code"], "MODE_VIOLATION");
    assert!(server.node().get("d-1").unwrap().is_none());
    // The link is still up: a ping is answered.
    peer.send(serde_json::json!({"type": "ping", "timestamp": 1}))
        .await;
    peer.recv_type("pong").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_none_and_from_timestamp() {
    let server = start_node("server").await;
    let old = authored(server.node(), "alice", 10).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut = rhizome::delta::now_millis();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let newer = authored(server.node(), "alice", 10).await;

    let none_client = start_node("none").await;
    connected(
        &none_client,
        &server,
        cfg(SyncMode::Pull, InitialSync::None),
    )
    .await;
    let ts_client = start_node("ts").await;
    let mut ts_cfg = cfg(SyncMode::Pull, InitialSync::FromTimestamp);
    ts_cfg.sync_from_timestamp = Some(cut);
    connected(&ts_client, &server, ts_cfg).await;
    assert!(wait_holds(ts_client.node(), &newer, T).await);

    let live = authored(server.node(), "alice", 5).await;
    assert!(wait_holds(none_client.node(), &live, T).await);
    assert!(wait_holds(ts_client.node(), &live, T).await);
    assert_eq!(
        ids(none_client.node()),
        live,
        "initialSync none must receive only new deltas"
    );
    let want: BTreeSet<_> = newer.union(&live).cloned().collect();
    assert_eq!(
        ids(ts_client.node()),
        want,
        "from_timestamp must skip older deltas"
    );
    assert!(ids(ts_client.node()).is_disjoint(&old));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_apply_to_sync_and_live_traffic() {
    let server = start_node("server").await;
    let client = start_node("client").await;
    let alice_old = authored(server.node(), "alice", 10).await;
    author(server.node(), "bob", 10).await;
    let mine_public = authored(client.node(), "public", 5).await;
    author(client.node(), "secret", 5).await;

    let mut config = bidirectional();
    config.pull_filter =
        Some(serde_json::from_value(serde_json::json!({"authors": ["alice"]})).unwrap());
    config.push_filter =
        Some(serde_json::from_value(serde_json::json!({"authors": ["public"]})).unwrap());
    connected(&client, &server, config).await;
    assert!(wait_holds(client.node(), &alice_old, T).await);
    assert!(wait_holds(server.node(), &mine_public, T).await);

    let alice_live = authored(server.node(), "alice", 5).await;
    author(server.node(), "bob", 5).await;
    let public_live = authored(client.node(), "public", 5).await;
    author(client.node(), "secret", 5).await;
    assert!(wait_holds(client.node(), &alice_live, T).await);
    assert!(wait_holds(server.node(), &public_live, T).await);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let authors_on = |node: &rhizome::Node| -> BTreeSet<String> {
        node.store()
            .read_log(rhizome::Seq(0), rhizome::store::ReadLimit::All, None)
            .and_then(|log| log.deltas())
            .unwrap()
            .into_iter()
            .map(|d| d.delta.author)
            .collect()
    };
    assert_eq!(
        authors_on(client.node()),
        ["alice", "public", "secret"].map(String::from).into()
    );
    assert_eq!(
        authors_on(server.node()),
        ["alice", "bob", "public"].map(String::from).into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_three_spokes_converge_without_duplicates() {
    let hub = start_node("hub").await;
    let mut spokes = Vec::new();
    for i in 0..3 {
        let spoke = start_node(&format!("spoke-{i}")).await;
        connected(&spoke, &hub, bidirectional()).await;
        spokes.push(spoke);
    }
    let mut all = BTreeSet::new();
    all.extend(author(hub.node(), "hub-user", 10).await);
    for (i, spoke) in spokes.iter().enumerate() {
        all.extend(author(spoke.node(), &format!("user-{i}"), 20).await);
    }
    assert!(wait_holds(hub.node(), &all, T).await);
    for spoke in &spokes {
        assert!(
            wait_holds(spoke.node(), &all, T).await,
            "{} did not converge",
            spoke.node().system_id()
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for node in std::iter::once(hub.node()).chain(spokes.iter().map(|s| s.node())) {
        assert_eq!(ids(node), all);
        assert_eq!(
            node.store().head().0 as usize,
            all.len(),
            "{} stored something twice",
            node.system_id()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_four_node_mesh_converges_without_an_echo_storm() {
    let mut nodes = Vec::new();
    for i in 0..4 {
        nodes.push(start_node(&format!("mesh-{i}")).await);
    }
    // Every pair linked once: 6 bidirectional links, every delta has several paths.
    for i in 0..4 {
        for j in (i + 1)..4 {
            connected(&nodes[i], &nodes[j], bidirectional()).await;
        }
    }
    let mut all = BTreeSet::new();
    for (i, n) in nodes.iter().enumerate() {
        all.extend(author(n.node(), &format!("user-{i}"), 25).await);
    }
    for n in &nodes {
        assert!(wait_holds(n.node(), &all, T).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent_total = |nodes: &[rhizome::Server]| -> u64 {
        nodes
            .iter()
            .flat_map(|n| n.federation().get_federation_links())
            .map(|l| l.stats().deltas_sent)
            .sum()
    };
    let settled = sent_total(&nodes);
    // Each node sends each delta at most once per link it has (it never sends a delta
    // back on the link it came from): 100 deltas x 3 links x 4 nodes is the ceiling.
    assert!(settled <= 100 * 3 * 4, "echo storm: {settled} deltas sent");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sent_total(&nodes),
        settled,
        "deltas keep circulating after convergence"
    );
    for n in &nodes {
        assert_eq!(ids(n.node()), all);
        assert_eq!(n.node().store().head().0, 100);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_deltas_and_resume_delivers_them_all() {
    let server = start_node("server").await;
    let client = start_node("client").await;
    let link = connected(&client, &server, bidirectional()).await;
    link.pause();
    assert_eq!(link.status(), LinkStatus::Paused);
    let inbound = server.federation().get_federation_links().pop().unwrap();
    // Let the pause frame land before authoring.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let from_server = authored(server.node(), "alice", 30).await;
    let from_client = authored(client.node(), "bob", 30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_holds_none(
        client.node(),
        &from_server,
        "a paused link delivered deltas",
    );
    assert_holds_none(server.node(), &from_client, "a paused link sent deltas");
    assert_eq!(inbound.stats().deltas_sent, 0);

    link.resume();
    assert!(wait_holds(client.node(), &from_server, T).await);
    assert!(wait_holds(server.node(), &from_client, T).await);
    assert_eq!(link.status(), LinkStatus::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_policy_rejects_and_the_peer_cannot_weaken_it() {
    let config = rhizome::NodeConfig {
        system_id: Some("guarded".into()),
        trust: rhizome::TrustPolicy::authors(["alice"]),
        ..Default::default()
    };
    let server = common::start_node_with(config).await;
    let mut events = server.node().events();
    let mut peer = common::RawPeer::connect(&server.url()).await;
    // The peer asks for an open trust policy: it must make no difference.
    peer.hello(
        "foreign",
        serde_json::json!({"mode": "bidirectional", "trustPolicy": {}}),
    )
    .await;
    peer.send(serde_json::json!({"type": "delta", "timestamp": 1, "delta": common::delta_json("ok-1", "alice", "foreign")}))
        .await;
    let ack = peer.recv_type("delta_ack").await;
    assert_eq!(ack["deltaId"], "ok-1");
    peer.send(serde_json::json!({"type": "delta", "timestamp": 1, "delta": common::delta_json("bad-1", "mallory", "foreign")}))
        .await;
    let nack = peer.recv_type("delta_nack").await;
    assert_eq!(nack["deltaId"], "bad-1");
    assert!(
        nack["reason"]
            .as_str()
            .unwrap()
            .contains("\"mallory\" is not trusted"),
        "{nack}"
    );
    assert!(server.node().get("bad-1").unwrap().is_none());
    assert!(server.node().get("ok-1").unwrap().is_some());
    let rejected = tokio::time::timeout(T, async {
        loop {
            if let Ok(rhizome::events::NodeEvent::DeltaRejected {
                delta_id, reason, ..
            }) = events.recv().await
            {
                return (delta_id, reason);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(rejected.0, "bad-1");
    let link = server.federation().get_federation_links().pop().unwrap();
    assert_eq!(link.stats().deltas_rejected, 1);
    assert_eq!(link.stats().deltas_received, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_answered_and_the_link_keeps_working() {
    let server = start_node("server").await;
    let mut peer = common::RawPeer::connect(&server.url()).await;
    // Before the handshake only hello, ping and error mean anything.
    peer.send(serde_json::json!({"type": "delta", "timestamp": 1, "delta": common::delta_json("early", "a", "x")}))
        .await;
    let err = peer.recv_type("error").await;
    assert_eq!(err["code"], "HANDSHAKE_REQUIRED", "{err}");
    peer.hello("foreign", serde_json::json!({})).await;

    peer.send_text("this is not json").await;
    let err = peer.recv_type("error").await;
    assert_eq!(err["code"], "MESSAGE_ERROR");
    assert_eq!(err["fatal"], false);
    peer.send(serde_json::json!({"type": "teleport", "timestamp": 1}))
        .await;
    let err = peer.recv_type("error").await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("Unknown message type"),
        "{err}"
    );
    peer.send(serde_json::json!({"type": "ping"})).await;
    let err = peer.recv_type("error").await;
    assert!(
        err["message"].as_str().unwrap().contains("timestamp"),
        "{err}"
    );

    let mut invalid = common::delta_json("inv-1", "a", "foreign");
    invalid["pointers"][0]["role"] = serde_json::json!("");
    peer.send(serde_json::json!({"type": "delta", "timestamp": 1, "delta": invalid}))
        .await;
    let nack = peer.recv_type("delta_nack").await;
    assert_eq!(nack["deltaId"], "inv-1");
    assert!(
        nack["reason"]
            .as_str()
            .unwrap()
            .contains("pointers[0].role"),
        "{nack}"
    );

    peer.send(serde_json::json!({"type": "hello", "timestamp": 1, "systemId": "foreign", "protocol": "rhizomedb-federation-v1"}))
        .await;
    let err = peer.recv_type("error").await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("hello after the handshake"),
        "{err}"
    );

    // Still working: a valid delta is stored and acknowledged.
    peer.send(serde_json::json!({"type": "delta", "timestamp": 1, "delta": common::delta_json("good-1", "a", "foreign")}))
        .await;
    assert_eq!(peer.recv_type("delta_ack").await["deltaId"], "good-1");
    assert!(server.node().get("good-1").unwrap().is_some());
    assert!(server.node().get("inv-1").unwrap().is_none());
    // ...and other peers are served meanwhile.
    let client = start_node("client").await;
    connected(&client, &server, cfg(SyncMode::Pull, InitialSync::Full)).await;
    assert!(wait_holds(client.node(), &["good-1".to_owned()].into(), T).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_mismatch_is_fatal_and_v1_sync_follows_the_reference_flow() {
    let server = start_node("server").await;
    let mut wrong = common::RawPeer::connect(&server.url()).await;
    wrong
        .send(serde_json::json!({"type": "hello", "timestamp": 1, "systemId": "old", "protocol": "rhizomedb-federation-v0"}))
        .await;
    let err = wrong.recv_type("error").await;
    assert_eq!(err["code"], "PROTOCOL_MISMATCH");
    assert_eq!(err["fatal"], true);
    assert_eq!(wrong.close_code().await, Some(1002));

    let stored = authored(server.node(), "alice", 2500).await;
    let mut peer = common::RawPeer::connect(&server.url()).await;
    peer.hello("foreign", serde_json::json!({"mode": "pull"}))
        .await;
    peer.send(serde_json::json!({"type": "sync_request", "timestamp": 1}))
        .await;
    let start = peer.recv_type("sync_start").await;
    assert_eq!(start["totalDeltas"], 2500);
    let mut got = BTreeSet::new();
    let mut expected_batch = 0;
    loop {
        let b = peer.recv_type("sync_batch").await;
        assert_eq!(b["batchNumber"], expected_batch);
        assert!(
            b.get("lastSeq").is_none(),
            "v1 peers get plain v1 frames: {b}"
        );
        expected_batch += 1;
        for d in b["deltas"].as_array().unwrap() {
            got.insert(d["id"].as_str().unwrap().to_owned());
        }
        if b["isLastBatch"] == true {
            break;
        }
    }
    let done = peer.recv_type("sync_complete").await;
    assert_eq!(done["deltasProcessed"], 2500);
    assert_eq!(got, stored);
    // Live deltas follow as `delta` frames.
    let live = author(server.node(), "alice", 1).await;
    let d = peer.recv_type("delta").await;
    assert_eq!(d["delta"]["id"], live[0].as_str());

    // An empty sync has no batch at all.
    let empty = start_node("empty").await;
    let mut peer = common::RawPeer::connect(&empty.url()).await;
    peer.hello("foreign", serde_json::json!({})).await;
    peer.send(serde_json::json!({"type": "sync_request", "timestamp": 1}))
        .await;
    assert_eq!(peer.recv_type("sync_start").await["totalDeltas"], 0);
    let next = peer.recv().await.unwrap();
    assert_eq!(next["type"], "sync_complete", "{next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_closes_extra_sockets_with_1008() {
    let config = rhizome::NodeConfig {
        system_id: Some("small".into()),
        ..Default::default()
    };
    let server = common::start_node_with_options(
        config,
        rhizome::federation::ServerOptions {
            max_connections: 1,
            ..Default::default()
        },
    )
    .await;
    let mut first = common::RawPeer::connect(&server.url()).await;
    first.hello("one", serde_json::json!({})).await;
    let mut second = common::RawPeer::connect(&server.url()).await;
    assert_eq!(second.close_code().await, Some(1008));
    // The first link is unaffected.
    first
        .send(serde_json::json!({"type": "ping", "timestamp": 1}))
        .await;
    first.recv_type("pong").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_dropped_by_the_heartbeat() {
    let config = rhizome::NodeConfig {
        system_id: Some("beating".into()),
        ..Default::default()
    };
    let server = common::start_node_with_options(
        config,
        rhizome::federation::ServerOptions {
            heartbeat: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await;
    let mut peer = common::RawPeer::connect(&server.url()).await;
    peer.hello("silent", serde_json::json!({})).await;
    // The node pings; this peer never answers anything.
    assert_eq!(peer.recv_type("ping").await["type"], "ping");
    let started = std::time::Instant::now();
    peer.close_code().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "dead peer kept for {:?}",
        started.elapsed()
    );
    assert!(common::wait_for(T, || server.federation().get_federation_links().is_empty()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_managed_over_http() {
    let server = start_node("server").await;
    let client = start_node("client").await;
    let http = reqwest::Client::new();
    let base = client.url();

    let bad = http
        .post(format!("{base}/links"))
        .json(
            &serde_json::json!({"url": server.url(), "config": {"pullFilter": {"authors": "bob"}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert!(
        body["field"].as_str().unwrap().contains("pullFilter"),
        "{body}"
    );

    let created = http
        .post(format!("{base}/links"))
        .json(&serde_json::json!({"url": server.url(), "config": {"mode": "pull", "name": "upstream"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let link: serde_json::Value = created.json().await.unwrap();
    let id = link["id"].as_str().unwrap().to_owned();
    assert_eq!(link["name"], "upstream");
    let handle = client.federation().get_federation_link(&id).unwrap();
    assert!(wait_status(&handle, LinkStatus::Connected, T).await);

    let list = answer(http.get(format!("{base}/links"))).await;
    assert_eq!(list["links"][0]["remoteSystemId"], "server");
    assert_eq!(list["links"][0]["status"], "connected");
    assert_eq!(list["links"][0]["direction"], "outbound");

    let paused = answer(http.post(format!("{base}/links/{id}/pause"))).await;
    assert_eq!(paused["status"], "paused");
    let resumed = answer(http.post(format!("{base}/links/{id}/resume"))).await;
    assert_eq!(resumed["status"], "connected");
    let missing = http
        .post(format!("{base}/links/nope/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let deleted = http
        .delete(format!("{base}/links/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert!(common::wait_for(T, || client.federation().get_federation_links().is_empty()).await);

    // The endpoint refuses plain HTTP with a clear word.
    let plain = http
        .get(format!("{}/federation", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 426);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_sent_right_before_close_is_still_stored() {
    let server = start_node("server").await;
    let mut peer = common::RawPeer::connect(&server.url()).await;
    peer.hello("foreign", serde_json::json!({})).await;
    peer.send(serde_json::json!({"type": "delta", "timestamp": 1, "delta": common::delta_json("last-words", "a", "foreign")}))
        .await;
    drop(peer);
    assert!(common::wait_for(T, || server.node().get("last-words").unwrap().is_some()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_hello_is_not_retried() {
    let server = start_node("twin").await;
    // Same system id on both ends: the acceptor refuses, and retrying cannot help.
    let client = start_node("twin").await;
    let link = client
        .federation()
        .connect_to_remote(
            &server.url(),
            LinkConfig {
                reconnect: rhizome::federation::ReconnectConfig {
                    initial_delay: 20,
                    max_delay: 50,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap();
    assert!(
        wait_status(&link, LinkStatus::Error, T).await,
        "{:?}",
        link.info()
    );
    assert!(link
        .info()
        .last_error
        .unwrap()
        .contains("cannot link to itself"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(link.stats().reconnects, 0);
}

/// Links are named stably: a link we dial by its config name, else by the peer's
/// address (the same after a restart), with `#2`... for a second link to one address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialed_links_are_named_by_name_or_address() {
    let server = start_node("named").await;
    let client = start_node("namer").await;
    let addr = server.local_addr().to_string();
    let fed = client.federation();
    let by_address = fed
        .connect_to_remote(&server.url(), bidirectional())
        .unwrap();
    let second = fed
        .connect_to_remote(&server.url(), bidirectional())
        .unwrap();
    let named = fed
        .connect_to_remote(
            &server.url(),
            LinkConfig {
                name: Some("upstream".into()),
                ..bidirectional()
            },
        )
        .unwrap();
    assert_eq!(by_address.id(), addr);
    assert_eq!(second.id(), format!("{addr}#2"));
    assert_eq!(named.id(), "upstream");
    assert!(fed.get_federation_link("upstream").is_some());
    for link in [&by_address, &second, &named] {
        assert!(wait_status(link, LinkStatus::Connected, T).await);
    }
    client.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

/// A TLS url is refused when the link is opened, with what to do, instead of a link that
/// fails and retries forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_url_to_a_plain_node_fails_with_a_reason() {
    let plain = start_node("plain").await;
    let node = start_node("dialer").await;
    let url = plain.url().replacen("http://", "https://", 1);
    let link = node
        .federation()
        .connect_to_remote(&url, bidirectional())
        .expect("a TLS url is dialed");
    assert!(
        common::wait_for(T, || link.info().last_error.is_some()).await,
        "{:?}",
        link.info()
    );
    let why = link.info().last_error.unwrap_or_default();
    assert!(
        why.contains("wss://") && why.contains("does not answer in TLS"),
        "{why}"
    );
    node.shutdown().await.unwrap();
}
