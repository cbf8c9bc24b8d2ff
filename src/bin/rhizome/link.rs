//! `rhizome link`: list, open, pause, resume and close a running node's federation links
//! through its `/links` API. Every command prints JSON lines (one per link).

use anyhow::Context;
use serde_json::{json, Value};

use rhizome::federation::{LinkConfig, ReconnectConfig};
use rhizome::DeltaFilter;

use crate::args::NodeArg;
use crate::client::{print_each, print_line, urlencode};

#[derive(Debug, clap::Args)]
pub struct LinkArgs {
    #[command(subcommand)]
    pub command: LinkCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum LinkCommand {
    /// Print every link of the node, one JSON line each.
    List(ListArgs),
    /// Open a link from the node to another node; prints the new link.
    Connect(Box<ConnectArgs>),
    /// Stop delta flow on a link both ways (nothing is lost; `resume` continues).
    Pause(IdArgs),
    /// Resume a paused link.
    Resume(IdArgs),
    /// Close a link for good (no reconnect).
    Disconnect(IdArgs),
    /// Compare what the peer holds with what the node holds (range-based set
    /// reconciliation) and fetch what the node lacks; prints what was found.
    Reconcile(IdArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub node: NodeArg,
}

#[derive(Debug, clap::Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub node: NodeArg,
    /// The link's id or name (as `rhizome link list` shows them).
    pub id: String,
}

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub node: NodeArg,
    /// The remote node, e.g. `http://10.0.0.2:8080` (or its `ws://` federation URL).
    #[arg(value_name = "URL")]
    pub remote: String,
    #[command(flatten)]
    pub link: crate::args::LinkFlags,
    /// A name for logs and events (default: the link id).
    #[arg(long)]
    pub name: Option<String>,
    /// Which local deltas the link sends: a DeltaFilter as JSON, e.g. '{"authors":["alice"]}'.
    #[arg(long, value_name = "JSON", value_parser = parse_filter)]
    pub push_filter: Option<DeltaFilter>,
    /// Which remote deltas the link keeps: a DeltaFilter as JSON.
    #[arg(long, value_name = "JSON", value_parser = parse_filter)]
    pub pull_filter: Option<DeltaFilter>,
    /// Do not reconnect when the link drops.
    #[arg(long, conflicts_with = "max_attempts")]
    pub no_reconnect: bool,
    /// Reconnect attempts after a failure before giving up (default: forever).
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
}

impl ConnectArgs {
    fn link_config(&self) -> LinkConfig {
        let defaults = ReconnectConfig::default();
        LinkConfig {
            push_filter: self.push_filter.clone(),
            pull_filter: self.pull_filter.clone(),
            reconnect: ReconnectConfig {
                enabled: !self.no_reconnect,
                max_attempts: self.max_attempts.unwrap_or(defaults.max_attempts),
                ..defaults
            },
            name: self.name.clone(),
            ..self.link.link_config()
        }
    }
}

/// Decodes a `--push-filter` / `--pull-filter` value; clap names the flag in the error,
/// this names the field.
fn parse_filter(text: &str) -> Result<DeltaFilter, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    DeltaFilter::from_value(&value).map_err(|e| e.to_string())
}

pub async fn run(args: LinkArgs) -> anyhow::Result<()> {
    match args.command {
        LinkCommand::List(a) => list(a).await,
        LinkCommand::Connect(a) => connect(*a).await,
        LinkCommand::Pause(a) => control(a, "pause").await,
        LinkCommand::Resume(a) => control(a, "resume").await,
        LinkCommand::Disconnect(a) => disconnect(a).await,
        LinkCommand::Reconcile(a) => control(a, "reconcile").await,
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let answer = args.node.client()?.get("/links", &[]).await?;
    print_each(&answer, "links", "/links")
}

async fn connect(args: ConnectArgs) -> anyhow::Result<()> {
    let body = json!({"url": args.remote, "config": args.link_config()});
    let link = args
        .node
        .client()?
        .post("/links", &body)
        .await
        .with_context(|| format!("cannot open a link to {}", args.remote))?;
    print_line(&link);
    Ok(())
}

/// `pause`, `resume` (both answer with the link) or `reconcile` (with what it found).
async fn control(args: IdArgs, action: &str) -> anyhow::Result<()> {
    let path = format!("/links/{}/{action}", urlencode(&args.id));
    let link = args
        .node
        .client()?
        .post(&path, &json!({}))
        .await
        .with_context(|| format!("cannot {action} link {}", args.id))?;
    print_line(&link);
    Ok(())
}

async fn disconnect(args: IdArgs) -> anyhow::Result<()> {
    args.node
        .client()?
        .delete(&format!("/links/{}", urlencode(&args.id)))
        .await
        .with_context(|| format!("cannot disconnect link {}", args.id))?;
    print_line(&json!({"id": args.id, "disconnected": true}));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: LinkCommand,
    }

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn filter_flags_name_the_field() {
        assert_eq!(
            parse_filter(r#"{"authors":["alice"]}"#)
                .unwrap()
                .authors
                .unwrap(),
            ["alice"]
        );
        let err = parse_filter(r#"{"authors":"bob"}"#).unwrap_err();
        assert!(err.contains("authors"), "{err}");
        let err = parse_filter("{nope").unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
    }
}
