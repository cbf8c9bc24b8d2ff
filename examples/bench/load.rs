//! The bench's deltas, posting them to a node, and timing their delivery to receivers.
//!
//! Every delta carries its send time (`sent_us`, microseconds since the epoch, stamped
//! just before its `POST /deltas` array is sent). One delta in [`PROBE_EVERY`] (and the
//! last one) is a probe: a poller asks each receiver for the pending probes by id
//! (`POST /query {"filter": {"ids": [...]}}`, point lookups in the id index) and records
//! `now - sent_us` for each one found. A receiver answers only with durable deltas, so
//! a probe counts as delivered once it is on the receiver's disk and queryable.
//!
//! With signers (`sync --signing signed`), each delta is signed by its author's key as its
//! array is built, on a blocking thread (`bench/signing.rs`).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::signing::Signers;

/// One delta in this many is a probe whose delivery is timed.
pub const PROBE_EVERY: usize = 100;
/// Distinct authors of the generated deltas (all on the trust scripts' allow-list).
pub const AUTHORS: usize = 16;
/// Probes asked for in one query: enough to cover deltas delivered out of send order.
const PROBE_WINDOW: usize = 256;

/// How to post: arrays of `batch`, `concurrency` requests in flight, optionally paced.
#[derive(Clone, Copy)]
pub struct Posting {
    pub batch: usize,
    pub concurrency: usize,
    /// Deltas per second to send at; `None` sends as fast as the node acknowledges.
    pub rate: Option<f64>,
}

pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}

pub fn author(i: usize) -> String {
    format!("author-{}", i % AUTHORS)
}

fn is_probe(i: usize, n: usize) -> bool {
    i.is_multiple_of(PROBE_EVERY) || i + 1 == n
}

/// A realistic delta: a reference in a context, a flag, a short text and its send time,
/// written as JSON onto `out`. Written as text rather than built as a `Value`: building
/// and serialising `Value`s cost the bench process more CPU than the receiving node spent
/// decoding them, on the cores the nodes share.
pub fn write_delta(out: &mut String, tag: &str, i: usize, sent_us: u64) {
    use std::fmt::Write;
    // Tags are hex and the other strings constant, so nothing here needs escaping.
    let _ = write!(
        out,
        r#"{{"id":"{tag}-{i}","timestamp":{ts},"author":"{author}","system":"bench","pointers":[{{"role":"item","target":{{"id":"item-{item}","context":"items"}}}},{{"role":"verified","target":true}},{{"role":"text","target":"a realistic short text value"}},{{"role":"sent_us","target":{sent_us}}}]}}"#,
        ts = sent_us / 1000,
        author = author(i),
        item = i % 1000,
    );
}

/// [`write_delta`] as a `Value`.
pub fn delta(tag: &str, i: usize, sent_us: u64) -> Value {
    let mut text = String::new();
    write_delta(&mut text, tag, i, sent_us);
    serde_json::from_str(&text).expect("write_delta writes valid JSON")
}

/// A fresh id prefix per run, so no delta is ever a duplicate of an earlier run's.
pub fn fresh_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A JSON array of the deltas `range`, each written by `write`.
fn body(
    range: std::ops::Range<usize>,
    mut write: impl FnMut(&mut String, usize) -> Result<()>,
) -> Result<String> {
    let mut body = String::with_capacity(range.len() * 340);
    body.push('[');
    for i in range {
        if body.len() > 1 {
            body.push(',');
        }
        write(&mut body, i)?;
    }
    body.push(']');
    Ok(body)
}

/// Posts deltas `0..n` of `tag` to `url` as arrays, signed by their authors' keys when
/// `signers` is given; returns the seconds until every request was acknowledged (the node
/// acknowledges after its fsync).
pub async fn post_all(
    client: &reqwest::Client,
    url: &str,
    tag: &str,
    n: usize,
    how: Posting,
    signers: Option<Arc<Signers>>,
) -> Result<f64> {
    let next_chunk = Arc::new(AtomicUsize::new(0));
    let batch = how.batch.max(1);
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..how.concurrency.max(1) {
        let (client, url, tag, next_chunk, signers) = (
            client.clone(),
            format!("{url}/deltas"),
            tag.to_owned(),
            next_chunk.clone(),
            signers.clone(),
        );
        workers.spawn(async move {
            loop {
                let first = next_chunk.fetch_add(1, Ordering::Relaxed) * batch;
                if first >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                if let Some(rate) = how.rate {
                    let due = start + Duration::from_secs_f64(first as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let sent_us = now_micros();
                let last = n.min(first + batch);
                let body = match &signers {
                    None => body(first..last, |out, i| {
                        write_delta(out, &tag, i, sent_us);
                        Ok(())
                    })?,
                    // Signing takes CPU: off the runtime, so the other requests go on.
                    Some(signers) => {
                        let (signers, tag) = (signers.clone(), tag.clone());
                        tokio::task::spawn_blocking(move || {
                            body(first..last, |out, i| {
                                signers.write_signed(out, &tag, i, sent_us)
                            })
                        })
                        .await
                        .context("a signing task panicked")??
                    }
                };
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .with_context(|| format!("POST {url}"))?;
                let status = response.status();
                if !status.is_success() {
                    let text = response.text().await.unwrap_or_default();
                    bail!("POST {url}: {status}: {text}");
                }
            }
        });
    }
    // Dropping the set on the first error aborts the other workers.
    while let Some(done) = workers.join_next().await {
        done.context("a posting task panicked")??;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Delivery latencies (ms) of the probes of one receiver, and how often it was asked.
pub struct Probed {
    pub latencies_ms: Vec<f64>,
    pub polls: usize,
    pub mean_poll_ms: f64,
}

/// Asks the node at `url` for the probes of deltas `0..n` of `tag` every `every` until
/// all have arrived; run it as a task and abort it if the run fails.
pub async fn track_probes(
    client: reqwest::Client,
    url: String,
    tag: String,
    n: usize,
    every: Duration,
) -> Result<Probed> {
    let mut pending: VecDeque<String> = (0..n)
        .filter(|&i| is_probe(i, n))
        .map(|i| format!("{tag}-{i}"))
        .collect();
    let mut latencies_ms = Vec::with_capacity(pending.len());
    let (mut polls, start) = (0usize, Instant::now());
    let query = format!("{url}/query");
    while !pending.is_empty() {
        let ids: Vec<&String> = pending.iter().take(PROBE_WINDOW).collect();
        let body = json!({"filter": {"ids": ids}, "limit": PROBE_WINDOW});
        let response = client
            .post(&query)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {query}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("POST {query}: {status}: {text}");
        }
        let found: Value = response.json().await.context("POST /query: not JSON")?;
        // The answer is complete when it arrives: that is when the probes count as seen.
        let seen_us = now_micros();
        polls += 1;
        let mut arrived = HashSet::new();
        for d in found["deltas"].as_array().map_or(&[][..], Vec::as_slice) {
            let sent_us = d["pointers"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["role"] == "sent_us"))
                .and_then(|p| p["target"].as_u64())
                .with_context(|| format!("a probe without sent_us: {d}"))?;
            latencies_ms.push(seen_us.saturating_sub(sent_us) as f64 / 1000.0);
            arrived.insert(d["id"].as_str().unwrap_or_default());
        }
        pending.retain(|p| !arrived.contains(p.as_str()));
        tokio::time::sleep(every).await;
    }
    Ok(Probed {
        latencies_ms,
        polls,
        mean_poll_ms: start.elapsed().as_secs_f64() * 1000.0 / polls.max(1) as f64,
    })
}

/// The `q`-quantile (0..=1) of unsorted samples, nearest rank.
pub fn quantile(samples: &mut [f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    Some(samples[rank - 1])
}
