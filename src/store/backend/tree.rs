//! One in-memory keyspace: an ordered map, or a plain vector while its keys are
//! consecutive 8-byte big-endian integers, as the log's sequence numbers are.
//!
//! The log is most of what a node writes; appending to a vector costs a push where a
//! B-tree pays a descent of key comparisons and node splits per delta. A keyspace
//! starts dense and turns into a B-tree, for good, at the first write that breaks the
//! pattern (any other key shape, a gap, a removal before the end), so any sequence of
//! writes reads back exactly as from a B-tree.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::Slice;

pub(crate) enum Tree {
    /// Keys `first`, `first + 1`, ... (as 8-byte big-endian) with these values.
    Dense {
        first: u64,
        values: Vec<Slice>,
    },
    Ordered(BTreeMap<Slice, Slice>),
}

impl Default for Tree {
    fn default() -> Tree {
        Tree::Dense {
            first: 0,
            values: Vec::new(),
        }
    }
}

fn as_int(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

fn key_of(n: u64) -> Slice {
    Slice::from(n.to_be_bytes())
}

impl Tree {
    /// The position of `key` in a dense tree, if it holds it.
    fn dense_index(first: u64, len: usize, key: &[u8]) -> Option<usize> {
        let i = usize::try_from(as_int(key)?.checked_sub(first)?).ok()?;
        (i < len).then_some(i)
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Slice> {
        match self {
            Tree::Dense { first, values } => {
                Tree::dense_index(*first, values.len(), key).map(|i| values[i].clone())
            }
            Tree::Ordered(map) => map.get(key).cloned(),
        }
    }

    pub(crate) fn contains_key(&self, key: &[u8]) -> bool {
        match self {
            Tree::Dense { first, values } => Tree::dense_index(*first, values.len(), key).is_some(),
            Tree::Ordered(map) => map.contains_key(key),
        }
    }

    pub(crate) fn first_key(&self) -> Option<Slice> {
        match self {
            Tree::Dense { first, values } => (!values.is_empty()).then(|| key_of(*first)),
            Tree::Ordered(map) => map.first_key_value().map(|(k, _)| k.clone()),
        }
    }

    pub(crate) fn last_key(&self) -> Option<Slice> {
        match self {
            Tree::Dense { first, values } => {
                let last = values.len().checked_sub(1)?;
                Some(key_of(*first + last as u64))
            }
            Tree::Ordered(map) => map.last_key_value().map(|(k, _)| k.clone()),
        }
    }

    pub(crate) fn insert(&mut self, key: Slice, value: Slice) {
        if let Tree::Dense { first, values } = self {
            match as_int(&key) {
                Some(n) if values.is_empty() => {
                    *first = n;
                    values.push(value);
                    return;
                }
                Some(n) if Some(n) == first.checked_add(values.len() as u64) => {
                    values.push(value);
                    return;
                }
                _ => {
                    if let Some(i) = Tree::dense_index(*first, values.len(), &key) {
                        values[i] = value;
                        return;
                    }
                }
            }
        }
        self.make_ordered();
        if let Tree::Ordered(map) = self {
            map.insert(key, value);
        }
    }

    pub(crate) fn remove(&mut self, key: &[u8]) {
        if let Tree::Dense { first, values } = self {
            match Tree::dense_index(*first, values.len(), key) {
                None => return,
                Some(i) if i + 1 == values.len() => {
                    values.pop();
                    return;
                }
                Some(_) => {}
            }
        }
        self.make_ordered();
        if let Tree::Ordered(map) = self {
            map.remove(key);
        }
    }

    /// Turns a dense tree into the B-tree of the same entries.
    fn make_ordered(&mut self) {
        if let Tree::Dense { first, values } = self {
            let first = *first;
            let map = std::mem::take(values)
                .into_iter()
                .zip(first..)
                .map(|(v, n)| (key_of(n), v))
                .collect();
            *self = Tree::Ordered(map);
        }
    }

    /// Up to `limit` entries within the bounds, in key order. The caller has checked
    /// that the bounds are not inverted (`BTreeMap::range` panics on those).
    pub(crate) fn chunk(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        limit: usize,
    ) -> Vec<(Slice, Slice)> {
        match self {
            Tree::Dense { first, values } => {
                // Positions are in key order, so each bound is a partition point.
                let key = |i: usize| (*first + i as u64).to_be_bytes();
                let start = partition_point(values.len(), |i| match lower {
                    Bound::Included(b) => key(i).as_slice() < b,
                    Bound::Excluded(b) => key(i).as_slice() <= b,
                    Bound::Unbounded => false,
                });
                let end = partition_point(values.len(), |i| match upper {
                    Bound::Included(b) => key(i).as_slice() <= b,
                    Bound::Excluded(b) => key(i).as_slice() < b,
                    Bound::Unbounded => true,
                });
                (start..end.max(start))
                    .take(limit)
                    .map(|i| (key_of(*first + i as u64), values[i].clone()))
                    .collect()
            }
            Tree::Ordered(map) => map
                .range::<[u8], _>((lower, upper))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// The first position in `0..len` where `pred` is false (`pred` true then false).
fn partition_point(len: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(t: &Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
        t.chunk(Bound::Unbounded, Bound::Unbounded, usize::MAX)
            .into_iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    /// Every write, in a dense tree and in a B-tree, reads back the same.
    #[test]
    fn a_dense_tree_reads_as_a_btree_through_every_kind_of_write() {
        let n = |i: u64| Slice::from(i.to_be_bytes());
        let v = |s: &str| Slice::from(s.as_bytes());
        let writes: Vec<(Slice, Option<Slice>)> = vec![
            (n(5), Some(v("a"))),
            (n(6), Some(v("b"))),
            (n(7), Some(v("c"))),
            (n(6), Some(v("B"))),
            (n(7), None),
            (n(7), Some(v("c"))),
            (n(8), Some(v("d"))),
            (n(20), Some(v("gap"))),
            (n(5), None),
            (Slice::from(&b"short"[..]), Some(v("other shape"))),
        ];
        let mut dense = Tree::default();
        let mut btree = Tree::Ordered(BTreeMap::new());
        for (step, (k, val)) in writes.into_iter().enumerate() {
            for t in [&mut dense, &mut btree] {
                match &val {
                    Some(val) => t.insert(k.clone(), val.clone()),
                    None => t.remove(&k),
                }
            }
            assert_eq!(all(&dense), all(&btree), "after write {step}");
            assert_eq!(dense.first_key(), btree.first_key(), "after write {step}");
            assert_eq!(dense.last_key(), btree.last_key(), "after write {step}");
            for probe in [4u64, 5, 6, 7, 8, 9, 20] {
                let p = probe.to_be_bytes();
                assert_eq!(dense.get(&p), btree.get(&p));
                let bounds = [
                    Bound::Included(&p[..]),
                    Bound::Excluded(&p[..]),
                    Bound::Unbounded,
                ];
                for lower in bounds {
                    let upper = Bound::Included(&[0xff; 8][..]);
                    assert_eq!(dense.chunk(lower, upper, 2), btree.chunk(lower, upper, 2));
                }
            }
        }
        assert!(matches!(dense, Tree::Ordered(_)));
    }

    #[test]
    fn the_log_stays_dense() {
        let mut t = Tree::default();
        for i in 1..=1000u64 {
            t.insert(key_of(i), Slice::from(&b"delta"[..]));
        }
        assert!(matches!(t, Tree::Dense { .. }));
        let lo = 10u64.to_be_bytes();
        let hi = 20u64.to_be_bytes();
        let got = t.chunk(Bound::Included(&lo), Bound::Included(&hi), 100);
        assert_eq!(got.len(), 11);
        assert_eq!(got[0].0, key_of(10));
        // A bound of another width falls between 8-byte keys as bytes order it.
        let odd = [0u8, 0, 0, 0, 0, 0, 0, 10, 0];
        let got = t.chunk(Bound::Included(&odd), Bound::Unbounded, 1);
        assert_eq!(got[0].0, key_of(11));
    }
}
