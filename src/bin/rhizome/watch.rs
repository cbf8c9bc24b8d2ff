//! `rhizome watch`: follows a node's change feed (`GET /changes?feed=continuous`, JSON
//! lines) and prints one line per change as it is stored: readable columns, or with
//! `--json` the feed's own `{"seq":N,"delta":{...}}` line.
//!
//! A dropped connection (the node restarting, a network blip) is not the end: it
//! reconnects with backoff from the last sequence number it printed, so no change is
//! missed and none printed twice, and says so on stderr. It ends on Ctrl-C (exit 0), or
//! on a refusal that retrying cannot change (a bad filter, a token not accepted).

use std::time::Duration;

use anyhow::Context;
use rhizome::delta::Target;
use rhizome::Delta;
use serde_json::Value;

use crate::args::NodeArg;
use crate::client::{Client, ClientError};
use crate::query::non_empty;

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub node: NodeArg,
    /// Print the changes after this sequence number, or `now` for only those stored from
    /// now on.
    #[arg(long, value_name = "SEQ|now", default_value = "0", value_parser = since)]
    pub since: Since,
    /// Changes by this author.
    #[arg(long, value_name = "AUTHOR", value_parser = non_empty)]
    pub author: Option<String>,
    /// Changes with a pointer to this entity id.
    #[arg(long, value_name = "ID", value_parser = non_empty)]
    pub target: Option<String>,
    /// Changes with a reference in this context.
    #[arg(long, value_name = "CONTEXT", value_parser = non_empty)]
    pub context: Option<String>,
    /// A DeltaFilter as JSON (`{"authors":["alice"]}`), instead of the flags above.
    #[arg(long, value_name = "JSON", conflicts_with_all = ["author", "target", "context"])]
    pub filter: Option<String>,
    /// Print each change as the node sends it: `{"seq":N,"delta":{...}}`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Seq(u64),
    Now,
}

fn since(text: &str) -> Result<Since, String> {
    match text {
        "now" => Ok(Since::Now),
        _ => text
            .parse()
            .map(Since::Seq)
            .map_err(|_| format!("give a sequence number or `now`, not {text:?}")),
    }
}

/// Reconnection delays: doubling from the first up to the last, back to the first once
/// a connection delivered something.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    if let Some(filter) = &args.filter {
        serde_json::from_str::<Value>(filter).context("--filter is not valid JSON")?;
    }
    let client = args.node.client()?;
    tokio::select! {
        done = follow(&client, &args) => done,
        stop = tokio::signal::ctrl_c() => stop.context("waiting for Ctrl-C"),
    }
}

/// Follows the feed for good, reconnecting from the last change printed.
async fn follow(client: &Client, args: &WatchArgs) -> anyhow::Result<()> {
    let mut last = match args.since {
        Since::Seq(seq) => seq,
        // Fixed once, as a position: a reconnection must not skip what came meanwhile.
        Since::Now => head(client).await?,
    };
    let mut delay = BACKOFF_FIRST;
    let mut connected = false;
    loop {
        let mut printed = false;
        let ended = stream(client, args, &mut last, &mut connected, &mut printed).await;
        if printed {
            delay = BACKOFF_FIRST;
        }
        match ended {
            Ok(()) => eprintln!("watch: the node closed the feed; reconnecting after seq {last}"),
            // Never connected: a wrong address or a refusal is told at once.
            Err(e) if gives_up(&e) || !connected => return Err(e.into()),
            Err(e) => eprintln!("watch: {e}; reconnecting after seq {last} in {delay:?}"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// Refusals that the same request would meet again.
fn gives_up(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Api {
            status: 400..=499,
            ..
        } | ClientError::Unauthorized { .. }
            | ClientError::Tls { .. }
    )
}

/// The node's head, through the feed itself: `since=now` answers it as `last_seq`.
async fn head(client: &Client) -> anyhow::Result<u64> {
    let answer = client
        .get(
            "/changes",
            &[("since", "now".into()), ("limit", "1".into())],
        )
        .await?;
    answer
        .get("last_seq")
        .and_then(Value::as_u64)
        .context("the node's /changes answer has no last_seq")
}

/// One connection to the feed: prints each change after `last` and moves `last` on;
/// `connected` is set once the node accepted a feed, `printed` once a change was printed.
/// `Ok` when the node ended the stream.
async fn stream(
    client: &Client,
    args: &WatchArgs,
    last: &mut u64,
    connected: &mut bool,
    printed: &mut bool,
) -> Result<(), ClientError> {
    let mut query = vec![
        ("feed", "continuous".to_owned()),
        ("since", last.to_string()),
    ];
    let criteria = [
        ("author", &args.author),
        ("targetId", &args.target),
        ("context", &args.context),
        ("filter", &args.filter),
    ];
    query.extend(
        criteria
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k, v))),
    );
    let mut res = client.get_stream("/changes", &query).await?;
    *connected = true;
    eprintln!("watch: following the node's changes after seq {last}");
    let dropped = |e: reqwest::Error| ClientError::Http {
        url: "/changes".into(),
        source: e,
    };
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(dropped)? {
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim();
            // An empty line is the feed's heartbeat.
            if line.is_empty() {
                continue;
            }
            let change: Value = serde_json::from_str(line)
                .map_err(|_| ClientError::BadResponse(line.chars().take(200).collect()))?;
            let Some(seq) = change.get("seq").and_then(Value::as_u64) else {
                return Err(ClientError::BadResponse(line.chars().take(200).collect()));
            };
            if seq <= *last {
                continue;
            }
            if args.json {
                println!("{line}");
            } else {
                println!("{}", readable(seq, &change["delta"]));
            }
            *last = seq;
            *printed = true;
        }
    }
    Ok(())
}

/// `SEQ  TIME  AUTHOR  ID  POINTERS`, the pointers as `put -p` takes them, shortened.
fn readable(seq: u64, delta: &Value) -> String {
    let Ok(d) = Delta::parse(&delta.to_string()) else {
        return format!("{seq}  {delta}");
    };
    let pointers: Vec<String> = d
        .pointers
        .iter()
        .map(|p| {
            // As `rhizome put -p` takes them: `@id#context` a reference, `:=` JSON.
            let (op, target) = match &p.target {
                Target::Reference(r) => match &r.context {
                    Some(c) => ("=", format!("@{}#{c}", r.id)),
                    None => ("=", format!("@{}", r.id)),
                },
                Target::String(s) => ("=", format!("{s:?}")),
                Target::Number(n) => (":=", n.to_string()),
                Target::Bool(b) => (":=", b.to_string()),
            };
            format!("{}{op}{}", p.role, shorten(&target, 40))
        })
        .collect();
    format!(
        "{seq}  {}  {}  {}  {}",
        utc(d.timestamp),
        d.author,
        d.id,
        pointers.join(" ")
    )
}

fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (the raw number when
/// it is past the calendar's year 9999).
fn utc(ms: u64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return ms.to_string();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        // A leap day, and the last millisecond of a year.
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(1_704_067_199_999), "2023-12-31T23:59:59.999Z");
    }

    #[test]
    fn a_change_reads_as_one_line() {
        let delta = serde_json::json!({"id": "d1", "timestamp": 1_700_000_000_000u64,
            "author": "alice", "system": "s",
            "pointers": [{"role": "about", "target": {"id": "topic", "context": "notes"}},
                         {"role": "n", "target": 5},
                         {"role": "text", "target": "x".repeat(60)}]});
        let line = readable(7, &delta);
        assert!(
            line.starts_with(
                "7  2023-11-14T22:13:20.000Z  alice  d1  about=@topic#notes n:=5 text=\""
            ),
            "{line}"
        );
        assert!(line.ends_with('…'), "{line}");
    }

    #[test]
    fn since_is_a_number_or_now() {
        assert_eq!(since("now"), Ok(Since::Now));
        assert_eq!(since("12"), Ok(Since::Seq(12)));
        assert!(since("-1").is_err());
    }
}
