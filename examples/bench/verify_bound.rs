//! The verification bound: how many ed25519 signatures per second the crate alone
//! (`ed25519-dalek`) checks on this machine's cores, measured in the bench's own process
//! with no node running. A receiver of signed deltas cannot sync them faster than it can
//! verify them, so signed sync is set against this figure.
//!
//! The deltas are the bench's signed deltas ([`Signers::signed_deltas`]); their signing
//! bytes, keys and signatures are taken apart before the clock starts, so the figures are
//! the crate's work alone. Work is handed out in batches to one thread per core
//! (`std::thread::scope`), each taking the next batch until none is left. A batch is what
//! a receiving node checks at once: it splits each `sync_batch` frame of
//! [`FRAME_DELTAS`] across its cores and checks each part as one ed25519 batch
//! (`src/node/verify.rs`), so a batch here is `FRAME_DELTAS / cores` signatures:
//!
//! - **batch**: `ed25519_dalek::verify_batch` over each batch: the bound.
//! - **single**: `VerifyingKey::verify_strict` on each delta, one at a time.
//! - **rhizome**: `rhizome::delta::verify_all` over each batch of parsed deltas: what the
//!   node's own check adds to the crate's (canonical signing bytes, base64, key decoding).
//!
//! Each figure is the median of [`ROUNDS`] passes over all the deltas, in wall-clock
//! verifications per second, with the process's CPU seconds per pass beside it (steadier
//! than wall time when other work shares the cores).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use rhizome::delta::{Signed, SIGNATURE_FIELD};
use rhizome::Delta;

use crate::bounds::FRAME_DELTAS;
use crate::node::cpu_secs_of;
use crate::signing::Signers;
use crate::stats::median;

/// Signed deltas the bound verifies, each pass.
pub const VERIFY_DELTAS: usize = 32_000;
/// Passes over the deltas per figure.
const ROUNDS: usize = 3;

/// One figure: verifications per second (wall clock), and CPU seconds per verification.
#[derive(Clone, Copy)]
pub struct Figure {
    pub rate: f64,
    pub cpu_per_verification: Option<f64>,
}

impl Figure {
    /// Verifications per CPU-second: what one core would do alone.
    pub fn per_core(&self) -> Option<f64> {
        self.cpu_per_verification.map(|c| 1.0 / c)
    }
}

pub struct VerifyBound {
    pub threads: usize,
    /// Signatures per ed25519 batch.
    pub batch_size: usize,
    pub deltas: usize,
    pub batch: Figure,
    pub single: Figure,
    pub rhizome: Figure,
}

/// A signature taken apart.
struct Parts {
    message: Vec<u8>,
    sig: Signature,
    key: VerifyingKey,
}

fn parts(delta: &Delta) -> Result<Parts> {
    let field = &delta.extra[SIGNATURE_FIELD];
    let sig: [u8; 64] = field["sig"]
        .as_str()
        .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("delta {} has no 64-byte signature", delta.id))?;
    Ok(Parts {
        message: delta
            .signing_bytes()
            .map_err(|e| anyhow::anyhow!("delta {} has no signing bytes: {e}", delta.id))?,
        sig: Signature::from_bytes(&sig),
        key: delta
            .claimed_signer()
            .with_context(|| format!("delta {} names no key", delta.id))?,
    })
}

/// Runs `work` on every batch of `len` items, batches handed out to `threads` threads;
/// the median rate and mean CPU per item over the rounds.
fn measure(
    len: usize,
    threads: usize,
    batch: usize,
    work: &(dyn Fn(std::ops::Range<usize>) -> Result<()> + Sync),
) -> Result<Figure> {
    let (mut rates, mut cpu) = (Vec::new(), Some(0.0));
    for _ in 0..ROUNDS {
        let next = AtomicUsize::new(0);
        let cpu_start = cpu_secs_of("self");
        let start = Instant::now();
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| loop {
                        let first = next.fetch_add(batch, Ordering::Relaxed);
                        if first >= len {
                            return Ok(());
                        }
                        work(first..len.min(first + batch))?;
                    })
                })
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().unwrap_or_else(|_| bail!("a verifier panicked")))
        })?;
        rates.push(len as f64 / start.elapsed().as_secs_f64());
        let used = cpu_secs_of("self").zip(cpu_start).map(|(b, a)| b - a);
        cpu = cpu.zip(used).map(|(t, u)| t + u);
    }
    Ok(Figure {
        rate: median(rates),
        cpu_per_verification: cpu.map(|c| c / (ROUNDS * len) as f64),
    })
}

/// Measures the three figures over `count` signed deltas. Blocking: call it off the runtime.
pub fn verify_bound(signers: &Signers, count: usize) -> Result<VerifyBound> {
    let threads = std::thread::available_parallelism().map_or(1, |c| c.get());
    let batch_size = FRAME_DELTAS.div_ceil(threads);
    let deltas = signers.signed_deltas(count)?;
    let parts: Vec<Parts> = deltas.iter().map(parts).collect::<Result<_>>()?;
    let batch = measure(parts.len(), threads, batch_size, &|range| {
        let chunk = &parts[range];
        let messages: Vec<&[u8]> = chunk.iter().map(|p| p.message.as_slice()).collect();
        let sigs: Vec<Signature> = chunk.iter().map(|p| p.sig).collect();
        let keys: Vec<VerifyingKey> = chunk.iter().map(|p| p.key).collect();
        ed25519_dalek::verify_batch(&messages, &sigs, &keys)
            .map_err(|e| anyhow::anyhow!("a batch of valid signatures failed: {e}"))
    })?;
    let single = measure(parts.len(), threads, batch_size, &|range| {
        for p in &parts[range] {
            p.key
                .verify_strict(&p.message, &p.sig)
                .map_err(|e| anyhow::anyhow!("a valid signature failed: {e}"))?;
        }
        Ok(())
    })?;
    let rhizome = measure(deltas.len(), threads, batch_size, &|range| {
        let answers = rhizome::delta::verify_all(&deltas[range]);
        ensure!(
            answers.iter().all(|s| matches!(s, Signed::By(_))),
            "verify_all refused a valid signature"
        );
        Ok(())
    })?;
    Ok(VerifyBound {
        threads,
        batch_size,
        deltas: count,
        batch,
        single,
        rhizome,
    })
}
