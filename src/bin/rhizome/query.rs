//! `rhizome query`, `rhizome get`, `rhizome status`.

use serde_json::Value;

use crate::args::NodeArg;
use crate::client::{print_line, urlencode, Client};

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub node: NodeArg,
    #[arg(long)]
    pub author: Option<String>,
    #[arg(long)]
    pub system: Option<String>,
    /// Deltas with a pointer to this entity id.
    #[arg(long)]
    pub target_id: Option<String>,
    /// Deltas with a reference in this context.
    #[arg(long)]
    pub context: Option<String>,
    /// Timestamp (ms) lower bound, inclusive.
    #[arg(long)]
    pub since: Option<u64>,
    /// Timestamp (ms) upper bound, inclusive.
    #[arg(long)]
    pub until: Option<u64>,
    /// Include deltas that have been negated.
    #[arg(long)]
    pub include_negated: bool,
    /// Stop after this many deltas (default: all, fetched page by page).
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub node: NodeArg,
    pub id: String,
}

const PAGE: usize = 1000;

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.node.url);
    let mut params: Vec<(&str, String)> = Vec::new();
    let pairs = [
        ("author", args.author),
        ("system", args.system),
        ("targetId", args.target_id),
        ("context", args.context),
        ("since", args.since.map(|v| v.to_string())),
        ("until", args.until.map(|v| v.to_string())),
    ];
    params.extend(pairs.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    if args.include_negated {
        params.push(("includeNegated", "true".into()));
    }
    let mut remaining = args.limit.unwrap_or(usize::MAX);
    let mut after: Option<u64> = None;
    while remaining > 0 {
        let mut page_params = params.clone();
        page_params.push(("limit", remaining.min(PAGE).to_string()));
        if let Some(a) = after {
            page_params.push(("after", a.to_string()));
        }
        let answer = client.get("/deltas", &page_params).await?;
        let deltas = answer
            .get("deltas")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for d in &deltas {
            print_line(d);
        }
        remaining = remaining.saturating_sub(deltas.len());
        match answer.get("next").and_then(Value::as_u64) {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(())
}

pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.node.url);
    print_line(
        &client
            .get(&format!("/deltas/{}", urlencode(&args.id)), &[])
            .await?,
    );
    Ok(())
}
