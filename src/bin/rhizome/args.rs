//! Flags shared by several subcommands: where the node is (and its token), and how a link opened from
//! the command line syncs. Each converts to the library's own type, so a subcommand
//! never interprets a flag's text itself.

use std::path::PathBuf;

use rhizome::federation::{InitialSync, LinkConfig, PointerForm, SyncMode};

use crate::client::Client;

/// Where the client subcommands find the node.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArg {
    /// URL of the node's HTTP API (`host:port` means `http://host:port`).
    #[arg(
        long = "node",
        value_name = "URL",
        env = "RHIZOME_NODE",
        default_value = "http://127.0.0.1:8080",
        value_parser = node_url
    )]
    pub url: String,
    /// A CA certificate (PEM) to trust for an `https://` node, besides the system's roots.
    #[arg(long = "tls-ca", value_name = "FILE", env = "RHIZOME_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// The node's bearer token [default: found beside the node, see --data].
    #[arg(
        long,
        value_name = "TOKEN",
        env = "RHIZOME_TOKEN",
        hide_env_values = true,
        help_heading = "Token"
    )]
    pub token: Option<String>,
    /// A file holding the node's bearer token.
    #[arg(long, value_name = "FILE", help_heading = "Token")]
    pub token_file: Option<PathBuf>,
    /// The node's data directory, whose admin.token is sent [default: ./data, for a
    /// node on this machine].
    #[arg(long, value_name = "DIR", help_heading = "Token")]
    pub data: Option<PathBuf>,
    /// The node's config file: its adminToken, or its data directory's admin.token, is
    /// sent.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "data",
        help_heading = "Token"
    )]
    pub config: Option<PathBuf>,
}

impl NodeArg {
    /// A client of the node, with the token these flags find (see `token`).
    ///
    /// # Errors
    /// When a token named by a flag cannot be read.
    pub fn client(&self) -> anyhow::Result<Client> {
        let found = crate::token::Sources {
            token: self.token.as_deref(),
            token_file: self.token_file.as_deref(),
            data: self.data.as_deref(),
            config: self.config.as_deref(),
            node: &self.url,
        }
        .find()?;
        Ok(Client::new(self)?.with_token(found))
    }
}

/// A node's URL as given to `--node`: `host:port` (what `--listen` takes, and what an
/// operator types after reading it) gets `http://`; other schemes are refused by name.
pub fn node_url(text: &str) -> Result<String, String> {
    match text.split_once("://") {
        None if text.is_empty() => Err("give the node's URL, e.g. http://127.0.0.1:8080".into()),
        None => Ok(format!("http://{text}")),
        Some(("http" | "https", _)) => Ok(text.to_owned()),
        Some((scheme, rest)) => Err(format!(
            "a node's API is reached over http, not {scheme}: use http://{rest}"
        )),
    }
}

/// How a link opened from the command line syncs (`serve --connect`, `link connect`).
#[derive(Debug, Clone, clap::Args)]
pub struct LinkFlags {
    /// Which way deltas flow, from this node's point of view.
    #[arg(long, value_enum, default_value = "bidirectional")]
    pub mode: ModeArg,
    /// What this node receives when the link first comes up.
    #[arg(long, value_enum, default_value = "full")]
    pub initial_sync: InitialSyncArg,
    /// With `--initial-sync from-timestamp`: the lower bound, in ms since the epoch.
    #[arg(
        long,
        value_name = "MS",
        required_if_eq("initial_sync", "from-timestamp")
    )]
    pub sync_from: Option<u64>,
    /// The pointer form of the deltas this link sends: `legacy` for a peer of the seed's
    /// version, `auto` to switch when the peer sends a legacy delta.
    #[arg(long, value_enum, value_name = "FORM", default_value = "auto")]
    pub pointer_form: PointerFormArg,
    /// The key the node at the other end must prove it holds (what `rhizome id` prints
    /// there); a different or missing key fails the link.
    #[arg(long, value_name = "HEX")]
    pub peer_key: Option<String>,
}

impl LinkFlags {
    /// A link config with these flags and defaults for the rest.
    pub fn link_config(&self) -> LinkConfig {
        LinkConfig {
            mode: self.mode.into(),
            initial_sync: self.initial_sync.into(),
            sync_from_timestamp: self.sync_from,
            pointer_form: self.pointer_form.into(),
            peer_key: self.peer_key.clone(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PointerFormArg {
    Current,
    Legacy,
    Auto,
}

impl From<PointerFormArg> for PointerForm {
    fn from(p: PointerFormArg) -> PointerForm {
        match p {
            PointerFormArg::Current => PointerForm::Current,
            PointerFormArg::Legacy => PointerForm::Legacy,
            PointerFormArg::Auto => PointerForm::Auto,
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    Push,
    Pull,
    Bidirectional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InitialSyncArg {
    Full,
    FromTimestamp,
    None,
}

impl From<ModeArg> for SyncMode {
    fn from(m: ModeArg) -> SyncMode {
        match m {
            ModeArg::Push => SyncMode::Push,
            ModeArg::Pull => SyncMode::Pull,
            ModeArg::Bidirectional => SyncMode::Bidirectional,
        }
    }
}

impl From<InitialSyncArg> for InitialSync {
    fn from(s: InitialSyncArg) -> InitialSync {
        match s {
            InitialSyncArg::Full => InitialSync::Full,
            InitialSyncArg::FromTimestamp => InitialSync::FromTimestamp,
            InitialSyncArg::None => InitialSync::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::node_url;

    #[test]
    fn a_node_address_without_a_scheme_means_http_issue_16() {
        assert_eq!(node_url("localhost:8080").unwrap(), "http://localhost:8080");
        assert_eq!(node_url("http://h:1").unwrap(), "http://h:1");
        assert_eq!(node_url("https://h").unwrap(), "https://h");
        let refused = node_url("ws://h:1").unwrap_err();
        assert!(refused.contains("use http://h:1"), "{refused}");
        assert!(node_url("").is_err());
    }
}
