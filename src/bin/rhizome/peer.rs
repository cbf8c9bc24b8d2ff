//! `rhizome peer`: the peers a running node knows by key or token (its `/peers` API), and
//! making a peer token. Every command prints JSON lines.

use anyhow::Context;
use serde_json::json;

use rhizome::PeerEntry;

use crate::args::NodeArg;
use crate::client::{print_each, print_line, urlencode};

#[derive(Debug, clap::Args)]
pub struct PeerArgs {
    #[command(subcommand)]
    pub command: PeerCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PeerCommand {
    /// Print the node's peers, one JSON line each (tokens are never shown).
    List(ListArgs),
    /// Teach the node a peer (until it stops; `[[peer]]` in the config file keeps it).
    Add(AddArgs),
    /// Forget a peer; the links it opened to the node are closed.
    Remove(RemoveArgs),
    /// Print a new random peer token (no node needed): give it to a v1 client and to
    /// `rhizome peer add NAME --peer-token` or `[[peer]] token`.
    Token,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub node: NodeArg,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("proof").required(true).multiple(true).args(["key", "peer_token"])))]
pub struct AddArgs {
    #[command(flatten)]
    pub node: NodeArg,
    /// The peer's name: its scripts are in policies/NAME/ and filters/push/NAME/.
    pub name: String,
    /// The peer node's key (what `rhizome id` prints there).
    #[arg(long, value_name = "HEX")]
    pub key: Option<String>,
    /// The token a plain v1 client presents (`?token=` or `Authorization: Bearer`).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "RHIZOME_PEER_TOKEN",
        hide_env_values = true
    )]
    pub peer_token: Option<String>,
    /// A system bound to this peer: its deltas are accepted from this peer only
    /// (repeatable).
    #[arg(long = "system", value_name = "SYSTEM")]
    pub systems: Vec<String>,
    /// A peer this one may relay for: deltas of systems bound to it are accepted from
    /// this one too (repeatable).
    #[arg(long = "relays", value_name = "PEER")]
    pub relays: Vec<String>,
    /// Every delta from this peer must be signed.
    #[arg(long)]
    pub require_signatures: bool,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    pub node: NodeArg,
    pub name: String,
}

pub async fn run(args: PeerArgs) -> anyhow::Result<()> {
    match args.command {
        PeerCommand::List(a) => list(a).await,
        PeerCommand::Add(a) => add(a).await,
        PeerCommand::Remove(a) => remove(a).await,
        PeerCommand::Token => {
            println!("{}", rhizome::identity::random_hex(24)?);
            Ok(())
        }
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let answer = args.node.client()?.get("/peers", &[]).await?;
    print_each(&answer, "peers", "/peers")
}

async fn add(args: AddArgs) -> anyhow::Result<()> {
    let entry = PeerEntry {
        name: args.name.clone(),
        key: args.key,
        token: args.peer_token,
        systems: args.systems,
        relays: args.relays,
        require_signatures: args.require_signatures,
    };
    let added = args
        .node
        .client()?
        .post("/peers", &json!(entry))
        .await
        .with_context(|| format!("cannot add peer {}", args.name))?;
    print_line(&added);
    Ok(())
}

async fn remove(args: RemoveArgs) -> anyhow::Result<()> {
    let answer = args
        .node
        .client()?
        .delete(&format!("/peers/{}", urlencode(&args.name)))
        .await
        .with_context(|| format!("cannot remove peer {}", args.name))?;
    print_line(&answer);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: PeerCommand,
    }

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_peer_needs_a_key_or_a_token() {
        assert!(Cli::try_parse_from(["p", "add", "hq"]).is_err());
        assert!(Cli::try_parse_from(["p", "add", "hq", "--key", "ab"]).is_ok());
    }
}
