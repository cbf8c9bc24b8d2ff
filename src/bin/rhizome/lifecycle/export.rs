//! `rhizome export`: a node's log as JSON lines, one delta per line, exactly as stored.
//!
//! The log is read a page at a time from a [`Source`] and written as it is read, so an
//! export holds one page in memory whatever the log's size. Progress and the last
//! position written go to stderr; `--since` that position continues an export that
//! stopped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use rhizome::store::ReadLimit;
use rhizome::{Delta, DeltaFilter, Seq, Store};

use super::lines::LineWriter;

/// Log positions read per page.
const PAGE: usize = 1000;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  rhizome export --data ./data --out deltas.jsonl.gz      the whole log, compressed
  rhizome export --data ./data --since 120000 > more.jsonl  what came after position 120000
  rhizome export --data ./data --author alice --author bob   two authors' deltas

The node must be stopped: its data directory opens in one process at a time.")]
pub struct ExportArgs {
    /// The stopped node's data directory.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Only the deltas stored after this log position (what an earlier export printed
    /// as its last position).
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    pub since: u64,
    /// Only the deltas this filter keeps (JSON, as `POST /query` takes it).
    #[arg(long, value_name = "JSON", conflicts_with = "authors")]
    pub filter: Option<String>,
    /// Only the deltas of this author (repeatable).
    #[arg(long = "author", value_name = "AUTHOR")]
    pub authors: Vec<String>,
    /// Write here instead of stdout (gzip-compressed when it ends in `.gz`).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// A page of the log.
pub struct Page {
    /// `(position, the delta's JSON as stored)`, in log order.
    pub deltas: Vec<(u64, String)>,
    /// The last position read: the next page starts after it.
    pub through: u64,
}

/// Where an export reads the log: a stopped node's store, or (over HTTP) a running
/// node's changes feed.
pub trait Source {
    /// The positions after `after`, a page of them; `None` once the end is reached.
    async fn page(&mut self, after: u64) -> anyhow::Result<Option<Page>>;

    /// How many positions the log has, when known (for progress).
    fn head(&self) -> Option<u64>;
}

/// A stopped node's store, read up to its head when opened.
pub struct DataDir {
    store: Store,
    head: Seq,
}

impl DataDir {
    /// Opens the store in `dir`; refused when a running node holds it.
    pub fn open(dir: &Path) -> anyhow::Result<DataDir> {
        let store = super::open_store(dir)?;
        let head = store.head();
        Ok(DataDir { store, head })
    }
}

impl Source for DataDir {
    async fn page(&mut self, after: u64) -> anyhow::Result<Option<Page>> {
        if Seq(after) >= self.head {
            return Ok(None);
        }
        let store = self.store.clone();
        let batch = tokio::task::spawn_blocking(move || {
            store.read_log(Seq(after), ReadLimit::Batch(PAGE), None)
        })
        .await
        .context("the log reader stopped")??;
        let deltas = batch
            .records
            .iter()
            .map(|r| (r.seq.0, r.json().to_owned()))
            .collect();
        Ok(Some(Page {
            deltas,
            through: batch.through.0,
        }))
    }

    fn head(&self) -> Option<u64> {
        Some(self.head.0)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        self.store.close();
    }
}

pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let filter = filter(&args)?;
    let source = DataDir::open(&args.data)?;
    export(source, filter, args.since, args.out.as_deref()).await
}

fn filter(args: &ExportArgs) -> anyhow::Result<Option<DeltaFilter>> {
    if let Some(text) = &args.filter {
        let value: serde_json::Value =
            serde_json::from_str(text).context("--filter is not JSON")?;
        let filter = DeltaFilter::from_value(&value).context("--filter")?;
        return Ok((!filter.is_empty()).then_some(filter));
    }
    if args.authors.is_empty() {
        return Ok(None);
    }
    Ok(Some(DeltaFilter {
        authors: Some(args.authors.clone()),
        ..Default::default()
    }))
}

/// Copies the deltas of `source` after `since` that `filter` keeps to `out`.
pub async fn export(
    mut source: impl Source,
    filter: Option<DeltaFilter>,
    since: u64,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let mut writer = LineWriter::create(out)?;
    let started = Instant::now();
    let mut said = Instant::now();
    let mut cursor = since;
    let mut written = 0u64;
    while let Some(page) = source.page(cursor).await? {
        for (seq, json) in &page.deltas {
            if let Some(f) = &filter {
                let delta = Delta::parse(json)
                    .with_context(|| format!("the delta stored at position {seq}"))?;
                if !f.matches(&delta) {
                    continue;
                }
            }
            writer.line(json).context("cannot write the export")?;
            written += 1;
        }
        cursor = page.through;
        if said.elapsed() >= Duration::from_secs(1) {
            said = Instant::now();
            let of = source
                .head()
                .map(|h| format!(" of {h}"))
                .unwrap_or_default();
            eprintln!("export: {written} deltas written, through position {cursor}{of}");
        }
    }
    writer.finish().context("cannot write the export")?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "export: {written} deltas written in {secs:.1} s; last position {cursor} (continue with --since {cursor})"
    );
    Ok(())
}
