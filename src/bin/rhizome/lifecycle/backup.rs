//! `rhizome backup DIR`: a consistent copy of a node's store that `rhizome serve --data
//! DIR` opens as it was: taken by the running node (`POST /backup`; DIR is a path on
//! its machine), or from a stopped node's data directory (`--data SRC`).

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use super::Online;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  rhizome backup /backups/node-2026-12-03             the running node at http://127.0.0.1:8080
  rhizome backup --data ./data /backups/node-copy     a stopped node's data directory
  rhizome serve --data /backups/node-2026-12-03       the copy, served as it was

DIR must be new or empty. The copy holds the log, its indexes, the link cursors, the
quarantine, the node's key and its archive files; it starts a log of its own, so peers
read it from its start (dedup absorbs what they hold) rather than from where the
original was.")]
pub struct BackupArgs {
    /// Where the copy goes: a new or empty directory (on the node's machine).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// A stopped node's data directory to copy (instead of asking a running node).
    #[arg(long, value_name = "SRC")]
    pub data: Option<PathBuf>,
    /// The node's config file, where its admin token may be.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub node: Online,
}

pub async fn run(args: BackupArgs) -> anyhow::Result<()> {
    let answer = match &args.data {
        Some(src) => {
            let store = super::open_store(src)?;
            let dir = args.dir.clone();
            let copy = tokio::task::spawn_blocking(move || rhizome::backup_store(&store, &dir))
                .await
                .context("the backup stopped")?
                .with_context(|| {
                    format!("cannot back up {} to {}", src.display(), args.dir.display())
                })?;
            json!(copy)
        }
        None => {
            // The path is the node's: a relative one means something only where both
            // agree on it, a node on this machine, where it is resolved as typed here.
            let dir = if args.dir.is_absolute() {
                args.dir.clone()
            } else {
                anyhow::ensure!(
                    crate::token::is_local(&args.node.url),
                    "{} is relative, and the node at {} is on another machine: give the backup's absolute path there",
                    args.dir.display(),
                    args.node.url
                );
                std::path::absolute(&args.dir)?
            };
            let client = args.node.client(args.config.as_deref())?;
            client.post("/backup", &json!({ "dir": dir })).await?
        }
    };
    eprintln!(
        "backup: {} written: log through position {}, {} on disk, {} archive files, in {} ms",
        args.dir.display(),
        answer["head"],
        super::size(answer["bytes"].as_u64().unwrap_or(0)),
        answer["archiveFiles"],
        answer["millis"]
    );
    println!("{answer}");
    Ok(())
}
