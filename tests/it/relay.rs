//! Relaying once (the `announce` feature, docs/PROTOCOL.md 6.9): relayed deltas go as
//! ids and bodies on request, a plain v1 peer in the mesh still gets and gives every
//! delta in full, and the cursor never passes an announcement before its ids are
//! resolved.

use std::collections::BTreeSet;
use std::time::Duration;

use rhizome::federation::{LinkConfig, SyncMode};
use rhizome::{FederationLink, Server};
use serde_json::json;

use crate::common::{author, delta_json, dial_connected, ids, start_node, wait_holds, RawPeer};

const T: Duration = Duration::from_secs(20);

async fn linked(from: &Server, to: &Server) -> FederationLink {
    let config = LinkConfig {
        mode: SyncMode::Bidirectional,
        ..Default::default()
    };
    dial_connected(from, to, config).await
}

/// Ids of the deltas a frame carries (`delta`, `sync_batch`, `delta_batch`).
fn carried(frame: &serde_json::Value) -> Vec<String> {
    let one = frame.get("delta").into_iter();
    let many = frame
        .get("deltas")
        .and_then(|d| d.as_array())
        .into_iter()
        .flatten();
    one.chain(many)
        .filter_map(|d| d["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_with_a_plain_v1_peer_converges_and_the_v1_peer_gets_bodies() {
    let a = start_node("relay-a").await;
    let b = start_node("relay-b").await;
    let c = start_node("relay-c").await;
    let _ab = linked(&a, &b).await;
    let _bc = linked(&b, &c).await;
    let _ca = linked(&c, &a).await;

    // A plain v1 peer (no `rhizome` in its hello) linked to `a` only.
    let mut v1 = RawPeer::connect(&a.url()).await;
    let ack = v1.hello("plain-v1", json!({"mode": "bidirectional"})).await;
    assert!(
        ack.get("rhizome").is_none(),
        "a v1 hello got the extension: {ack}"
    );
    v1.send(json!({"type": "sync_request", "timestamp": 1}))
        .await;
    let from_v1: BTreeSet<String> = (0..20).map(|i| format!("v1-delta-{i}")).collect();
    for id in &from_v1 {
        v1.send(
            json!({"type": "delta", "timestamp": 1, "delta": delta_json(id, "vera", "plain-v1")}),
        )
        .await;
    }

    let mut ours = BTreeSet::new();
    for (server, who) in [(&a, "ann"), (&b, "bob"), (&c, "cy")] {
        ours.extend(author(server.node(), who, 20).await);
    }
    let everything: BTreeSet<String> = ours.union(&from_v1).cloned().collect();
    for server in [&a, &b, &c] {
        assert!(
            wait_holds(server.node(), &everything, T).await,
            "{} holds {} of {}",
            server.node().system_id(),
            ids(server.node()).len(),
            everything.len()
        );
    }

    // The v1 peer receives every delta it did not author, each as a body, once.
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + T;
    while got.len() < ours.len() && tokio::time::Instant::now() < deadline {
        let Some(frame) = v1.recv().await else { break };
        assert_ne!(
            frame["type"], "delta_announce",
            "a v1 peer was sent ids: {frame}"
        );
        for id in carried(&frame) {
            got.push(id.clone());
            if frame["type"] == "delta" {
                v1.send(json!({"type": "delta_ack", "timestamp": 1, "deltaId": id}))
                    .await;
            }
        }
    }
    let got_set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(got_set, ours, "what the v1 peer received");
    assert_eq!(got.len(), ours.len(), "a delta reached the v1 peer twice");

    // Between our own nodes, what `a` relayed from the v1 peer went as ids.
    let announced: u64 = [&b, &c]
        .iter()
        .flat_map(|s| s.federation().get_federation_links())
        .map(|l| l.stats().announced_in)
        .sum();
    assert!(announced > 0, "no relayed delta was announced");
}

/// A raw extension peer that speaks `announce`.
async fn announcing_peer(server: &Server, log: &str) -> (RawPeer, serde_json::Value) {
    let mut peer = RawPeer::connect(&server.url()).await;
    peer.send(
        json!({"type": "hello", "timestamp": 1, "systemId": "announcer",
        "protocol": "rhizomedb-federation-v1",
        "config": {"mode": "bidirectional"},
        "rhizome": {"version": 1, "log": log, "features": ["announce"]}}),
    )
    .await;
    let ack = peer.recv_type("hello_ack").await;
    (peer, ack)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cursor_waits_until_announced_deltas_are_fetched() {
    let server = start_node("relay-fetcher").await;
    let wanted = ["relayed-1", "relayed-2", "relayed-3"];
    let announce = json!({"type": "delta_announce", "timestamp": 1,
        "ids": pack(&wanted), "lastSeq": 10});

    // First connection: the node asks for what was announced, and the peer leaves
    // without answering.
    let (mut peer, ack) = announcing_peer(&server, "log-1").await;
    assert_eq!(ack["rhizome"]["features"], json!(["announce", "reconcile"]));
    peer.send(announce.clone()).await;
    let request = peer.recv_type("delta_request").await;
    assert_eq!(unpack(&request["ids"]), wanted);
    drop(peer);

    // The cursor did not pass the announcement: the peer is asked to resume before it.
    let (mut peer, ack) = announcing_peer(&server, "log-1").await;
    assert_eq!(ack["rhizome"]["cursor"], 0, "{ack}");
    peer.send(announce).await;
    let request = peer.recv_type("delta_request").await;
    let deltas: Vec<serde_json::Value> = wanted
        .iter()
        .map(|id| delta_json(id, "alice", "elsewhere"))
        .collect();
    peer.send(json!({"type": "delta_response", "timestamp": 1,
        "requestId": request["requestId"], "deltas": deltas, "last": true}))
        .await;
    let ack_frame = peer.recv_type("cursor_ack").await;
    assert_eq!(ack_frame["lastSeq"], 10);
    let want: BTreeSet<String> = wanted.iter().map(|s| s.to_string()).collect();
    assert!(wait_holds(server.node(), &want, T).await);
    drop(peer);

    // Committed: the next connection resumes after the announcement.
    let (_peer, ack) = announcing_peer(&server, "log-1").await;
    assert_eq!(ack["rhizome"]["cursor"], 10, "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_deltas_already_held_are_not_asked_for() {
    let server = start_node("relay-holder").await;
    let held = author(server.node(), "alice", 2).await;
    let (mut peer, _) = announcing_peer(&server, "log-2").await;
    peer.send(json!({"type": "delta_announce", "timestamp": 1,
        "ids": pack(&held), "lastSeq": 7}))
        .await;
    // Nothing to fetch: the position is committed at once, and nothing is asked.
    loop {
        let frame = peer.recv().await.expect("the link stays up");
        assert_ne!(
            frame["type"], "delta_request",
            "asked for held deltas: {frame}"
        );
        if frame["type"] == "cursor_ack" {
            assert_eq!(frame["lastSeq"], 7);
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_and_bad_id_lists_are_refused_with_a_reason() {
    let server = start_node("relay-refuser").await;
    let (mut peer, _) = announcing_peer(&server, "log-3").await;
    let many: Vec<String> = (0..1001).map(|i| format!("id-{i}")).collect();
    peer.send(json!({"type": "delta_request", "timestamp": 1, "requestId": 1, "ids": pack(&many)}))
        .await;
    let err = peer.recv_type("error").await;
    assert_eq!(err["code"], "MESSAGE_ERROR");
    assert!(
        err["message"].as_str().unwrap().contains("at most 1000"),
        "{err}"
    );
    peer.send(json!({"type": "delta_announce", "timestamp": 1, "ids": "%%%"}))
        .await;
    let err = peer.recv_type("error").await;
    assert!(err["message"].as_str().unwrap().contains("base64"), "{err}");
    // The link is still up and answers.
    peer.send(json!({"type": "ping", "timestamp": 1})).await;
    peer.recv_type("pong").await;
}

/// The packed id list of the wire, as the node packs it.
fn pack<S: AsRef<str>>(ids: &[S]) -> String {
    let list =
        rhizome::federation::wire::IdList(ids.iter().map(|s| s.as_ref().to_owned()).collect());
    list.pack()
}

fn unpack(v: &serde_json::Value) -> Vec<String> {
    rhizome::federation::wire::IdList::unpack(v.as_str().expect("a packed list"))
        .expect("a valid list")
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_link_asks_for_nothing_until_resumed() {
    let server = start_node("relay-paused").await;
    let (mut peer, _) = announcing_peer(&server, "log-4").await;
    let link = server
        .federation()
        .get_federation_links()
        .pop()
        .expect("the inbound link");
    link.pause();
    peer.recv_type("pause").await;
    peer.send(json!({"type": "delta_announce", "timestamp": 1,
        "ids": pack(&["while-paused"]), "lastSeq": 3}))
        .await;
    // Well past the grace: no request while paused.
    let quiet = tokio::time::timeout(Duration::from_millis(600), async {
        loop {
            let frame = peer.recv().await.expect("the link stays up");
            if frame["type"] == "delta_request" {
                return frame;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "asked while paused: {quiet:?}");
    link.resume();
    let request = peer.recv_type("delta_request").await;
    assert_eq!(unpack(&request["ids"]), ["while-paused"]);
}
