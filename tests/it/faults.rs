//! Fault injection, on loopback and bounded in time: a chaotic TCP proxy between two
//! nodes (drops, stalls, cuts mid-frame) while policies are hot-reloaded, `kill -9` of
//! a sending process mid-stream, and misbehaving peers (oversized frames, a flood of
//! invalid deltas, a hello storm, slowloris sockets); then the bugs those turned up,
//! each pinned on its own (a refusing trust policy drops a well-behaved link; listing
//! links during a storm panics; sockets racing for the last slot exceed
//! `maxConnections`). Randomised tests print their seed:
//! `FAULTS_SEED=N cargo test --test faults` replays the same fault schedule (the
//! timing of a busy machine still varies).

use crate::common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use common::cli::Serving;
use common::{ids, wait_for, wait_status};
use rhizome::federation::{LinkConfig, ReconnectConfig, ServerOptions, SyncMode};
use rhizome::policy::PolicyDirs;
use rhizome::Server;
use rhizome::{LinkStatus, Node, NodeConfig, Origin, Storage};

const T: Duration = Duration::from_secs(30);

/// The seed of a randomised test: `FAULTS_SEED` when set, else a fresh one. Printed
/// (the harness shows it when the test fails) so the fault schedule can be replayed.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("{test}: seed {seed} (replay with FAULTS_SEED={seed})");
    seed
}

fn quick_reconnect() -> ReconnectConfig {
    ReconnectConfig {
        initial_delay: 50,
        max_delay: 300,
        ..Default::default()
    }
}

/// Stores `n` new local deltas by `author` in one batch; returns their ids.
async fn write(node: &Node, author: &str, n: usize) -> Vec<String> {
    let deltas: Vec<rhizome::Delta> = (0..n)
        .map(|_| new_delta(author, node.system_id()))
        .collect();
    let ids = deltas.iter().map(|d| d.id.clone()).collect();
    node.ingest(deltas, Origin::Local).await.expect("ingest");
    ids
}

fn new_delta(author: &str, system: &str) -> rhizome::Delta {
    let topic = format!("{author}-{}", uuid::Uuid::new_v4().simple());
    rhizome::delta::new_delta(
        author,
        system,
        vec![rhizome::Pointer::new(
            "about",
            rhizome::Target::reference(topic),
        )],
    )
}

/// Each delta stored once: a gap-free log as long as the id set.
fn assert_stored_once(node: &Node) {
    assert_eq!(
        node.store().head().0 as usize,
        ids(node).len(),
        "{} stored something twice",
        node.system_id()
    );
}

/// The test process's resident set (`VmRSS`), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kib * 1024
}

/// How much the test process may grow while a node absorbs a flood. The process also
/// holds the flooding client, the well-behaved peer and whatever other tests of this
/// file run in parallel, and a debug build's allocations are bulky, so the bound is
/// loose on purpose: 100k deltas kept in memory somewhere (a queue that never drains,
/// frames buffered per link, nacks piling up) would cost well over this in JSON
/// `Value`s and strings, while a node that answers and drops what it refuses stays
/// far below it.
const RSS_GROWTH_BOUND: u64 = 200 * 1024 * 1024;

// ---- a chaotic TCP proxy ------------------------------------------------------------

/// The faults the proxy applies to every connection it carries.
struct Chaos {
    /// Both directions hold what they read until this instant (a stall).
    stall_until: Mutex<Instant>,
    /// The next chunk read, in either direction, is forwarded only up to this fraction
    /// of its length, then the connection is dropped: a cut in the middle of a frame.
    cut_at: Mutex<Option<f64>>,
    /// Bumped to drop every open connection at once.
    drops: watch::Sender<u64>,
    connections: AtomicU64,
}

impl Chaos {
    fn stall_for(&self, d: Duration) {
        let mut until = self.stall_until.lock().unwrap();
        *until = (*until).max(Instant::now() + d);
    }

    fn stalled_until(&self) -> Option<Instant> {
        let until = *self.stall_until.lock().unwrap();
        (until > Instant::now()).then_some(until)
    }

    fn take_cut(&self) -> Option<f64> {
        self.cut_at.lock().unwrap().take()
    }
}

struct Proxy {
    addr: SocketAddr,
    chaos: Arc<Chaos>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let chaos = Arc::new(Chaos {
            stall_until: Mutex::new(Instant::now()),
            cut_at: Mutex::new(None),
            drops: watch::channel(0).0,
            connections: AtomicU64::new(0),
        });
        let shared = chaos.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::Relaxed);
                let chaos = shared.clone();
                tokio::spawn(async move {
                    let _ = carry(client, target, chaos).await;
                });
            }
        });
        Proxy {
            addr,
            chaos,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.chaos.drops.send_modify(|g| *g += 1);
    }
}

/// One proxied connection: both directions pumped until either ends or a drop comes;
/// returning drops both sockets.
async fn carry(client: TcpStream, target: SocketAddr, chaos: Arc<Chaos>) -> std::io::Result<()> {
    let mut dropped = chaos.drops.subscribe();
    let server = TcpStream::connect(target).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        r = pump(client_read, server_write, &chaos) => r,
        r = pump(server_read, client_write, &chaos) => r,
        _ = dropped.changed() => Ok(()),
    }
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    chaos: &Chaos,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        while let Some(until) = chaos.stalled_until() {
            tokio::time::sleep_until(until.into()).await;
        }
        let cut = if n >= 2 { chaos.take_cut() } else { None };
        if let Some(fraction) = cut {
            let keep = ((n as f64 * fraction) as usize).clamp(1, n - 1);
            to.write_all(&buf[..keep]).await?;
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
    }
}

#[derive(Debug, Default)]
struct ChaosLog {
    drops: u32,
    stalls: u32,
    cuts: u32,
}

/// Applies random faults at random intervals for `run`, then goes quiet.
async fn run_chaos(chaos: &Chaos, rng: &mut StdRng, run: Duration) -> ChaosLog {
    let mut log = ChaosLog::default();
    let end = Instant::now() + run;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..600))).await;
        match rng.random_range(0..3) {
            0 => {
                chaos.drops.send_modify(|g| *g += 1);
                log.drops += 1;
            }
            // Each below the link's dead-peer time (2 x 1 s heartbeat + 1 s): a stall
            // to ride out. Stalls back to back can add up past it; the link then
            // reconnects, one more fault it must survive.
            1 => {
                chaos.stall_for(Duration::from_millis(rng.random_range(300..=800)));
                log.stalls += 1;
            }
            _ => {
                *chaos.cut_at.lock().unwrap() = Some(rng.random_range(0.05..0.95));
                log.cuts += 1;
            }
        }
    }
    // Quiet from now on: no stall pending, no cut armed.
    *chaos.cut_at.lock().unwrap() = None;
    *chaos.stall_until.lock().unwrap() = Instant::now();
    log
}

// ---- 1. a chaotic link, with policies hot-reloaded under it ---------------------------

const PERMISSIVE: &str = "true\n";
const NO_MALLORY: &str =
    r#"if delta.author == "mallory" { reject("mallory is not trusted") } true"#;

async fn node_with_policies(id: &str, dir: &Path, server: ServerOptions) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("gate.rhai"), PERMISSIVE).unwrap();
    let node = Node::open(NodeConfig {
        system_id: Some(id.into()),
        policies: PolicyDirs {
            policies: Some(dir.to_owned()),
            filters: None,
        },
        ..Default::default()
    })
    .await
    .unwrap();
    common::serve_at(node, server, "127.0.0.1:0").await
}

/// Writes batches of random size at random intervals until `stop`; returns the ids.
fn spawn_writer(
    node: Node,
    author: &'static str,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut all = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            all.extend(write(&node, author, rng.random_range(1..=25)).await);
            tokio::time::sleep(Duration::from_millis(rng.random_range(10..40))).await;
        }
        all
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chaotic_proxy_with_hot_reloaded_policies_converges_exactly_once() {
    let seed = seed("chaotic proxy");
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let (server_dir, client_dir) = (tmp.path().join("server"), tmp.path().join("client"));
    // Both ends receive, so both judge what they receive with hot-reloaded scripts.
    let server = node_with_policies(
        "server",
        &server_dir,
        ServerOptions {
            heartbeat: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await;
    let client = node_with_policies("client", &client_dir, ServerOptions::default()).await;
    let mut want: BTreeSet<String> = BTreeSet::new();
    want.extend(write(server.node(), "alice", 300).await);
    want.extend(write(client.node(), "bob", 300).await);

    let proxy = Proxy::start(server.local_addr()).await;
    let link = client
        .federation()
        .connect_to_remote(
            &proxy.url(),
            LinkConfig {
                reconnect: quick_reconnect(),
                heartbeat_interval: Some(1),
                ..Default::default()
            },
        )
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writers = [
        spawn_writer(server.node().clone(), "alice", seed ^ 1, stop.clone()),
        spawn_writer(client.node().clone(), "bob", seed ^ 2, stop.clone()),
    ];
    // Rewrites the trust script on both ends a few times while deltas flow: a
    // permissive one, then one refusing an author the writers never use.
    let reloader = {
        let (stop, dirs) = (stop.clone(), [server_dir.clone(), client_dir.clone()]);
        let mut rng = StdRng::seed_from_u64(seed ^ 3);
        tokio::spawn(async move {
            let mut rewrites = 0u32;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(rng.random_range(400..900))).await;
                rewrites += 1;
                let script = if rewrites % 2 == 1 {
                    NO_MALLORY
                } else {
                    PERMISSIVE
                };
                for dir in &dirs {
                    std::fs::write(dir.join("gate.rhai"), script).unwrap();
                }
            }
            rewrites
        })
    };

    let faults = run_chaos(&proxy.chaos, &mut rng, Duration::from_secs(8)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        want.extend(writer.await.unwrap());
    }
    let rewrites = reloader.await.unwrap();
    println!(
        "faults {faults:?}, {} proxied connections, {rewrites} script rewrites, {} deltas written",
        proxy.chaos.connections.load(Ordering::Relaxed),
        want.len()
    );

    // The proxy is quiet now: both sides must converge on every delta written.
    let converged = wait_for(T, || {
        let (s, c) = (ids(server.node()), ids(client.node()));
        s == c && s.is_superset(&want)
    })
    .await;
    let (s, c) = (ids(server.node()), ids(client.node()));
    assert!(
        converged,
        "seed {seed}: no convergence: server lacks {}, client lacks {}, link {:?}",
        want.difference(&s).count(),
        want.difference(&c).count(),
        link.info()
    );
    assert_eq!(s, want, "seed {seed}: deltas nobody wrote");
    assert_stored_once(server.node());
    assert_stored_once(client.node());
    let stats = link.stats();
    assert!(stats.reconnects > 0, "seed {seed}: {stats:?}");
    assert_eq!(stats.deltas_rejected, 0, "seed {seed}: {stats:?}");
    for node in [server.node(), client.node()] {
        assert_eq!(node.store().quarantine_len(), 0);
        let policies = node.policies();
        assert!(
            policies.reload_count() >= 2,
            "{}: the rewrites were not reloaded ({} reloads)",
            node.system_id(),
            policies.reload_count()
        );
        let set = policies.current();
        assert!(set.errors().is_empty(), "{:?}", set.errors());
        assert!(
            set.counters().evaluations.load(Ordering::Relaxed) > 0,
            "{}: the scripts judged nothing",
            node.system_id()
        );
    }

    // The last reload is in force: with the refusing script, mallory stays out and bob
    // still gets through the (now quiet) proxy.
    let reloads = server.node().policies().reload_count();
    std::fs::write(server_dir.join("gate.rhai"), NO_MALLORY).unwrap();
    assert!(wait_for(T, || server.node().policies().reload_count() > reloads).await);
    let refused = write(client.node(), "mallory", 1).await;
    let admitted: BTreeSet<_> = write(client.node(), "bob", 1).await.into_iter().collect();
    assert!(common::wait_holds(server.node(), &admitted, T).await);
    assert!(wait_for(T, || server.node().store().quarantine_len() == 1).await);
    assert!(server.node().get(&refused[0]).unwrap().is_none());
    client.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

// ---- 2. kill -9 of the sending process mid-stream -----------------------------------

/// `rhizome serve` on this port and data directory; retried while the port is not
/// free again yet.
fn start_source(data: &Path, port: u16) -> Serving {
    let args: [&std::ffi::OsStr; 4] = [
        "--system-id".as_ref(),
        "source".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
    ];
    for _ in 0..100 {
        if let Some(source) = Serving::spawn(&format!("127.0.0.1:{port}"), &args) {
            return source;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("rhizome serve never started on port {port}");
}

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

async fn head_of(http: &reqwest::Client, url: &str) -> Option<u64> {
    let r = http.get(format!("{url}/status")).send().await.ok()?;
    let v: Value = r.json().await.ok()?;
    v["store"]["head"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_sender_mid_stream_loses_and_duplicates_nothing() {
    const BATCHES: usize = 150;
    const PER_BATCH: usize = 40;
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut source = tokio::task::block_in_place(|| start_source(data.path(), port));
    let url = source.url.clone();

    let receiver_dir = tempfile::tempdir().unwrap();
    let receiver = Node::open(NodeConfig {
        storage: Storage::Path(receiver_dir.path().to_owned()),
        system_id: Some("receiver".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let link = common::links_of(&receiver)
        .connect_to_remote(
            &url,
            LinkConfig {
                mode: SyncMode::Pull,
                reconnect: quick_reconnect(),
                heartbeat_interval: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(wait_status(&link, LinkStatus::Connected, T).await);

    // Writes over HTTP, batch after batch; a batch the dead source did not acknowledge
    // is sent again (by id: a second copy is a duplicate, not a new delta).
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let writer = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let mut written = BTreeSet::new();
            let mut retries = 0u32;
            for _ in 0..BATCHES {
                let batch: Vec<rhizome::Delta> = (0..PER_BATCH)
                    .map(|_| new_delta("writer", "source"))
                    .collect();
                loop {
                    let sent = http.post(format!("{url}/deltas")).json(&batch).send().await;
                    if matches!(&sent, Ok(r) if r.status().is_success()) {
                        break;
                    }
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                written.extend(batch.into_iter().map(|d| d.id));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (written, retries)
        })
    };

    // Kill the source while it streams live to the receiver, twice, and bring it back
    // on the same port and data directory while the writer keeps going.
    for kill_at in [1000, 3000] {
        assert!(
            wait_for(T, || receiver.store().head().0 >= kill_at).await,
            "the receiver stalled at {}: {:?}",
            receiver.store().head().0,
            link.info()
        );
        source.kill9();
        assert!(wait_for(T, || link.status() != LinkStatus::Connected).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        source = tokio::task::block_in_place(|| start_source(data.path(), port));
    }
    let (written, retries) = writer.await.unwrap();
    assert_eq!(written.len(), BATCHES * PER_BATCH);

    let mut source_head = None;
    let caught_up = {
        let deadline = Instant::now() + T;
        loop {
            source_head = head_of(&http, &url).await.or(source_head);
            if source_head == Some(receiver.store().head().0) || Instant::now() > deadline {
                break source_head == Some(receiver.store().head().0);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(
        caught_up,
        "source head {source_head:?}, receiver head {}, {:?}",
        receiver.store().head().0,
        link.info()
    );
    let stats = link.stats();
    println!("writer retries {retries}, link {stats:?}");
    assert!(stats.reconnects >= 2, "{stats:?}");
    source.kill9();

    let store = rhizome::Store::open(data.path()).unwrap();
    let at_source: BTreeSet<String> = store
        .read_log(rhizome::Seq(0), rhizome::store::ReadLimit::All, None)
        .and_then(|log| log.deltas())
        .unwrap()
        .into_iter()
        .map(|d| d.delta.id)
        .collect();
    assert_eq!(
        store.head().0 as usize,
        at_source.len(),
        "the source stored twice"
    );
    store.close();
    assert_eq!(
        at_source, written,
        "the source's set is not what was acknowledged"
    );
    assert_eq!(ids(&receiver), at_source, "the receiver's set differs");
    assert_stored_once(&receiver);
    // Each resume started right after the receiver's committed cursor: nothing that was
    // committed came again.
    assert_eq!(receiver.store().duplicates(), 0, "{stats:?}");
}

// ---- 3. flooding and misbehaving peers ----------------------------------------------

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn ws_connect(http_url: &str) -> Ws {
    let url = format!("{}/federation", http_url.replacen("http://", "ws://", 1));
    tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect")
        .0
}

fn hello_frame(system_id: &str) -> WsMessage {
    hello_frame_with(system_id, json!({}))
}

fn hello_frame_with(system_id: &str, config: Value) -> WsMessage {
    WsMessage::text(
        json!({"type": "hello", "timestamp": 1, "systemId": system_id,
            "protocol": "rhizomedb-federation-v1", "config": config})
        .to_string(),
    )
}

/// Why the node ended a link, from its events (read after the fact; a lagging
/// receiver skips what it missed and keeps the newest).
fn disconnect_reason(
    events: &mut tokio::sync::broadcast::Receiver<rhizome::events::NodeEvent>,
    link_id: &str,
) -> Option<String> {
    use tokio::sync::broadcast::error::TryRecvError;
    let mut reason = None;
    loop {
        match events.try_recv() {
            Ok(rhizome::events::NodeEvent::LinkDisconnected {
                link_id: id,
                reason: r,
                ..
            }) if id == link_id => reason = Some(r),
            Ok(_) | Err(TryRecvError::Lagged(_)) => {}
            Err(_) => return reason,
        }
    }
}

/// How a socket ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Acked,
    /// Closed with this code (`None`: no close frame, the socket just ended).
    Closed(Option<u16>),
}

/// Reads until `hello_ack` or the end of the socket, skipping other frames.
async fn until_ack_or_close(ws: &mut Ws) -> Outcome {
    loop {
        match tokio::time::timeout(T, ws.next()).await {
            Ok(Some(Ok(WsMessage::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "hello_ack" {
                    return Outcome::Acked;
                }
            }
            Ok(Some(Ok(WsMessage::Close(f)))) => {
                return Outcome::Closed(f.map(|f| u16::from(f.code)))
            }
            Ok(None | Some(Err(_))) => return Outcome::Closed(None),
            Ok(Some(Ok(_))) => {}
            Err(_) => panic!("no hello_ack nor close within {T:?}"),
        }
    }
}

/// Polls `GET /status` until `stop`; returns the slowest answer and how many came.
fn spawn_status_probe(
    url: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Duration, u32)> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let (mut slowest, mut answered) = (Duration::ZERO, 0);
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let r = http.get(format!("{url}/status")).send().await;
            assert!(
                matches!(&r, Ok(r) if r.status().is_success()),
                "GET /status failed during the flood: {r:?}"
            );
            slowest = slowest.max(started.elapsed());
            answered += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (slowest, answered)
    })
}

/// Longest acceptable `GET /status` answer under load: a debug build on 2 busy cores.
const RESPONSIVE: Duration = Duration::from_secs(2);

async fn target_node(id: &str, server: ServerOptions) -> Server {
    // A delta at the limit must fit in a frame: small frames, small deltas.
    let limits = rhizome::Limits {
        max_delta_bytes: server.max_message_size / 2,
        max_string_bytes: server.max_message_size / 4,
        ..Default::default()
    };
    common::start_node_with_options(
        NodeConfig {
            system_id: Some(id.into()),
            limits,
            ..Default::default()
        },
        server,
    )
    .await
}

/// A well-behaved node pulling from `target`, to check it keeps syncing meanwhile.
async fn well_behaved_puller(target: &Server) -> (Server, rhizome::FederationLink) {
    let puller = common::start_node("puller").await;
    let link = puller
        .federation()
        .connect_to_remote(
            &target.url(),
            LinkConfig {
                mode: SyncMode::Pull,
                reconnect: quick_reconnect(),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(wait_status(&link, LinkStatus::Connected, T).await);
    (puller, link)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_only_that_socket() {
    let target = target_node(
        "target",
        ServerOptions {
            max_message_size: 64 * 1024,
            ..Default::default()
        },
    )
    .await;
    let mut bystander = common::RawPeer::connect(&target.url()).await;
    bystander.hello("bystander", json!({})).await;

    let mut big = ws_connect(&target.url()).await;
    big.send(hello_frame("big")).await.unwrap();
    assert_eq!(until_ack_or_close(&mut big).await, Outcome::Acked);
    let text = format!(
        r#"{{"type":"ping","timestamp":1,"padding":"{}"}}"#,
        "x".repeat(100 * 1024)
    );
    // The node may reset the socket before it has read all of it: a failed send is fine.
    let _ = big.send(WsMessage::text(text)).await;
    let started = Instant::now();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), big.next()).await {
            Err(_) => break false,
            Ok(None | Some(Err(_)) | Some(Ok(WsMessage::Close(_)))) => break true,
            Ok(Some(Ok(_))) => {}
        }
    };
    assert!(ended, "the oversized socket is still open");
    println!("oversized socket ended after {:?}", started.elapsed());
    assert!(wait_for(T, || target.federation().get_federation_links().len() == 1).await);

    // Others are served as before: the existing link and a new one.
    bystander
        .send(json!({"type": "ping", "timestamp": 1}))
        .await;
    bystander.recv_type("pong").await;
    let (puller, _link) = well_behaved_puller(&target).await;
    let fresh: BTreeSet<_> = write(target.node(), "alice", 10)
        .await
        .into_iter()
        .collect();
    assert!(common::wait_holds(puller.node(), &fresh, T).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_invalid_deltas_is_nacked_stores_nothing_and_starves_no_one() {
    const FLOOD: usize = 100_000;
    const SINGLES: usize = 1_000;
    const PER_FRAME: usize = 400;
    let target = target_node(
        "target",
        ServerOptions {
            max_message_size: 64 * 1024,
            ..Default::default()
        },
    )
    .await;
    let (puller, _pull) = well_behaved_puller(&target).await;
    let before: BTreeSet<_> = write(target.node(), "alice", 100)
        .await
        .into_iter()
        .collect();
    assert!(common::wait_holds(puller.node(), &before, T).await);
    let rss_before = rss_bytes();

    let mut events = target.node().events();
    let mut ws = ws_connect(&target.url()).await;
    // Push mode: the flooder only sends, so all it reads back are answers.
    ws.send(hello_frame_with("flooder", json!({"mode": "push"})))
        .await
        .unwrap();
    assert_eq!(until_ack_or_close(&mut ws).await, Outcome::Acked);
    let flooder_link = target
        .federation()
        .get_federation_links()
        .into_iter()
        .find(|l| l.remote_system_id().as_deref() == Some("flooder"))
        .unwrap();
    let (mut sink, mut stream) = ws.split();

    // Reads every answer while the flood goes out, as a peer that keeps reading does.
    let reader = tokio::spawn(async move {
        let mut nacked = BTreeSet::new();
        let mut other = Vec::new();
        let end = loop {
            match tokio::time::timeout(T, stream.next()).await {
                Ok(Some(Ok(WsMessage::Text(t)))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    match v["type"].as_str() {
                        Some("delta_nack") => {
                            nacked.insert(v["deltaId"].as_str().unwrap().to_owned());
                            if nacked.len() == FLOOD {
                                break "all nacked".to_owned();
                            }
                        }
                        Some("ping" | "pong") => {}
                        _ => other.push(v),
                    }
                }
                Ok(Some(Ok(WsMessage::Close(f)))) => break format!("closed by the node: {f:?}"),
                Ok(Some(Ok(_))) => {}
                Ok(None) => break "socket ended".to_owned(),
                Ok(Some(Err(e))) => break format!("socket failed: {e}"),
                Err(_) => break format!("no answer for {T:?}"),
            }
        };
        (nacked, other, end)
    });

    let stop = Arc::new(AtomicBool::new(false));
    let probe = spawn_status_probe(target.url(), stop.clone());
    // The well-behaved side keeps writing during the flood.
    let live_writer = {
        let (node, stop) = (target.node().clone(), stop.clone());
        tokio::spawn(async move {
            let mut all = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                all.extend(write(&node, "alice", 5).await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            all
        })
    };

    // Invalid: an empty role. As `delta` frames, then as `sync_batch` and `delta_batch`
    // frames just under the node's 64 KiB message limit.
    let invalid = |i: usize| {
        json!({"id": format!("bad-{i}"), "timestamp": 1_700_000_000_000u64, "author": "mallory",
            "system": "flooder", "pointers": [{"role": "", "target": {"id": "t"}}]})
    };
    let started = Instant::now();
    let mut sent = 0;
    let mut send_failed = None;
    while sent < FLOOD {
        let frame = if sent < SINGLES {
            sent += 1;
            json!({"type": "delta", "timestamp": 1, "delta": invalid(sent - 1)})
        } else {
            let n = PER_FRAME.min(FLOOD - sent);
            let deltas: Vec<Value> = (sent..sent + n).map(invalid).collect();
            let frame = if (sent / PER_FRAME).is_multiple_of(2) {
                json!({"type": "sync_batch", "timestamp": 1, "deltas": deltas,
                    "batchNumber": sent / PER_FRAME, "isLastBatch": false})
            } else {
                json!({"type": "delta_batch", "timestamp": 1, "deltas": deltas, "lastSeq": sent})
            };
            sent += n;
            frame
        };
        if let Err(e) = sink.send(WsMessage::text(frame.to_string())).await {
            send_failed = Some((sent, e.to_string()));
            break;
        }
    }
    let (nacked, other, end) = reader.await.unwrap();
    let flood_time = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (slowest, answered) = probe.await.unwrap();
    let live = live_writer.await.unwrap();
    let rss_after = rss_bytes();
    let node_said = if end == "all nacked" {
        None
    } else {
        wait_for(T, || target.federation().get_federation_links().len() == 1).await;
        disconnect_reason(&mut events, flooder_link.id())
    };
    println!(
        "flood of {FLOOD} in {flood_time:?}: {} nacked, end: {end}, send failure: {send_failed:?}, \
         the node's reason: {node_said:?}, /status slowest {slowest:?} over {answered}, \
         RSS {} -> {} MiB, link {:?}",
        nacked.len(),
        rss_before >> 20,
        rss_after >> 20,
        flooder_link.stats()
    );

    // Nothing of it stored, nothing of it forwarded.
    assert!(ids(target.node()).iter().all(|id| !id.starts_with("bad-")));
    assert_stored_once(target.node());
    assert!(ids(puller.node()).iter().all(|id| !id.starts_with("bad-")));
    // Each invalid delta answered with its own nack, on a link that stayed up.
    assert!(
        other.is_empty(),
        "unexpected answers: {:?}",
        &other[..other.len().min(3)]
    );
    assert_eq!(
        end,
        "all nacked",
        "{} of {FLOOD} nacked; the node ended the link: {node_said:?}",
        nacked.len()
    );
    assert_eq!(send_failed, None);
    assert_eq!(flooder_link.stats().deltas_rejected, FLOOD as u64);
    // Meanwhile the node kept serving: the API, and the well-behaved link.
    assert!(
        answered > 0 && slowest < RESPONSIVE,
        "GET /status took {slowest:?}"
    );
    assert!(common::wait_holds(puller.node(), &live, T).await);
    assert!(
        rss_after.saturating_sub(rss_before) < RSS_GROWTH_BOUND,
        "RSS grew from {} to {} MiB",
        rss_before >> 20,
        rss_after >> 20
    );
}

/// Sockets of one storm: how each ended up, and the sockets, kept open.
async fn hello_storm(url: &str, size: usize, round: usize) -> (Vec<Outcome>, Vec<Ws>) {
    // Every socket opens, then all say hello at once; none closes until all are counted.
    let go = Arc::new(tokio::sync::Barrier::new(size));
    let mut storm = tokio::task::JoinSet::new();
    for i in 0..size {
        let (url, go) = (url.to_owned(), go.clone());
        storm.spawn(async move {
            let mut ws = ws_connect(&url).await;
            go.wait().await;
            // A socket refused at once may already be closed: its close frame tells.
            let _ = ws.send(hello_frame(&format!("storm-{round}-{i}"))).await;
            let outcome = until_ack_or_close(&mut ws).await;
            (outcome, ws)
        });
    }
    let mut outcomes = Vec::new();
    let mut open = Vec::new();
    while let Some(done) = storm.join_next().await {
        let (outcome, ws) = done.unwrap();
        outcomes.push(outcome);
        open.push(ws);
    }
    (outcomes, open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_storm_is_capped_at_max_connections_with_1008() {
    const STORM: usize = 200;
    const MAX: usize = 50;
    // Each round crosses the limit once: several rounds, several chances for two
    // sockets to race for the last slot.
    const ROUNDS: usize = 4;
    let target = target_node(
        "target",
        ServerOptions {
            max_connections: MAX,
            ..Default::default()
        },
    )
    .await;
    // One slot taken by a well-behaved link that keeps receiving during the storms.
    let (puller, pull) = well_behaved_puller(&target).await;
    let rss_before = rss_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    let probe = spawn_status_probe(target.url(), stop.clone());
    let live_writer = {
        let (node, stop) = (target.node().clone(), stop.clone());
        tokio::spawn(async move {
            let mut all = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                all.extend(write(&node, "alice", 5).await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            all
        })
    };

    for round in 0..ROUNDS {
        let (outcomes, open) = hello_storm(&target.url(), STORM, round).await;
        let inbound = target.federation().get_federation_links().len();
        let acked = outcomes.iter().filter(|o| **o == Outcome::Acked).count();
        let policy = outcomes
            .iter()
            .filter(|o| **o == Outcome::Closed(Some(1008)))
            .count();
        println!(
            "storm {round} of {STORM}: {acked} acked, {policy} closed 1008, {inbound} links open"
        );
        assert_eq!(acked + policy, STORM, "round {round}: {outcomes:?}");
        // The limit is checked, then the link registered (src/federation/accept.rs,
        // serve_inbound): two upgrades in between both take the last slot.
        assert!(
            inbound <= MAX,
            "round {round}: {inbound} inbound links open with maxConnections {MAX}"
        );
        // Exactly the free slots were given: the puller holds one of the MAX.
        assert_eq!(acked, MAX - 1, "round {round}");
        // Once the storm leaves, its slots are free again.
        drop(open);
        assert!(wait_for(T, || target.federation().get_federation_links().len() == 1).await);
    }
    stop.store(true, Ordering::Relaxed);
    let (slowest, answered) = probe.await.unwrap();
    let live = live_writer.await.unwrap();
    println!("/status slowest {slowest:?} over {answered}");
    assert!(
        answered > 0 && slowest < RESPONSIVE,
        "GET /status took {slowest:?}"
    );
    assert!(common::wait_holds(puller.node(), &live, T).await);
    assert_eq!(pull.stats().reconnects, 0);
    let mut late = common::RawPeer::connect(&target.url()).await;
    late.hello("late", json!({})).await;
    let rss_after = rss_bytes();
    assert!(
        rss_after.saturating_sub(rss_before) < RSS_GROWTH_BOUND,
        "RSS grew from {} to {} MiB",
        rss_before >> 20,
        rss_after >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_sockets_are_closed_after_the_handshake_timeout() {
    const SLOW: usize = 30;
    let timeout = Duration::from_millis(500);
    let target = target_node(
        "target",
        ServerOptions {
            handshake_timeout: timeout,
            ..Default::default()
        },
    )
    .await;
    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..SLOW {
        silent.push(ws_connect(&target.url()).await);
    }
    // Meanwhile a peer that does say hello is served.
    let mut good = common::RawPeer::connect(&target.url()).await;
    good.hello("good", json!({})).await;

    let ends = futures_util::future::join_all(silent.iter_mut().map(|ws| async move {
        let mut error = None;
        let outcome = loop {
            match tokio::time::timeout(T, ws.next()).await {
                Ok(Some(Ok(WsMessage::Text(t)))) => {
                    error = Some(serde_json::from_str::<Value>(t.as_str()).unwrap());
                }
                Ok(Some(Ok(WsMessage::Close(f)))) => {
                    break Outcome::Closed(f.map(|f| u16::from(f.code)))
                }
                Ok(None | Some(Err(_))) => break Outcome::Closed(None),
                Ok(Some(Ok(_))) => {}
                Err(_) => panic!("a silent socket was kept for {T:?}"),
            }
        };
        (outcome, error, Instant::now())
    }))
    .await;
    for (outcome, error, at) in ends {
        assert_eq!(outcome, Outcome::Closed(Some(1008)));
        let error = error.expect("an error frame before the close");
        assert_eq!(error["code"], "HANDSHAKE_REQUIRED", "{error}");
        assert_eq!(error["fatal"], true, "{error}");
        let after = at - started;
        assert!(
            after >= timeout && after < timeout + Duration::from_secs(5),
            "closed after {after:?}"
        );
    }
    assert!(wait_for(T, || target.federation().get_federation_links().len() == 1).await);
    // The good peer is unaffected.
    good.send(json!({"type": "ping", "timestamp": 1})).await;
    good.recv_type("pong").await;
}

/// The flood above from a well-behaved peer: a sync whose deltas the receiver's trust
/// policy refuses, more of them than the control queue holds, on a perfect loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_policy_refusing_a_whole_sync_keeps_the_link_up() {
    const REFUSED: u64 = 8000;
    let source = common::start_node("source").await;
    for _ in 0..REFUSED / 1000 {
        write(source.node(), "mallory", 1000).await;
    }
    let good: BTreeSet<_> = write(source.node(), "alice", 10)
        .await
        .into_iter()
        .collect();
    let guarded = common::start_node_with(NodeConfig {
        system_id: Some("guarded".into()),
        trust: rhizome::TrustPolicy::authors(["alice"]),
        ..Default::default()
    })
    .await;
    let link = guarded
        .federation()
        .connect_to_remote(
            &source.url(),
            LinkConfig {
                mode: SyncMode::Pull,
                reconnect: quick_reconnect(),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(common::wait_holds(guarded.node(), &good, T).await);
    assert!(wait_for(T, || guarded.node().store().quarantine_len() == REFUSED).await);
    assert_eq!(ids(guarded.node()), good);
    // Counted right after the batch commits: wait for that, not only for the quarantine.
    assert!(wait_for(T, || link.stats().deltas_rejected == REFUSED).await);
    let info = link.info();
    assert_eq!(info.stats.reconnects, 0, "{info:?}");
    assert_eq!(info.last_error, None, "{info:?}");
    assert_eq!(info.stats.deltas_rejected, REFUSED, "{info:?}");
}

/// Listing links (`GET /status`, `GET /links`, `Federation::get_federation_links`) while a
/// storm of links completes its handshakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_links_while_a_storm_connects_never_panics() {
    const STORMS: usize = 60;
    const STORM: usize = 40;
    let target = target_node("target", ServerOptions::default()).await;
    let node = target.federation().clone();
    let stop = Arc::new(AtomicBool::new(false));
    // Lists in a tight loop on its own thread; stops at the first panic, with its message.
    let lister = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut calls = 0u64;
            while !stop.load(Ordering::Relaxed) {
                calls += 1;
                let listed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    node.get_federation_links().len()
                }));
                if let Err(panic) = listed {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                    return (calls, message);
                }
            }
            (calls, None)
        })
    };
    // Many small storms: a sort goes wrong when a key changes inside one of its small
    // merges, which each link is part of more often when there are fewer links.
    let mut rounds = 0;
    while rounds < STORMS && !lister.is_finished() {
        rounds += 1;
        let (outcomes, open) = hello_storm(&target.url(), STORM, rounds).await;
        assert!(
            outcomes.iter().all(|o| *o == Outcome::Acked),
            "{outcomes:?}"
        );
        drop(open);
        assert!(wait_for(T, || target.federation().get_federation_links().is_empty()).await);
    }
    stop.store(true, Ordering::Relaxed);
    let (calls, panic) = lister.join().unwrap();
    println!("{calls} listings over {rounds} storms");
    // The links are sorted by `connected_at`, read again at every comparison while
    // handshakes store it (src/federation/links.rs, `LinkRegistry::all`).
    assert_eq!(
        panic, None,
        "listing the links panicked after {calls} calls"
    );
}

/// Many sockets racing for the last free slots, over and over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_when_sockets_race_for_the_last_slot() {
    const MAX: usize = 3;
    const STORM: usize = 12;
    const STORMS: usize = 200;
    let target = target_node(
        "target",
        ServerOptions {
            max_connections: MAX,
            ..Default::default()
        },
    )
    .await;
    for round in 0..STORMS {
        let (outcomes, open) = hello_storm(&target.url(), STORM, round).await;
        let inbound = target.federation().get_federation_links().len();
        let acked = outcomes.iter().filter(|o| **o == Outcome::Acked).count();
        // The limit is checked, then the link registered (src/federation/accept.rs,
        // `serve_inbound`): two upgrades in between both take the last slot.
        assert!(
            inbound <= MAX && acked <= MAX,
            "storm {round}: {inbound} inbound links open, {acked} acked, maxConnections {MAX}"
        );
        drop(open);
        assert!(wait_for(T, || target.federation().get_federation_links().is_empty()).await);
    }
}
