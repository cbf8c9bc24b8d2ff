//! The newest records of the log, in memory, for the log's tailers.
//!
//! A tailer that keeps up reads what was written moments ago; reading it back through
//! the backend (a range scan over the memtable, or over a table just flushed) costs a
//! live link real CPU (see BENCHMARKS.md, "The newest durable records stay in memory").
//! So the writer also hands each group's records here, the same reference-counted bytes
//! it gave the backend, after they are durable and before the head moves; a tailer whose
//! next position is still here reads them without touching the backend.
//!
//! This is a cache of the durable log, not a channel: it holds only what the log
//! holds, a reader that falls behind it reads the backend, and nothing is lost when it
//! drops its oldest records. It holds records only while some tailer is registered
//! ([`RecentLog::register`]): a node that only receives (a pull link's receiver syncing
//! millions of deltas) keeps none of them in memory.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::store::backend::Slice;
use crate::store::seq::Seq;

/// Records kept: a live group commit is a few thousand deltas (requests of 1000), and
/// senders read 1000 at a time.
pub(crate) const RECENT_RECORDS: usize = 4096;

pub(crate) struct RecentLog {
    /// Consecutive positions, oldest first.
    records: RwLock<VecDeque<(Seq, Slice)>>,
    capacity: usize,
    /// Live [`Registration`]s.
    tailers: AtomicUsize,
}

/// Keeps the newest records in memory while it lives (see [`RecentLog::register`]).
pub(crate) struct Registration(Arc<RecentLog>);

impl Drop for Registration {
    fn drop(&mut self) {
        self.0.tailers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RecentLog {
    pub(crate) fn new(capacity: usize) -> RecentLog {
        RecentLog {
            records: RwLock::new(VecDeque::new()),
            capacity,
            tailers: AtomicUsize::new(0),
        }
    }

    /// Someone will tail the log: keep the newest records from the next group on, until
    /// the registration drops. A group committed while a tailer registers may be missed;
    /// the tailer then reads those positions from the backend.
    pub(crate) fn register(self: &Arc<Self>) -> Registration {
        self.tailers.fetch_add(1, Ordering::Relaxed);
        Registration(self.clone())
    }

    /// Adds durable records, in log order, dropping the oldest beyond the capacity.
    pub(crate) fn extend(&self, new: Vec<(Seq, Slice)>) {
        if new.is_empty() {
            return;
        }
        // The lock guards plain pushes and pops, which cannot leave it half done.
        let mut records = self.records.write().unwrap_or_else(PoisonError::into_inner);
        if self.capacity == 0 || self.tailers.load(Ordering::Relaxed) == 0 {
            // Nobody reads them: hold nothing (and let go of what was held).
            if !records.is_empty() {
                *records = VecDeque::new();
            }
            return;
        }
        for (seq, record) in new {
            // Positions here are consecutive, so a position is found by subtraction;
            // anything else (it cannot happen: the writer numbers without gaps) starts over.
            if records.back().is_some_and(|(last, _)| last.0 + 1 != seq.0) {
                records.clear();
            }
            if records.len() == self.capacity {
                records.pop_front();
            }
            records.push_back((seq, record));
        }
    }

    /// The records after `after`, up to `through` and at most `limit` of them, when the
    /// first of them is still here; `None` sends the reader to the backend.
    pub(crate) fn read(&self, after: Seq, through: Seq, limit: usize) -> Option<Vec<(Seq, Slice)>> {
        let records = self.records.read().unwrap_or_else(PoisonError::into_inner);
        let first = records.front()?.0;
        let start = usize::try_from(after.0.checked_add(1)?.checked_sub(first.0)?).ok()?;
        if start >= records.len() {
            return None;
        }
        Some(
            records
                .range(start..)
                .take_while(|(seq, _)| *seq <= through)
                .take(limit)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(from: u64, to: u64) -> Vec<(Seq, Slice)> {
        (from..=to)
            .map(|n| (Seq(n), Slice::from(n.to_string().as_bytes())))
            .collect()
    }

    fn seqs(read: Option<Vec<(Seq, Slice)>>) -> Option<Vec<u64>> {
        read.map(|r| r.into_iter().map(|(s, _)| s.0).collect())
    }

    #[test]
    fn serves_what_it_holds_and_sends_the_rest_to_the_backend() {
        let recent = Arc::new(RecentLog::new(4));
        let _tailer = recent.register();
        assert_eq!(seqs(recent.read(Seq(0), Seq(9), 10)), None);
        recent.extend(records(1, 3));
        assert_eq!(seqs(recent.read(Seq(0), Seq(3), 10)), Some(vec![1, 2, 3]));
        assert_eq!(seqs(recent.read(Seq(1), Seq(2), 10)), Some(vec![2]));
        assert_eq!(seqs(recent.read(Seq(1), Seq(3), 1)), Some(vec![2]));
        // Past its newest record: nothing it can answer.
        assert_eq!(seqs(recent.read(Seq(3), Seq(9), 10)), None);
        // Full: the oldest go, and a reader that needs them goes to the backend.
        recent.extend(records(4, 6));
        assert_eq!(seqs(recent.read(Seq(0), Seq(6), 10)), None);
        assert_eq!(seqs(recent.read(Seq(1), Seq(6), 10)), None);
        assert_eq!(
            seqs(recent.read(Seq(2), Seq(6), 10)),
            Some(vec![3, 4, 5, 6])
        );
        // A gap (which the writer never makes) starts over rather than misnumber.
        recent.extend(records(9, 9));
        assert_eq!(seqs(recent.read(Seq(5), Seq(9), 10)), None);
        assert_eq!(seqs(recent.read(Seq(8), Seq(9), 10)), Some(vec![9]));
    }

    #[test]
    fn a_zero_capacity_keeps_nothing() {
        let recent = Arc::new(RecentLog::new(0));
        let _tailer = recent.register();
        recent.extend(records(1, 3));
        assert_eq!(seqs(recent.read(Seq(0), Seq(3), 10)), None);
    }

    #[test]
    fn records_are_kept_only_while_a_tailer_is_registered() {
        let recent = Arc::new(RecentLog::new(8));
        recent.extend(records(1, 2));
        assert_eq!(seqs(recent.read(Seq(0), Seq(2), 10)), None);
        let tailer = recent.register();
        recent.extend(records(3, 4));
        assert_eq!(seqs(recent.read(Seq(2), Seq(4), 10)), Some(vec![3, 4]));
        drop(tailer);
        recent.extend(records(5, 5));
        assert_eq!(seqs(recent.read(Seq(2), Seq(5), 10)), None);
        assert_eq!(seqs(recent.read(Seq(4), Seq(5), 10)), None);
    }
}
