//! `rhizome serve`: run a node until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use tokio::sync::broadcast::error::RecvError;

use crate::federation::{InitialSync, LinkConfig, ServerOptions, SyncMode, TrustPolicy};
use crate::node::{Node, NodeConfig, Storage};
use crate::server::Server;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address for the HTTP API (and the federation endpoint).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Directory of the fjall database.
    #[arg(long, default_value = "./data", conflicts_with = "memory")]
    pub data: PathBuf,
    /// Keep deltas in a temporary database that is deleted at shutdown.
    #[arg(long)]
    pub memory: bool,
    /// This node's system id (default: generated once and kept in the data directory).
    #[arg(long)]
    pub system_id: Option<String>,
    /// Print the node's events to stdout as JSON lines.
    #[arg(long)]
    pub events: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Open a federation link to this node (repeatable), e.g. `http://10.0.0.2:8080`.
    #[arg(long = "connect", value_name = "URL")]
    pub connect: Vec<String>,
    /// Direction of the links opened with --connect.
    #[arg(long, value_enum, default_value = "bidirectional")]
    pub mode: ModeArg,
    /// What the links opened with --connect receive first.
    #[arg(long, value_enum, default_value = "full")]
    pub initial_sync: InitialSyncArg,
    /// With `--initial-sync from-timestamp`: the lower bound, in ms since the epoch.
    #[arg(
        long,
        value_name = "MS",
        required_if_eq("initial_sync", "from-timestamp")
    )]
    pub sync_from: Option<u64>,
    /// Accept remote deltas only from these authors (repeatable).
    #[arg(long = "trust-author", value_name = "AUTHOR")]
    pub trust_authors: Vec<String>,
    /// Accept remote deltas only from these systems (repeatable).
    #[arg(long = "trust-system", value_name = "SYSTEM")]
    pub trust_systems: Vec<String>,
    /// Refuse remote deltas stamped further than this many ms in the future.
    #[arg(long, value_name = "MS")]
    pub max_clock_skew: Option<u64>,
    /// Path of the federation WebSocket endpoint.
    #[arg(long, default_value = "/federation")]
    pub federation_path: String,
    /// Most inbound links at once; more are closed with 1008.
    #[arg(long, default_value_t = 1000)]
    pub max_connections: usize,
    /// Trust policy scripts (`*.rhai`; `<link name>/*.rhai` for one link), hot-reloaded.
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Push / pull filter scripts (`push/`, `pull/`, each with `<link name>/`), hot-reloaded.
    #[arg(long, value_name = "DIR")]
    pub filters: Option<PathBuf>,
    /// Seconds between heartbeat pings on every link.
    #[arg(long, default_value_t = 30)]
    pub heartbeat: u64,
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

impl ServeArgs {
    fn trust(&self) -> TrustPolicy {
        let mut trust = TrustPolicy::default();
        if !self.trust_authors.is_empty() {
            trust = trust.and(TrustPolicy::authors(self.trust_authors.iter().cloned()));
        }
        if !self.trust_systems.is_empty() {
            trust = trust.and(TrustPolicy::systems(self.trust_systems.iter().cloned()));
        }
        trust.max_clock_skew_ms = self.max_clock_skew;
        trust
    }

    fn link_config(&self) -> LinkConfig {
        LinkConfig {
            mode: self.mode.into(),
            initial_sync: self.initial_sync.into(),
            sync_from_timestamp: self.sync_from,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let storage = if args.memory {
        Storage::Memory
    } else {
        Storage::Path(args.data.clone())
    };
    let server_options = ServerOptions {
        path: args.federation_path.clone(),
        max_connections: args.max_connections,
        heartbeat: std::time::Duration::from_secs(args.heartbeat.max(1)),
        ..Default::default()
    };
    let config = NodeConfig {
        storage,
        system_id: args.system_id.clone(),
        trust: args.trust(),
        server: server_options,
        policies: crate::policy::PolicyDirs {
            policies: args.policies.clone(),
            filters: args.filters.clone(),
        },
    };
    let node = Node::open(config).await.with_context(|| {
        if args.memory {
            "cannot open a temporary store".to_owned()
        } else {
            format!("cannot open the store in {}", args.data.display())
        }
    })?;
    if args.events {
        spawn_event_printer(&node);
    }
    let server = Server::bind(node.clone(), &args.listen).await?;
    // Tests and scripts read this line to learn the port when --listen ends in :0.
    println!(
        "{}",
        serde_json::json!({"listening": server.url(), "systemId": node.system_id()})
    );
    for url in &args.connect {
        let link = node
            .connect_to_remote(url, args.link_config())
            .with_context(|| format!("--connect {url}"))?;
        tracing::info!(link = link.id(), %url, "link opened");
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await.context("while shutting down")?;
    tracing::info!("stopped");
    Ok(())
}

fn spawn_event_printer(node: &Node) {
    let mut events = node.events();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => println!("{}", serde_json::to_string(&event).unwrap_or_default()),
                Err(RecvError::Lagged(n)) => {
                    println!(
                        "{}",
                        serde_json::json!({"type": "events:lagged", "missed": n})
                    );
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
