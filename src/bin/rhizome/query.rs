//! `rhizome query` and `rhizome get`.

use serde_json::Value;

use crate::args::NodeArg;
use crate::client::{print_line, urlencode};

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub node: NodeArg,
    // Ids are never empty, so an empty value is a mistake (an unset shell variable, say)
    // that would otherwise match nothing in silence.
    /// Deltas by this author.
    #[arg(long, value_name = "AUTHOR", value_parser = non_empty)]
    pub author: Option<String>,
    /// Deltas from this system.
    #[arg(long, value_name = "SYSTEM", value_parser = non_empty)]
    pub system: Option<String>,
    /// Deltas with a pointer to this entity id.
    #[arg(long, value_name = "ID", value_parser = non_empty)]
    pub target_id: Option<String>,
    /// Deltas with a reference in this context.
    #[arg(long, value_name = "CONTEXT", value_parser = non_empty)]
    pub context: Option<String>,
    /// Timestamp (ms) lower bound, inclusive.
    #[arg(long, value_name = "MS")]
    pub since: Option<u64>,
    /// Timestamp (ms) upper bound, inclusive.
    #[arg(long, value_name = "MS")]
    pub until: Option<u64>,
    /// Include deltas that have been negated.
    #[arg(long)]
    pub include_negated: bool,
    /// Also read the node's archive files (archived deltas come after the live ones).
    #[arg(long)]
    pub include_archive: bool,
    /// Stop after this many deltas (default: all, fetched page by page).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub node: NodeArg,
    /// The delta's id.
    #[arg(value_name = "ID")]
    pub id: String,
}

const PAGE: usize = 1000;

/// An id filter's value: never empty, since no delta has an empty id, author, system or
/// context.
pub fn non_empty(text: &str) -> Result<String, String> {
    if text.is_empty() {
        Err(
            "it is empty, and no delta has an empty id, author, system or context: \
             it would match nothing (an unset shell variable?)"
                .to_owned(),
        )
    } else {
        Ok(text.to_owned())
    }
}

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    if let (Some(since), Some(until)) = (args.since, args.until) {
        anyhow::ensure!(
            since <= until,
            "--since {since} is after --until {until}: no timestamp is in that range (both bounds are inclusive)"
        );
    }
    let client = args.node.client()?;
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
    if args.include_archive {
        params.push(("includeArchive", "true".into()));
    }
    let mut warned = false;
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
        if !warned && answer.get("mayBeIncomplete") == Some(&Value::Bool(true)) {
            warned = true;
            let archived = answer.pointer("/archived/deltas").and_then(Value::as_u64);
            eprintln!(
                "note: the node has archived {} deltas over a time range this query covers, which the answer may miss; --include-archive reads them too",
                archived.unwrap_or(0)
            );
        }
        match answer.get("next").and_then(Value::as_u64) {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(())
}

pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let client = args.node.client()?;
    print_line(
        &client
            .get(&format!("/deltas/{}", urlencode(&args.id)), &[])
            .await?,
    );
    Ok(())
}
