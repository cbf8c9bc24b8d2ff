//! Reconciliation (feature `reconcile`, docs/PROTOCOL.md 6.10): a link without a
//! cursor between nodes that already share most deltas exchanges what differs, not
//! everything; `rhizome link reconcile NAME` does it on demand.

use std::collections::BTreeSet;
use std::time::Duration;

use rhizome::federation::{InitialSync, LinkConfig, SyncMode};
use rhizome::store::ReadLimit;
use rhizome::{FederationLink, LinkStatus, Node, Origin, Seq, Server};

use crate::common::cli::run;
use crate::common::{author, dial_connected, ids, start_node, wait_for, wait_holds, wait_status};

const T: Duration = Duration::from_secs(30);

/// Every delta of `from`'s log, as stored.
fn deltas_of(node: &Node) -> Vec<rhizome::Delta> {
    node.store()
        .read_log(Seq(0), ReadLimit::All, None)
        .and_then(|l| l.deltas())
        .expect("read the log")
        .into_iter()
        .map(|d| d.delta)
        .collect()
}

async fn link(from: &Server, to: &Server, name: &str, initial: InitialSync) -> FederationLink {
    let config = LinkConfig {
        mode: SyncMode::Bidirectional,
        initial_sync: initial,
        name: Some(name.into()),
        ..Default::default()
    };
    dial_connected(from, to, config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rejoining_with_99_percent_fetches_only_the_missing_1_percent() {
    let a = start_node("rejoin-a").await;
    let b = start_node("rejoin-b").await;
    author(a.node(), "alice", 3000).await;
    // `b` holds 99% of `a`'s deltas (a restored backup, say), and 10 of its own.
    let all = deltas_of(a.node());
    let full_sync_bytes: usize = all.iter().map(|d| d.to_json().len()).sum();
    let (kept, lost): (Vec<_>, Vec<_>) =
        all.into_iter().enumerate().partition(|(i, _)| i % 100 != 7);
    let kept: Vec<_> = kept.into_iter().map(|(_, d)| d).collect();
    let lost: BTreeSet<String> = lost.into_iter().map(|(_, d)| d.id).collect();
    assert_eq!(lost.len(), 30);
    b.node().ingest(kept, Origin::Local).await.expect("load b");
    let own: BTreeSet<String> = author(b.node(), "bob", 10).await.into_iter().collect();

    let l = link(&b, &a, "to-a", InitialSync::Full).await;
    let everything: BTreeSet<String> = ids(a.node()).union(&own).cloned().collect();
    assert!(
        wait_holds(b.node(), &everything, T).await,
        "b did not get the missing 1%"
    );
    assert!(
        wait_holds(a.node(), &everything, T).await,
        "a did not get b's own deltas"
    );
    assert!(
        wait_for(T, || l.stats().reconciliations == 1).await,
        "{:?}",
        l.stats()
    );

    let ours = l.stats();
    assert_eq!(ours.reconciled_missing, 30, "{ours:?}");
    assert_eq!(
        ours.deltas_received, 30,
        "only the missing deltas crossed: {ours:?}"
    );
    // A full sync would have carried all 3000 deltas. Reconciling 3000 against 2970
    // carries the 30 deltas, a few rounds of fingerprints both ways (this link answered
    // `a`'s reconciliation too) and the requests: a small fraction of it.
    assert!(
        (ours.bytes_received as usize) * 10 < full_sync_bytes,
        "{} bytes received to learn of 30 missing deltas; a full sync is {full_sync_bytes}",
        ours.bytes_received
    );
    // The other way: `a` was invited to reconcile `b`'s log and found its 10.
    let theirs = a
        .federation()
        .get_federation_links()
        .pop()
        .expect("a's link");
    assert!(wait_for(T, || theirs.stats().reconciliations == 1).await);
    assert_eq!(theirs.stats().reconciled_missing, 10);
    assert_eq!(theirs.stats().deltas_received, 10);

    // Live traffic flows, and the cursors were committed once reconciled: a delta
    // written now crosses, and a reconnect resumes instead of reconciling again.
    let later: BTreeSet<String> = author(a.node(), "alice", 5).await.into_iter().collect();
    assert!(wait_holds(b.node(), &later, T).await);
    l.disconnect();
    let again = link(&b, &a, "to-a", InitialSync::Full).await;
    let more: BTreeSet<String> = author(a.node(), "alice", 5).await.into_iter().collect();
    assert!(wait_holds(b.node(), &more, T).await);
    assert_eq!(again.stats().reconciliations, 0, "{:?}", again.stats());
    assert_eq!(again.stats().deltas_received, 5, "{:?}", again.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_empty_node_receives_everything_by_sync_not_by_comparing() {
    let a = start_node("empty-a").await;
    let b = start_node("empty-b").await;
    let written: BTreeSet<String> = author(a.node(), "alice", 200).await.into_iter().collect();
    let l = link(&b, &a, "to-a", InitialSync::Full).await;
    assert!(wait_holds(b.node(), &written, T).await);
    assert_eq!(
        l.stats().reconciliations,
        0,
        "an empty node compared: {:?}",
        l.stats()
    );
    assert_eq!(l.stats().deltas_received, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_reconcile_fetches_history_the_link_never_synced() {
    let a = start_node("history-a").await;
    let b = start_node("history-b").await;
    let history: BTreeSet<String> = author(a.node(), "alice", 300).await.into_iter().collect();
    // Linked without history: nothing of the past crosses.
    let l = link(&b, &a, "no-history", InitialSync::None).await;
    let live: BTreeSet<String> = author(a.node(), "alice", 3).await.into_iter().collect();
    assert!(wait_holds(b.node(), &live, T).await);
    assert!(ids(b.node()).is_disjoint(&history));

    // The operator reconciles the link by name: the history comes over.
    let url = b.url();
    let out = tokio::task::spawn_blocking(move || {
        run(&["link", "reconcile", "--node", &url, "no-history"]).json_lines()
    })
    .await
    .expect("cli");
    assert_eq!(out[0]["reconciled"]["missing"], 300, "{out:?}");
    assert!(
        out[0]["reconciled"]["rounds"].as_u64().unwrap() >= 2,
        "{out:?}"
    );
    assert!(ids(b.node()).is_superset(&history));
    assert_eq!(l.stats().reconciled_missing, 300);

    // Nothing differs any more: a second run finds nothing.
    let report = l.reconcile(T).await.expect("reconcile again");
    assert_eq!(report.missing, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_is_refused_with_a_reason_where_it_cannot_run() {
    let a = start_node("refuse-a").await;
    let b = start_node("refuse-b").await;
    let push_only = b
        .federation()
        .connect_to_remote(
            &a.url(),
            LinkConfig {
                mode: SyncMode::Push,
                name: Some("push-only".into()),
                ..Default::default()
            },
        )
        .expect("dial");
    assert!(wait_status(&push_only, LinkStatus::Connected, T).await);
    let err = push_only
        .reconcile(T)
        .await
        .expect_err("a push link receives nothing");
    assert!(err.contains("does not receive"), "{err}");

    let url = b.url();
    let ran =
        tokio::task::spawn_blocking(move || run(&["link", "reconcile", "--node", &url, "nope"]))
            .await
            .expect("cli");
    ran.assert_fails_saying(&["nope"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_make_the_node_sort_its_log_without_end() {
    let server = start_node("sorted-once").await;
    author(server.node(), "alice", 50).await;
    let mut peer = crate::common::RawPeer::connect(&server.url()).await;
    peer.send(
        serde_json::json!({"type": "hello", "timestamp": 1, "systemId": "asker",
        "protocol": "rhizomedb-federation-v1", "config": {"mode": "bidirectional"},
        "rhizome": {"version": 1, "log": "asker-log", "features": ["reconcile"]}}),
    )
    .await;
    peer.recv_type("hello_ack").await;
    // The fingerprint of an empty set (docs/PROTOCOL.md 6.10): the node answers by
    // listing its ids.
    use sha2::Digest;
    let mut empty = sha2::Sha256::new();
    empty.update(0u128.to_le_bytes());
    empty.update(0u64.to_le_bytes());
    let fp: String = empty.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let round = serde_json::json!({"ranges": [{"fp": fp, "n": 0}]});
    for conversation in 1..=4 {
        peer.send(serde_json::json!({"type": "reconcile", "timestamp": 1,
            "conversation": conversation, "puller": true, "round": round}))
            .await;
        let answer = peer.recv_type("reconcile").await;
        assert_eq!(answer["conversation"], conversation);
        assert_eq!(answer["puller"], false);
    }
    peer.send(serde_json::json!({"type": "reconcile", "timestamp": 1,
        "conversation": 5, "puller": true, "round": round}))
        .await;
    let err = peer.recv_type("error").await;
    assert_eq!(err["code"], "RECONCILE_ERROR");
    assert!(
        err["message"].as_str().unwrap().contains("more than 4"),
        "{err}"
    );
    // A malformed round is refused by name, and the link stays up.
    peer.send(serde_json::json!({"type": "reconcile", "timestamp": 1,
        "conversation": 6, "puller": false, "round": {"ranges": "no"}}))
        .await;
    let err = peer.recv_type("error").await;
    assert_eq!(err["code"], "RECONCILE_ERROR");
    peer.send(serde_json::json!({"type": "ping", "timestamp": 1}))
        .await;
    peer.recv_type("pong").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cursor_waits_until_the_reconciliation_is_over() {
    let server = start_node("held-during").await;
    author(server.node(), "alice", 60).await;
    let hello = serde_json::json!({"type": "hello", "timestamp": 1, "systemId": "inviter",
        "protocol": "rhizomedb-federation-v1", "config": {"mode": "bidirectional"},
        "rhizome": {"version": 1, "log": "inviter-log", "features": ["reconcile"], "head": 100}});
    let live = crate::common::delta_json("live-after-the-invite", "ivy", "inviter");

    // The inviter's live deltas start after 100; the node reconciles what came before,
    // and the inviter goes away before answering.
    let mut peer = crate::common::RawPeer::connect(&server.url()).await;
    peer.send(hello.clone()).await;
    let ack = peer.recv_type("hello_ack").await;
    assert_eq!(ack["rhizome"]["cursor"], 0);
    peer.send(serde_json::json!({"type": "reconcile_invite", "timestamp": 1, "through": 100}))
        .await;
    peer.send(serde_json::json!({"type": "delta_batch", "timestamp": 1, "deltas": [live], "lastSeq": 101}))
        .await;
    let round = peer.recv_type("reconcile").await;
    assert_eq!(round["puller"], true, "{round}");
    let want: BTreeSet<String> = ["live-after-the-invite".to_owned()].into();
    assert!(
        wait_holds(server.node(), &want, T).await,
        "live deltas are stored at once"
    );
    drop(peer);

    // Position 101 was stored but not committed: positions up to 100 were never
    // compared, so the next connection starts over.
    let mut peer = crate::common::RawPeer::connect(&server.url()).await;
    peer.send(hello).await;
    let ack = peer.recv_type("hello_ack").await;
    assert_eq!(ack["rhizome"]["cursor"], 0, "{ack}");
}
