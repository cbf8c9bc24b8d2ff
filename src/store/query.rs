//! Filter queries over the store's indexes.
//!
//! The planner picks one index to produce candidate positions (ids, then target ids,
//! authors, contexts, systems, then the time index), falls back to a log scan, and
//! re-checks every candidate against the whole filter, so an index only ever narrows.

use std::collections::{BTreeSet, HashMap};

use super::backend::Keyspace;
use super::{keys, postings, Seq, Store, StoreError, StoredDelta};
use crate::filter::DeltaFilter;

/// A filter plus paging.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub filter: DeltaFilter,
    /// Only deltas stored after this log position (paging: pass the last seq you got).
    pub after: Seq,
    /// At most this many results; `None` means all.
    pub limit: Option<usize>,
}

/// How deep a chain of negations of negations is followed before giving up.
const MAX_NEGATION_DEPTH: usize = 64;

pub(super) fn run(store: &Store, q: &Query) -> Result<Vec<StoredDelta>, StoreError> {
    let limit = q.limit.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let accept = |d: StoredDelta, out: &mut Vec<StoredDelta>| -> Result<bool, StoreError> {
        if q.filter.matches(&d.delta)
            && (q.filter.include_negated() || !is_negated(store, &d.delta.id, 0)?)
        {
            out.push(d);
        }
        Ok(out.len() < limit)
    };
    match candidates(store, &q.filter)? {
        Some(seqs) => {
            // Only durable positions: the index may briefly hold a batch still being persisted.
            let head = store.head();
            if head <= q.after {
                return Ok(out);
            }
            for seq in seqs.range(Seq(q.after.0 + 1)..=head) {
                if let Some(d) = store.get_seq(*seq)? {
                    if !accept(d, &mut out)? {
                        break;
                    }
                }
            }
        }
        None => {
            let mut after = q.after;
            loop {
                let page = store.scan_after(after, 1024)?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                let mut more = true;
                for d in page {
                    more = accept(d, &mut out)?;
                    if !more {
                        break;
                    }
                }
                if !more {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// Candidate positions from the most selective index the filter allows; `None` = scan the log.
fn candidates(store: &Store, f: &DeltaFilter) -> Result<Option<BTreeSet<Seq>>, StoreError> {
    let handles = store.handles()?;
    let ks = &handles.ks;
    if let Some(ids) = &f.ids {
        let mut set = BTreeSet::new();
        for id in ids {
            if let Some(seq) = store.seq_of(id)? {
                set.insert(seq);
            }
        }
        return Ok(Some(set));
    }
    let term_index: [(&Option<Vec<String>>, &Keyspace); 4] = [
        (&f.target_ids, &ks.by_target),
        (&f.authors, &ks.by_author),
        (&f.target_contexts, &ks.by_context),
        (&f.systems, &ks.by_system),
    ];
    for (terms, index) in term_index {
        if let Some(terms) = terms {
            let mut set = BTreeSet::new();
            for term in terms {
                set.extend(postings::term_positions(index, term)?);
            }
            return Ok(Some(set));
        }
    }
    if let Some(range) = &f.timestamp_range {
        let start = keys::time_key(range.start.unwrap_or(0), Seq(0));
        let end = keys::time_key(range.end.unwrap_or(u64::MAX), Seq(u64::MAX));
        let mut set = BTreeSet::new();
        for guard in ks.by_time.range(start..=end) {
            let (k, v) = guard.into_inner()?;
            set.extend(postings::positions(&k, &v)?);
        }
        return Ok(Some(set));
    }
    Ok(None)
}

/// A delta is negated when some negation of it is stored and is not itself negated.
///
/// Negations can form cycles (two deltas negating each other) and wide lattices; the
/// answer is bounded by depth and memoised per (delta, depth), so it is the same pure
/// function of the stored set as a plain recursion, in polynomial time.
pub(super) fn is_negated(store: &Store, id: &str, depth: usize) -> Result<bool, StoreError> {
    is_negated_memo(store, id, depth, &mut HashMap::new())
}

fn is_negated_memo(
    store: &Store,
    id: &str,
    depth: usize,
    memo: &mut HashMap<(String, usize), bool>,
) -> Result<bool, StoreError> {
    if depth >= MAX_NEGATION_DEPTH {
        return Ok(false);
    }
    if let Some(known) = memo.get(&(id.to_owned(), depth)) {
        return Ok(*known);
    }
    let mut negated = false;
    for seq in postings::term_positions(&store.handles()?.ks.negations, id)? {
        if let Some(negation) = store.get_seq(seq)? {
            if !is_negated_memo(store, &negation.delta.id, depth + 1, memo)? {
                negated = true;
                break;
            }
        }
    }
    memo.insert((id.to_owned(), depth), negated);
    Ok(negated)
}
