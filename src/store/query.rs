//! Filter queries over the store's indexes.
//!
//! The planner picks one index to produce candidate positions (ids, then target ids,
//! authors, contexts, systems, then the time index), falls back to a log scan, and
//! re-checks every candidate against the whole filter, so an index only ever narrows.
//! [`QueryReader`] reads the answer a few records at a time; [`Store::query`] collects it.

use std::collections::{BTreeSet, HashMap};

use super::backend::{Keyspace, Slice};
use super::error::StoreError;
use super::record::{RawRecord, StoredDelta};
use super::seq::Seq;
use super::{keys, postings, Store};
use crate::delta::Delta;
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

impl Store {
    /// Deltas matching a query, in log order, using the most selective index available.
    ///
    /// # Errors
    /// Storage or corruption errors.
    pub fn query(&self, q: &Query) -> Result<Vec<StoredDelta>, StoreError> {
        run(self, q)
    }
}

fn run(store: &Store, q: &Query) -> Result<Vec<StoredDelta>, StoreError> {
    let mut out = Vec::new();
    let mut reader = QueryReader::new(store.clone(), q.clone())?;
    reader.read(|raw, delta| {
        out.push(StoredDelta {
            seq: raw.seq,
            origin: raw.origin().map(str::to_owned),
            delta,
        });
        true
    })?;
    Ok(out)
}

/// Why [`QueryReader::read`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStop {
    /// The caller asked to stop; the next `read` goes on after the last record it took.
    Paused,
    /// The query's `limit` is reached.
    Limit,
    /// Every match up to the head (as it was when the reader started) has been read.
    End,
}

/// A query read a few records at a time, in log order, for answers too large to hold
/// (a streamed HTTP answer). It keeps a cursor, not the database: each `read` takes
/// the store's handles for its own duration, so a reader paused by a slow client
/// never holds the database open (see `handles`). Matches are the durable ones up to
/// the head when the reader was made.
pub struct QueryReader {
    store: Store,
    filter: DeltaFilter,
    /// Positions from an index, or `None` to scan the log.
    candidates: Option<BTreeSet<Seq>>,
    /// The last position looked at.
    after: Seq,
    head: Seq,
    /// Matches still allowed by the query's limit.
    left: usize,
    done: bool,
}

impl QueryReader {
    /// Plans the query (which index gives the candidates).
    ///
    /// # Errors
    /// Storage or corruption errors.
    pub fn new(store: Store, q: Query) -> Result<QueryReader, StoreError> {
        let candidates = candidates(&store, &q.filter)?;
        let head = store.head();
        let left = q.limit.unwrap_or(usize::MAX);
        Ok(QueryReader {
            store,
            filter: q.filter,
            candidates,
            after: q.after,
            head,
            left,
            done: left == 0 || head <= q.after,
        })
    }

    /// Hands each matching record, as stored and decoded, to `take`, until `take`
    /// returns false (after taking that record), the limit is reached, or the matches
    /// end.
    ///
    /// # Errors
    /// Storage or corruption errors.
    pub fn read(
        &mut self,
        mut take: impl FnMut(&RawRecord, Delta) -> bool,
    ) -> Result<ReadStop, StoreError> {
        if self.done {
            return Ok(if self.left == 0 {
                ReadStop::Limit
            } else {
                ReadStop::End
            });
        }
        let handles = self.store.handles()?;
        let QueryReader {
            store,
            filter,
            candidates,
            after,
            head,
            left,
            done,
        } = self;
        let from = Seq(after.0 + 1);
        let mut visit = |seq: Seq, record: Slice| -> Result<Option<ReadStop>, StoreError> {
            *after = seq;
            let Some(raw) = RawRecord::read(seq, record, None)? else {
                return Ok(None);
            };
            let delta = Delta::parse(raw.json())
                .map_err(|e| StoreError::Corrupt(format!("delta at seq {seq}: {e}")))?;
            if !filter.matches(&delta)
                || (!filter.include_negated() && is_negated(store, &delta.id, 0)?)
            {
                return Ok(None);
            }
            *left -= 1;
            let go_on = take(&raw, delta);
            if *left == 0 {
                *done = true;
                return Ok(Some(ReadStop::Limit));
            }
            Ok((!go_on).then_some(ReadStop::Paused))
        };
        match candidates {
            Some(seqs) => {
                for seq in seqs.range(from..=*head) {
                    if let Some(record) = handles.ks.log.get(keys::seq_key(*seq))? {
                        if let Some(stop) = visit(*seq, record)? {
                            return Ok(stop);
                        }
                    }
                }
            }
            None => {
                for guard in handles
                    .ks
                    .log
                    .range(keys::seq_key(from)..=keys::seq_key(*head))
                {
                    let (k, v) = guard.into_inner()?;
                    if let Some(stop) = visit(keys::decode_seq(&k)?, v)? {
                        return Ok(stop);
                    }
                }
            }
        }
        self.done = true;
        Ok(ReadStop::End)
    }
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
