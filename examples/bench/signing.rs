//! Signed bench deltas (`--signing`): making them, and checking that a receiver stored them
//! with their signatures intact.
//!
//! A signed delta is the bench's usual delta ([`crate::load::write_delta`]) signed with
//! [`Delta::sign`] by one of [`SIGNING_KEYS`] keys, each key the key of the authors whose
//! index falls on it: one author signs many deltas, as in practice. The deltas are signed
//! by the bench while it fills the source node, so signing is never part of a timed sync.
//!
//! A signed run only counts if the receiver really verified and holds signed deltas: its
//! `/status` must count at least N verified signatures and no refusal ([`check_counted`]),
//! and [`check_stored`] reads a sample back from it and verifies every one (a receiver
//! that dropped or mangled signatures fails the run). An unsigned run must show no
//! verification and hold no signature.

use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use ed25519_dalek::VerifyingKey;
use rhizome::delta::Signed;
use rhizome::identity::NodeKey;
use rhizome::Delta;
use serde_json::{json, Value};

use crate::load;
use crate::node::{get_json, post_json, NodeProc};

/// Keys the signed deltas are signed with; author `author-k` signs with key `k % SIGNING_KEYS`.
pub const SIGNING_KEYS: usize = 4;
/// One delta in this many (and the last) is read back from a receiver and verified.
const CHECK_EVERY: usize = 1000;

/// Whether a run's deltas are signed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, clap::ValueEnum)]
pub enum Signing {
    Unsigned,
    Signed,
}

impl Signing {
    pub fn name(self) -> &'static str {
        match self {
            Signing::Unsigned => "unsigned",
            Signing::Signed => "signed",
        }
    }
}

/// The authors' signing keys, made once per bench run.
pub struct Signers {
    keys: Vec<NodeKey>,
}

impl Signers {
    pub fn new() -> Result<Arc<Signers>> {
        let keys = (0..SIGNING_KEYS)
            .map(|_| NodeKey::generate().context("cannot make a signing key"))
            .collect::<Result<_>>()?;
        Ok(Arc::new(Signers { keys }))
    }

    fn key_of(&self, i: usize) -> &NodeKey {
        &self.keys[(i % load::AUTHORS) % self.keys.len()]
    }

    fn verifying_keys(&self) -> Vec<VerifyingKey> {
        self.keys.iter().map(NodeKey::verifying_key).collect()
    }

    /// Delta `i` of `tag` ([`load::write_delta`]), signed by its author's key, as JSON onto
    /// `out`.
    pub fn write_signed(&self, out: &mut String, tag: &str, i: usize, sent_us: u64) -> Result<()> {
        let mut text = String::new();
        load::write_delta(&mut text, tag, i, sent_us);
        let mut delta =
            Delta::parse(&text).map_err(|e| anyhow::anyhow!("a bench delta is invalid: {e}"))?;
        delta
            .sign(self.key_of(i))
            .map_err(|e| anyhow::anyhow!("cannot sign a bench delta: {e}"))?;
        out.push_str(&delta.to_json());
        Ok(())
    }

    /// `count` signed deltas as a receiver gets them (each parsed back from its JSON), for
    /// the verification bound.
    pub fn signed_deltas(&self, count: usize) -> Result<Vec<Delta>> {
        let tag = load::fresh_tag();
        let sent_us = load::now_micros();
        (0..count)
            .map(|i| {
                let mut text = String::new();
                self.write_signed(&mut text, &tag, i, sent_us)?;
                Delta::parse(&text).map_err(|e| anyhow::anyhow!("a signed delta is invalid: {e}"))
            })
            .collect()
    }
}

/// Fails unless `node`'s `GET /status` counts what a sync of `n` deltas of `signing` must
/// have made it do: at least `n` signatures verified (signed) or none (unsigned), and no
/// delta refused by the signature rules. Returns the count of verified signatures.
pub async fn check_counted(
    client: &reqwest::Client,
    node: &NodeProc,
    n: usize,
    signing: Signing,
) -> Result<u64> {
    let status = get_json(client, node, "/status").await?;
    let count = |field: &str| {
        status["signatures"][field]
            .as_u64()
            .with_context(|| format!("node {}: /status has no signatures.{field}", node.name))
    };
    let (verified, refused) = (count("verified")?, count("refused")?);
    let expected = match signing {
        Signing::Unsigned => verified == 0,
        Signing::Signed => verified >= n as u64,
    };
    ensure!(
        expected && refused == 0,
        "node {} verified {verified} signatures and refused {refused} deltas in a sync of {n} \
         {} deltas",
        node.name,
        signing.name()
    );
    Ok(verified)
}

/// Fails unless `node` holds deltas `0..n` of `tag` as `signing` says: a sample of them
/// (one in [`CHECK_EVERY`] and the last) read back with `POST /query`, each one signed by
/// the key of its author and verifying (signed), or carrying no signature (unsigned).
/// Returns how many were checked.
pub async fn check_stored(
    client: &reqwest::Client,
    node: &NodeProc,
    tag: &str,
    n: usize,
    signing: Signing,
    signers: &Signers,
) -> Result<usize> {
    let sample: Vec<usize> = (0..n)
        .filter(|&i| i % CHECK_EVERY == 0 || i + 1 == n)
        .collect();
    let keys = signers.verifying_keys();
    let mut checked = 0;
    for chunk in sample.chunks(256) {
        let ids: Vec<String> = chunk.iter().map(|i| format!("{tag}-{i}")).collect();
        let answer = post_json(
            client,
            node,
            "/query",
            &json!({"filter": {"ids": ids}, "limit": chunk.len()}),
        )
        .await?;
        let deltas = answer["deltas"].as_array().map_or(&[][..], Vec::as_slice);
        ensure!(
            deltas.len() == chunk.len(),
            "node {} returned {} of the {} sampled deltas {}..",
            node.name,
            deltas.len(),
            chunk.len(),
            ids[0]
        );
        for value in deltas {
            check_one(value, signing, &keys, &node.name)?;
            checked += 1;
        }
    }
    Ok(checked)
}

fn check_one(value: &Value, signing: Signing, keys: &[VerifyingKey], node: &str) -> Result<()> {
    let delta = Delta::from_value(value)
        .map_err(|e| anyhow::anyhow!("node {node} returned an invalid delta: {e}: {value}"))?;
    let i: usize = delta
        .id
        .rsplit('-')
        .next()
        .and_then(|i| i.parse().ok())
        .with_context(|| format!("node {node} returned a delta not of this run: {value}"))?;
    match (signing, delta.verify()) {
        (Signing::Unsigned, Signed::Unsigned) => Ok(()),
        (Signing::Signed, Signed::By(key)) if key == keys[(i % load::AUTHORS) % keys.len()] => {
            Ok(())
        }
        (_, found) => anyhow::bail!(
            "node {node} holds delta {} as {found:?}, not {} by its author's key",
            delta.id,
            signing.name()
        ),
    }
}
