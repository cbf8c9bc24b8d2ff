//! The `rhizome` subcommands. The binary is a thin clap layer over these.

pub mod allocator;
pub mod init;
pub mod link;
mod logging;
pub mod policy;
pub mod put;
pub mod quarantine;
pub mod query;
pub mod serve;
pub mod status;

/// Where the client subcommands find the node.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArg {
    /// URL of the node's HTTP API.
    #[arg(
        long = "node",
        env = "RHIZOME_NODE",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
}

/// How a link opened from the command line syncs (`serve --connect`, `link connect`).
#[derive(Debug, Clone, clap::Args)]
pub struct LinkFlags {
    /// Which way deltas flow, from this node's point of view.
    #[arg(long, value_enum, default_value = "bidirectional")]
    pub mode: serve::ModeArg,
    /// What this node receives when the link first comes up.
    #[arg(long, value_enum, default_value = "full")]
    pub initial_sync: serve::InitialSyncArg,
    /// With `--initial-sync from-timestamp`: the lower bound, in ms since the epoch.
    #[arg(
        long,
        value_name = "MS",
        required_if_eq("initial_sync", "from-timestamp")
    )]
    pub sync_from: Option<u64>,
}

impl LinkFlags {
    /// A link config with these flags and defaults for the rest.
    pub fn link_config(&self) -> crate::federation::LinkConfig {
        crate::federation::LinkConfig {
            mode: self.mode.into(),
            initial_sync: self.initial_sync.into(),
            sync_from_timestamp: self.sync_from,
            ..Default::default()
        }
    }
}

/// Prints a JSON value as one line.
pub(crate) fn print_line(v: &serde_json::Value) {
    println!("{v}");
}

/// Percent-encodes a URL path segment (delta ids are arbitrary strings).
pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
