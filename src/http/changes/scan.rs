//! One feed's read of the log: the next matching change after its cursor, and the last
//! position it examined, matching or not.
//!
//! The reads go through a [`LogTail`], the same tail the links use: the feed owns its
//! cursor, so a slow client holds back only itself, and the next batch is read only when
//! the previous one was taken. A batch holds at most [`BATCH`] positions and 8 MiB of
//! records (see `store::tail`); what matched in it waits here until written.
//!
//! `examined` is what makes resuming exact: it moves past a change only when that change
//! was handed out, and past the positions that did not match only once nothing before
//! them is left to hand out.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;

use crate::filter::DeltaFilter;
use crate::store::{LogTail, RawRecord, Seq, Store, StoreError};

/// Positions read at a time.
pub(super) const BATCH: usize = 1000;

/// What one [`Scan::step`] found.
#[derive(Debug)]
pub(super) enum Step {
    /// A matching change, now examined.
    Change(RawRecord),
    /// Positions read and examined, none of them matching.
    Examined,
    /// Nothing after the cursor for now (or the store has closed).
    CaughtUp,
}

pub(super) struct Scan {
    store: Store,
    tail: LogTail,
    head: watch::Receiver<Seq>,
    /// `None` when every delta matches: nothing needs parsing then.
    filter: Option<Arc<DeltaFilter>>,
    /// Matches read but not handed out yet, in log order.
    matches: VecDeque<RawRecord>,
    /// The last position of the batch `matches` came from.
    batch_through: Seq,
    examined: Seq,
}

impl Scan {
    /// A scan of the positions after `after`, keeping the deltas `filter` matches.
    pub fn new(store: Store, after: Seq, filter: DeltaFilter) -> Scan {
        Scan {
            tail: LogTail::new(store.clone(), after),
            head: store.watch_head(),
            store,
            filter: (!filter.is_empty()).then(|| Arc::new(filter)),
            matches: VecDeque::new(),
            batch_through: after,
            examined: after,
        }
    }

    /// The last position examined: a client resuming after it neither misses nor sees
    /// again a change.
    pub fn examined(&self) -> Seq {
        self.examined
    }

    /// Positions in the log after the last one examined.
    pub fn pending(&self) -> u64 {
        self.store.head().0.saturating_sub(self.examined.0)
    }

    /// The next step, without waiting for the log to grow. `want` is how many more
    /// changes the caller takes: an unfiltered scan reads no more positions than that.
    ///
    /// # Errors
    /// Storage errors, or a stored delta that does not parse.
    pub async fn step(&mut self, want: usize) -> Result<Step, StoreError> {
        loop {
            if let Some(change) = self.matches.pop_front() {
                self.examined = match self.matches.front() {
                    Some(_) => change.seq,
                    None => self.batch_through,
                };
                return Ok(Step::Change(change));
            }
            if self.store.head() <= self.tail.cursor() {
                return Ok(Step::CaughtUp);
            }
            let positions = match self.filter {
                Some(_) => BATCH,
                None => want.clamp(1, BATCH),
            };
            // The head is past the cursor, so this reads at once rather than waits.
            let Some(batch) = self.tail.next(positions, None).await? else {
                return Ok(Step::CaughtUp);
            };
            self.batch_through = batch.through;
            let matches = match &self.filter {
                None => batch.records,
                Some(filter) => {
                    let filter = filter.clone();
                    let records = batch.records;
                    // Parsing a batch is up to 8 MiB of JSON: off the async workers.
                    tokio::task::spawn_blocking(move || select(records, &filter))
                        .await
                        .map_err(|e| StoreError::Corrupt(format!("feed task failed: {e}")))??
                }
            };
            if matches.is_empty() {
                self.examined = batch.through;
                return Ok(Step::Examined);
            }
            self.matches = matches.into();
        }
    }

    /// Waits until there is something after the cursor; `false` once the store has
    /// closed. Cancel-safe: it reads nothing, so a caller may race it with a timer.
    pub async fn wait(&mut self) -> bool {
        if !self.matches.is_empty() {
            return true;
        }
        let cursor = self.tail.cursor();
        self.head.wait_for(|head| *head > cursor).await.is_ok()
    }
}

/// The records whose delta `filter` matches.
fn select(records: Vec<RawRecord>, filter: &DeltaFilter) -> Result<Vec<RawRecord>, StoreError> {
    let mut kept = Vec::new();
    for record in records {
        if filter.matches(&record.delta()?.delta) {
            kept.push(record);
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::{Pointer, Target};
    use crate::node::Node;

    async fn node_with(authors: &[&str]) -> Node {
        let node = Node::in_memory("scan-test").await.expect("node");
        for (i, author) in authors.iter().enumerate() {
            node.create_delta(
                author,
                vec![Pointer::new("about", Target::reference(format!("t{i}")))],
            )
            .await
            .expect("delta");
        }
        node
    }

    async fn drain(scan: &mut Scan, want: usize) -> Vec<(u64, Seq)> {
        let mut out = Vec::new();
        loop {
            match scan.step(want).await.expect("step") {
                Step::Change(r) => out.push((r.seq.0, scan.examined())),
                Step::Examined => {}
                Step::CaughtUp => return out,
            }
        }
    }

    #[tokio::test]
    async fn examined_moves_past_filtered_positions_only_after_the_last_match() {
        let node = node_with(&["bob", "alice", "bob", "alice", "bob"]).await;
        let filter = DeltaFilter {
            authors: Some(vec!["alice".into()]),
            ..Default::default()
        };
        let mut scan = Scan::new(node.store().clone(), Seq(0), filter);
        // Alice's first change is at 2: handing it out examines up to 2 only, since 4
        // is still waiting; the last one examines the whole batch.
        assert_eq!(drain(&mut scan, 10).await, vec![(2, Seq(2)), (4, Seq(5))]);
        assert_eq!(scan.examined(), Seq(5));
        assert_eq!(scan.pending(), 0);
    }

    #[tokio::test]
    async fn a_scan_with_no_match_still_examines_everything() {
        let node = node_with(&["bob", "bob", "bob"]).await;
        let filter = DeltaFilter {
            authors: Some(vec!["carol".into()]),
            ..Default::default()
        };
        let mut scan = Scan::new(node.store().clone(), Seq(1), filter);
        assert!(drain(&mut scan, 10).await.is_empty());
        assert_eq!(scan.examined(), Seq(3));
    }

    #[tokio::test]
    async fn an_unfiltered_scan_reads_no_more_than_it_is_asked_for() {
        let node = node_with(&["a", "b", "c", "d"]).await;
        let mut scan = Scan::new(node.store().clone(), Seq(0), DeltaFilter::default());
        let Step::Change(first) = scan.step(1).await.expect("step") else {
            panic!("a change")
        };
        assert_eq!(
            (first.seq, scan.examined(), scan.pending()),
            (Seq(1), Seq(1), 3)
        );
        assert_eq!(drain(&mut scan, 2).await.len(), 3);
    }
}
