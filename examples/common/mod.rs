//! What the topology examples share: nodes served on a free port, links that connect or
//! fail with a reason, and waits with a deadline for what an example claims.
//!
//! Each example declares `mod common;`, so this file is compiled into each of them (and
//! once per example in tests/it/examples.rs); an example uses only some of it.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rhizome::federation::{InitialSync, LinkConfig, SyncMode};
use rhizome::store::ReadLimit;
use rhizome::{
    Federation, FederationLink, LinkStatus, Node, NodeConfig, Pointer, Seq, Server, ServerOptions,
};

/// How long an example waits for anything it claims before failing.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// A node on a temporary store, served on a free port.
pub async fn serve(system_id: &str) -> Result<Server> {
    serve_with(NodeConfig {
        system_id: Some(system_id.into()),
        ..Default::default()
    })
    .await
}

/// A node opened with `config`, served on a free port.
pub async fn serve_with(config: NodeConfig) -> Result<Server> {
    serve_with_options(config, Default::default()).await
}

/// As [`serve_with`], with these federation options.
pub async fn serve_with_options(config: NodeConfig, options: ServerOptions) -> Result<Server> {
    let node = Node::open(config).await?;
    let fed = Federation::new(node, options)?;
    Ok(Server::bind(fed, "127.0.0.1:0").await?)
}

/// `from` dials `to`: bidirectional, full initial sync, the link named `name` (the name
/// that picks the scripts applying to it).
pub fn dial(from: &Federation, to: &Server, name: &str) -> Result<FederationLink> {
    Ok(from.connect_to_remote(&to.url(), full_link(name))?)
}

fn full_link(name: &str) -> LinkConfig {
    LinkConfig {
        mode: SyncMode::Bidirectional,
        initial_sync: InitialSync::Full,
        name: Some(name.into()),
        ..Default::default()
    }
}

/// As [`dial`], and `to` must prove it holds its key (the link's `peerKey`): the link
/// is then an authenticated peer named `name`, and nobody else can answer in its place.
pub fn dial_verified(from: &Federation, to: &Server, name: &str) -> Result<FederationLink> {
    let config = LinkConfig {
        peer_key: Some(to.node().public_key()),
        ..full_link(name)
    };
    Ok(from.connect_to_remote(&to.url(), config)?)
}

/// Waits until `link` is connected; fails naming it (`who`, e.g. `leaf-a -> us`), its
/// status and its last error after [`TIMEOUT`].
pub async fn wait_connected(link: &FederationLink, who: &str) -> Result<()> {
    let mut status = link.watch_status();
    let up = tokio::time::timeout(TIMEOUT, status.wait_for(|s| *s == LinkStatus::Connected)).await;
    ensure!(
        matches!(up, Ok(Ok(_))),
        "{who} did not connect within {TIMEOUT:?}: status {:?}, last error {:?}",
        link.status(),
        link.info().last_error
    );
    Ok(())
}

/// Polls `check` until it holds; fails naming `what` after [`TIMEOUT`].
pub async fn wait_until(what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {TIMEOUT:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A delta authored on `node` by `author`; its id.
pub async fn author_delta(node: &Node, author: &str, pointers: Vec<Pointer>) -> Result<String> {
    let d = node
        .create_delta(author, pointers)
        .await
        .with_context(|| format!("writing on {}", node.system_id()))?;
    Ok(d.delta.id)
}

/// Every delta id `node` stores.
pub fn ids(node: &Node) -> Result<BTreeSet<String>> {
    Ok(node
        .store()
        .read_log(Seq(0), ReadLimit::All, None)?
        .deltas()?
        .into_iter()
        .map(|d| d.delta.id)
        .collect())
}

/// Waits until each of `nodes` holds every id in `written`.
pub async fn wait_all_hold(nodes: &[&Node], written: &BTreeSet<String>) -> Result<()> {
    for node in nodes {
        let what = format!(
            "{} holds all {} deltas written",
            node.system_id(),
            written.len()
        );
        wait_until(&what, || Ok(ids(node)?.is_superset(written))).await?;
    }
    Ok(())
}

/// `node` holds exactly the ids in `written`, each stored once.
pub fn check_holds_exactly(node: &Node, written: &BTreeSet<String>) -> Result<()> {
    let held = ids(node)?;
    ensure!(
        held == *written,
        "{} holds a different set: {} ids, {} expected",
        node.system_id(),
        held.len(),
        written.len()
    );
    check_stored_once(node)?;
    Ok(())
}

/// Each delta stored once: as many log entries as distinct ids (read in one scan, so a
/// delta arriving meanwhile cannot skew the count). The number of deltas stored.
pub fn check_stored_once(node: &Node) -> Result<usize> {
    let log = node
        .store()
        .read_log(Seq(0), ReadLimit::All, None)?
        .deltas()?;
    let distinct: BTreeSet<&str> = log.iter().map(|d| d.delta.id.as_str()).collect();
    ensure!(
        distinct.len() == log.len(),
        "{} stored some delta twice: {} log entries for {} ids",
        node.system_id(),
        log.len(),
        distinct.len()
    );
    Ok(log.len())
}

/// Closes a node's store once its last writes are done (blocking work, off the async
/// workers).
pub async fn close(node: Node) -> Result<()> {
    let who = node.system_id().to_owned();
    tokio::task::spawn_blocking(move || node.close())
        .await
        .with_context(|| format!("closing {who}'s store"))
}
