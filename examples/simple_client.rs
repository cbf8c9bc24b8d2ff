//! The simple client-server demo, client half.
//!
//! ```sh
//! cargo run --example simple_client                            # the whole demo, in-process
//! cargo run --example simple_client -- http://127.0.0.1:8080   # join a running simple_server
//! ```
//!
//! Without an argument, [`demo`] runs `simple_server`'s code in-process and shows, step by
//! step: the initial sync (`initialSync: full`, the client receives what the server
//! already had), auto-broadcast both ways, then a server restart on the same address and
//! the same durable data: the client notices, retries with exponential backoff, comes
//! back, and deltas flow again (including one the client wrote while the server was
//! down). Each step waits, with a deadline, for what it claims; a step that does not
//! happen ends the demo with an error naming it.

// The server half of the demo is the `simple_server` example's own code. Public so that
// tests/it/examples.rs reaches it here rather than loading the file a second time.
#[allow(dead_code)] // its `run` and `main` are for `cargo run --example simple_server`
#[path = "simple_server.rs"]
pub mod simple_server;

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{author_delta, check_stored_once, close, ids, wait_connected, wait_until};
use rhizome::federation::{InitialSync, LinkConfig, ReconnectConfig, SyncMode};
use rhizome::{Federation, LinkStatus, Node, Pointer, Storage, Target};
use simple_server::{print_events, SimpleServer};

/// The demo's server ticks faster than the standalone one, to keep the demo short.
const TICK: Duration = Duration::from_millis(300);

/// Joins the node at the url given as argument, else runs [`demo`].
///
/// # Errors
/// When the link does not come up or the demo's checks fail.
pub async fn run() -> Result<()> {
    match std::env::args().nth(1) {
        Some(flag) if flag.starts_with('-') => {
            println!("usage: simple_client [URL]  (no URL: the in-process demo)");
            Ok(())
        }
        Some(url) => join(&url).await,
        None => demo().await,
    }
}

/// The seed's client settings: bidirectional, full initial sync, reconnect with backoff.
fn link_config(initial_delay_ms: u64) -> LinkConfig {
    LinkConfig {
        mode: SyncMode::Bidirectional,
        initial_sync: InitialSync::Full,
        reconnect: ReconnectConfig {
            enabled: true,
            max_attempts: 0,
            initial_delay: initial_delay_ms,
            max_delay: 2_000,
            backoff_multiplier: 2.0,
        },
        ..Default::default()
    }
}

/// Connects to a running node, says hello, then prints what arrives until Ctrl-C.
async fn join(url: &str) -> Result<()> {
    let client = Node::in_memory("simple-client").await?;
    let printer = print_events("client", &client);
    let links = Federation::new(client.clone(), Default::default())?;
    let link = links.connect_to_remote(url, link_config(1_000))?;
    wait_connected(&link, "the client's link").await?;
    wait_until("the initial sync is done", || {
        Ok(link.stats().last_sync_timestamp.is_some())
    })
    .await?;
    println!(
        "[client] connected; holds {} deltas after the initial sync",
        client.store().head().0
    );
    let hello = greet(&client, "hello from simple_client").await?;
    wait_until("our hello went out on the link", || {
        Ok(link.stats().deltas_sent >= 1)
    })
    .await?;
    println!("[client] sent {hello}; now printing what arrives (Ctrl-C to stop)");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    links.disconnect_all().await;
    close(client).await?;
    printer.abort();
    Ok(())
}

/// The whole demo in one process: server, client, restart, reconnect.
///
/// # Errors
/// When a step does not happen within its deadline.
pub async fn demo() -> Result<()> {
    let data = tempfile::tempdir().context("a temporary directory for the server's data")?;
    let storage = || Storage::Path(data.path().join("server"));

    println!("== 1. a server with some history");
    let server = simple_server::start("127.0.0.1:0", storage(), TICK).await?;
    let addr = server.local_addr().to_string();
    wait_until("the server authored two ticks", || Ok(server.ticks() >= 2)).await?;

    println!("== 2. a client connects (bidirectional, initialSync full)");
    let client = Node::in_memory("simple-client").await?;
    let printer = print_events("client", &client);
    let links = Federation::new(client.clone(), Default::default())?;
    let history = ids(server.node())?;
    // A short initial delay so the restart below is quick; the seed's default is 1 s.
    let link = links.connect_to_remote(&server.url(), link_config(100))?;
    wait_connected(&link, "the client's link").await?;
    wait_until(
        "the client holds the server's history (initial sync)",
        || Ok(ids(&client)?.is_superset(&history)),
    )
    .await?;
    println!(
        "-- initial sync: the client received the {} deltas the server already had",
        history.len()
    );

    println!("== 3. auto-broadcast, both ways");
    let hello = greet(&client, "hello from the client").await?;
    wait_until("the server holds the client's delta", || {
        Ok(server.node().get(&hello)?.is_some())
    })
    .await?;
    println!("-- the client's delta {hello} reached the server");
    let tick = wait_new_tick(&server, &client).await?;
    println!("-- the server's new tick {tick} reached the client by itself");

    println!("== 4. the server restarts on {addr} with the same data");
    let before_restart = ids(server.node())?;
    server.stop().await?;
    wait_until("the client sees the link go down", || {
        Ok(link.status() != LinkStatus::Connected)
    })
    .await?;
    let offline = greet(&client, "written while the server is down").await?;
    println!("-- the client wrote {offline} while the server is down");
    wait_until(
        "the client retried with backoff against the closed port",
        || Ok(link.stats().reconnects >= 2),
    )
    .await?;
    let server = simple_server::start(&addr, storage(), TICK).await?;
    let kept = ids(server.node())?;
    ensure!(
        kept.is_superset(&before_restart),
        "the restarted server lost deltas: it had {}, now {}",
        before_restart.len(),
        kept.len()
    );
    println!(
        "-- the restarted server reopened its store with all {} deltas",
        before_restart.len()
    );
    wait_connected(&link, "the client's link").await?;
    println!(
        "-- the client reconnected after {} retries",
        link.stats().reconnects
    );

    println!("== 5. deltas flow again");
    wait_until(
        "the restarted server holds the delta written while it was down",
        || Ok(server.node().get(&offline)?.is_some()),
    )
    .await?;
    println!("-- {offline} reached the restarted server");
    let tick = wait_new_tick(&server, &client).await?;
    println!("-- the restarted server's tick {tick} reached the client");

    for node in [&client, server.node()] {
        let stored = check_stored_once(node)?;
        println!("-- {}: {stored} deltas, each stored once", node.system_id());
    }
    links.disconnect_all().await;
    server.stop().await?;
    close(client).await?;
    printer.abort();
    println!(
        "== done: initial sync, broadcast both ways, and reconnection after a restart all worked"
    );
    Ok(())
}

/// Authors a chat message on `node`; its id.
async fn greet(node: &Node, text: &str) -> Result<String> {
    let pointers = vec![
        Pointer::new("chat", Target::reference_in("room-1", "messages")),
        Pointer::new("text", Target::from(text)),
    ];
    author_delta(node, "client-user", pointers).await
}

/// Waits for a tick the server authors from now on to reach the client; its id.
async fn wait_new_tick(server: &SimpleServer, client: &Node) -> Result<String> {
    let seen = ids(server.node())?;
    let mut found = None;
    wait_until(
        "a new server tick reaches the client (auto-broadcast)",
        || {
            for id in ids(server.node())?.difference(&seen) {
                if client.get(id)?.is_some() {
                    found = Some(id.clone());
                    return Ok(true);
                }
            }
            Ok(false)
        },
    )
    .await?;
    found.context("no tick found")
}

#[tokio::main]
async fn main() -> Result<()> {
    run().await
}
