//! `rhizome export`: a node's log as JSON lines, one delta per line, exactly as stored.
//!
//! The log is read a page at a time from a [`Source`] and written as it is read, so an
//! export holds one page in memory whatever the log's size: a stopped node's store
//! ([`DataDir`]), or a running node's change feed ([`Changes`], `GET /changes`). Progress
//! and the last position written go to stderr; `--since` that position continues an
//! export that stopped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use serde::Deserialize;
use serde_json::value::RawValue;

use rhizome::store::{ArchiveScan, ReadLimit};
use rhizome::{Delta, DeltaFilter, Seq, Store};

use super::lines::LineWriter;
use super::Online;
use crate::client::Client;

/// Log positions read per page.
const PAGE: usize = 1000;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  rhizome export --data ./data --out deltas.jsonl.gz      the whole log, compressed
  rhizome export --data ./data --since 120000 > more.jsonl  what came after position 120000
  rhizome export --data ./data --author alice --author bob   two authors' deltas
  rhizome export --url http://127.0.0.1:8080 > all.jsonl     a running node, over GET /changes
  rhizome export --data ./data --include-archive > all.jsonl  archived deltas too, first

With --data the node must be stopped: its data directory opens in one process at a time.
Without it, the running node at --url is read through its change feed.")]
pub struct ExportArgs {
    /// A stopped node's data directory (instead of asking a running node).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
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
    /// Also the deltas archival moved to the data directory's archive files (written
    /// first, in the archive's order: month, then log position). Only with --data and
    /// from the start of the log.
    #[arg(long, requires = "data", conflicts_with = "since")]
    pub include_archive: bool,
    /// The node's config file, where its token may be (with --url).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub node: Online,
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
    pub store: Store,
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

/// A running node's change feed (`GET /changes`, `feed=normal`), paged by its
/// `last_seq` while it says more is `pending`. The node applies the filter, so only the
/// deltas kept cross the network.
pub struct Changes {
    client: Client,
    filter: Option<String>,
    head: Option<u64>,
    done: bool,
}

/// One answer of the feed; each delta kept as the node sent it, byte for byte.
#[derive(Deserialize)]
struct FeedPage {
    results: Vec<Change>,
    last_seq: u64,
    pending: u64,
}

#[derive(Deserialize)]
struct Change {
    seq: u64,
    delta: Box<RawValue>,
}

impl Changes {
    pub fn new(client: Client, filter: Option<&DeltaFilter>) -> anyhow::Result<Changes> {
        let filter = filter
            .map(serde_json::to_string)
            .transpose()
            .context("the filter does not serialize")?;
        Ok(Changes {
            client,
            filter,
            head: None,
            done: false,
        })
    }
}

impl Source for Changes {
    async fn page(&mut self, after: u64) -> anyhow::Result<Option<Page>> {
        if self.done {
            return Ok(None);
        }
        let mut query = vec![("since", after.to_string()), ("limit", PAGE.to_string())];
        if let Some(f) = &self.filter {
            query.push(("filter", f.clone()));
        }
        let answer = self.client.get_text("/changes", &query).await?;
        let page: FeedPage =
            serde_json::from_str(&answer).context("the node's /changes answer is not a page")?;
        anyhow::ensure!(
            page.last_seq >= after,
            "the node's change feed went back from position {after} to {}",
            page.last_seq
        );
        self.head = Some(page.last_seq + page.pending);
        // Nothing pending means the page reached the head as it was when answered: the
        // export ends there, as an export of a stopped node ends at its head.
        self.done = page.pending == 0 || page.last_seq == after;
        Ok(Some(Page {
            deltas: page
                .results
                .into_iter()
                .map(|c| (c.seq, c.delta.get().to_owned()))
                .collect(),
            through: page.last_seq,
        }))
    }

    fn head(&self) -> Option<u64> {
        self.head
    }
}

pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let filter = filter(&args)?;
    match &args.data {
        Some(dir) => {
            let source = DataDir::open(dir)?;
            let archive = if args.include_archive {
                // Every archived delta the filter keeps, negated or not: an export
                // carries the log as it is, as it does for live deltas.
                let mut keep = filter.clone().unwrap_or_default();
                keep.include_negated = Some(true);
                Some(
                    ArchiveScan::new(source.store.clone(), keep)
                        .context("cannot read the archive")?,
                )
            } else {
                None
            };
            export(source, archive, filter, args.since, args.out.as_deref()).await
        }
        None => {
            let client = args.node.client(args.config.as_deref())?;
            let source = Changes::new(client, filter.as_ref())?;
            // The node filtered already: every delta it sent is written.
            export(source, None, None, args.since, args.out.as_deref()).await
        }
    }
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

/// Copies the deltas of `archive` (if given), then those of `source` after `since`
/// that `filter` keeps, to `out`.
pub async fn export(
    mut source: impl Source,
    archive: Option<ArchiveScan>,
    filter: Option<DeltaFilter>,
    since: u64,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let mut writer = LineWriter::create(out)?;
    let started = Instant::now();
    let mut said = Instant::now();
    let mut cursor = since;
    let mut written = 0u64;
    if let Some(mut scan) = archive {
        // Files read and written a line at a time: the worker says it blocks.
        let archived = tokio::task::block_in_place(|| -> anyhow::Result<u64> {
            let mut n = 0u64;
            while let Some(json) = scan.next_match().context("cannot read the archive")? {
                writer.line(&json).context("cannot write the export")?;
                n += 1;
            }
            Ok(n)
        })?;
        written = archived;
        eprintln!("export: {archived} archived deltas written");
    }
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
