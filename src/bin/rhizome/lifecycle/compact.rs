//! `rhizome compact`: a major compaction of every keyspace of a node's store, on the
//! running node (`POST /compact`) or in a stopped node's data directory (`--data DIR`),
//! with the store's size on disk before and after.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use super::Online;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  rhizome compact                      the running node at http://127.0.0.1:8080
  rhizome compact --data ./data        a stopped node's data directory")]
pub struct CompactArgs {
    /// A stopped node's data directory (instead of asking a running node).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The node's config file, where its admin token may be.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub node: Online,
}

pub async fn run(args: CompactArgs) -> anyhow::Result<()> {
    let answer = match &args.data {
        Some(dir) => {
            let store = super::open_store(dir)?;
            let done = tokio::task::spawn_blocking(move || {
                let done = store.compact();
                store.close();
                done
            })
            .await
            .context("the compaction stopped")?
            .context("compaction")?;
            json!(done)
        }
        None => {
            let client = args.node.client(args.config.as_deref())?;
            client.post("/compact", &json!({})).await?
        }
    };
    let bytes = |k: &str| super::size(answer[k].as_u64().unwrap_or(0));
    eprintln!(
        "compact: {} on disk before, {} after, in {} ms",
        bytes("bytesBefore"),
        bytes("bytesAfter"),
        answer["millis"]
    );
    println!("{answer}");
    Ok(())
}
