//! The simple client-server demo, server half: a node that serves the federation
//! endpoint and authors a delta every second, printing what happens on its links.
//!
//! ```sh
//! cargo run --example simple_server                          # 127.0.0.1:8080, until Ctrl-C
//! cargo run --example simple_server -- 127.0.0.1:9000 --seconds 10 --data ./server-data
//! cargo run --example simple_client -- http://127.0.0.1:8080 # in another terminal
//! ```
//!
//! The address also comes from `RHIZOME_LISTEN`. Without `--data` the store is
//! temporary. Before it exits the server checks that every tick it authored is in its
//! store, and fails otherwise. `simple_client`'s demo reuses [`start`] to run this
//! server in-process, restart it on the same address and data, and watch the client
//! reconnect.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use clap::Parser;
use rhizome::events::NodeEvent;
use rhizome::store::ReadLimit;
use rhizome::Server;
use rhizome::{Federation, Node, NodeConfig, Pointer, Seq, Storage, Target};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The server's system id; it is kept in the store, so a restart on the same data is
/// the same system to its peers.
pub const SYSTEM_ID: &str = "simple-server";
/// The author of the server's ticks.
const CLOCK: &str = "server-clock";

#[derive(Parser)]
#[command(about = "Serve a rhizome node that authors a delta every second")]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(env = "RHIZOME_LISTEN", default_value = "127.0.0.1:8080")]
    addr: String,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
    /// Keep the store in this directory (default: a temporary store).
    #[arg(long)]
    data: Option<PathBuf>,
}

/// A served node and the task that authors its ticks.
pub struct SimpleServer {
    server: Server,
    /// `None` once stopped.
    ticker: Option<JoinHandle<Result<()>>>,
    /// Tells the ticker to stop between two ticks (never in the middle of a write).
    stop_ticks: watch::Sender<bool>,
    printer: JoinHandle<()>,
    /// The last tick's number (ticks stored before a restart count).
    ticks: Arc<AtomicI64>,
}

/// Opens a node on `storage`, serves it on `addr` and authors a `tick` delta every
/// `every`, printing the node's events prefixed with `[server]`.
///
/// # Errors
/// When the store cannot be opened or the address bound.
pub async fn start(addr: &str, storage: Storage, every: Duration) -> Result<SimpleServer> {
    let node = Node::open(NodeConfig {
        storage,
        system_id: Some(SYSTEM_ID.into()),
        ..Default::default()
    })
    .await
    .context("opening the server's store")?;
    let printer = print_events("server", &node);
    let server = Server::bind(Federation::new(node.clone(), Default::default())?, addr).await?;
    // After a restart on the same data, the clock goes on from its last tick.
    let ticks = Arc::new(AtomicI64::new(stored_ticks(&node)?));
    let (stop_ticks, stopped) = watch::channel(false);
    let ticker = tokio::spawn(author_ticks(node, every, ticks.clone(), stopped));
    Ok(SimpleServer {
        server,
        ticker: Some(ticker),
        stop_ticks,
        printer,
        ticks,
    })
}

/// How many ticks the store holds.
fn stored_ticks(node: &Node) -> Result<i64> {
    let log = node
        .store()
        .read_log(Seq(0), ReadLimit::All, None)?
        .deltas()?;
    Ok(log.iter().filter(|d| d.delta.author == CLOCK).count() as i64)
}

async fn author_ticks(
    node: Node,
    every: Duration,
    ticks: Arc<AtomicI64>,
    mut stopped: watch::Receiver<bool>,
) -> Result<()> {
    let mut interval = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stopped.wait_for(|s| *s) => return Ok(()),
        }
        let n = ticks.load(Ordering::Relaxed) + 1;
        let d = node
            .create_delta(
                CLOCK,
                vec![
                    Pointer::new("clock", Target::reference_in("clock-1", "ticks")),
                    Pointer::new("tick", Target::from(n)),
                ],
            )
            .await
            .with_context(|| format!("authoring tick {n}"))?;
        ticks.store(n, Ordering::Relaxed);
        println!("[server] authored tick {n} ({})", d.delta.id);
    }
}

impl SimpleServer {
    /// `http://ADDR`, what clients connect to.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    pub fn node(&self) -> &Node {
        self.server.node()
    }

    pub fn federation(&self) -> &Federation {
        self.server.federation()
    }

    pub fn ticks(&self) -> i64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Stops authoring ticks (the server keeps serving).
    ///
    /// # Errors
    /// When the ticker had failed to author a delta.
    pub async fn stop_ticking(&mut self) -> Result<()> {
        let Some(ticker) = self.ticker.take() else {
            return Ok(());
        };
        let _ = self.stop_ticks.send(true);
        ticker.await.context("ticker task")?
    }

    /// Stops authoring, then shuts the server down (links closed, store closed).
    ///
    /// # Errors
    /// When the ticker failed to author a delta, or the server loop ended in error.
    pub async fn stop(mut self) -> Result<()> {
        self.stop_ticking().await?;
        self.server
            .shutdown()
            .await
            .context("shutting the server down")?;
        self.printer.abort();
        Ok(())
    }
}

/// Prints a node's events (the federation ones, not every delta stored) as they come.
pub fn print_events(who: &'static str, node: &Node) -> JoinHandle<()> {
    let mut events = node.events();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(line) = describe(&e) {
                        println!("[{who}] {line}");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    println!("[{who}] ({n} events not shown)");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    })
}

/// One line for the events the seed's example listens to; `None` for the others.
pub fn describe(e: &NodeEvent) -> Option<String> {
    Some(match e {
        NodeEvent::LinkConnecting {
            remote_url,
            attempt,
            ..
        } => format!("link:connecting to {remote_url} (attempt {attempt})"),
        NodeEvent::LinkConnected {
            remote_system_id, ..
        } => format!("link:connected to {remote_system_id}"),
        NodeEvent::LinkDisconnected {
            reason,
            will_reconnect,
            ..
        } => format!("link:disconnected ({reason}; will reconnect: {will_reconnect})"),
        NodeEvent::LinkError { error, .. } => format!("link:error {error}"),
        NodeEvent::DeltaSent { delta_id, .. } => format!("delta:sent {delta_id}"),
        NodeEvent::DeltaReceived {
            delta_id,
            duplicate,
            ..
        } => format!(
            "delta:received {delta_id}{}",
            if *duplicate { " (duplicate)" } else { "" }
        ),
        NodeEvent::DeltaRejected {
            delta_id, reason, ..
        } => format!("delta:rejected {delta_id}: {reason}"),
        NodeEvent::SyncStarted { total_deltas, .. } => {
            format!("sync:started ({total_deltas} deltas)")
        }
        NodeEvent::SyncCompleted {
            deltas_processed, ..
        } => format!("sync:completed ({deltas_processed} deltas)"),
        _ => return None,
    })
}

/// Serves on `addr` until Ctrl-C or, with `duration`, until it has passed; then checks
/// that every tick authored is stored.
///
/// # Errors
/// When the server cannot start, a tick cannot be authored, or a tick is missing.
pub async fn run_for(addr: &str, duration: Option<Duration>, data: Option<PathBuf>) -> Result<()> {
    let storage = data.map_or(Storage::Memory, Storage::Path);
    let mut server = start(addr, storage, Duration::from_secs(1)).await?;
    let first = server.ticks();
    println!(
        "[server] {SYSTEM_ID} serving {}/federation{}",
        server.url(),
        if duration.is_none() {
            " (Ctrl-C to stop)"
        } else {
            ""
        }
    );
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?,
    }
    server.stop_ticking().await?;
    let ticks = server.ticks();
    let stored = stored_ticks(server.node())?;
    let links = server.federation().get_federation_links().len();
    server.stop().await?;
    ensure!(ticks > first, "the server authored no tick");
    ensure!(
        stored >= ticks,
        "the server authored {ticks} ticks but stores only {stored}"
    );
    println!(
        "[server] stopped; ticks authored and stored: {}; links open at the end: {links}",
        ticks - first
    );
    Ok(())
}

/// `cargo run --example simple_server -- [ADDR] [--seconds N] [--data DIR]`
///
/// # Errors
/// As [`run_for`].
pub async fn run() -> Result<()> {
    let args = Args::parse();
    run_for(&args.addr, args.seconds.map(Duration::from_secs), args.data).await
}

#[tokio::main]
async fn main() -> Result<()> {
    run().await
}
