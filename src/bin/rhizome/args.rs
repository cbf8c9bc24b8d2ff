//! Flags shared by several subcommands: where the node is, and how a link opened from
//! the command line syncs. Each converts to the library's own type, so a subcommand
//! never interprets a flag's text itself.

use rhizome::federation::{InitialSync, LinkConfig, SyncMode};

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
}

impl LinkFlags {
    /// A link config with these flags and defaults for the rest.
    pub fn link_config(&self) -> LinkConfig {
        LinkConfig {
            mode: self.mode.into(),
            initial_sync: self.initial_sync.into(),
            sync_from_timestamp: self.sync_from,
            ..Default::default()
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
