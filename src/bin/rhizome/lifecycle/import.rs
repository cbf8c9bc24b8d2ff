//! `rhizome import`: deltas from JSON lines files into a node, through its one
//! ingestion path: over HTTP into a running node (`POST /import`), or into a stopped
//! node's data directory, opened as `serve` opens it from the node's config file.
//!
//! Files are read a batch at a time (`--batch` lines, at most [`BATCH_BYTES`]), each
//! batch sent and answered before the next is read, so memory stays bounded whatever
//! the file's size. After each answered batch the progress is kept beside the file
//! (see `progress`), and an interrupted import resumes there.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use rhizome::config::NodeFile;
use rhizome::{Delta, ImportTrust, IngestOutcome, InvalidDelta, Node, Storage};

use super::lines::{Line, LineReader, MAX_LINE};
use super::progress::{Progress, Tally};
use super::Online;
use crate::client::{Client, ClientError};

/// The most bytes of lines one batch holds (a single longer line goes alone): well
/// under the smallest request body a node takes (2 MiB).
const BATCH_BYTES: usize = 1024 * 1024;
/// The most lines `POST /import` takes in one request.
const MAX_BATCH: usize = 10_000;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  rhizome import deltas.jsonl.gz                          into the node at http://127.0.0.1:8080
  rhizome import a.jsonl b.jsonl --url http://10.0.0.2:8080 --token-file admin.token
  rhizome import deltas.jsonl --data ./data --config rhizome.toml --trust
                                                          into a stopped node, vouched for
  rhizome export --data ./a | rhizome import - --data ./b  copy a stopped node into another

Imported deltas are judged as deltas from a peer named `import` (its scripts in
policies/import/ and filters/pull/import/ apply besides the global ones); refused ones
go to the quarantine. An interrupted import resumes from <file>.import-state.")]
pub struct ImportArgs {
    /// JSON lines files, one delta per line (gzip when the name ends in `.gz`); `-`
    /// for stdin.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// A stopped node's data directory to import into (instead of a running node).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The node's config file: with --data, its policies, filters, authors, signature
    /// and limits settings apply as when it serves; otherwise where its token is.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The files are the operator's own: skip the trust policies and pull filters
    /// (never validation, limits or signatures). Only with --data.
    #[arg(long)]
    pub trust: bool,
    /// Deltas per batch.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub batch: usize,
    /// Import from the start, ignoring the progress kept from an earlier run.
    #[arg(long)]
    pub restart: bool,
    /// Stop (failing) after this many batches, as an interruption would.
    #[arg(long, value_name = "N", hide = true)]
    pub stop_after_batches: Option<u64>,
    #[command(flatten)]
    pub node: Online,
}

/// What happened to one line.
enum Verdict {
    Stored,
    Duplicate,
    Refused(String),
}

/// Where batches go.
enum Sink {
    Http(Client),
    Offline { node: Node, trust: ImportTrust },
}

impl Sink {
    /// Sends one batch; one verdict per line, in order.
    async fn send(&self, lines: Vec<String>) -> anyhow::Result<Vec<Verdict>> {
        match self {
            Sink::Offline { node, trust } => {
                let deltas: Vec<Result<Delta, InvalidDelta>> =
                    lines.iter().map(|l| Delta::parse(l)).collect();
                let outcomes = node.import(deltas, *trust).await?;
                Ok(outcomes.into_iter().map(verdict).collect())
            }
            Sink::Http(client) => {
                let sent = lines.len();
                let body = lines.join("\n");
                let answer = match client
                    .post_text("/import", "application/x-ndjson", body)
                    .await
                {
                    Err(ClientError::Api {
                        status: 413,
                        message,
                        ..
                    }) if sent == 1 => {
                        return Ok(vec![Verdict::Refused(format!("too large: {message}"))]);
                    }
                    other => other?,
                };
                let results = answer["results"]
                    .as_array()
                    .context("the node's answer to POST /import has no results")?;
                anyhow::ensure!(
                    results.len() == sent,
                    "the node answered {} of the {sent} deltas sent",
                    results.len()
                );
                Ok(results.iter().map(http_verdict).collect())
            }
        }
    }

    fn target(&self, args: &ImportArgs) -> anyhow::Result<String> {
        Ok(match (self, &args.data) {
            (Sink::Offline { .. }, Some(dir)) => std::path::absolute(dir)?.display().to_string(),
            _ => args.node.url.clone(),
        })
    }
}

fn verdict(outcome: IngestOutcome) -> Verdict {
    match outcome {
        IngestOutcome::Stored(_) => Verdict::Stored,
        IngestOutcome::Duplicate(_) => Verdict::Duplicate,
        IngestOutcome::Invalid(e) => Verdict::Refused(format!("invalid: {e}")),
        IngestOutcome::Filtered(why) => Verdict::Refused(format!("filtered: {why}")),
        IngestOutcome::Rejected { policy, reason } => {
            Verdict::Refused(format!("rejected by {policy}: {reason}"))
        }
    }
}

/// The same words as [`verdict`], from `POST /import`'s answer for one line.
fn http_verdict(result: &Value) -> Verdict {
    let text = |k: &str| result[k].as_str().unwrap_or_default();
    match text("status") {
        "stored" => Verdict::Stored,
        "duplicate" => Verdict::Duplicate,
        "rejected" => Verdict::Refused(format!(
            "rejected by {}: {}",
            text("policy"),
            text("message")
        )),
        status => Verdict::Refused(format!("{status}: {}", text("message"))),
    }
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_BATCH).contains(&args.batch),
        "--batch must be between 1 and {MAX_BATCH}"
    );
    let sink = match &args.data {
        Some(dir) => Sink::Offline {
            node: open_node(dir, args.config.as_deref()).await?,
            trust: if args.trust {
                ImportTrust::Trusted
            } else {
                ImportTrust::Policies
            },
        },
        None => {
            anyhow::ensure!(
                !args.trust,
                "--trust is refused over HTTP: it skips the node's trust policies, which only the node's operator may do for files they own; stop the node and import into its data directory with --data DIR --trust, or import without --trust"
            );
            Sink::Http(args.node.client(args.config.as_deref())?)
        }
    };
    let target = sink.target(&args)?;
    let started = Instant::now();
    let mut total = Tally::default();
    for file in &args.files {
        let tally = import_file(&sink, file, &target, &args).await?;
        total.add(&tally);
    }
    if let Sink::Offline { node, .. } = &sink {
        node.store().close();
    }
    summary(&total, started.elapsed());
    Ok(())
}

/// Opens a stopped node's data directory as `serve` does with the same config file
/// (making a new store there when there is none, as `serve` would).
async fn open_node(dir: &Path, config: Option<&Path>) -> anyhow::Result<Node> {
    if super::existing_store(dir).is_err() {
        eprintln!("import: no store in {} yet: making one", dir.display());
    }
    let mut node_config = match config {
        Some(path) => NodeFile::load(path)?.node_config(),
        None => {
            eprintln!("import: no --config: the node's defaults apply (no policies, filters, bound authors or signature rules from a config file)");
            rhizome::NodeConfig::default()
        }
    };
    node_config.storage = Storage::Path(dir.to_path_buf());
    Node::open(node_config).await.map_err(|e| match e {
        rhizome::NodeError::Store(e) => super::offline_error(dir, e.into()),
        other => {
            anyhow::Error::new(other).context(format!("cannot open the node in {}", dir.display()))
        }
    })
}

async fn import_file(
    sink: &Sink,
    file: &Path,
    target: &str,
    args: &ImportArgs,
) -> anyhow::Result<Tally> {
    let mut progress = Progress::load(file, target, args.restart)?;
    let mut reader = LineReader::open(file, progress.offset)?;
    let name = file.display();
    let mut said = Instant::now();
    let started = Instant::now();
    let mut lines_sent = 0u64;
    loop {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut local = Tally::default();
        let end = loop {
            let Some(line) = reader
                .next_line()
                .with_context(|| format!("reading {name}"))?
            else {
                break true;
            };
            match line {
                Line::TooLong(len) => {
                    local.refuse(format!("a line of {len} bytes, over {MAX_LINE}"))
                }
                Line::Text(text) if text.iter().all(u8::is_ascii_whitespace) => {}
                Line::Text(text) => match String::from_utf8(text) {
                    Ok(text) => {
                        bytes += text.len();
                        batch.push(text);
                    }
                    Err(_) => local.refuse("invalid: the line is not UTF-8".into()),
                },
            }
            if batch.len() >= args.batch || bytes >= BATCH_BYTES {
                break false;
            }
        };
        lines_sent += batch.len() as u64;
        if !batch.is_empty() {
            for v in sink.send(batch).await? {
                match v {
                    Verdict::Stored => local.stored += 1,
                    Verdict::Duplicate => local.duplicates += 1,
                    Verdict::Refused(why) => local.refuse(why),
                }
            }
        }
        progress.tally.add(&local);
        progress.offset = reader.offset();
        progress.batches += 1;
        progress.save()?;
        if end {
            break;
        }
        if said.elapsed() >= Duration::from_secs(1) {
            said = Instant::now();
            let t = &progress.tally;
            let rate = lines_sent as f64 / started.elapsed().as_secs_f64().max(0.001);
            eprintln!(
                "import: {name}: {} stored, {} duplicates, {} refused; {} read ({rate:.0} deltas/s)",
                t.stored,
                t.duplicates,
                t.refused,
                super::size(progress.offset)
            );
        }
        if args.stop_after_batches == Some(progress.batches) {
            anyhow::bail!(
                "stopped after {} batches as asked (--stop-after-batches); run again to resume",
                progress.batches
            );
        }
    }
    progress.done()?;
    Ok(progress.tally)
}

/// The end of an import: a JSON line on stdout, and the same in words on stderr.
fn summary(total: &Tally, took: Duration) {
    println!(
        "{}",
        serde_json::to_string(total).unwrap_or_else(|_| "{}".into())
    );
    eprintln!(
        "import: {} stored, {} duplicates, {} refused in {:.1} s",
        total.stored,
        total.duplicates,
        total.refused,
        took.as_secs_f64()
    );
    for (reason, n) in &total.reasons {
        eprintln!("  {n:>8}  {reason}");
    }
}
