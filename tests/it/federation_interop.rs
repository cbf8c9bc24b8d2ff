//! Interop with the reference implementation, using the frames it really sent
//! (`tests/fixtures/reference-frames.jsonl`) as test vectors: a fake reference server
//! replays them to our connecting node, and a reference client's frames are played
//! against our accepting node.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rhizome::federation::{InitialSync, LinkConfig, SyncMode};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const T: Duration = Duration::from_secs(15);

struct Recorded {
    peer: String,
    from_reference: bool,
    frame: String,
}

fn recorded() -> Vec<Recorded> {
    include_str!("../fixtures/reference-frames.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("fixture line");
            Recorded {
                peer: v["peer"].as_str().unwrap().to_owned(),
                from_reference: v["direction"] == "from-reference",
                frame: v["frame"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

fn frame_type(frame: &str) -> String {
    serde_json::from_str::<Value>(frame)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Delta ids carried by a frame (`delta` or `sync_batch`).
fn delta_ids(frame: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(frame).unwrap();
    match v["type"].as_str() {
        Some("delta") => vec![v["delta"]["id"].as_str().unwrap().to_owned()],
        Some("sync_batch") => v["deltas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_connecting_node_speaks_plain_v1_to_a_reference_server() {
    // The reference server's first session: hello_ack, a live delta, then its answer to
    // an unfiltered sync_request (sync_start, two batches, sync_complete), then live.
    let frames: Vec<String> = recorded()
        .into_iter()
        .filter(|r| r.peer == "reference-server" && r.from_reference)
        .map(|r| r.frame)
        .take(8)
        .collect();
    let kinds: Vec<String> = frames.iter().map(|f| frame_type(f)).collect();
    assert_eq!(
        kinds,
        [
            "hello_ack",
            "delta",
            "sync_start",
            "sync_batch",
            "sync_batch",
            "sync_complete",
            "delta",
            "sync_start"
        ]
    );
    let replay: Vec<String> = frames[..7].to_vec();
    let want: BTreeSet<String> = replay.iter().flat_map(|f| delta_ids(f)).collect();
    assert!(want.len() > 100);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let mut seen = Vec::new();
        let next_text =
            async |ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>| loop {
                match ws.next().await {
                    Some(Ok(WsMessage::Text(t))) => {
                        return serde_json::from_str::<Value>(t.as_str()).unwrap()
                    }
                    Some(Ok(_)) => continue,
                    other => panic!("socket ended: {other:?}"),
                }
            };
        let hello = next_text(&mut ws).await;
        seen.push(hello.clone());
        ws.send(WsMessage::text(replay[0].clone())).await.unwrap();
        ws.send(WsMessage::text(replay[1].clone())).await.unwrap();
        let request = loop {
            let f = next_text(&mut ws).await;
            seen.push(f.clone());
            if f["type"] == "sync_request" {
                break f;
            }
        };
        for f in &replay[2..] {
            ws.send(WsMessage::text(f.clone())).await.unwrap();
        }
        // Collect what our node answers for a moment (acks for the live deltas).
        let mut acks = 0;
        while let Ok(Some(Ok(WsMessage::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(700), ws.next()).await
        {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "delta_ack" {
                acks += 1;
            }
        }
        (hello, request, acks)
    });

    let node = rhizome::Node::in_memory("wire-client").await.unwrap();
    let link = common::links_of(&node)
        .connect_to_remote(
            &format!("ws://{addr}/"),
            LinkConfig {
                mode: SyncMode::Bidirectional,
                initial_sync: InitialSync::Full,
                ..Default::default()
            },
        )
        .unwrap();
    let (hello, request, acks) = tokio::time::timeout(T, fake).await.unwrap().unwrap();
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["protocol"], "rhizomedb-federation-v1");
    assert_eq!(hello["systemId"], "wire-client");
    assert_eq!(hello["config"]["mode"], "bidirectional");
    assert_eq!(hello["config"]["initialSync"], "full");
    // The reference did not advertise our extension: a plain v1 request.
    assert!(
        request.get("resumeFrom").is_none() && request.get("fromHead").is_none(),
        "{request}"
    );
    assert_eq!(acks, 2, "each live v1 delta is acknowledged");
    assert!(common::wait_holds(&node, &want, T).await);
    assert_eq!(link.remote_system_id().as_deref(), Some("wire-server"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_client_session_against_our_accepting_node() {
    let server = common::start_node("wire-server").await;
    common::author(server.node(), "alice", 3).await;
    let rec: Vec<Recorded> = recorded()
        .into_iter()
        .filter(|r| r.peer == "reference-client")
        .collect();
    let hello = rec
        .iter()
        .find(|r| r.from_reference && frame_type(&r.frame) == "hello")
        .unwrap();
    assert_eq!(frame_type(&hello.frame), "hello");
    let sync_request = rec
        .iter()
        .find(|r| frame_type(&r.frame) == "sync_request")
        .unwrap();

    let mut peer = common::RawPeer::connect(&server.url()).await;
    peer.send_text(&hello.frame).await;
    let ack = peer.recv_type("hello_ack").await;
    assert_eq!(ack["protocol"], "rhizomedb-federation-v1");
    assert!(ack["linkId"].as_str().is_some_and(|s| !s.is_empty()));
    peer.send_text(&sync_request.frame).await;
    let start = peer.recv_type("sync_start").await;
    assert!(start["totalDeltas"].as_u64().unwrap() >= 1);
    let mut got = 0;
    loop {
        let f = peer.recv().await.unwrap();
        match f["type"].as_str().unwrap() {
            "sync_batch" => got += f["deltas"].as_array().unwrap().len(),
            "sync_complete" => break,
            _ => {}
        }
    }
    // Whatever the recorded request's filter kept of our three deltas arrived.
    assert!(got <= 3);
    // The reference client's own live deltas are each answered with an ack or a nack.
    for r in rec
        .iter()
        .filter(|r| r.from_reference && frame_type(&r.frame) == "delta")
    {
        peer.send_text(&r.frame).await;
        let id = delta_ids(&r.frame).pop().unwrap();
        let answer = loop {
            let f = peer.recv().await.unwrap();
            if f["type"] == "delta_ack" || f["type"] == "delta_nack" {
                break f;
            }
        };
        assert_eq!(answer["deltaId"], id.as_str(), "{answer}");
    }
}

/// A pointer of a delta frame as a peer of the seed's version must read it.
fn assert_legacy(delta: &Value) {
    for p in delta["pointers"].as_array().expect("pointers") {
        assert!(p.get("localContext").is_some(), "{delta}");
        assert!(p.get("role").is_none(), "{delta}");
        assert!(p["target"].get("context").is_none(), "{delta}");
    }
}

/// The seed's client pushes a legacy delta (`../shared/interop/legacy-peers.md`) to an
/// accepting node on `auto`: from then on, what the node sends it is in the legacy form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_link_answers_a_legacy_client_in_its_form() {
    let server = common::start_node("ts534-server").await;
    let mut peer = common::RawPeer::connect(&server.url()).await;
    peer.hello(
        "ts534-client",
        serde_json::json!({"mode": "bidirectional", "initialSync": "none"}),
    )
    .await;
    peer.send_text(r#"{"type":"delta","timestamp":1796229595176,"delta":{"id":"c17272ee-b505-4951-ab94-3b2b57596efe","timestamp":1796229590012,"author":"legacy-user","system":"ts534-client","pointers":[{"localContext":"about","target":{"id":"topic_0"},"targetContext":"notes"},{"localContext":"text","target":"legacy-0"}]}}"#)
        .await;
    peer.recv_type("delta_ack").await;
    let stored = server
        .node()
        .create_delta(
            "alice",
            vec![
                rhizome::Pointer::new(
                    "about",
                    rhizome::Target::Reference(rhizome::Reference {
                        id: "topic_0".into(),
                        context: Some("notes".into()),
                    }),
                ),
                rhizome::Pointer::new("text", rhizome::Target::from("current")),
            ],
        )
        .await
        .unwrap();
    let frame = peer.recv_type("delta").await;
    assert_eq!(frame["delta"]["id"], stored.delta.id.as_str());
    assert_legacy(&frame["delta"]);
    assert_eq!(
        frame["delta"]["pointers"][0],
        serde_json::json!({"localContext": "about", "target": {"id": "topic_0"}, "targetContext": "notes"})
    );
}

/// A link we dial with `pointerForm: legacy` to a server of the seed's version: every
/// delta it sends, the initial push included, is in the legacy form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_link_pushes_the_legacy_form_to_a_seed_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(acking_v1_server(listener, SEED_HELLO_ACK, tx));
    let node = rhizome::Node::in_memory("pusher").await.unwrap();
    common::author(&node, "alice", 2).await;
    let links = common::links_of(&node);
    links
        .connect_to_remote(
            &format!("ws://{addr}/"),
            LinkConfig {
                mode: SyncMode::Push,
                initial_sync: InitialSync::Full,
                pointer_form: rhizome::federation::PointerForm::Legacy,
                ..Default::default()
            },
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    common::author(&node, "bob", 1).await;
    let deltas = received(&mut seen, 3).await;
    deltas.iter().for_each(|(_, d)| assert_legacy(d));
    links.disconnect_all().await;
}

/// The `hello_ack` of a server of the seed's version (`../shared/interop/legacy-peers.md`).
const SEED_HELLO_ACK: &str = r#"{"type":"hello_ack","timestamp":1796229606917,"systemId":"ts534-server","linkId":"9992b333-5b96-4ac8-beb7-2cd11ae3c9ed","protocol":"rhizomedb-federation-v1"}"#;

/// The `hello_ack` of a plain v1 server of the current version.
const V1_HELLO_ACK: &str = r#"{"type":"hello_ack","timestamp":1,"systemId":"v1-server","linkId":"l","protocol":"rhizomedb-federation-v1"}"#;

/// A plain v1 server that answers `hello` with `hello_ack` and acks every `delta`, over
/// any number of connections; sends each delta, with the connection it came on (1, 2..),
/// on `seen`.
async fn acking_v1_server(
    listener: tokio::net::TcpListener,
    hello_ack: &'static str,
    seen: tokio::sync::mpsc::UnboundedSender<(usize, Value)>,
) {
    let mut connection = 0;
    while let Ok((tcp, _)) = listener.accept().await {
        connection += 1;
        let seen = seen.clone();
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            while let Some(Ok(frame)) = ws.next().await {
                let WsMessage::Text(t) = frame else { continue };
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                let answer = match v["type"].as_str() {
                    Some("hello") => hello_ack.to_owned(),
                    Some("delta") => {
                        let ack = serde_json::json!({"type": "delta_ack", "timestamp": 1,
                            "deltaId": v["delta"]["id"]});
                        let _ = seen.send((connection, v["delta"].clone()));
                        ack.to_string()
                    }
                    _ => continue,
                };
                if ws.send(WsMessage::text(answer)).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The next `n` (connection, delta) the server saw.
async fn received(
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<(usize, Value)>,
    n: usize,
) -> Vec<(usize, Value)> {
    let mut got = Vec::new();
    while got.len() < n {
        let next = tokio::time::timeout(T, seen.recv()).await;
        got.push(next.expect("a delta in time").expect("the server runs"));
    }
    got
}

/// The reference does not deduplicate: a node that restarts must not push again what a
/// v1 server already acknowledged (it resumes after the last answered delta).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_resends_nothing_a_v1_server_acknowledged() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(acking_v1_server(listener, V1_HELLO_ACK, tx));
    let dir = tempfile::tempdir().unwrap();
    // Reopening waits for the closed node's last handles (its link tasks) to go.
    let open = || async {
        let deadline = std::time::Instant::now() + T;
        loop {
            let config = rhizome::NodeConfig {
                storage: rhizome::Storage::Path(dir.path().to_owned()),
                system_id: Some("pusher".into()),
                ..Default::default()
            };
            match rhizome::Node::open(config).await {
                Ok(node) => return node,
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot reopen the store: {e}"),
            }
        }
    };
    let push = LinkConfig {
        mode: SyncMode::Push,
        initial_sync: InitialSync::Full,
        name: Some("to-v1".into()),
        ..Default::default()
    };
    let node = open().await;
    let first: BTreeSet<String> = common::author(&node, "alice", 20)
        .await
        .into_iter()
        .collect();
    let links = common::links_of(&node);
    let first_link = links.connect_to_remote(&url, push.clone()).unwrap();
    let got: BTreeSet<String> = received(&mut seen, 20)
        .await
        .into_iter()
        .map(|(_, d)| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, first);
    // The server's acks reach us a moment after it has the deltas.
    assert!(common::wait_for(T, || first_link.stats().peer_acked == Some(20)).await);
    links.disconnect_all().await;
    node.close();
    drop((links, first_link, node));

    let node = open().await;
    let links = common::links_of(&node);
    let link = links.connect_to_remote(&url, push).unwrap();
    assert!(common::wait_status(&link, rhizome::LinkStatus::Connected, T).await);
    let later: BTreeSet<String> = common::author(&node, "bob", 5).await.into_iter().collect();
    let again = received(&mut seen, 5).await;
    assert!(again.iter().all(|(conn, _)| *conn == 2), "{again:?}");
    let again: BTreeSet<String> = again
        .into_iter()
        .map(|(_, d)| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(again, later, "only the new deltas go to the restarted link");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(seen.try_recv().is_err(), "nothing is sent twice");
    links.disconnect_all().await;
}

/// The other role: a plain v1 client that acked our live deltas and asks for a full sync
/// when it comes back gets only what it has not answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_v1_client_is_synced_from_its_last_answer() {
    let server = common::start_node("hub").await;
    let mut first = common::RawPeer::connect(&server.url()).await;
    first
        .hello(
            "v1-client",
            serde_json::json!({"mode": "pull", "initialSync": "none"}),
        )
        .await;
    let live = common::author(server.node(), "alice", 3).await;
    for id in &live {
        let frame = first.recv_type("delta").await;
        assert_eq!(frame["delta"]["id"], id.as_str());
        first
            .send(serde_json::json!({"type": "delta_ack", "timestamp": 1, "deltaId": id}))
            .await;
    }
    let link = server.federation().get_federation_links().pop().unwrap();
    assert!(common::wait_for(T, || link.stats().peer_acked == Some(3)).await);
    drop(first);
    assert!(common::wait_for(T, || server.federation().get_federation_links().is_empty()).await);

    let missed: BTreeSet<String> = common::author(server.node(), "bob", 2)
        .await
        .into_iter()
        .collect();
    let mut back = common::RawPeer::connect(&server.url()).await;
    back.hello(
        "v1-client",
        serde_json::json!({"mode": "pull", "initialSync": "full"}),
    )
    .await;
    back.send(serde_json::json!({"type": "sync_request", "timestamp": 1}))
        .await;
    assert_eq!(back.recv_type("sync_start").await["totalDeltas"], 2);
    let batch = back.recv_type("sync_batch").await;
    let synced: BTreeSet<String> = batch["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(synced, missed);
}
