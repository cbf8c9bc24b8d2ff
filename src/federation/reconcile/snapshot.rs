//! What a node reconciles: one [`Item`] per delta of its live log up to a position,
//! sorted by (timestamp, hash), 32 bytes each, so a million deltas take 32 MB. Deltas
//! archived out of the log are not in it.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;

use super::bound::Bound;
use super::item::Item;
use crate::store::{ReadLimit, Seq, Store, StoreError};

/// The items of a log up to a position, sorted, without duplicates.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    items: Vec<Item>,
    /// The last log position the snapshot covers.
    pub through: Seq,
}

/// Positions read at a time: a bounded read also stops at 8 MiB of records.
const PAGE: usize = 1000;

/// The two fields of a delta reconciliation reads; the rest of the record is skipped.
#[derive(Deserialize)]
struct Key<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    timestamp: u64,
}

impl Snapshot {
    /// The items of every delta in `store`'s log at positions up to `through` (or up to
    /// the head, when `through` is past it). Blocks on the store: async callers run it
    /// in `spawn_blocking`. Memory: 32 bytes per delta, plus one page of records.
    ///
    /// # Errors
    /// Storage errors, and [`StoreError::Corrupt`] for a record without a string `id`
    /// and an integer `timestamp`.
    pub(crate) fn read(store: &Store, through: Seq) -> Result<Snapshot, StoreError> {
        Snapshot::read_in_pages(store, through, PAGE)
    }

    fn read_in_pages(store: &Store, through: Seq, page: usize) -> Result<Snapshot, StoreError> {
        let through = through.min(store.head());
        let mut items = Vec::new();
        let mut after = Seq(0);
        while after < through {
            let want = usize::try_from(through.0 - after.0).unwrap_or(usize::MAX);
            let batch = store.read_log(after, ReadLimit::Batch(want.min(page)), None)?;
            // Archived positions leave gaps, so a read may run past `through`.
            for record in batch.records.iter().filter(|r| r.seq <= through) {
                let key: Key = serde_json::from_str(record.json()).map_err(|e| {
                    StoreError::Corrupt(format!("delta at seq {}: {e}", record.seq))
                })?;
                items.push(Item::of(&key.id, key.timestamp, record.seq));
            }
            if batch.through <= after {
                break;
            }
            after = batch.through;
        }
        Ok(Snapshot::from_items(items, through))
    }

    /// A snapshot of these items (sorted here, duplicates dropped).
    pub(crate) fn from_items(mut items: Vec<Item>, through: Seq) -> Snapshot {
        items.sort_unstable();
        items.dedup_by_key(|i| (i.timestamp, i.hash));
        Snapshot { items, through }
    }

    /// The items, in order.
    pub(crate) fn items(&self) -> &[Item] {
        &self.items
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The indexes of the items at or past `lower` and before `upper`.
    pub(crate) fn span(&self, lower: Bound, upper: Bound) -> Range<usize> {
        let at = |bound: Bound| self.items.partition_point(|i| Bound::of(i) < bound);
        let start = at(lower);
        start..at(upper).max(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::{new_delta, Pointer};

    /// Appends deltas with these timestamps (in batches of 40); returns (id, timestamp)
    /// by position.
    fn append(store: &Store, timestamps: &[u64]) -> Vec<(String, u64)> {
        let mut stored = Vec::new();
        for chunk in timestamps.chunks(40) {
            let deltas = chunk
                .iter()
                .map(|&t| {
                    let mut delta =
                        new_delta("alice", "sys-a", vec![Pointer::new("n", 1i64.into())]);
                    delta.timestamp = t;
                    stored.push((delta.id.clone(), t));
                    delta
                })
                .collect();
            store.append_local_blocking(deltas);
        }
        stored
    }

    #[test]
    fn a_snapshot_holds_the_log_up_to_its_position_in_order() {
        let store = Store::temporary().unwrap();
        // Timestamps out of log order, many of them equal (ties go by hash).
        let timestamps: Vec<u64> = (0..300u64).map(|i| 1_000 + (i * 7919) % 50).collect();
        let stored = append(&store, &timestamps);

        for page in [7, PAGE] {
            let snap = Snapshot::read_in_pages(&store, Seq(250), page).unwrap();
            assert_eq!(snap.through, Seq(250));
            assert_eq!(snap.len(), 250);
            let mut expected: Vec<Item> = stored[..250]
                .iter()
                .enumerate()
                .map(|(i, (id, t))| Item::of(id, *t, Seq(i as u64 + 1)))
                .collect();
            expected.sort_by_key(|i| (i.timestamp, i.hash));
            assert_eq!(snap.items(), expected.as_slice());
            assert!(snap.items().windows(2).all(|w| w[0] < w[1]));
        }

        // Past the head: the whole log, and the position it reached.
        let all = Snapshot::read(&store, Seq(10_000)).unwrap();
        assert_eq!(all.through, Seq(300));
        assert_eq!(all.len(), 300);
        assert!(all.items().iter().all(|i| i.seq.0 >= 1 && i.seq.0 <= 300));

        let none = Snapshot::read(&store, Seq(0)).unwrap();
        assert!(none.is_empty());
        assert_eq!(none.through, Seq(0));
    }

    #[test]
    fn a_span_takes_the_items_between_two_bounds() {
        let items: Vec<Item> = (0..10u64)
            .map(|i| Item::of(&format!("d{i}"), 100 + i / 2, Seq(i + 1)))
            .collect();
        let snap = Snapshot::from_items(items, Seq(10));
        let at = |t: u64| Bound::At {
            timestamp: t,
            hash: 0,
        };
        assert_eq!(snap.span(Bound::LOWEST, Bound::Infinity), 0..10);
        assert_eq!(snap.span(at(101), at(103)), 2..6);
        assert_eq!(snap.span(at(104), Bound::Infinity), 8..10);
        assert_eq!(snap.span(at(200), Bound::Infinity), 10..10);
        let third = Bound::of(&snap.items()[3]);
        assert_eq!(snap.span(third, Bound::Infinity), 3..10);
    }
}
