//! The two bounds every federation figure is compared with, measured in the bench's own
//! process with no network and no other node running:
//!
//! - **decode**: [`wire::decode`] of the `sync_batch` frames a sender would put on the
//!   wire for these deltas (stored JSON, 1000 per frame, as `wire::encode` writes
//!   them): the JSON parse a receiver cannot avoid, which builds each `Delta` as it
//!   reads (the typed fast path). A second figure adds validation
//!   ([`rhizome::federation::wire::WireDelta::into_checked`]), which the receiver also does: together, what the
//!   receiver's session does with a frame before it reaches the store.
//! - **store**: the receiver's store writes alone (fjall, or in memory with `--memory`):
//!   [`Store::append`] of the same deltas, already decoded, from a remote origin, in
//!   batches of the sender's frame size, each with the link cursor in the same batch, one
//!   batch at a time (the receiver waits for each batch to be durable before taking the next), fsync per batch unless `--memory`.
//!   Same keyspaces and indexes as the node: it is the node's own store code.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rhizome::federation::wire::{self, BatchKind, Message, Outbound};
use rhizome::store::{Durability, NewEntry, SideWrites, Store};
use rhizome::Delta;

use crate::load;
use crate::node::cpu_secs_of;
use crate::stats::median;

/// Deltas per frame and per store batch: what a sender puts in one `sync_batch`.
pub const FRAME_DELTAS: usize = 1000;

/// Deltas per second of the two decode figures, and the CPU seconds each took (this
/// thread's, mean of the rounds): the wall-clock rate suffers when the machine is busy,
/// the CPU time much less.
pub struct DecodeBound {
    pub decode: f64,
    pub decode_validate: f64,
    pub cpu_decode: Option<f64>,
    pub cpu_validate: Option<f64>,
}

/// The store bound's rate, and the CPU seconds the store's threads spent (the whole
/// process's CPU time less the calling thread's, which only builds the deltas and waits).
pub struct StoreBound {
    pub rate: f64,
    pub cpu: Option<f64>,
}

fn cpu_now() -> Option<(f64, f64)> {
    Some((cpu_secs_of("self")?, cpu_secs_of("thread-self")?))
}

fn stored_json(tag: &str, i: usize, sent_us: u64) -> Result<String> {
    let delta = Delta::from_value(&load::delta(tag, i, sent_us))
        .map_err(|e| anyhow::anyhow!("a bench delta is invalid: {e}"))?;
    Ok(delta.to_json())
}

/// Decodes `n` deltas' worth of frames, `rounds` times; the median of each figure.
pub fn decode_bound(n: usize, rounds: usize) -> Result<DecodeBound> {
    let tag = load::fresh_tag();
    let sent_us = load::now_micros();
    let json: Vec<String> = (0..n)
        .map(|i| stored_json(&tag, i, sent_us))
        .collect::<Result<_>>()?;
    let chunks: Vec<&[String]> = json.chunks(FRAME_DELTAS).collect();
    let frames: Vec<String> = chunks
        .iter()
        .enumerate()
        .map(|(k, chunk)| {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let kind = BatchKind::Sync {
                batch_number: k as u64,
                is_last: k + 1 == chunks.len(),
            };
            wire::encode(Outbound::batch(
                kind,
                &refs,
                Some(((k + 1) * FRAME_DELTAS) as u64),
            ))
        })
        .collect();
    drop(json);
    let (mut decode, mut validate) = (Vec::new(), Vec::new());
    let mut cpu = [Some(0.0), Some(0.0)];
    let rounds = rounds.max(1);
    for _ in 0..rounds {
        for check in [false, true] {
            let cpu_start = cpu_secs_of("thread-self");
            let start = Instant::now();
            let mut count = 0usize;
            for frame in &frames {
                let Message::SyncBatch { deltas, .. } =
                    wire::decode(frame).map_err(|e| anyhow::anyhow!("decode: {e}"))?
                else {
                    bail!("a sync_batch frame decoded as something else");
                };
                count += deltas.len();
                if check {
                    for d in deltas {
                        std::hint::black_box(d.into_checked().map_err(|e| anyhow::anyhow!("{e}"))?);
                    }
                } else {
                    std::hint::black_box(deltas);
                }
            }
            let rate = count as f64 / start.elapsed().as_secs_f64();
            if check { &mut validate } else { &mut decode }.push(rate);
            let used = cpu_secs_of("thread-self")
                .zip(cpu_start)
                .map(|(b, a)| b - a);
            let total = &mut cpu[usize::from(check)];
            *total = total.zip(used).map(|(t, u)| t + u);
        }
    }
    Ok(DecodeBound {
        decode: median(decode),
        decode_validate: median(validate),
        cpu_decode: cpu[0].map(|c| c / rounds as f64),
        cpu_validate: cpu[1].map(|c| c / rounds as f64),
    })
}

/// Appends `n` deltas as a receiver would; deltas per second of the time spent in
/// `append` (building the deltas is not counted). Blocking: call it off the runtime.
pub fn store_bound(n: usize, memory: bool) -> Result<StoreBound> {
    // The same stores the nodes open: in memory with `--memory`, else durable on disk.
    let dir = tempfile::Builder::new()
        .prefix("rhizome-bench-store-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let store = if memory {
        Store::temporary()
    } else {
        Store::open_with(dir.path(), Durability::Sync)
    }
    .context("cannot open a store")?;
    let tag = load::fresh_tag();
    let mut in_append = Duration::ZERO;
    let cpu_start = cpu_now();
    for first in (0..n).step_by(FRAME_DELTAS) {
        let last = n.min(first + FRAME_DELTAS);
        let sent_us = load::now_micros();
        let entries = (first..last)
            .map(|i| {
                Ok(NewEntry {
                    delta: Delta::from_value(&load::delta(&tag, i, sent_us))
                        .map_err(|e| anyhow::anyhow!("a bench delta is invalid: {e}"))?,
                    origin: Some("bench-source".to_owned()),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // The receiver commits the sender's log position with the deltas it covers.
        let cursor = vec![(
            "link/bench/seq".to_owned(),
            (last as u64).to_be_bytes().to_vec(),
        )];
        let start = Instant::now();
        store
            .append(
                entries,
                SideWrites {
                    meta: cursor,
                    quarantine: Vec::new(),
                },
            )
            .and_then(|pending| pending.durable_blocking())
            .context("store append")?;
        in_append += start.elapsed();
    }
    store.close();
    // Closing waits for the writer; fjall's background flushes and compactions may still
    // run and are not counted (the nodes' figures count theirs).
    let cpu = cpu_now()
        .zip(cpu_start)
        .map(|((p1, t1), (p0, t0))| (p1 - p0) - (t1 - t0));
    Ok(StoreBound {
        rate: n as f64 / in_append.as_secs_f64(),
        cpu,
    })
}
