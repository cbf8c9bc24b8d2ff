//! Signed deltas: a signature is checked on every way in (HTTP, links, replay), a bound
//! author's deltas need its key, requirements follow the scope, only a delta's author
//! (or a moderator) negates it, and a signed delta relayed through other nodes, even one
//! that re-serializes it in the legacy pointer form, still verifies where it lands.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use rhizome::admission::{AuthorEntry, Require, SignatureSettings};
use rhizome::delta::{negate, new_delta, Signed};
use rhizome::federation::{PointerForm, SyncMode};
use rhizome::identity::NodeKey;
use rhizome::policy::PolicyDirs;
use rhizome::{
    Delta, LinkConfig, LinkStatus, Node, NodeConfig, Origin, Pointer, Server, ServerOptions,
};

use crate::common::{ids, serve_at, start_node_with, wait_for, wait_holds, wait_status, RawPeer};

const T: Duration = Duration::from_secs(15);

fn signed(author: &str, key: &NodeKey) -> Delta {
    let mut d = new_delta(author, "origin", vec![Pointer::new("says", "hi".into())]);
    d.sign(key).unwrap();
    d
}

fn unsigned(author: &str) -> Delta {
    new_delta(author, "origin", vec![Pointer::new("says", "hi".into())])
}

fn bound(name: &str, keys: &[&NodeKey]) -> AuthorEntry {
    AuthorEntry {
        name: name.into(),
        keys: keys.iter().map(|k| k.public_base64()).collect(),
    }
}

async fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}{path}", server.url()))
        .json(body)
        .send()
        .await
        .expect("a response");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn get_text(server: &Server, path: &str) -> String {
    let res = reqwest::get(format!("{}{path}", server.url())).await;
    res.expect("a response").text().await.expect("a body")
}

async fn get_json(server: &Server, path: &str) -> Value {
    serde_json::from_str(&get_text(server, path).await).expect("JSON")
}

/// A plain v1 peer (anonymous, from loopback) pushing deltas one frame each; returns
/// the node's answer to each.
async fn push_v1(server: &Server, deltas: &[&Delta]) -> Vec<Value> {
    let mut peer = RawPeer::connect(&server.url()).await;
    peer.hello("v1-peer", json!({"mode": "push", "initialSync": "none"}))
        .await;
    let mut answers = Vec::new();
    for d in deltas {
        peer.send(json!({"type": "delta", "timestamp": 1, "delta": d}))
            .await;
        loop {
            let f = peer.recv().await.expect("an answer");
            if f["type"] == "delta_ack" || f["type"] == "delta_nack" {
                answers.push(f);
                break;
            }
        }
    }
    answers
}

fn quarantined(node: &Node) -> Vec<(String, String, String)> {
    node.quarantine_list(0, 100)
        .unwrap()
        .into_iter()
        .map(|q| (q.record.delta.id, q.record.policy, q.record.reason))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_altered_signature_is_refused_on_every_way_in() {
    let alice = NodeKey::generate().unwrap();
    let mallory = NodeKey::generate().unwrap();
    let node = start_node_with(NodeConfig::default()).await;

    // Changed after signing.
    let mut altered = signed("alice", &alice);
    altered
        .pointers
        .push(Pointer::new("also", "transfer all funds".into()));
    // Signed by mallory, presented as alice's key.
    let mut forged = signed("alice", &mallory);
    forged.extra["signature"]["key"] = alice.public_base64().into();
    for bad in [&altered, &forged] {
        let (status, body) = post(&node, "/deltas", &json!(bad)).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["status"], "rejected", "{body}");
        assert_eq!(body["policy"], "signature rules", "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("does not verify"),
            "{body}"
        );
    }
    // The same from a peer: refused, quarantined with the reason, never stored.
    let good = signed("alice", &alice);
    let answers = push_v1(&node, &[&altered, &good, &forged]).await;
    assert_eq!(answers[1]["type"], "delta_ack", "{answers:?}");
    assert!(wait_for(T, || node.node().store().quarantine_len() == 2).await);
    for (id, policy, reason) in quarantined(node.node()) {
        assert!(id == altered.id || id == forged.id);
        assert_eq!(policy, "signature rules");
        assert!(reason.contains("does not verify"), "{reason}");
    }
    let stored = ids(node.node());
    assert!(stored.contains(&good.id));
    assert!(!stored.contains(&altered.id) && !stored.contains(&forged.id));
    // Counted, and visible.
    let status = get_json(&node, "/status").await;
    assert_eq!(status["signatures"]["refused"], 4, "{status}");
    assert_eq!(status["signatures"]["verified"], 1, "{status}");
    let metrics = get_text(&node, "/metrics").await;
    assert!(
        metrics.contains("rhizome_signature_refusals_total 4"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_author_needs_its_key_and_a_replay_admits_once_the_key_is_bound() {
    let alice = NodeKey::generate().unwrap();
    let alice_laptop = NodeKey::generate().unwrap();
    let node = start_node_with(NodeConfig {
        authors: vec![bound("alice", &[&alice])],
        ..Default::default()
    })
    .await;
    // A local client cannot write as alice without her key.
    let (status, body) = post(&node, "/deltas", &json!(unsigned("alice"))).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("author \"alice\" is bound to key"),
        "{body}"
    );
    let (status, _) = post(&node, "/deltas", &json!(signed("alice", &alice))).await;
    assert_eq!(status, 201);

    let no_key = unsigned("alice");
    let other_key = signed("alice", &alice_laptop);
    let her_key = signed("alice", &alice);
    push_v1(&node, &[&no_key, &other_key, &her_key]).await;
    assert!(wait_holds(node.node(), &BTreeSet::from([her_key.id.clone()]), T).await);
    assert!(wait_for(T, || node.node().store().quarantine_len() == 2).await);
    let reasons: Vec<String> = quarantined(node.node()).into_iter().map(|q| q.2).collect();
    assert!(
        reasons.iter().any(|r| r.contains("this delta is unsigned")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(&alice_laptop.public_base64())),
        "{reasons:?}"
    );

    // Her second key, bound over the API: the replay admits what it signed, only that.
    let (status, body) = post(
        &node,
        "/authors",
        &json!({"name": "alice", "keys": [alice.public_base64(), alice_laptop.public_hex()]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["keys"][1], alice_laptop.public_base64(), "{body}");
    let (_, report) = post(&node, "/quarantine/replay", &json!({})).await;
    assert_eq!(report["admitted"], 1, "{report}");
    assert_eq!(report["stillRejected"], 1, "{report}");
    let stored = ids(node.node());
    assert!(stored.contains(&other_key.id) && !stored.contains(&no_key.id));
}

/// Origin -> hub (a relay with no rules, sending in the legacy pointer form) -> edge,
/// which binds alice and wants every peer's delta signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_delta_relayed_through_a_third_node_still_verifies() {
    let alice = NodeKey::generate().unwrap();
    let origin = start_node_with(NodeConfig::default()).await;
    let hub_node = Node::in_memory("hub").await.unwrap();
    let hub = serve_at(
        hub_node,
        ServerOptions {
            pointer_form: PointerForm::Legacy,
            ..Default::default()
        },
        "127.0.0.1:0",
    )
    .await;
    let edge = start_node_with(NodeConfig {
        system_id: Some("edge".into()),
        authors: vec![bound("alice", &[&alice])],
        signatures: SignatureSettings {
            require: Require::Remote,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut hers = new_delta(
        "alice",
        "origin",
        vec![
            Pointer::new("about", rhizome::Target::reference_in("prod-1", "reviews")),
            Pointer::new("stars", rhizome::Target::Number(4.into())),
        ],
    );
    hers.sign(&alice).unwrap();
    let bobs = unsigned("bob");
    origin
        .node()
        .ingest(vec![hers.clone(), bobs.clone()], Origin::Local)
        .await
        .unwrap();
    let pull = LinkConfig {
        mode: SyncMode::Pull,
        ..Default::default()
    };
    for (from, to) in [(&hub, &origin), (&edge, &hub)] {
        let link = from
            .federation()
            .connect_to_remote(&to.url(), pull.clone())
            .unwrap();
        assert!(wait_status(&link, LinkStatus::Connected, T).await);
    }
    assert!(wait_holds(edge.node(), &BTreeSet::from([hers.id.clone()]), T).await);
    let stored = edge.node().get(&hers.id).unwrap().unwrap().delta;
    assert_eq!(stored, hers);
    assert_eq!(stored.verify(), Signed::By(alice.verifying_key()));
    // Bob's unsigned delta went as far as the hub, and no further.
    assert!(wait_for(T, || edge.node().store().quarantine_len() == 1).await);
    assert!(ids(hub.node()).contains(&bobs.id));
    assert!(!ids(edge.node()).contains(&bobs.id));
    let (_, _, reason) = quarantined(edge.node()).remove(0);
    assert!(reason.contains("must be signed"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_author_or_a_moderator_negates_a_signed_delta() {
    let alice = NodeKey::generate().unwrap();
    let mallory = NodeKey::generate().unwrap();
    let moderator = NodeKey::generate().unwrap();
    // Peers that do not authenticate must sign here, so their negations of what is not
    // here yet wait for it.
    let node = start_node_with(NodeConfig {
        signatures: SignatureSettings {
            moderators: vec![moderator.public_base64()],
            require_from: vec!["anonymous".into()],
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let target = signed("alice", &alice);
    let (status, _) = post(&node, "/deltas", &json!(target)).await;
    assert_eq!(status, 201);
    let negation = |key: Option<&NodeKey>| {
        let mut n = negate(&target.id, "someone", "origin", Some("spam"));
        if let Some(key) = key {
            n.sign(key).unwrap();
        }
        n
    };
    for (key, expected) in [(Some(&mallory), 403), (None, 403), (Some(&alice), 201)] {
        let (status, body) = post(&node, "/deltas", &json!(negation(key))).await;
        assert_eq!(status, expected, "{body}");
        if expected == 403 {
            assert!(
                body["message"].as_str().unwrap().contains("only key"),
                "{body}"
            );
        }
    }
    // The node's own negate endpoint signs with nothing here: refused the same way.
    let (status, body) = post(
        &node,
        &format!("/deltas/{}/negate", target.id),
        &json!({"author": "admin"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // A moderator may, from a peer too; a peer's negation of what is not here waits.
    // (Where signatures are not required it is stored, as in v1: see
    // `an_unsigned_world_keeps_v1_negations`.)
    let moderated = negation(Some(&moderator));
    let mut early = negate("not-here-yet", "someone", "origin", None);
    early.sign(&mallory).unwrap();
    push_v1(&node, &[&moderated, &early]).await;
    assert!(wait_holds(node.node(), &BTreeSet::from([moderated.id.clone()]), T).await);
    assert!(wait_for(T, || node.node().store().quarantine_len() == 1).await);
    let (id, _, reason) = quarantined(node.node()).remove(0);
    assert_eq!(id, early.id);
    assert!(reason.contains("not stored here yet"), "{reason}");
    assert!(node.node().store().is_negated(&target.id).unwrap());

    // Its target arrives: the waiting negation is judged again at once. Mallory wrote
    // the target, so her negation of it stands; her negation of alice's does not.
    let mut late = signed("mallory", &mallory);
    late.id = "not-here-yet".into();
    late.sign(&mallory).unwrap();
    let mut hers_later = signed("alice", &alice);
    hers_later.id = "alice-later".into();
    hers_later.sign(&alice).unwrap();
    let mut wrong = negate("alice-later", "someone", "origin", None);
    wrong.sign(&mallory).unwrap();
    push_v1(&node, &[&wrong]).await;
    assert!(wait_for(T, || node.node().store().quarantine_len() == 2).await);
    push_v1(&node, &[&late, &hers_later]).await;
    let want = BTreeSet::from([late.id.clone(), early.id.clone(), hers_later.id.clone()]);
    assert!(wait_holds(node.node(), &want, T).await);
    assert!(wait_for(T, || node.node().store().quarantine_len() == 1).await);
    assert_eq!(quarantined(node.node())[0].0, wrong.id);
    assert!(node.node().store().is_negated("not-here-yet").unwrap());
    assert!(!node.node().store().is_negated("alice-later").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_see_the_verified_signer() {
    let alice = NodeKey::generate().unwrap();
    let other = NodeKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("signed.rhai"),
        format!(
            r#"
if delta.author == "alice" && !signed_by(delta, "{}") {{
    reject("alice signs with her own key (signer: " + delta.signer + ")")
}}
if delta.author == "carol" && !signed(delta) {{ reject("carol always signs") }}
accept()
"#,
            alice.public_hex()
        ),
    )
    .unwrap();
    let node = start_node_with(NodeConfig {
        policies: PolicyDirs {
            policies: Some(policies),
            filters: None,
        },
        ..Default::default()
    })
    .await;
    let hers = signed("alice", &alice);
    let not_hers = signed("alice", &other);
    let carol = unsigned("carol");
    let carol_signed = signed("carol", &other);
    push_v1(&node, &[&hers, &not_hers, &carol, &carol_signed]).await;
    let want = BTreeSet::from([hers.id.clone(), carol_signed.id.clone()]);
    assert!(wait_holds(node.node(), &want, T).await);
    assert!(wait_for(T, || node.node().store().quarantine_len() == 2).await);
    let reasons: Vec<String> = quarantined(node.node()).into_iter().map(|q| q.2).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(&format!("signer: {}", other.public_base64()))),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("carol always signs")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirements_follow_the_scope_and_the_node_signs_what_it_completes() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("author.key");
    let key = NodeKey::generate().unwrap();
    key.save_new(&key_file).unwrap();
    let node = start_node_with(NodeConfig {
        signatures: SignatureSettings {
            require_from: vec!["anonymous".into()],
            ..Default::default()
        },
        signing_key: Some(key_file),
        ..Default::default()
    })
    .await;
    // Anonymous peers must sign; local clients need not, and the shorthand the node
    // completes is signed with its signing key.
    let loose = unsigned("bob");
    push_v1(&node, &[&loose]).await;
    assert!(wait_for(T, || node.node().store().quarantine_len() == 1).await);
    let (status, body) = post(
        &node,
        "/deltas",
        &json!({"author": "bob", "pointers": [{"role": "says", "target": "hello"}]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let stored = node
        .node()
        .get(body["id"].as_str().unwrap())
        .unwrap()
        .unwrap()
        .delta;
    assert_eq!(stored.verify(), Signed::By(key.verifying_key()));
    let (status, _) = post(&node, "/deltas", &json!(unsigned("bob"))).await;
    assert_eq!(status, 201);
    let status = get_json(&node, "/status").await;
    assert_eq!(status["signatures"]["signingKey"], key.public_base64());
}

/// The binary: `serve --author NAME=KEY --require-signatures all`, then `rhizome author`
/// binds another author, lists them, unbinds one; `rhizome status` shows the counts.
#[test]
fn rhizome_author_and_serve_flags_bind_authors() {
    use crate::common::cli::{run, Serving};
    let alice = NodeKey::generate().unwrap();
    let bob = NodeKey::generate().unwrap();
    let flag = format!("alice={}", alice.public_hex());
    let node = Serving::start(&[
        "--memory",
        "--author",
        flag.as_str(),
        "--require-signatures",
        "all",
    ]);
    let token_file = node.admin_token_file.clone().expect("a token file");
    let token_file = token_file.display().to_string();
    let common = [
        "--node",
        node.url.as_str(),
        "--token-file",
        token_file.as_str(),
    ];
    let with = |args: &[&str]| run(&[args, &common[..]].concat());

    let add = with(&["author", "add", "bob", "--key", &bob.public_base64()]);
    assert!(add.ok(), "{}{}", add.out, add.err);
    with(&["author", "add", "carol", "--key", "not-a-key"]).assert_fails_saying(&["not-a-key"]);
    let listed = with(&["author", "list"]);
    let lines = listed.json_lines();
    let names: Vec<&str> = lines.iter().filter_map(|l| l["name"].as_str()).collect();
    assert_eq!(names, ["alice", "bob"], "{}", listed.out);
    assert_eq!(lines[0]["keys"][0], alice.public_base64());
    assert_eq!(lines[2]["signatures"]["require"], "all", "{}", listed.out);
    assert!(with(&["author", "remove", "bob"]).ok());
    with(&["author", "remove", "bob"]).assert_fails_saying(&["no author named \"bob\""]);

    // Everything must be signed here: an unsigned put is refused with the reason.
    let refused = with(&["put", "--author", "dave", "-p", "says=hi"]);
    assert!(
        !refused.ok() || refused.out.contains("rejected"),
        "{}{}",
        refused.out,
        refused.err
    );
    assert!(
        format!("{}{}", refused.out, refused.err).contains("must be signed"),
        "{}{}",
        refused.out,
        refused.err
    );
    let status = with(&["status"]);
    assert!(
        status
            .out
            .contains("signatures  1 bound authors, required: all; 0 verified, 1 refused"),
        "{}",
        status.out
    );
    node.stop();
}

/// `[[peer]] requireSignatures`: the peer that proved its key must sign what it sends;
/// another peer need not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_can_be_required_to_sign() {
    let spoke = crate::common::start_node("spoke").await;
    let alice = NodeKey::generate().unwrap();
    let hub = start_node_with(NodeConfig {
        peers: vec![rhizome::PeerEntry {
            name: "spoke".into(),
            key: Some(spoke.node().public_key()),
            require_signatures: true,
            ..Default::default()
        }],
        ..Default::default()
    })
    .await;
    let loose = unsigned("bob");
    let hers = signed("alice", &alice);
    spoke
        .node()
        .ingest(vec![loose.clone(), hers.clone()], Origin::Local)
        .await
        .unwrap();
    let link = spoke
        .federation()
        .connect_to_remote(
            &hub.url(),
            LinkConfig {
                mode: SyncMode::Push,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(wait_status(&link, LinkStatus::Connected, T).await);
    assert!(wait_holds(hub.node(), &BTreeSet::from([hers.id.clone()]), T).await);
    assert!(wait_for(T, || hub.node().store().quarantine_len() == 1).await);
    let (id, _, reason) = quarantined(hub.node()).remove(0);
    assert_eq!(id, loose.id);
    assert!(reason.contains("from \"spoke\" must be signed"), "{reason}");
    // An anonymous peer is not held to the spoke's rule.
    let answers = push_v1(&hub, &[&unsigned("carol")]).await;
    assert_eq!(answers[0]["type"], "delta_ack", "{answers:?}");
}

/// With no signature settings, a negation of a delta not stored yet is stored and
/// forwarded as in v1: what one node stores, a node of the same settings accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_world_keeps_v1_negations() {
    let a = start_node_with(NodeConfig::default()).await;
    let b = start_node_with(NodeConfig::default()).await;
    let early = negate("arrives-later", "bob", "origin", None);
    let (status, body) = post(&a, "/deltas", &json!(early)).await;
    assert_eq!(status, 201, "{body}");
    let link = b
        .federation()
        .connect_to_remote(
            &a.url(),
            LinkConfig {
                mode: SyncMode::Pull,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(wait_status(&link, LinkStatus::Connected, T).await);
    assert!(wait_holds(b.node(), &BTreeSet::from([early.id.clone()]), T).await);
    assert_eq!(b.node().store().quarantine_len(), 0);
}
