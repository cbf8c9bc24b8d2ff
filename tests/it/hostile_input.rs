//! Hostile peers and careless clients (issue 14): every delta is judged on its own,
//! nothing moves a cursor past what was not judged, one set of limits holds on every
//! way in, and what a node stores it can forward without blocking a link.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use common::{
    ids, start_node, start_node_with, start_node_with_options, wait_for, wait_holds, wait_status,
};
use rhizome::federation::{InitialSync, LinkConfig, ServerOptions, SyncMode};
use rhizome::Server;
use rhizome::{Limits, LinkStatus, NodeConfig, Origin};

const T: Duration = Duration::from_secs(30);

fn nested(levels: usize) -> String {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
}

fn good(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","timestamp":1700000000000,"author":"peer","system":"peer-sys","pointers":[{{"role":"about","target":{{"id":"t-{id}","context":"c"}}}}]}}"#
    )
}

fn with_extra(id: &str, extra: &str) -> String {
    format!(
        r#"{{"id":"{id}","timestamp":1700000000000,"author":"peer","system":"peer-sys","pointers":[],"extra":{extra}}}"#
    )
}

fn delta_batch(deltas: &[String], last_seq: u64) -> String {
    format!(
        r#"{{"type":"delta_batch","timestamp":1,"deltas":[{}],"lastSeq":{last_seq}}}"#,
        deltas.join(",")
    )
}

async fn post(server: &Server, body: String) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/deltas", server.url()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST /deltas");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn pull() -> LinkConfig {
    LinkConfig {
        mode: SyncMode::Pull,
        initial_sync: InitialSync::Full,
        ..Default::default()
    }
}

/// A peer played by hand over a real WebSocket: what it sends is the test's, what the
/// node answers is read by a task of its own (so the node never waits on it).
struct Peer {
    sink: futures_util::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        WsMessage,
    >,
    answers: tokio::sync::mpsc::UnboundedReceiver<Answer>,
}

#[derive(Debug)]
enum Answer {
    Frame(Value),
    Closed(Option<u16>),
}

impl Peer {
    /// Connects to `server` as an extension peer that pushes (`mode: push`) and returns
    /// the peer with the cursor the node reports in its `hello_ack`.
    async fn push_to(server: &Server, system_id: &str) -> (Peer, u64) {
        let url = format!(
            "{}/federation",
            server.url().replacen("http://", "ws://", 1)
        );
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        let (sink, mut stream) = ws.split();
        let (tx, answers) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(next) = stream.next().await {
                match next {
                    Ok(WsMessage::Text(t)) => {
                        let v = serde_json::from_str(t.as_str()).expect("JSON frame");
                        if tx.send(Answer::Frame(v)).is_err() {
                            return;
                        }
                    }
                    Ok(WsMessage::Close(f)) => {
                        let _ = tx.send(Answer::Closed(f.map(|f| u16::from(f.code))));
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("peer socket error: {e}");
                        break;
                    }
                }
            }
            let _ = tx.send(Answer::Closed(None));
        });
        let mut peer = Peer { sink, answers };
        peer.send(
            json!({"type": "hello", "timestamp": 1, "systemId": system_id,
            "protocol": "rhizomedb-federation-v1", "config": {"mode": "push", "name": "hand"},
            "rhizome": {"version": 1, "log": format!("{system_id}-log")}})
            .to_string(),
        )
        .await;
        let ack = peer.until_type("hello_ack").await.expect("hello_ack");
        let cursor = ack["rhizome"]["cursor"].as_u64().unwrap_or(0);
        (peer, cursor)
    }

    /// Closes the connection the way a peer going away does.
    async fn close(mut self) {
        let _ = self.sink.send(WsMessage::Close(None)).await;
        let _ = self.sink.close().await;
        let _ = self.closed().await;
    }

    async fn send(&mut self, text: String) {
        // The node may close the socket while a frame is on its way: that is its answer.
        let _ = self.sink.send(WsMessage::text(text)).await;
    }

    async fn next(&mut self) -> Option<Answer> {
        tokio::time::timeout(Duration::from_secs(20), self.answers.recv())
            .await
            .ok()
            .flatten()
    }

    /// Reads answers up to the first of type `kind`, collecting the others.
    async fn until_type(&mut self, kind: &str) -> Option<Value> {
        self.collect_until(kind).await.0
    }

    async fn collect_until(&mut self, kind: &str) -> (Option<Value>, Vec<Value>) {
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                Some(Answer::Frame(f)) if f["type"] == kind => return (Some(f), seen),
                Some(Answer::Frame(f)) => seen.push(f),
                Some(Answer::Closed(_)) | None => return (None, seen),
            }
        }
    }

    /// Everything answered up to now: sends a ping and reads until its pong.
    async fn drain(&mut self) -> Vec<Value> {
        self.send(json!({"type": "ping", "timestamp": 1}).to_string())
            .await;
        self.collect_until("pong").await.1
    }

    /// Reads until the socket closes; the close code.
    async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.next().await {
                Some(Answer::Frame(_)) => {}
                Some(Answer::Closed(code)) => return code,
                None => return None,
            }
        }
    }
}

fn nacks(frames: &[Value]) -> Vec<(String, String)> {
    frames
        .iter()
        .filter(|f| f["type"] == "delta_nack")
        .map(|f| {
            (
                f["deltaId"].as_str().unwrap_or_default().to_owned(),
                f["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn cursor_acks(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["type"] == "cursor_ack")
        .filter_map(|f| f["lastSeq"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_1_a_deep_delta_is_refused_at_the_door_and_a_pull_loses_nothing() {
    let c = start_node("c").await;
    let (status, body) = post(&c, with_extra("deep", &nested(125))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("maxDepth"), "{body}");

    let mut want = BTreeSet::new();
    for round in 0..3 {
        let batch: Vec<String> = (0..1000)
            .map(|i| {
                let id = format!("c-{round}-{i}");
                want.insert(id.clone());
                good(&id)
            })
            .collect();
        let (status, body) = post(&c, format!("[{}]", batch.join(","))).await;
        assert_eq!(status, 200);
        assert!(body["results"].as_array().is_some_and(|r| r.len() == 1000));
    }

    let d = start_node("d").await;
    let link = d
        .federation()
        .connect_to_remote(&c.url(), pull())
        .expect("link");
    assert!(
        wait_holds(d.node(), &want, T).await,
        "lost: {}",
        want.difference(&ids(d.node())).count()
    );
    assert_eq!(ids(d.node()), want);
    assert_eq!(d.node().invalid_count(), 0);
    assert_eq!(link.stats().reconnects, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_1_a_batch_with_bad_deltas_is_judged_delta_by_delta() {
    let d = start_node("d").await;
    let (mut peer, cursor) = Peer::push_to(&d, "hand-1").await;
    assert_eq!(cursor, 0);
    let mut batch: Vec<String> = (0..499).map(|i| good(&format!("a-{i}"))).collect();
    // Readable alone, but deeper than the limits: judged and refused.
    batch.push(with_extra("deep", &nested(60)));
    // Past any JSON reader's depth: serde refuses the whole frame for it.
    batch.push(with_extra("deeper", &nested(140)));
    batch.extend((499..998).map(|i| good(&format!("a-{i}"))));
    peer.send(delta_batch(&batch, 1000)).await;
    let answers = peer.drain().await;

    let refused = nacks(&answers);
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0].0, "deep");
    assert!(refused[0].1.contains("maxDepth"), "{refused:?}");
    assert_eq!(refused[1].0, "deeper");
    assert!(refused[1].1.contains("levels"), "{refused:?}");
    assert_eq!(cursor_acks(&answers), [1000], "every delta was judged");
    let want: BTreeSet<String> = (0..998).map(|i| format!("a-{i}")).collect();
    assert_eq!(ids(d.node()), want);
    assert_eq!(d.node().invalid_count(), 2);
    let link = &d.federation().get_federation_links()[0];
    assert_eq!(link.stats().deltas_invalid, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_frame_holds_the_cursor_for_the_rest_of_the_connection() {
    let d = start_node("d").await;
    let (mut peer, _) = Peer::push_to(&d, "hand-2").await;
    let first: Vec<String> = (0..100).map(|i| good(&format!("b-{i}"))).collect();
    peer.send(delta_batch(&first, 100)).await;
    assert_eq!(cursor_acks(&peer.drain().await), [100]);

    // A frame cut short: whatever it carried was never judged.
    peer.send(r#"{"type":"delta_batch","timestamp":1,"deltas":[{"id":"lost""#.into())
        .await;
    let second: Vec<String> = (100..200).map(|i| good(&format!("b-{i}"))).collect();
    peer.send(delta_batch(&second, 200)).await;
    let answers = peer.drain().await;
    assert!(
        answers
            .iter()
            .any(|f| f["type"] == "error" && f["code"] == "MESSAGE_ERROR"),
        "{answers:?}"
    );
    assert!(
        cursor_acks(&answers).is_empty(),
        "the cursor moved: {answers:?}"
    );
    // The deltas themselves are stored; only the cursor waits.
    assert_eq!(ids(d.node()).len(), 200);
    let link = d.federation().get_federation_links()[0].clone();
    assert_eq!(link.stats().frames_invalid, 1);
    assert!(d.node().invalid_count() >= 1);
    assert!(link
        .info()
        .last_error
        .unwrap_or_default()
        .contains("cursor held"));
    peer.close().await;

    // The next connection resumes where the node last judged everything.
    assert!(wait_for(T, || d.federation().get_federation_links().is_empty()).await);
    let (_peer, cursor) = Peer::push_to(&d, "hand-2").await;
    assert_eq!(cursor, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_2_big_deltas_never_block_a_link() {
    // A holds deltas larger than the defaults allow (its own limits are raised).
    let raised = Limits {
        max_delta_bytes: 4 * 1024 * 1024,
        max_string_bytes: 4 * 1024 * 1024,
        ..Default::default()
    };
    let a = start_node_with(NodeConfig {
        system_id: Some("a".into()),
        limits: raised,
        ..Default::default()
    })
    .await;
    let big: Vec<rhizome::Delta> = (0..12)
        .map(|i| {
            rhizome::Delta::parse(&format!(
                r#"{{"id":"big-{i}","timestamp":1700000000000,"author":"a","system":"a","pointers":[{{"role":"text","target":"{}"}}]}}"#,
                "x".repeat(1_900_000)
            ))
            .expect("a big delta")
        })
        .collect();
    let outcomes = a.node().ingest(big, Origin::Local).await.expect("ingest");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, rhizome::IngestOutcome::Stored(_))),
        "{outcomes:?}"
    );
    let small: BTreeSet<String> = common::author(a.node(), "alice", 500)
        .await
        .into_iter()
        .collect();

    // B reads with the defaults: it gets every delta it accepts, and the link stays up.
    let b = start_node("b").await;
    let link = b
        .federation()
        .connect_to_remote(&a.url(), pull())
        .expect("link");
    assert!(wait_holds(b.node(), &small, T).await);
    assert!(wait_status(&link, LinkStatus::Connected, T).await);
    assert_eq!(ids(b.node()), small);
    let served = a.federation().get_federation_links();
    assert!(
        wait_for(T, || served[0].stats().deltas_withheld == 12).await,
        "{:?}",
        served[0].stats()
    );
    assert_eq!(link.stats().reconnects, 0);
    assert_eq!(b.node().invalid_count(), 0);

    // C reads what A reads: it gets them all, in frames bounded in bytes.
    let c = start_node_with(NodeConfig {
        system_id: Some("c".into()),
        limits: raised,
        ..Default::default()
    })
    .await;
    let link = c
        .federation()
        .connect_to_remote(&a.url(), pull())
        .expect("link");
    let all = ids(a.node());
    assert_eq!(all.len(), 512);
    assert!(wait_holds(c.node(), &all, T).await);
    assert_eq!(link.stats().reconnects, 0);

    // And a default node refuses such a delta at its door, naming the limit.
    let (status, body) = post(
        &b,
        format!(
            r#"{{"id":"huge","timestamp":1700000000000,"author":"a","system":"a","pointers":[{{"role":"text","target":"{}"}}]}}"#,
            "x".repeat(1_900_000)
        ),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("maxStringBytes"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_8_an_oversized_frame_is_answered_and_closed_with_1009() {
    let d = start_node_with_options(
        NodeConfig {
            system_id: Some("d".into()),
            limits: Limits {
                max_delta_bytes: 32 * 1024,
                max_string_bytes: 16 * 1024,
                ..Default::default()
            },
            ..Default::default()
        },
        ServerOptions {
            max_message_size: 64 * 1024,
            ..Default::default()
        },
    )
    .await;
    let (mut peer, _) = Peer::push_to(&d, "hand-3").await;
    peer.send(format!(
        r#"{{"type":"ping","timestamp":1,"padding":"{}"}}"#,
        "x".repeat(100 * 1024)
    ))
    .await;
    let error = peer.until_type("error").await.expect("an error frame");
    assert_eq!(error["code"], "MESSAGE_ERROR");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("65536"),
        "{error}"
    );
    assert_eq!(peer.closed().await, Some(1009));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_8_unsafe_timestamps_and_control_characters_are_refused_on_every_path() {
    let d = start_node("d").await;
    let delta = |id: &str, ts: u64, system: &str| {
        json!({"id": id, "timestamp": ts, "author": "a", "system": system,
            "pointers": [{"role": "r", "target": "t"}]})
        .to_string()
    };
    let max_safe = (1u64 << 53) - 1;
    assert_eq!(post(&d, delta("safe", max_safe, "s")).await.0, 201);
    let (status, body) = post(&d, delta("unsafe", max_safe + 1, "s")).await;
    assert_eq!(status, 400);
    assert!(body.to_string().contains("timestamp"), "{body}");
    let (status, body) = post(&d, delta("nul\u{0}id", 5, "s")).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(&d, delta("nl", 5, "node\nINFO forged line")).await;
    assert_eq!(status, 400);
    assert!(body.to_string().contains("control character"), "{body}");

    // The same rules on a link.
    let (mut peer, _) = Peer::push_to(&d, "hand-4").await;
    let deltas = [
        delta("l-unsafe", max_safe + 1, "s"),
        delta("l-nl", 5, "a\nb"),
        delta("l-ok", 5, "s"),
    ];
    peer.send(delta_batch(&deltas, 3)).await;
    let answers = peer.drain().await;
    let refused: Vec<String> = nacks(&answers).into_iter().map(|n| n.0).collect();
    assert_eq!(refused, ["l-unsafe", "l-nl"]);
    assert!(d.node().get("l-ok").expect("get").is_some());

    // A peer whose system id would forge a log line is refused.
    let mut evil = common::RawPeer::connect(&d.url()).await;
    evil.send(
        json!({"type": "hello", "timestamp": 1, "systemId": "evil\nINFO fake",
        "protocol": "rhizomedb-federation-v1"}),
    )
    .await;
    let error = evil.recv_type("error").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("control character"),
        "{error}"
    );
}

/// The chaotic peer's log: every 997th delta breaks a limit by one (a string one byte
/// too long, or one level too deep), every 1999th nests past what any reader takes;
/// the rest are valid, some of them exactly at a limit.
fn chaotic_log(n: u64, limits: &Limits) -> Vec<(String, bool)> {
    (1..=n)
        .map(|seq| {
            let id = format!("x-{seq}");
            if seq % 1999 == 0 {
                (with_extra(&id, &nested(150)), false)
            } else if seq % 997 == 0 {
                if seq % 2 == 0 {
                    let text = "s".repeat(limits.max_string_bytes + 1);
                    (with_extra(&id, &format!(r#""{text}""#)), false)
                } else {
                    (with_extra(&id, &nested(limits.max_depth)), false)
                }
            } else if seq % 1001 == 0 {
                // At the limits: a string of exactly the maximum, nesting exactly at it.
                let text = "s".repeat(limits.max_string_bytes);
                let extra = format!(r#"{{"s":"{text}","n":{}}}"#, nested(limits.max_depth - 2));
                (with_extra(&id, &extra), true)
            } else {
                (good(&id), true)
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chaotic_peer_in_a_100k_sync_leaves_exactly_the_accepted_set() {
    let limits = Limits {
        max_delta_bytes: 16 * 1024,
        max_string_bytes: 4 * 1024,
        max_depth: 16,
        ..Default::default()
    };
    let max_frame = 1024 * 1024;
    let d = start_node_with_options(
        NodeConfig {
            system_id: Some("d".into()),
            limits,
            ..Default::default()
        },
        ServerOptions {
            max_message_size: max_frame,
            ..Default::default()
        },
    )
    .await;
    const N: u64 = 100_000;
    let log = chaotic_log(N, &limits);
    let accepted: BTreeSet<String> = log
        .iter()
        .enumerate()
        .filter(|(_, (_, ok))| *ok)
        .map(|(i, _)| format!("x-{}", i + 1))
        .collect();
    let refused = N as usize - accepted.len();
    assert!(refused > 100, "{refused}");

    // Chaos between batches, each once: garbage, an oversized frame (the node closes
    // the socket), bytes that are not UTF-8, a frame cut short.
    let mut chaos = vec![
        (20_000u64, "garbage"),
        (45_000, "oversized"),
        (70_000, "binary"),
        (85_000, "cut"),
    ];
    let mut connections = 0;
    loop {
        let (mut peer, cursor) = Peer::push_to(&d, "chaos").await;
        connections += 1;
        assert!(connections < 20, "the sync never completed");
        if cursor == N {
            break;
        }
        let mut at = cursor;
        let mut closed = false;
        while at < N {
            if let Some(pos) = chaos.iter().position(|(when, _)| *when <= at) {
                let (_, kind) = chaos.remove(pos);
                match kind {
                    "garbage" => peer.send("}{ not json".into()).await,
                    "cut" => {
                        peer.send(delta_batch(&[good("never")], at + 1)[..40].to_owned())
                            .await
                    }
                    "binary" => {
                        let _ = peer
                            .sink
                            .send(WsMessage::binary(vec![0xff, 0xfe, 0x00]))
                            .await;
                    }
                    _ => {
                        peer.send(format!(
                            r#"{{"type":"ping","timestamp":1,"p":"{}"}}"#,
                            "x".repeat(max_frame + 10)
                        ))
                        .await;
                        assert_eq!(peer.closed().await, Some(1009));
                        closed = true;
                        break;
                    }
                }
            }
            let end = (at + 1000).min(N);
            let deltas: Vec<String> = log[at as usize..end as usize]
                .iter()
                .map(|(text, _)| text.clone())
                .collect();
            peer.send(delta_batch(&deltas, end)).await;
            at = end;
            if at % 10_000 == 0 {
                // Keep the answers flowing (the node paces on a peer that reads).
                peer.drain().await;
            }
        }
        if !closed {
            peer.drain().await;
            peer.close().await;
        }
        assert!(wait_for(T, || d.federation().get_federation_links().is_empty()).await);
    }
    assert!(chaos.is_empty());
    assert!(connections >= 3, "{connections}");
    assert_eq!(ids(d.node()), accepted);
    assert!(d.node().invalid_count() as usize >= refused);
}
