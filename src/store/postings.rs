//! Index postings: one index entry per term per group commit, not one per delta.
//!
//! A group commit of a thousand deltas by sixteen authors writes sixteen `by_author`
//! keys, not a thousand. Each entry is keyed `term_key(term, first_seq)` (or
//! `time_key(timestamp, first_seq)`), so entries of one term stay contiguous and ordered
//! by log position, and its value lists the term's other positions of that commit as
//! LEB128 varint gaps. An entry with an empty value is a posting of one position, which
//! is how stores written before postings read.
//!
//! Every write to an LSM tree is paid again by each flush and compaction, so fewer
//! keys is the cheapest write of all.

use std::hash::Hash;

use super::backend::{Batch, Keyspace, Slice};
use super::error::StoreError;
use super::keys;
use super::seq::Seq;

/// The positions each term gained in one group commit, in log order. Hashed with
/// foldhash, seeded per process: these maps live for one commit and are rebuilt for every
/// batch, on the writer's hot path, where SipHash showed in profiles.
pub(crate) struct Postings<T> {
    terms: foldhash::HashMap<T, Vec<Seq>>,
}

impl<T: Hash + Eq> Postings<T> {
    pub(crate) fn new() -> Postings<T> {
        Postings {
            terms: foldhash::HashMap::default(),
        }
    }

    /// Records that the delta at `seq` has `term`. Positions arrive in increasing
    /// order; a delta naming the same term twice is recorded once.
    pub(crate) fn add(&mut self, term: T, seq: Seq) {
        let seqs = self.terms.entry(term).or_default();
        if seqs.last() != Some(&seq) {
            seqs.push(seq);
        }
    }

    /// Writes one entry per term into `batch`, with `key(term, first_seq)` as its key.
    pub(crate) fn write<K: Into<Slice>>(
        self,
        batch: &mut Batch,
        index: &Keyspace,
        key: impl Fn(&T, Seq) -> K,
    ) {
        for (term, seqs) in self.terms {
            if let Some((&first, rest)) = seqs.split_first() {
                batch.insert(index, key(&term, first), encode_gaps(first, rest));
            }
        }
    }
}

pub(crate) fn encode_gaps(first: Seq, rest: &[Seq]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rest.len() * 2);
    let mut prev = first.0;
    for seq in rest {
        let mut gap = seq.0 - prev;
        prev = seq.0;
        loop {
            let byte = (gap & 0x7f) as u8;
            gap >>= 7;
            if gap == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    out
}

/// Every position `term` has in `index`, in log order (entries are keyed by their first
/// position, and each entry's positions are ascending and above the previous entry's).
///
/// # Errors
/// Storage errors, or [`StoreError::Corrupt`] for a damaged entry.
pub(crate) fn term_positions(index: &Keyspace, term: &str) -> Result<Vec<Seq>, StoreError> {
    let mut out = Vec::new();
    for guard in index.prefix(keys::term_prefix(term)) {
        let (k, v) = guard.into_inner()?;
        out.extend(positions(&k, &v)?);
    }
    Ok(out)
}

/// The positions an index entry holds: the one in its key, then those in its value.
///
/// # Errors
/// [`StoreError::Corrupt`] for a key without a position or a truncated value.
pub(crate) fn positions(key: &[u8], value: &[u8]) -> Result<Vec<Seq>, StoreError> {
    let first = keys::seq_of_index_key(key)?;
    let mut out = vec![first];
    let mut prev = first.0;
    let mut gap = 0u64;
    let mut shift = 0u32;
    for &byte in value {
        if shift > 63 {
            return Err(StoreError::Corrupt("index posting: varint too long".into()));
        }
        gap |= u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            prev = prev
                .checked_add(gap)
                .ok_or_else(|| StoreError::Corrupt("index posting: position overflow".into()))?;
            out.push(Seq(prev));
            gap = 0;
            shift = 0;
        }
    }
    if shift != 0 {
        return Err(StoreError::Corrupt(
            "index posting: truncated varint".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_roundtrip_through_the_key_and_value() {
        let seqs = [5u64, 6, 7, 200, 70_000, 1 << 40];
        let rest: Vec<Seq> = seqs[1..].iter().map(|&s| Seq(s)).collect();
        let value = encode_gaps(Seq(5), &rest);
        let key = keys::term_key("alice", Seq(5));
        let got: Vec<u64> = positions(&key, &value)
            .unwrap()
            .iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(got, seqs);
    }

    #[test]
    fn an_entry_written_before_postings_is_one_position() {
        let key = keys::term_key("alice", Seq(9));
        assert_eq!(positions(&key, &[]).unwrap(), vec![Seq(9)]);
    }

    #[test]
    fn a_truncated_posting_is_corrupt_not_a_panic() {
        let key = keys::term_key("alice", Seq(9));
        assert!(positions(&key, &[0x80]).is_err());
        assert!(positions(&key, &[0xff; 12]).is_err());
        assert!(positions(b"short", &[]).is_err());
    }

    #[test]
    fn a_term_named_twice_by_one_delta_is_one_position() {
        let mut p = Postings::new();
        p.add("x", Seq(1));
        p.add("x", Seq(1));
        p.add("x", Seq(3));
        assert_eq!(p.terms["x"], vec![Seq(1), Seq(3)]);
    }
}
