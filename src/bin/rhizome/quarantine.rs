//! `rhizome quarantine`: the deltas a running node's trust policies refused, and replaying
//! them under the policies in force now (after an operator fixed or relaxed a policy).

use anyhow::Context;
use serde_json::Value;

use crate::args::NodeArg;
use crate::client::{print_line, Client};
use crate::table;

#[derive(Debug, clap::Args)]
pub struct QuarantineArgs {
    #[command(subcommand)]
    pub command: QuarantineCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum QuarantineCommand {
    /// Print quarantined deltas, oldest first, as a table (`--json`: one JSON line each,
    /// with the whole delta); the count shown and the total go to stderr.
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
    /// One JSON line per entry, as `GET /quarantine` gives it (delta, link, peer, policy,
    /// reason, at).
    #[arg(long)]
    pub json: bool,
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
    let client = Client::new(&args.node)?;
    let wanted = args.limit.unwrap_or(usize::MAX);
    let mut after = args.after;
    let mut shown = 0usize;
    let mut total = 0;
    let mut rows = Vec::new();
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
        if args.json {
            entries.iter().for_each(print_line);
        } else {
            rows.extend(entries.iter().map(row));
        }
        shown += entries.len();
        match page.get("next").and_then(Value::as_u64) {
            Some(next) if !entries.is_empty() => after = next,
            _ => break,
        }
    }
    if !rows.is_empty() {
        print!("{}", table::render("", &HEADER, &rows));
    }
    eprintln!("{shown} shown of {total} quarantined");
    Ok(())
}

const HEADER: [&str; 7] = [
    "QID", "REFUSED", "DELTA", "AUTHOR", "LINK", "POLICY", "REASON",
];

/// One entry as a table row. The policy is shown by its file name: its folder is the
/// node's policies folder, the same for every row.
fn row(entry: &Value) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let policy = text(&entry["policy"]);
    let policy = policy.rsplit('/').next().unwrap_or(&policy).to_owned();
    let link = match entry["link"]["name"].as_str() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => text(&entry["link"]["id"]),
    };
    vec![
        text(&entry["qid"]),
        entry["at"].as_u64().map_or_else(|| "-".to_owned(), ago),
        text(&entry["delta"]["id"]),
        text(&entry["delta"]["author"]),
        link,
        policy,
        text(&entry["reason"]),
    ]
}

/// How long ago `at` (ms since the epoch) was: `12 s ago`, `5 min ago`, `3 h ago`, `2 d ago`.
fn ago(at: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let s = now.saturating_sub(at) / 1000;
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        7200..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86400),
    }
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let report = Client::new(&args.node)?
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

    #[test]
    fn an_entry_reads_as_one_short_row_issue_16() {
        let entry = serde_json::json!({
            "qid": 7, "at": 0, "policy": "/srv/b/policies/no-mallory.rhai",
            "reason": "rejected by no-mallory.rhai", "peer": "node-a",
            "link": {"id": "1f2e", "name": "upstream"},
            "delta": {"id": "d-1", "author": "mallory", "pointers": [{"role": "text", "target": "spam"}]}
        });
        let r = row(&entry);
        assert_eq!(r[0], "7");
        assert!(r[1].ends_with(" d ago"), "{}", r[1]);
        assert_eq!(
            r[2..],
            [
                "d-1",
                "mallory",
                "upstream",
                "no-mallory.rhai",
                "rejected by no-mallory.rhai"
            ]
        );
    }
}
