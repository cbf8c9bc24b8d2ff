//! `rhizome quarantine`: the deltas a running node's trust policies refused, and replaying
//! them under the policies in force now (after an operator fixed or relaxed a policy).

use anyhow::Context;
use serde_json::Value;

use crate::args::NodeArg;
use crate::client::{print_line, Client};

#[derive(Debug, clap::Args)]
pub struct QuarantineArgs {
    #[command(subcommand)]
    pub command: QuarantineCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum QuarantineCommand {
    /// Print quarantined deltas, oldest first, one JSON line each (delta, link, policy,
    /// reason); the count shown and the total go to stderr.
    List(ListArgs),
    /// Judge every quarantined delta again under the node's current policies; those now
    /// accepted are stored and leave the quarantine. Prints the report.
    Replay(ReplayArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub node: NodeArg,
    /// Stop after this many entries (default: all, fetched page by page).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Start after this quarantine id (`qid`), e.g. the last one a previous listing showed.
    #[arg(long, value_name = "QID", default_value_t = 0)]
    pub after: u64,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub node: NodeArg,
}

/// Entries asked for per request (the node allows up to 10 000).
const PAGE: usize = 1000;

pub async fn run(args: QuarantineArgs) -> anyhow::Result<()> {
    match args.command {
        QuarantineCommand::List(a) => list(a).await,
        QuarantineCommand::Replay(a) => replay(a).await,
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.node.url);
    let wanted = args.limit.unwrap_or(usize::MAX);
    let mut after = args.after;
    let mut shown = 0usize;
    let mut total = 0;
    while shown < wanted {
        let page = client
            .quarantine(after, PAGE.min(wanted - shown))
            .await
            .context("cannot list the quarantine")?;
        let entries = page
            .get("entries")
            .and_then(Value::as_array)
            .context("the node's GET /quarantine answer has no \"entries\" array")?;
        total = page.get("total").and_then(Value::as_u64).unwrap_or(0);
        entries.iter().for_each(print_line);
        shown += entries.len();
        match page.get("next").and_then(Value::as_u64) {
            Some(next) if !entries.is_empty() => after = next,
            _ => break,
        }
    }
    eprintln!("{shown} shown of {total} quarantined");
    Ok(())
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let report = Client::new(&args.node.url)
        .replay_quarantine()
        .await
        .context("cannot replay the quarantine")?;
    print_line(&report);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: QuarantineCommand,
    }

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }
}
