//! Taking archived deltas out of the live store: their log records and their index
//! postings, with the archive's counters, in one batch made durable before it returns.
//!
//! The id index keeps each archived id (pointing at its old, now empty, position), so
//! the writer's dedup still answers a delta sent again as a duplicate.
//!
//! IMPORTANT: this batch is committed beside the writer's, not through it. That is safe
//! because the two never write the same keys: the writer only adds keys at positions
//! past the head, and this only removes the records and rewrites the posting entries of
//! positions at or before it (a posting entry is keyed by its first position). Passes
//! are serialized by the archive lock, so no two rewrite one entry at once.

use std::collections::{BTreeSet, HashMap};

use fjall::PersistMode;

use crate::delta::Delta;
use crate::store::backend::{Batch, Keyspace};
use crate::store::error::StoreError;
use crate::store::seq::Seq;
use crate::store::{keys, postings, Store};

/// Removes `gone` (positions and their deltas, as stored) from the log and the indexes,
/// and writes `meta` in the same batch; durable when this returns.
///
/// # Errors
/// Storage errors; nothing is removed then.
pub(crate) fn remove(
    store: &Store,
    gone: &[(Seq, Delta)],
    meta: &[(String, Vec<u8>)],
) -> Result<(), StoreError> {
    let handles = store.handles()?;
    let ks = &handles.ks;
    let mut batch = handles.db.batch(gone.len() * 6 + meta.len());
    let mut by_author: HashMap<&str, BTreeSet<Seq>> = HashMap::new();
    let mut by_system: HashMap<&str, BTreeSet<Seq>> = HashMap::new();
    let mut by_target: HashMap<&str, BTreeSet<Seq>> = HashMap::new();
    let mut by_context: HashMap<&str, BTreeSet<Seq>> = HashMap::new();
    let mut negations: HashMap<&str, BTreeSet<Seq>> = HashMap::new();
    let mut by_time: HashMap<u64, BTreeSet<Seq>> = HashMap::new();
    for (seq, d) in gone {
        batch.remove(&ks.log, keys::seq_key(*seq).to_vec());
        by_author.entry(&d.author).or_default().insert(*seq);
        by_system.entry(&d.system).or_default().insert(*seq);
        by_time.entry(d.timestamp).or_default().insert(*seq);
        for r in d.references() {
            by_target.entry(&r.id).or_default().insert(*seq);
            if let Some(c) = &r.context {
                by_context.entry(c).or_default().insert(*seq);
            }
        }
        for negated in d.negated_ids() {
            negations.entry(negated).or_default().insert(*seq);
        }
    }
    let term_key = |term: &&str, seq| keys::term_key(term, seq);
    for (index, terms) in [
        (&ks.by_author, by_author),
        (&ks.by_system, by_system),
        (&ks.by_target, by_target),
        (&ks.by_context, by_context),
        (&ks.negations, negations),
    ] {
        for (term, seqs) in terms {
            unpost(&mut batch, index, &term, &seqs, term_key)?;
        }
    }
    for (ts, seqs) in by_time {
        unpost(&mut batch, &ks.by_time, &ts, &seqs, |ts: &u64, seq| {
            keys::time_key(*ts, seq).to_vec()
        })?;
    }
    for (k, v) in meta {
        batch.insert(&ks.meta, k.as_bytes(), v.as_slice());
    }
    batch.commit()?;
    handles.db.persist(PersistMode::SyncData)
}

/// Rewrites `term`'s posting entries in `index` without the positions in `seqs`: an
/// entry left empty is removed, one that lost its first position moves to the key of
/// its new first. Entries are keyed by their first position, so every entry holding one
/// of `seqs` has a key at or below the largest of them.
fn unpost<T>(
    batch: &mut Batch,
    index: &Keyspace,
    term: &T,
    seqs: &BTreeSet<Seq>,
    key: impl Fn(&T, Seq) -> Vec<u8>,
) -> Result<(), StoreError> {
    let Some(&last) = seqs.last() else {
        return Ok(());
    };
    for guard in index.range(key(term, Seq(0))..=key(term, last)) {
        let (k, v) = guard.into_inner()?;
        let positions = postings::positions(&k, &v)?;
        if !positions.iter().any(|p| seqs.contains(p)) {
            continue;
        }
        batch.remove(index, k.clone());
        let kept: Vec<Seq> = positions
            .into_iter()
            .filter(|p| !seqs.contains(p))
            .collect();
        if let Some((&first, rest)) = kept.split_first() {
            batch.insert(index, key(term, first), postings::encode_gaps(first, rest));
        }
    }
    Ok(())
}
