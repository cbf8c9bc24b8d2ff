//! The HTTP API against a real server on port 0.

use crate::common;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn post(url: &str, body: Value) -> (StatusCode, Value) {
    let res = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = res.status();
    (status, res.json().await.expect("json body"))
}

async fn get(url: &str) -> (StatusCode, Value) {
    let res = reqwest::get(url).await.expect("request");
    let status = res.status();
    (status, res.json().await.expect("json body"))
}

#[tokio::test]
async fn put_get_query_negate_status() {
    let server = common::start_node("api-node").await;
    let base = server.url();

    // Authoring shorthand: the node fills id, timestamp and system.
    let (status, body) = post(&format!("{base}/deltas"), json!({
        "author": "alice",
        "pointers": [{"role": "on", "target": {"id": "prod_1", "context": "comments"}}, {"role": "text", "target": "hi"}]
    })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "stored");
    assert_eq!(body["delta"]["system"], "api-node");
    let id = body["id"].as_str().unwrap().to_owned();

    // A full delta, then the same again: a duplicate, not a second copy.
    let full = json!({"id": "d-2", "timestamp": 1234, "author": "bob", "system": "elsewhere",
                      "pointers": [{"role": "on", "target": {"id": "prod_1", "context": "reviews"}}]});
    let (status, body) = post(&format!("{base}/deltas"), full.clone()).await;
    assert_eq!(
        (status, body["seq"].as_u64()),
        (StatusCode::CREATED, Some(2))
    );
    let (status, body) = post(&format!("{base}/deltas"), full.clone()).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("duplicate"))
    );

    let (status, body) = get(&format!("{base}/deltas/d-2")).await;
    assert_eq!((status, body), (StatusCode::OK, full));
    let (status, body) = get(&format!("{base}/deltas/missing")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );

    let (_, body) = get(&format!("{base}/deltas?targetId=prod_1")).await;
    assert_eq!(body["count"], 2);
    let (_, body) = get(&format!("{base}/deltas?author=bob&context=reviews")).await;
    assert_eq!(body["deltas"][0]["id"], "d-2");
    let (_, body) = get(&format!("{base}/deltas?since=2000")).await;
    assert_eq!(body["deltas"][0]["id"], id.as_str());
    let (_, body) = post(
        &format!("{base}/query"),
        json!({"filter": {"authors": ["alice", "bob"]}, "limit": 1}),
    )
    .await;
    assert_eq!(
        (body["count"].as_u64(), body["next"].as_u64()),
        (Some(1), Some(1))
    );

    let (status, body) = post(
        &format!("{base}/deltas/d-2/negate"),
        json!({"author": "bob", "reason": "spam"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["delta"]["pointers"][0]["target"],
        json!({"id": "d-2", "context": "negated_by"})
    );
    let (_, body) = get(&format!("{base}/deltas?author=bob&context=reviews")).await;
    assert_eq!(body["count"], 0, "a negated delta is hidden by default");
    let (_, body) = get(&format!(
        "{base}/deltas?author=bob&context=reviews&includeNegated=true"
    ))
    .await;
    assert_eq!(body["count"], 1);

    let (_, body) = get(&format!("{base}/status")).await;
    assert_eq!(body["systemId"], "api-node");
    assert_eq!(body["store"]["deltas"], 3);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_stores_nothing() {
    let server = common::start_node("api-errors").await;
    let base = server.url();

    let res = reqwest::Client::new()
        .post(format!("{base}/deltas"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "INVALID_JSON");

    let (status, body) = post(
        &format!("{base}/deltas"),
        json!({"author": "a", "pointers": [{"role": "", "target": 1}]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        (body["error"].as_str(), body["field"].as_str()),
        (Some("INVALID_DELTA"), Some("pointers[0].role"))
    );

    // One bad delta in an array: the whole request is refused, the good one is not stored.
    let good = json!({"id": "g", "timestamp": 1, "author": "a", "system": "s", "pointers": []});
    let bad = json!({"id": "b", "timestamp": 1, "author": "a", "system": "s", "pointers": "nope"});
    let (status, body) = post(&format!("{base}/deltas"), json!([good, bad])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "[1].pointers");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("must be an array"),
        "{body}"
    );
    let (status, _) = get(&format!("{base}/deltas/g")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = post(
        &format!("{base}/query"),
        json!({"filter": {"authors": "bob"}}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_FILTER"))
    );
    assert!(
        body["message"].as_str().unwrap().contains("authors"),
        "{body}"
    );
    let (status, body) = get(&format!("{base}/deltas?limit=abc")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_QUERY"))
    );
    let (status, _) = post(&format!("{base}/deltas/nothing/negate"), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The node still serves normally afterwards.
    let (status, _) = post(&format!("{base}/deltas"), json!([good])).await;
    assert_eq!(status, StatusCode::OK);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn batches_are_stored_in_order_and_subscribers_see_them() {
    let server = common::start_node("api-batch").await;
    let node = server.node().clone();
    let mut sub = node.subscribe(
        rhizome::DeltaFilter {
            authors: Some(vec!["w".into()]),
            ..Default::default()
        },
        node.store().head(),
    );
    let deltas: Vec<Value> = (0..250)
        .map(|i| json!({"id": format!("b{i}"), "timestamp": 1 + i, "author": if i % 2 == 0 { "w" } else { "x" }, "system": "s", "pointers": []}))
        .collect();
    let (status, body) = post(&format!("{}/deltas", server.url()), Value::Array(deltas)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["results"].as_array().unwrap().len(), 250);
    assert_eq!(body["results"][249]["seq"], 250);
    for i in (0..250).step_by(2) {
        let d = sub.next().await.unwrap().unwrap();
        assert_eq!(d.delta.id, format!("b{i}"));
    }
    server.shutdown().await.unwrap();
}

/// Issue 14, finding 8: a body over the limit is refused in the JSON error shape, with
/// the limit named, and the limit follows the node's `[limits]`.
#[tokio::test]
async fn a_body_over_the_limit_is_a_json_413_naming_the_limit() {
    let limits = rhizome::Limits {
        max_delta_bytes: 1024 * 1024,
        ..Default::default()
    };
    let server = common::start_node_with(rhizome::NodeConfig {
        system_id: Some("api-413".into()),
        limits,
        ..Default::default()
    })
    .await;
    let base = server.url();
    let limit = limits.max_request_bytes();
    let client = reqwest::Client::new();

    // A body of exactly the limit is read (and refused for what it is, not its size).
    let at_limit = format!("[{}]", " ".repeat(limit - 2));
    let res = client
        .post(format!("{base}/deltas"))
        .header("content-type", "application/json")
        .body(at_limit)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    for path in ["/deltas", "/query", "/links", "/deltas/x/negate"] {
        let res = client
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(vec![b' '; limit + 1])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        let body: Value = res.json().await.expect("a JSON error body");
        assert_eq!(body["error"], "PAYLOAD_TOO_LARGE", "{path}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(&limit.to_string()), "{path}: {message}");
    }

    // A larger configured limit raises the body limit with it.
    let big = rhizome::Limits {
        max_delta_bytes: 3 * 1024 * 1024,
        ..Default::default()
    };
    let server2 = common::start_node_with(rhizome::NodeConfig {
        system_id: Some("api-413-big".into()),
        limits: big,
        ..Default::default()
    })
    .await;
    let res = client
        .post(format!("{}/deltas", server2.url()))
        .header("content-type", "application/json")
        .body(format!("[{}]", " ".repeat(limit + 10)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "6 MiB bodies are within 2 x 3 MiB"
    );
    server.shutdown().await.unwrap();
    server2.shutdown().await.unwrap();
}

/// A web page on another site can make a browser send simple requests to a node it can
/// reach: a foreign `Origin` is refused on every route and on the federation upgrade, and
/// a body that is not declared JSON is refused before it is read as deltas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_of_other_origins_and_non_json_bodies_are_refused() {
    let server = common::start_node("guarded").await;
    let base = server.url();
    let client = reqwest::Client::new();
    let delta = common::delta_json("csrf-1", "mallory", "elsewhere").to_string();

    let foreign = client
        .post(format!("{base}/deltas"))
        .header("origin", "http://evil.example")
        .header("content-type", "application/json")
        .body(delta.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let body: serde_json::Value = foreign.json().await.unwrap();
    assert_eq!(body["error"], "FOREIGN_ORIGIN", "{body}");
    let replay = client
        .post(format!("{base}/quarantine/replay"))
        .header("origin", "null")
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 403);

    let plain = client
        .post(format!("{base}/deltas"))
        .header("content-type", "text/plain")
        .body(delta.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 415);
    assert!(server.node().get("csrf-1").unwrap().is_none());

    // The same request from the node's own origin, or from a program, goes through.
    let own = client
        .post(format!("{base}/deltas"))
        .header("origin", base.as_str())
        .header("content-type", "application/json; charset=utf-8")
        .body(delta)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 201);

    let mut request = format!("{}/federation", base.replacen("http://", "ws://", 1))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 403),
        "{refused:?}"
    );
}

/// `GET /`: the node's info document, what a client reads before it talks to the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_answers_the_nodes_info_document() {
    let server = common::start_node("info-node").await;
    let (status, info) = get(&format!("{}/", server.url())).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["systemId"], "info-node");
    assert_eq!(info["software"], "rhizome");
    assert_eq!(info["publicKey"], server.node().public_key());
    assert_eq!(info["protocol"], "rhizomedb-federation-v1");
    assert_eq!(info["extensions"][0]["name"], "rhizome");
    assert_eq!(info["federationPath"], "/federation");
    assert_eq!(
        info["listen"].as_str().map(|a| format!("http://{a}")),
        Some(server.url())
    );
    assert_eq!(
        info["limits"]["maxDeltaBytes"],
        json!(server.node().limits().max_delta_bytes)
    );
    assert_eq!(info["signatures"]["alg"], "ed25519");
    assert_eq!(info["signatures"]["require"], "none");
    assert_eq!(info["tls"], false);
}

/// `GET /events`: Server-Sent Events, each named by its type, its data the event's JSON
/// with the time it was seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_as_server_sent_events() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = common::start_node("events-node").await;
    let addr = server.url().trim_start_matches("http://").to_owned();
    let mut sse = tokio::net::TcpStream::connect(&addr).await.unwrap();
    sse.write_all(
        format!("GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    // The stream is open once the head is back; what is emitted from then on arrives.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
        let n = sse.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the head");
        seen.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&seen).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    let (status, _) = post(
        &format!("{}/deltas", server.url()),
        json!({"id": "ev-1", "timestamp": 1_700_000_000_000u64, "author": "alice",
            "system": "s", "pointers": [{"role": "says", "target": "hi"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let text = loop {
        let text = String::from_utf8_lossy(&seen).to_string();
        if text.contains("\"deltaId\":\"ev-1\"") {
            break text;
        }
        let n = tokio::time::timeout_at(deadline, sse.read(&mut buf))
            .await
            .expect("the event within 10 s")
            .unwrap();
        assert!(n > 0, "closed: {text}");
        seen.extend_from_slice(&buf[..n]);
    };
    let line = text
        .lines()
        .find(|l| l.starts_with("data:") && l.contains("ev-1"))
        .unwrap();
    let data: Value = serde_json::from_str(line.trim_start_matches("data:").trim()).unwrap();
    assert_eq!(data["type"], "delta:stored");
    assert!(data["time"].as_u64().unwrap() > 1_700_000_000_000);
    assert!(text.contains("event: delta:stored"), "{text}");
}
