//! `rhizome serve`: run a node until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use tokio::sync::broadcast::error::RecvError;

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
    let config = NodeConfig {
        storage,
        system_id: args.system_id.clone(),
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
