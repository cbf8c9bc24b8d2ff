//! A node's data in and out of it: `export`, `import`, `backup` and `compact`.
//!
//! Each works on a running node over its HTTP API, or on a stopped node's data
//! directory (`--data DIR`), which it opens itself: a data directory opens in one
//! process at a time, so the offline form refuses a directory a running node holds,
//! and says to stop the node or use the HTTP form.
//!
//! - `lines`: the files `export` writes and `import` reads (JSON lines, gzip by name).
//! - `export`, `import` (and its resumable `progress`), `backup`, `compact`: one
//!   subcommand each.

pub mod backup;
pub mod compact;
pub mod export;
pub mod import;
mod lines;
mod progress;

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::args::NodeArg;
use crate::client::Client;

/// Where a running node is, for the subcommands that also work offline: the client
/// commands' flags, less `--data` (which names the stopped node's directory here).
#[derive(Debug, Clone, clap::Args)]
pub struct Online {
    /// URL of the running node's HTTP API.
    #[arg(
        long = "url",
        visible_alias = "node",
        value_name = "URL",
        env = "RHIZOME_NODE",
        default_value = "http://127.0.0.1:8080",
        value_parser = crate::args::node_url
    )]
    pub url: String,
    /// The node's admin token [default: found beside a node on this machine].
    #[arg(
        long,
        value_name = "TOKEN",
        env = "RHIZOME_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// A file holding the node's admin token.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for an `https://` node, besides the system's roots.
    #[arg(long = "tls-ca", value_name = "FILE", env = "RHIZOME_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl Online {
    /// A client of the node with its admin token; `config` is the node's config file,
    /// where the token may be.
    pub fn client(&self, config: Option<&Path>) -> anyhow::Result<Client> {
        NodeArg {
            url: self.url.clone(),
            tls_ca: self.tls_ca.clone(),
            token: self.token.clone(),
            token_file: self.token_file.clone(),
            data: None,
            config: config.map(Path::to_path_buf),
        }
        .client()
    }
}

/// Checks that `dir` holds a node's store before opening it: opening an empty path
/// would make a new, empty store there.
fn existing_store(dir: &Path) -> anyhow::Result<()> {
    let found = std::fs::read_dir(dir)
        .with_context(|| format!("--data {}: no such directory", dir.display()))?
        .next()
        .is_some();
    anyhow::ensure!(
        found,
        "--data {}: the directory is empty, not a node's data directory",
        dir.display()
    );
    Ok(())
}

/// Opens a stopped node's store.
fn open_store(dir: &Path) -> anyhow::Result<rhizome::Store> {
    existing_store(dir)?;
    rhizome::Store::open(dir).map_err(|e| offline_error(dir, e.into()))
}

/// Says what to do when the data directory is held by a running node.
fn offline_error(dir: &Path, e: anyhow::Error) -> anyhow::Error {
    let locked = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<rhizome::store::StoreError>(),
            Some(rhizome::store::StoreError::Locked(_))
        )
    });
    if locked {
        e.context(format!(
            "--data {} is in use by a running node: stop it first, or give its URL with --url instead of --data",
            dir.display()
        ))
    } else {
        e.context(format!("cannot open the store in {}", dir.display()))
    }
}

/// Bytes in binary units, for progress lines.
fn size(bytes: u64) -> String {
    crate::table::bytes(bytes)
}
