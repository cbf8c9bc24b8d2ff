//! Peer identity: a peer is known by what it proved (a key proof in the handshake, a
//! peer token on the upgrade), never by what it says. Each attack of issue 17 is played
//! against real nodes over real WebSocket.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use rhizome::federation::SyncMode;
use rhizome::policy::PolicyDirs;
use rhizome::{
    Delta, LinkConfig, LinkStatus, Node, NodeConfig, Origin, PeerEntry, Server, ServerOptions,
    TrustPolicy,
};

use crate::common::{
    ids, serve_at, start_node, start_node_with, wait_for, wait_holds, wait_status, RawPeer,
};

const T: Duration = Duration::from_secs(15);
const TOKEN: &str = "ref-client-token-4d1c9a07e2b3";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn key_peer(name: &str, node: &Node) -> PeerEntry {
    PeerEntry {
        name: name.into(),
        key: Some(node.public_key()),
        ..Default::default()
    }
}

/// Stores a delta `id` by `author` on `system` on `node` (as if authored there).
async fn put(node: &Node, id: &str, author: &str, system: &str, pointers: Value) -> String {
    let d = Delta::from_value(&delta(id, author, system, pointers)).expect("a valid delta");
    let id = d.id.clone();
    node.ingest(vec![d], Origin::Local).await.expect("stored");
    id
}

fn delta(id: &str, author: &str, system: &str, pointers: Value) -> Value {
    json!({"id": id, "timestamp": rhizome::delta::now_millis(), "author": author,
        "system": system, "pointers": pointers})
}

fn ws_url(server: &Server) -> String {
    format!(
        "{}/federation",
        server.url().replacen("http://", "ws://", 1)
    )
}

/// The bridge of the repo's own README: the repo's `policies/` and `filters/`, the
/// public and partner nodes configured by their keys.
async fn bridge(public: &Node, partner: &Node) -> Server {
    start_node_with(NodeConfig {
        system_id: Some("bridge".into()),
        policies: PolicyDirs {
            policies: Some(repo().join("policies")),
            filters: Some(repo().join("filters")),
        },
        peers: vec![key_peer("public", public), key_peer("partner", partner)],
        ..Default::default()
    })
    .await
}

async fn dial(from: &Server, to: &Server, config: LinkConfig) -> rhizome::FederationLink {
    let link = from
        .federation()
        .connect_to_remote(&to.url(), config)
        .expect("a link");
    assert!(
        wait_status(&link, LinkStatus::Connected, T).await,
        "{:?}",
        link.info()
    );
    link
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_peer_gets_public_data_only_whatever_system_id_it_claims() {
    let public = start_node("public").await;
    let partner = start_node("partner-hq").await;
    let bridge = bridge(public.node(), partner.node()).await;
    let secret = put(
        bridge.node(),
        "secret-1",
        "hr",
        "bridge",
        json!([{"role": "memo", "target": "salaries"}]),
    )
    .await;
    let release = put(
        bridge.node(),
        "release-1",
        "press",
        "bridge",
        json!([{"role": "public", "target": true}]),
    )
    .await;

    for claimed in [
        "public", "PUBLIC", " public", "../", "evil", "partner", "bridge-2",
    ] {
        let attacker = start_node(claimed).await;
        let mallory = put(
            attacker.node(),
            &format!("mallory-{}", claimed.trim().replace('/', "-")),
            "alice",
            "partner-hq",
            json!([{"role": "verified", "target": true}]),
        )
        .await;
        let before = bridge.node().store().quarantine_len();
        let link = dial(&attacker, &bridge, LinkConfig::default()).await;
        assert!(
            wait_holds(attacker.node(), &BTreeSet::from([release.clone()]), T).await,
            "{claimed:?} did not receive the public delta"
        );
        assert!(
            wait_for(T, || bridge.node().store().quarantine_len() > before).await,
            "{claimed:?}: its delta was not judged"
        );
        assert!(
            !ids(attacker.node()).contains(&secret),
            "{claimed:?} received the private delta"
        );
        assert!(
            !ids(bridge.node()).contains(&mallory),
            "{claimed:?} stored an unverified delta"
        );
        let peer = bridge
            .federation()
            .link_infos()
            .into_iter()
            .find(|l| l.remote_system_id.as_deref() == Some(claimed))
            .and_then(|l| l.peer)
            .expect("the attacker's link");
        assert_eq!(
            (peer.name.as_str(), peer.authenticated),
            ("anonymous", false)
        );
        link.disconnect();
    }

    // The real partner proves its key: it is cleared for everything and its own
    // deltas are believed.
    let own = put(
        partner.node(),
        "partner-1",
        "dana",
        "partner-hq",
        json!([{"role": "text", "target": "hi"}]),
    )
    .await;
    dial(&partner, &bridge, LinkConfig::default()).await;
    assert!(wait_holds(partner.node(), &BTreeSet::from([secret.clone()]), T).await);
    assert!(wait_holds(bridge.node(), &BTreeSet::from([own]), T).await);
    // The real public node proves its key too, and still gets public data only.
    dial(&public, &bridge, LinkConfig::default()).await;
    assert!(wait_holds(public.node(), &BTreeSet::from([release]), T).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!ids(public.node()).contains(&secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_bound_to_a_peer_is_refused_from_anyone_else() {
    let partner = start_node("partner-hq").await;
    let hub = start_node("hub-2").await;
    let mut bound = key_peer("partner", partner.node());
    bound.systems = vec!["partner-hq".into()];
    let mut relay = key_peer("hub", hub.node());
    relay.relays = vec!["partner".into()];
    // The trust flags of the issue let the spoof through on their own.
    let bridge = start_node_with(NodeConfig {
        system_id: Some("bridge".into()),
        trust: TrustPolicy::systems(["partner-hq"]).and(TrustPolicy::authors(["alice"])),
        peers: vec![bound, relay],
        ..Default::default()
    })
    .await;

    let mut spoof = RawPeer::connect(&bridge.url()).await;
    spoof
        .hello("mallory", json!({"mode": "push", "initialSync": "none"}))
        .await;
    spoof
        .send(json!({"type": "delta", "timestamp": 1, "delta": delta("spoof-1", "alice", "partner-hq", json!([{"role": "text", "target": "x"}]))}))
        .await;
    let nack = spoof.recv_type("delta_nack").await;
    assert!(
        nack["reason"]
            .as_str()
            .is_some_and(|r| r.contains("bound to peer partner")),
        "{nack}"
    );
    let q = bridge.node().quarantine_list(0, 10).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].record.delta.id, "spoof-1");

    // From the partner itself, and relayed through the hub it trusts for it: accepted.
    let own = put(
        partner.node(),
        "partner-own",
        "alice",
        "partner-hq",
        json!([{"role": "text", "target": "y"}]),
    )
    .await;
    let relayed = put(
        hub.node(),
        "partner-relayed",
        "alice",
        "partner-hq",
        json!([{"role": "text", "target": "z"}]),
    )
    .await;
    let push = LinkConfig {
        mode: SyncMode::Push,
        ..Default::default()
    };
    dial(&partner, &bridge, push.clone()).await;
    dial(&hub, &bridge, push).await;
    assert!(wait_holds(bridge.node(), &BTreeSet::from([own, relayed]), T).await);
    assert_eq!(bridge.node().store().quarantine_len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialed_link_checks_the_peer_key_and_names_both_on_a_mismatch() {
    let hub = start_node("hub").await;
    let spoke = start_node("spoke").await;
    let wrong = rhizome::identity::NodeKey::generate().unwrap().public_hex();
    let link = spoke
        .federation()
        .connect_to_remote(
            &hub.url(),
            LinkConfig {
                peer_key: Some(wrong.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(
        wait_for(T, || link.status() == LinkStatus::Error).await,
        "{:?}",
        link.info()
    );
    let error = link.info().last_error.unwrap();
    assert!(
        error.contains(&wrong) && error.contains(&hub.node().public_key()),
        "{error}"
    );
    // Refused, not retried: the attempts stop.
    let changes = link.info().history.len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        link.info().history.len(),
        changes,
        "{:?}",
        link.info().history
    );

    let right = dial(
        &spoke,
        &hub,
        LinkConfig {
            name: Some("hq".into()),
            peer_key: Some(hub.node().public_key().to_uppercase()),
            ..Default::default()
        },
    )
    .await;
    let peer = right.info().peer.expect("a proven peer");
    assert!(peer.authenticated);
    assert_eq!(peer.name, "hq");
    assert_eq!(peer.key.as_deref(), Some(hub.node().public_key().as_str()));

    // A malformed key is refused at once.
    let e = spoke
        .federation()
        .connect_to_remote(
            &hub.url(),
            LinkConfig {
                peer_key: Some("abc".into()),
                ..Default::default()
            },
        )
        .err()
        .expect("a malformed key is refused");
    assert!(e.to_string().contains("peerKey"), "{e}");
}

/// Sits between a node and the node it dials, recording every text frame and
/// rewriting those the test wants rewritten: a relay on the network.
async fn relay(
    to: String,
    rewrite: impl Fn(String) -> String + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let rewrite = Arc::new(rewrite);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(inside) = tokio_tungstenite::accept_async(tcp).await else {
                continue;
            };
            let Ok((outside, _)) = tokio_tungstenite::connect_async(to.as_str()).await else {
                continue;
            };
            let (mut in_tx, mut in_rx) = inside.split();
            let (mut out_tx, mut out_rx) = outside.split();
            let (record, rewrite) = (record.clone(), rewrite.clone());
            tokio::spawn(async move {
                while let Some(Ok(m)) = in_rx.next().await {
                    let m = match m {
                        WsMessage::Text(t) => {
                            let t = rewrite(t.as_str().to_owned());
                            record.lock().unwrap().push(t.clone());
                            WsMessage::text(t)
                        }
                        other => other,
                    };
                    if out_tx.send(m).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                while let Some(Ok(m)) = out_rx.next().await {
                    if in_tx.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (format!("ws://{addr}/federation"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_or_relayed_key_proof_is_refused() {
    let spoke = start_node("spoke").await;
    let hub = start_node_with(NodeConfig {
        system_id: Some("hub".into()),
        peers: vec![key_peer("spoke", spoke.node())],
        ..Default::default()
    })
    .await;
    // A genuine handshake through a relay that only listens.
    let (url, seen) = relay(ws_url(&hub), |t| t).await;
    let link = dial(&spoke, &hub, LinkConfig::default()).await;
    link.disconnect();
    let listened = spoke
        .federation()
        .connect_to_remote(&url, LinkConfig::default())
        .unwrap();
    assert!(wait_status(&listened, LinkStatus::Connected, T).await);
    listened.disconnect();
    let frames = seen.lock().unwrap().clone();
    let hello = frames
        .iter()
        .find(|f| f.contains(r#""type":"hello""#))
        .expect("the spoke's hello")
        .clone();
    let auth = frames
        .iter()
        .find(|f| f.contains(r#""type":"auth""#))
        .expect("the spoke's proof")
        .clone();

    // Replayed on a new connection: the hub's nonce is new, the proof is not for it.
    let before = hub
        .federation()
        .auth_refusals()
        .failed
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut replay = RawPeer::connect(&hub.url()).await;
    replay.send_text(&hello).await;
    let ack = replay.recv_type("hello_ack").await;
    assert!(ack["rhizome"]["auth"]["proof"].is_string(), "{ack}");
    replay.send_text(&auth).await;
    let error = replay.recv_type("error").await;
    assert_eq!(error["code"], "AUTH_FAILED", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("replayed"),
        "{error}"
    );
    assert_eq!(replay.close_code().await, Some(1008));
    assert_eq!(
        hub.federation()
            .auth_refusals()
            .failed
            .load(std::sync::atomic::Ordering::Relaxed),
        before + 1
    );

    // Relayed with the link's parameters changed (push made pull): the proofs break,
    // so no link comes up with the altered parameters.
    assert!(wait_for(T, || hub.federation().link_infos().is_empty()).await);
    let (url, _) = relay(ws_url(&hub), |t| {
        t.replace(r#""mode":"push""#, r#""mode":"pull""#)
    })
    .await;
    let tampered = spoke
        .federation()
        .connect_to_remote(
            &url,
            LinkConfig {
                mode: SyncMode::Push,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(wait_for(T, || tampered.info().last_error.is_some()).await);
    let error = tampered.info().last_error.unwrap();
    assert!(error.contains("does not hold"), "{error}");
    assert_ne!(tampered.status(), LinkStatus::Connected);
    // Nothing was established on the hub under the tampered parameters.
    assert!(hub
        .federation()
        .link_infos()
        .iter()
        .all(|l| l.status != LinkStatus::Connected));
}

async fn token_hub(allow_anonymous: Option<bool>) -> Server {
    let node = Node::open(NodeConfig {
        system_id: Some("hub".into()),
        peers: vec![PeerEntry {
            name: "ref-client".into(),
            token: Some(TOKEN.into()),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    serve_at(
        node,
        ServerOptions {
            allow_anonymous,
            ..Default::default()
        },
        "127.0.0.1:0",
    )
    .await
}

/// The reference client's frames (../shared/interop/reference-frames.jsonl): hello,
/// then a delta, answered with delta_ack.
async fn speak_v1(peer: &mut RawPeer, id: &str) -> Value {
    peer.send(
        json!({"type": "hello", "timestamp": 1795483360193u64, "systemId": "wire-client",
        "config": {"mode": "bidirectional", "initialSync": "full"},
        "protocol": "rhizomedb-federation-v1"}),
    )
    .await;
    peer.recv_type("hello_ack").await;
    peer.send(json!({"type": "delta", "timestamp": 1795483360412u64,
        "delta": delta(id, "ticker", "wire-client", json!([{"role": "tick", "target": 6}]))}))
        .await;
    loop {
        let f = peer.recv().await.expect("an answer");
        if f["type"] == "delta_ack" || f["type"] == "delta_nack" {
            return f;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_client_authenticates_with_a_peer_token() {
    let hub = token_hub(Some(false)).await;
    let peers_of = |hub: &Server| -> Vec<(String, bool)> {
        hub.federation()
            .link_infos()
            .into_iter()
            .filter_map(|l| l.peer)
            .map(|p| (p.name, p.authenticated))
            .collect()
    };

    // In the url, as the reference client can only choose a url.
    let mut by_url = RawPeer::connect_url(&format!("{}?token={TOKEN}", ws_url(&hub))).await;
    let ack = speak_v1(&mut by_url, "v1-a").await;
    assert_eq!(ack["type"], "delta_ack", "{ack}");
    assert!(peers_of(&hub).contains(&("ref-client".into(), true)));

    // In an Authorization header on the upgrade.
    let mut request = ws_url(&hub).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let mut by_header = RawPeer::connect_request(request).await;
    let ack = speak_v1(&mut by_header, "v1-b").await;
    assert_eq!(ack["type"], "delta_ack", "{ack}");
    assert!(
        wait_holds(
            hub.node(),
            &BTreeSet::from(["v1-a".into(), "v1-b".into()]),
            T
        )
        .await
    );

    // A wrong token: 401 before any WebSocket.
    let wrong =
        tokio_tungstenite::connect_async(format!("{}?token=nope-{TOKEN}", ws_url(&hub))).await;
    match wrong {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 401);
        }
        other => panic!("expected a 401, got {:?}", other.map(|_| ())),
    }
    // No token, on a node that takes no anonymous peers: refused with a reason.
    let mut anonymous = RawPeer::connect(&hub.url()).await;
    anonymous
        .send(json!({"type": "hello", "timestamp": 1, "systemId": "ref-client", "protocol": "rhizomedb-federation-v1"}))
        .await;
    let error = anonymous.recv_type("error").await;
    assert_eq!(error["code"], "AUTH_REQUIRED", "{error}");
    assert_eq!(anonymous.close_code().await, Some(1008));
    let refused = hub
        .federation()
        .auth_refusals()
        .anonymous
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_peers_are_refused_by_default_off_loopback() {
    let spoke = start_node("spoke").await;
    let node = Node::in_memory("open-hub").await.unwrap();
    let hub = serve_at(node, ServerOptions::default(), "0.0.0.0:0").await;
    assert!(!hub.federation().allows_anonymous());
    let url = format!("http://127.0.0.1:{}", hub.local_addr().port());
    let link = spoke
        .federation()
        .connect_to_remote(&url, LinkConfig::default())
        .unwrap();
    assert!(
        wait_for(T, || link
            .info()
            .last_error
            .is_some_and(|e| e.contains("AUTH_REQUIRED")))
        .await
    );
    assert_ne!(link.status(), LinkStatus::Connected);
    link.disconnect();

    // Once the hub knows the spoke's key, the same spoke links.
    hub.node()
        .update_peers(|t| t.with(key_peer("spoke", spoke.node())))
        .unwrap();
    let link = spoke
        .federation()
        .connect_to_remote(&url, LinkConfig::default())
        .unwrap();
    assert!(
        wait_status(&link, LinkStatus::Connected, T).await,
        "{:?}",
        link.info()
    );

    // Or anonymous peers allowed explicitly.
    let node = Node::in_memory("open-hub-2").await.unwrap();
    let options = ServerOptions {
        allow_anonymous: Some(true),
        ..Default::default()
    };
    let open = serve_at(node, options, "0.0.0.0:0").await;
    assert!(open.federation().allows_anonymous());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_managed_over_http_and_removing_one_closes_its_links() {
    let spoke = start_node("spoke").await;
    let hub = token_hub(None).await;
    let http = reqwest::Client::new();
    let added = http
        .post(format!("{}/peers", hub.url()))
        .json(&json!({"name": "spoke", "key": spoke.node().public_key(), "systems": ["spoke"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    let again = http
        .post(format!("{}/peers", hub.url()))
        .json(&json!({"name": "spoke", "token": "another-token-0123456789"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let bad = http
        .post(format!("{}/peers", hub.url()))
        .json(&json!({"name": "../x", "token": "another-token-0123456789"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let listed: Value = http
        .get(format!("{}/peers", hub.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = listed.to_string();
    assert!(!text.contains(TOKEN), "a token was shown: {text}");
    assert_eq!(listed["peers"].as_array().unwrap().len(), 2, "{listed}");

    let link = dial(&spoke, &hub, LinkConfig::default()).await;
    assert!(hub.federation().link_infos().iter().any(|l| l
        .peer
        .as_ref()
        .is_some_and(|p| p.name == "spoke" && p.authenticated)));
    let removed: Value = http
        .delete(format!("{}/peers/spoke", hub.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(removed["linksClosed"], 1, "{removed}");
    // The spoke reconnects, now as an anonymous peer (the hub is on loopback).
    assert!(
        wait_for(T, || hub
            .federation()
            .link_infos()
            .iter()
            .any(|l| l.peer.as_ref().is_some_and(|p| p.name == "anonymous")))
        .await
    );
    assert!(wait_status(&link, LinkStatus::Connected, T).await);
    let missing = http
        .delete(format!("{}/peers/spoke", hub.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// The binary on a non-loopback address: it says at start that it takes authenticated
/// peers only; `rhizome peer` adds and lists peers; `rhizome status` shows the rule.
#[test]
fn serve_off_loopback_says_who_may_link_and_rhizome_peer_manages_peers() {
    use crate::common::cli::{run, Serving};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let file = std::fs::File::create(&log).unwrap();
    let node = Serving::spawn_with("0.0.0.0:0", &["--memory"], |cmd| {
        cmd.stderr(file);
    })
    .expect("serve listens");
    let node_url = node.url.replace("0.0.0.0", "127.0.0.1");
    let token_file = node.admin_token_file.clone().expect("a token file");
    let token_file = token_file.display().to_string();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("only authenticated peers are accepted")
            && said.contains("--allow-anonymous"),
        "{said}"
    );

    let made = run(&["peer", "token"]);
    assert!(made.ok(), "{}", made.err);
    let token = made.out.trim().to_owned();
    assert_eq!(token.len(), 48, "{token}");
    let key = rhizome::identity::NodeKey::generate().unwrap().public_hex();
    let common = [
        "--node",
        node_url.as_str(),
        "--token-file",
        token_file.as_str(),
    ];
    let add = |extra: &[&str]| run(&[&["peer", "add"][..], extra, &common[..]].concat());
    assert!(add(&["spoke", "--key", &key, "--system", "spoke-1"]).ok());
    assert!(add(&["feed", "--peer-token", &token]).ok());
    add(&["spoke", "--key", &key]).assert_fails_saying(&["already configured"]);
    let listed = run(&[&["peer", "list"][..], &common[..]].concat());
    let peers = listed.json_lines();
    assert_eq!(peers.len(), 2, "{}", listed.out);
    assert!(!listed.out.contains(&token), "a token was printed");
    assert_eq!(peers[0]["systems"][0], "spoke-1");
    let status = run(&[&["status"][..], &common[..]].concat());
    assert!(
        status
            .out
            .contains("2 configured, only authenticated peers accepted"),
        "{}",
        status.out
    );
    assert!(run(&[&["peer", "remove", "feed"][..], &common[..]].concat()).ok());
    node.stop();
}
