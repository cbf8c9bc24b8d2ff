//! Shared helpers for integration tests: real nodes on port 0, real sockets.
#![allow(dead_code)]

pub mod cli;

use std::time::{Duration, Instant};

use rhizome::{Federation, Node, Server, ServerOptions};

/// A node on a temporary store, served on a free port.
pub async fn start_node(system_id: &str) -> Server {
    serve(Node::in_memory(system_id).await.expect("temporary node")).await
}

/// Serves `node` (its API and federation endpoint) on a free port.
pub async fn serve(node: Node) -> Server {
    serve_at(node, ServerOptions::default(), "127.0.0.1:0").await
}

/// Serves `node` on `addr` with these endpoint options.
pub async fn serve_at(node: Node, options: ServerOptions, addr: &str) -> Server {
    let fed = Federation::new(node, options).expect("federation options");
    Server::bind(fed, addr).await.expect("bind")
}

/// Federation for a node that only dials (serves nothing).
pub fn links_of(node: &Node) -> Federation {
    Federation::new(node.clone(), ServerOptions::default()).expect("federation options")
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn wait_for<F: FnMut() -> bool>(timeout: Duration, mut check: F) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// A node with a custom config, served on a free port.
pub async fn start_node_with(config: rhizome::NodeConfig) -> Server {
    start_node_with_options(config, ServerOptions::default()).await
}

/// A node with a custom config and endpoint options, served on a free port.
pub async fn start_node_with_options(
    config: rhizome::NodeConfig,
    options: ServerOptions,
) -> Server {
    serve_at(
        Node::open(config).await.expect("node"),
        options,
        "127.0.0.1:0",
    )
    .await
}

/// Every delta id in a node's log.
pub fn ids(node: &Node) -> std::collections::BTreeSet<String> {
    node.store()
        .read_log(rhizome::Seq(0), rhizome::store::ReadLimit::All, None)
        .and_then(|log| log.deltas())
        .expect("scan")
        .into_iter()
        .map(|d| d.delta.id)
        .collect()
}

/// Authors `n` deltas on `node` as `author`, each pointing at a distinct target.
pub async fn author(node: &Node, author: &str, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let d = node
            .create_delta(
                author,
                vec![rhizome::Pointer::new(
                    "about",
                    rhizome::Target::reference(format!("{author}-topic-{i}")),
                )],
            )
            .await
            .expect("create delta");
        out.push(d.delta.id);
    }
    out
}

/// Waits until `node` holds every id in `want`.
pub async fn wait_holds(
    node: &Node,
    want: &std::collections::BTreeSet<String>,
    timeout: Duration,
) -> bool {
    wait_for(timeout, || ids(node).is_superset(want)).await
}

/// A node on a durable store in `dir` with system id `id`.
pub async fn durable(dir: &std::path::Path, id: &str) -> rhizome::Node {
    rhizome::Node::open(rhizome::NodeConfig {
        storage: rhizome::Storage::Path(dir.to_owned()),
        system_id: Some(id.into()),
        ..Default::default()
    })
    .await
    .expect("open durable node")
}

/// `from` dials `to` with `config` and the link is connected.
pub async fn dial_connected(
    from: &Server,
    to: &Server,
    config: rhizome::LinkConfig,
) -> rhizome::FederationLink {
    let link = from
        .federation()
        .connect_to_remote(&to.url(), config)
        .expect("dial");
    assert!(
        wait_status(
            &link,
            rhizome::LinkStatus::Connected,
            Duration::from_secs(30)
        )
        .await,
        "the link did not connect"
    );
    link
}

/// The text of `GET {base}/metrics` (an open node: no token).
pub async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// Waits until the link reaches `status`.
pub async fn wait_status(
    link: &rhizome::FederationLink,
    status: rhizome::LinkStatus,
    timeout: Duration,
) -> bool {
    wait_for(timeout, || link.status() == status).await
}

/// A hand-driven v1 peer over a real WebSocket: sends whatever frames a test wants and
/// reads the node's answers. Used to play a foreign implementation or a misbehaving one.
pub struct RawPeer {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl RawPeer {
    pub async fn connect(http_url: &str) -> RawPeer {
        let url = format!("{}/federation", http_url.replacen("http://", "ws://", 1));
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        RawPeer { ws }
    }

    /// To a full federation url (`ws://host:port/federation?token=...`).
    pub async fn connect_url(url: &str) -> RawPeer {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        RawPeer { ws }
    }

    /// With a hand-made upgrade request (headers of the test's choosing).
    pub async fn connect_request(
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> RawPeer {
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("ws connect");
        RawPeer { ws }
    }

    pub async fn send(&mut self, frame: serde_json::Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .expect("ws send");
    }

    /// The next JSON frame (pings included), or `None` when the socket closed.
    pub async fn recv(&mut self) -> Option<serde_json::Value> {
        use futures_util::StreamExt;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("a frame within 10 s");
            match next {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                    return Some(serde_json::from_str(t.as_str()).expect("JSON frame"))
                }
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))
                | None
                | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next frame of type `kind`, skipping others (pings, pongs...).
    pub async fn recv_type(&mut self, kind: &str) -> serde_json::Value {
        loop {
            let f = self
                .recv()
                .await
                .unwrap_or_else(|| panic!("socket closed while waiting for {kind}"));
            if f["type"] == kind {
                return f;
            }
        }
    }

    /// The close frame's code, reading past any other frames.
    pub async fn close_code(&mut self) -> Option<u16> {
        use futures_util::StreamExt;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .ok()?
            {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => {
                    return f.map(|f| u16::from(f.code))
                }
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// hello as a plain v1 client would send it.
    pub async fn hello(&mut self, system_id: &str, config: serde_json::Value) -> serde_json::Value {
        self.send(
            serde_json::json!({"type": "hello", "timestamp": 1, "systemId": system_id,
            "protocol": "rhizomedb-federation-v1", "config": config}),
        )
        .await;
        self.recv_type("hello_ack").await
    }
}

/// A valid delta as JSON.
pub fn delta_json(id: &str, author: &str, system: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "timestamp": 1_700_000_000_000u64, "author": author, "system": system,
        "pointers": [{"role": "about", "target": {"id": "topic-1"}}]})
}
