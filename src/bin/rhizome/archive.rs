//! `rhizome archive`: one archival pass on a stopped node's data directory, with the
//! config file's `[retention]` rule or the one given by flags. A running node holds its
//! data directory: ask it with `POST /archive` instead.

use std::path::PathBuf;

use anyhow::Context;
use rhizome::config::NodeFile;
use rhizome::store::StoreError;
use rhizome::{DeltaFilter, RetentionSettings, Storage, Store};

#[derive(Debug, clap::Args)]
pub struct ArchiveArgs {
    /// The node's config file: its data directory and its `[retention]` rule.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The node's data directory [default: ./data, or the config file's].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Archive deltas older than this (`90d`, `12h`, `30m`, `45s`), instead of the config's.
    #[arg(long, value_name = "AGE")]
    pub max_age: Option<String>,
    /// Archive the oldest deltas while the store takes more bytes on disk than this.
    #[arg(long, value_name = "BYTES")]
    pub max_bytes: Option<u64>,
    /// Only deltas matching this DeltaFilter (JSON) may be archived.
    #[arg(long, value_name = "JSON")]
    pub filter: Option<String>,
}

pub async fn run(args: ArchiveArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => NodeFile::load(path)?,
        None => NodeFile::default(),
    };
    let dir = match (args.data, file.node_config().storage) {
        (Some(dir), _) => dir,
        (None, Storage::Path(dir)) => dir,
        (None, Storage::Memory) => {
            anyhow::bail!("this node keeps its data in memory: there is nothing to archive")
        }
    };
    let mut settings: RetentionSettings = file.retention.clone();
    if args.max_age.is_some() {
        settings.max_age = args.max_age;
    }
    if args.max_bytes.is_some() {
        settings.max_bytes = args.max_bytes;
    }
    if let Some(text) = &args.filter {
        let value: serde_json::Value =
            serde_json::from_str(text).context("--filter is not JSON")?;
        settings.filter = Some(DeltaFilter::from_value(&value).context("--filter")?);
    }
    settings.check().map_err(anyhow::Error::msg)?;
    if !settings.is_active() {
        eprintln!("note: no maxAge or maxBytes: only an interrupted pass is finished");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let rule = settings.rule_at(now);
    let report = tokio::task::spawn_blocking(move || {
        let store = Store::open(&dir).map_err(|e| match e {
            StoreError::Locked(_) => anyhow::anyhow!(
                "{e}: a running node archives with `curl -X POST <node>/archive` (admin token), \
                 by the rule in its config"
            ),
            e => anyhow::Error::new(e).context(format!("opening {}", dir.display())),
        })?;
        let report = store.archive(&rule).context("archiving")?;
        store.close();
        anyhow::Ok(report)
    })
    .await
    .context("the archival task failed")??;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
