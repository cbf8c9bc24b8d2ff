//! `rhizome serve`: run a node until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use tokio::sync::broadcast::error::RecvError;

use rhizome::config::live::ConfigLinks;
use rhizome::config::NodeFile;
use rhizome::federation::{Federation, ServerOptions};
use rhizome::{Node, NodeConfig, Storage};
use rhizome::{Server, TrustPolicy};

/// Paths of the HTTP API the federation endpoint may not take.
const RESERVED_PATHS: [&str; 7] = [
    "/deltas",
    "/query",
    "/status",
    "/links",
    "/policies",
    "/quarantine",
    "/metrics",
];

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A TOML config file (see `rhizome init`); flags given here override it, and its
    /// `[[link]]` tables and `[trust]` are reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address for the HTTP API (and the federation endpoint) [default: 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<String>,
    /// Directory of the fjall database [default: ./data].
    #[arg(long, conflicts_with = "memory")]
    pub data: Option<PathBuf>,
    /// Keep deltas in memory only: nothing reaches the disk, nothing survives shutdown.
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
    /// How the links opened with --connect sync.
    #[command(flatten)]
    pub link: crate::args::LinkFlags,
    /// Accept remote deltas only from these authors (repeatable).
    #[arg(long = "trust-author", value_name = "AUTHOR")]
    pub trust_authors: Vec<String>,
    /// Accept remote deltas only from these systems (repeatable).
    #[arg(long = "trust-system", value_name = "SYSTEM")]
    pub trust_systems: Vec<String>,
    /// Refuse remote deltas stamped further than this many ms in the future.
    #[arg(long, value_name = "MS")]
    pub max_clock_skew: Option<u64>,
    /// Path of the federation WebSocket endpoint [default: /federation].
    #[arg(long)]
    pub federation_path: Option<String>,
    /// Most inbound links at once; more are closed with 1008 [default: 1000].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Trust policy scripts (`*.rhai`; `<link name>/*.rhai` for one link), hot-reloaded.
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Push / pull filter scripts (`push/`, `pull/`, each with `<link name>/`), hot-reloaded.
    #[arg(long, value_name = "DIR")]
    pub filters: Option<PathBuf>,
    /// Seconds between heartbeat pings on every link [default: 30].
    #[arg(long)]
    pub heartbeat: Option<u64>,
}

impl ServeArgs {
    /// The node's config and its endpoint's options: the file's, with every flag given
    /// here taking precedence.
    fn node_config(&self, file: &NodeFile) -> anyhow::Result<(NodeConfig, ServerOptions)> {
        let mut config = file.node_config();
        let mut server = file.server_options();
        if self.memory {
            config.storage = Storage::Memory;
        } else if let Some(dir) = &self.data {
            config.storage = Storage::Path(dir.clone());
        }
        if self.system_id.is_some() {
            config.system_id = self.system_id.clone();
        }
        config.trust = self.trust(config.trust);
        if let Some(path) = &self.federation_path {
            server.path = path.clone();
        }
        anyhow::ensure!(
            server.path.starts_with('/') && server.path.len() > 1,
            "the federation path {:?} must start with '/' and name a path",
            server.path
        );
        anyhow::ensure!(
            !RESERVED_PATHS.iter().any(|p| server.path.starts_with(p)),
            "the federation path {:?} collides with the HTTP API ({})",
            server.path,
            RESERVED_PATHS.join(", ")
        );
        if let Some(n) = self.max_connections {
            server.max_connections = n;
        }
        if let Some(s) = self.heartbeat {
            server.heartbeat = std::time::Duration::from_secs(s.max(1));
        }
        if self.policies.is_some() {
            config.policies.policies = self.policies.clone();
        }
        if self.filters.is_some() {
            config.policies.filters = self.filters.clone();
        }
        Ok((config, server))
    }

    /// The file's trust rules, narrowed by the flags' (both apply: AND).
    fn trust(&self, file: TrustPolicy) -> TrustPolicy {
        let mut trust = file;
        if !self.trust_authors.is_empty() {
            trust = trust.and(TrustPolicy::authors(self.trust_authors.iter().cloned()));
        }
        if !self.trust_systems.is_empty() {
            trust = trust.and(TrustPolicy::systems(self.trust_systems.iter().cloned()));
        }
        if self.max_clock_skew.is_some() {
            trust.max_clock_skew_ms = self.max_clock_skew;
        }
        trust
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let file = match &args.config {
        Some(path) => NodeFile::load(path)?,
        None => NodeFile::default(),
    };
    let (config, options) = args.node_config(&file)?;
    crate::allocator::tune_for(&config.storage);
    let listen = args
        .listen
        .clone()
        .or_else(|| file.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let store_desc = match &config.storage {
        Storage::Memory => "a temporary store".to_owned(),
        Storage::Path(p) => format!("the store in {}", p.display()),
    };
    let node = Node::open(config)
        .await
        .with_context(|| format!("cannot open {store_desc}"))?;
    if args.events {
        spawn_event_printer(&node);
    }
    let fed = Federation::new(node.clone(), options)?;
    let server = Server::bind(fed.clone(), &listen).await?;
    // Tests and scripts read this line to learn the port when --listen ends in :0.
    println!(
        "{}",
        serde_json::json!({"listening": server.url(), "systemId": node.system_id()})
    );
    for url in &args.connect {
        let link = fed
            .connect_to_remote(url, args.link.link_config())
            .with_context(|| format!("--connect {url}"))?;
        tracing::info!(link = link.id(), %url, "link opened");
    }
    // Kept alive while serving: it owns the config file's links and its watcher.
    let _config_links = match &args.config {
        Some(path) => Some(
            ConfigLinks::start(fed.clone(), path, file)
                .with_context(|| format!("cannot watch {}", path.display()))?,
        ),
        None => None,
    };
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
        // Field values come from peers and files: escaped, one event stays one line.
        LogFormat::Text => builder.fmt_fields(crate::logging::EscapedFields).try_init(),
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
