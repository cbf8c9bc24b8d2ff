//! The in-memory backend: one ordered map per keyspace (see `tree`), all behind one lock.
//!
//! A batch is built without the lock and applied under the write lock in one go, so a
//! reader sees a batch entirely or not at all, across keyspaces, as with fjall.
//! Iterators do not hold the lock: they copy a chunk of entries (reference-counted
//! [`Slice`]s, so no value bytes) under a short read lock and resume after its last
//! key. Unlike fjall's they are not snapshots; the store never needs one: the log and
//! the indexes only grow, and readers bound log positions by the published head.

use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::tree::Tree;
use super::Slice;
use crate::store::error::StoreError;

type Map = Tree;

/// Entries an iterator copies per visit to the map: enough that the lock is taken
/// rarely on long scans, few enough that a short scan copies little it will not read.
const CHUNK: usize = 256;

#[derive(Default)]
pub(crate) struct Db {
    maps: RwLock<Vec<Map>>,
    names: Mutex<Vec<String>>,
}

impl Db {
    pub(crate) fn keyspace(db: &Arc<Db>, name: &str) -> Keyspace {
        // IMPORTANT: `names` is taken before `maps` here and nowhere else takes both.
        let mut names = db.names.lock().unwrap_or_else(PoisonError::into_inner);
        let index = match names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                names.push(name.to_owned());
                db.write().push(Map::default());
                names.len() - 1
            }
        };
        Keyspace {
            db: db.clone(),
            index,
        }
    }

    // The lock is only held around map operations, which do not panic (short of an
    // allocation failure, which aborts), so a poisoned lock still guards whole batches.
    fn read(&self) -> RwLockReadGuard<'_, Vec<Map>> {
        self.maps.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Vec<Map>> {
        self.maps.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Clone)]
pub(crate) struct Keyspace {
    db: Arc<Db>,
    index: usize,
}

impl Keyspace {
    fn with<T>(&self, f: impl FnOnce(&Map) -> T) -> T {
        let maps = self.db.read();
        // Indexes come from `Db::keyspace` and maps are never removed.
        match maps.get(self.index) {
            Some(map) => f(map),
            None => f(&Map::default()),
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Slice> {
        self.with(|m| m.get(key))
    }

    pub(crate) fn contains_key(&self, key: &[u8]) -> bool {
        self.with(|m| m.contains_key(key))
    }

    pub(crate) fn first_key(&self) -> Option<Slice> {
        self.with(Tree::first_key)
    }

    pub(crate) fn last_key(&self) -> Option<Slice> {
        self.with(Tree::last_key)
    }

    pub(crate) fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        let own = |b: Bound<&K>| b.map(|k| Slice::from(k.as_ref()));
        Iter {
            ks: self.clone(),
            lower: own(range.start_bound()),
            upper: own(range.end_bound()),
            chunk: Vec::new().into_iter(),
            done: false,
        }
    }
}

/// A lazy scan over a key range, a chunk at a time.
pub(crate) struct Iter {
    ks: Keyspace,
    /// Where the next chunk starts: after the last key handed out.
    lower: Bound<Slice>,
    upper: Bound<Slice>,
    chunk: std::vec::IntoIter<(Slice, Slice)>,
    done: bool,
}

impl Iter {
    fn refill(&mut self) {
        if is_empty(&self.lower, &self.upper) {
            self.done = true;
            return;
        }
        let bounds = (as_ref(&self.lower), as_ref(&self.upper));
        let chunk = self.ks.with(|m| m.chunk(bounds.0, bounds.1, CHUNK));
        if chunk.len() < CHUNK {
            self.done = true;
        }
        if let Some((last, _)) = chunk.last() {
            self.lower = Bound::Excluded(last.clone());
        }
        self.chunk = chunk.into_iter();
    }
}

impl Iterator for Iter {
    type Item = (Slice, Slice);

    fn next(&mut self) -> Option<(Slice, Slice)> {
        if let Some(entry) = self.chunk.next() {
            return Some(entry);
        }
        if self.done {
            return None;
        }
        self.refill();
        self.chunk.next()
    }
}

fn as_ref(b: &Bound<Slice>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Whether no key lies between the bounds. `BTreeMap::range` panics on an inverted
/// range, where fjall yields nothing (a query may ask for timestamps 9 to 3).
fn is_empty(lower: &Bound<Slice>, upper: &Bound<Slice>) -> bool {
    match (lower, upper) {
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
        (Bound::Included(l), Bound::Included(u)) => l > u,
        (Bound::Included(l), Bound::Excluded(u))
        | (Bound::Excluded(l), Bound::Included(u))
        | (Bound::Excluded(l), Bound::Excluded(u)) => l >= u,
    }
}

/// Writes gathered without the lock, applied under it.
pub(crate) struct Batch {
    /// `None` once the batch was handed a keyspace of another database: it must not commit.
    db: Option<Arc<Db>>,
    ops: Vec<(usize, Slice, Option<Slice>)>,
}

impl Batch {
    pub(crate) fn new(db: Arc<Db>, writes: usize) -> Batch {
        Batch {
            db: Some(db),
            ops: Vec::with_capacity(writes),
        }
    }

    pub(crate) fn refused() -> Batch {
        Batch {
            db: None,
            ops: Vec::new(),
        }
    }

    fn push(&mut self, ks: &Keyspace, key: Slice, value: Option<Slice>) {
        if self.db.as_ref().is_some_and(|db| Arc::ptr_eq(db, &ks.db)) {
            self.ops.push((ks.index, key, value));
        } else {
            self.db = None;
        }
    }

    pub(crate) fn insert(&mut self, ks: &Keyspace, key: Slice, value: Slice) {
        self.push(ks, key, Some(value));
    }

    pub(crate) fn remove(&mut self, ks: &Keyspace, key: Slice) {
        self.push(ks, key, None);
    }

    pub(crate) fn commit(self) -> Result<(), StoreError> {
        let db = self.db.ok_or_else(|| {
            StoreError::Corrupt("a write batch was given a keyspace of another database".into())
        })?;
        let mut maps = db.write();
        for (index, key, value) in self.ops {
            let Some(map) = maps.get_mut(index) else {
                continue;
            };
            match value {
                Some(v) => map.insert(key, v),
                None => map.remove(&key),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_with(n: u32) -> (Arc<Db>, Keyspace) {
        let db = Arc::new(Db::default());
        let ks = Db::keyspace(&db, "t");
        let mut b = Batch::new(db.clone(), 0);
        for i in 0..n {
            b.insert(&ks, Slice::from(i.to_be_bytes()), Slice::from(vec![1; 30]));
        }
        b.commit().unwrap();
        (db, ks)
    }

    #[test]
    fn scans_cross_chunks_without_losing_or_repeating_entries() {
        let n = (CHUNK * 3 + 7) as u32;
        let (_db, ks) = db_with(n);
        let keys: Vec<u32> = ks
            .range::<[u8; 4], _>(..)
            .map(|(k, _)| u32::from_be_bytes((*k).try_into().unwrap()))
            .collect();
        assert_eq!(keys, (0..n).collect::<Vec<_>>());
        let from = 5u32.to_be_bytes();
        let to = (CHUNK as u32 + 9).to_be_bytes();
        assert_eq!(ks.range(from..to).count(), CHUNK + 4);
        assert_eq!(ks.range(from..=to).count(), CHUNK + 5);
    }

    #[test]
    fn an_inverted_range_is_empty_not_a_panic() {
        let (_db, ks) = db_with(10);
        let (hi, lo) = (8u32.to_be_bytes(), 3u32.to_be_bytes());
        assert_eq!(ks.range(hi..=lo).count(), 0);
        assert_eq!(ks.range(hi..hi).count(), 0);
        assert_eq!(ks.range(hi..=hi).count(), 1);
    }

    #[test]
    fn removes_apply_and_keyspaces_are_separate() {
        let (db, ks) = db_with(4);
        let other = Db::keyspace(&db, "u");
        assert!(Db::keyspace(&db, "t").contains_key(&0u32.to_be_bytes()));
        let mut b = Batch::new(db.clone(), 0);
        b.remove(&ks, Slice::from(0u32.to_be_bytes()));
        b.insert(&other, Slice::from(b"k"), Slice::from(b"v"));
        b.commit().unwrap();
        assert_eq!(ks.first_key().as_deref(), Some(&1u32.to_be_bytes()[..]));
        assert_eq!(ks.last_key().as_deref(), Some(&3u32.to_be_bytes()[..]));
        assert_eq!(other.get(b"k").as_deref(), Some(&b"v"[..]));
        assert!(!other.contains_key(&1u32.to_be_bytes()));
    }

    #[test]
    fn a_batch_given_another_databases_keyspace_does_not_commit() {
        let (db, ks) = db_with(1);
        let (_other_db, other) = db_with(1);
        let mut b = Batch::new(db, 0);
        b.insert(&ks, Slice::from(b"a"), Slice::from(b"1"));
        b.insert(&other, Slice::from(b"b"), Slice::from(b"2"));
        assert!(b.commit().is_err());
        assert!(!ks.contains_key(b"a"));
    }
}
