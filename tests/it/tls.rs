//! TLS on both sides, with certificates made at test time: wss links between nodes, a
//! certificate a link does not accept, the CLI against an https node, and a TLS
//! listener fed plain bytes or a handshake that never ends.

use crate::common;
use crate::common::cli;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rhizome::federation::{LinkConfig, ReconnectConfig};
use rhizome::tls::{ClientTls, ServerTls};
use rhizome::{LinkStatus, Node, Server, ServerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(15);

/// A test CA, and a certificate it issued for `localhost` and `127.0.0.1`, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "rhizome test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", ca_cert.pem()),
            cert: write("cert.pem", leaf.pem()),
            key: write("key.pem", leaf_key.serialize_pem()),
            dir,
        }
    }

    /// A certificate for `127.0.0.1` that signed itself: no one's roots hold it.
    fn stranger(&self) -> (PathBuf, PathBuf) {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let cert = self.dir.path().join("stranger.pem");
        let key = self.dir.path().join("stranger.key");
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    fn server_tls(&self) -> ServerTls {
        ServerTls::from_pem_files(&self.cert, &self.key).unwrap()
    }

    fn client_tls(&self) -> ClientTls {
        ClientTls::new(Some(&self.ca)).unwrap()
    }

    /// An HTTP client that trusts this CA.
    fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_preconfigured_tls(rustls::ClientConfig::clone(self.client_tls().config()))
            .build()
            .unwrap()
    }
}

async fn node_with(id: &str, options: ServerOptions) -> Server {
    let node = Node::in_memory(id).await.unwrap();
    common::serve_at(node, options, "127.0.0.1:0").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_link_syncs_both_ways() {
    let pki = Pki::new();
    let server = node_with(
        "server",
        ServerOptions {
            tls: Some(pki.server_tls()),
            ..Default::default()
        },
    )
    .await;
    assert!(server.url().starts_with("https://"), "{}", server.url());
    let client = node_with(
        "client",
        ServerOptions {
            client_tls: Some(pki.client_tls()),
            ..Default::default()
        },
    )
    .await;
    let from_server: BTreeSet<_> = common::author(server.node(), "alice", 20)
        .await
        .into_iter()
        .collect();
    let from_client: BTreeSet<_> = common::author(client.node(), "bob", 20)
        .await
        .into_iter()
        .collect();

    // https://host:port is dialed as wss://host:port/federation.
    let link = client
        .federation()
        .connect_to_remote(&server.url(), LinkConfig::default())
        .unwrap();
    assert!(
        common::wait_status(&link, LinkStatus::Connected, T).await,
        "{:?}",
        link.info()
    );
    assert_eq!(
        link.info().remote_url.as_deref(),
        Some(format!("wss://{}/federation", server.local_addr()).as_str())
    );
    assert!(common::wait_holds(client.node(), &from_server, T).await);
    assert!(common::wait_holds(server.node(), &from_client, T).await);

    let live: BTreeSet<_> = common::author(server.node(), "alice", 5)
        .await
        .into_iter()
        .collect();
    assert!(
        common::wait_holds(client.node(), &live, T).await,
        "live deltas cross the TLS link"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_the_link_does_not_trust_stops_it_with_the_reason() {
    let pki = Pki::new();
    let (cert, key) = pki.stranger();
    let stranger = node_with(
        "stranger",
        ServerOptions {
            tls: Some(ServerTls::from_pem_files(&cert, &key).unwrap()),
            ..Default::default()
        },
    )
    .await;
    // Trusts the test CA (and the system's roots), neither of which issued it.
    let client = node_with(
        "client",
        ServerOptions {
            client_tls: Some(pki.client_tls()),
            ..Default::default()
        },
    )
    .await;
    let config = LinkConfig {
        reconnect: ReconnectConfig {
            initial_delay: 20,
            ..Default::default()
        },
        ..Default::default()
    };
    let link = client
        .federation()
        .connect_to_remote(&stranger.url(), config)
        .unwrap();
    assert!(
        common::wait_status(&link, LinkStatus::Error, T).await,
        "{:?}",
        link.info()
    );
    let why = link.info().last_error.unwrap_or_default();
    let host = stranger.local_addr().to_string();
    for word in [host.as_str(), "certificate", "UnknownIssuer", "--tls-ca"] {
        assert!(why.contains(word), "no {word:?} in {why:?}");
    }
    // A retry would have come after 20 ms: none does, the link stays stopped.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = link.info();
    assert_eq!(info.status, LinkStatus::Error);
    assert_eq!(info.stats.reconnects, 0, "{info:?}");
    assert!(stranger.federation().link_infos().is_empty());
}

#[test]
fn the_cli_talks_to_an_https_node_and_links_dial_it_over_wss() {
    let pki = Pki::new();
    let ca = pki.ca.to_str().unwrap();
    // The listener's certificate from a config file, its paths relative to the file.
    let config = pki.dir.path().join("rhizome.toml");
    std::fs::write(
        &config,
        "[server]\ntlsCert = \"cert.pem\"\ntlsKey = \"key.pem\"\n",
    )
    .unwrap();
    let a = cli::serve(&["--config", config.to_str().unwrap()]);
    assert!(a.url.starts_with("https://"), "{}", a.url);

    cli::run(&["status", "--node", &a.url]).assert_fails_saying(&[
        "certificate",
        "UnknownIssuer",
        "--tls-ca",
    ]);
    let put = cli::run(&[
        "put", "--node", &a.url, "--tls-ca", ca, "--author", "alice", "-p", "text=hi",
    ]);
    let id = put.json_lines()[0]["id"].as_str().unwrap().to_owned();
    let status = cli::bin()
        .args(["status", "--json", "--node", &a.url])
        .env("RHIZOME_TLS_CA", ca)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    // A plain node dials the https one, trusting its CA through --tls-ca.
    let b = cli::serve(&["--connect", &a.url, "--tls-ca", ca]);
    cli::wait_until("the delta crosses the wss link", || b.has_delta(&id));
    b.stop();
    a.stop();
}

#[test]
fn serve_refuses_a_key_that_is_not_the_certificates() {
    let pki = Pki::new();
    let (_, other_key) = pki.stranger();
    let ran = cli::run(&[
        "serve",
        "--memory",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        pki.cert.to_str().unwrap(),
        "--tls-key",
        other_key.to_str().unwrap(),
    ]);
    ran.assert_fails_saying(&["stranger.key", "does not belong"]);
    let ran = cli::run(&[
        "serve",
        "--memory",
        "--tls-cert",
        pki.cert.to_str().unwrap(),
    ]);
    ran.assert_fails_saying(&["--tls-key"]);
}

/// Reads until the server closes the socket, for at most `limit`; when it did.
async fn closed(mut stream: tokio::net::TcpStream, limit: Duration) -> Instant {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Instant::now(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the socket is still open after {limit:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_bytes_and_stalled_handshakes_cost_a_tls_listener_only_their_socket() {
    let pki = Pki::new();
    let server = node_with(
        "server",
        ServerOptions {
            tls: Some(pki.server_tls()),
            header_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await;
    let addr = server.local_addr();

    // Plain HTTP on the TLS port: refused at once, not held until a timeout.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let sent = Instant::now();
    let took = closed(plain, Duration::from_secs(5)).await - sent;
    assert!(took < Duration::from_millis(900), "closed after {took:?}");

    // A socket that says nothing, and one that stops halfway through its ClientHello:
    // each is closed when the header timeout runs out.
    let opened = Instant::now();
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut halfway = tokio::net::TcpStream::connect(addr).await.unwrap();
    halfway
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    let limit = Duration::from_secs(5);
    let (a, b) = tokio::join!(closed(silent, limit), closed(halfway, limit));
    for at in [a, b] {
        let took = at - opened;
        assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    }
    assert!(
        common::wait_for(T, || server.connection_stats().snapshot().header_timeouts
            >= 2)
        .await,
        "{:?}",
        server.connection_stats().snapshot()
    );

    // A client that gives up mid-handshake.
    let connector = tokio_rustls::TlsConnector::from(pki.client_tls().config().clone());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let aborted =
        tokio::time::timeout(Duration::from_millis(1), connector.connect(name, tcp)).await;
    drop(aborted);

    // Through all of it the node kept serving https.
    let status: serde_json::Value = pki
        .http()
        .get(format!("{}/status", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["systemId"], "server");
    assert!(
        common::wait_for(T, || server.connection_stats().snapshot().open == 0).await,
        "every socket is given back: {:?}",
        server.connection_stats().snapshot()
    );
}
