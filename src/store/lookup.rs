//! Point reads: a delta by id or by position, the negations of a delta, the time index's
//! entry point, and metadata. Each takes the store's handles for its own duration (see
//! `handles`) and reads what is committed; the log itself is read through `tail`.

use super::error::StoreError;
use super::record::{RawRecord, StoredDelta};
use super::seq::Seq;
use super::{keys, postings, query, Store};

impl Store {
    /// The delta with this id.
    ///
    /// # Errors
    /// Storage or corruption errors.
    pub fn get(&self, id: &str) -> Result<Option<StoredDelta>, StoreError> {
        match self.seq_of(id)? {
            Some(seq) => self.get_seq(seq),
            None => Ok(None),
        }
    }

    /// The log position of the delta with this id.
    ///
    /// # Errors
    /// Storage or corruption errors.
    pub fn seq_of(&self, id: &str) -> Result<Option<Seq>, StoreError> {
        match self.handles()?.ks.ids.get(id.as_bytes())? {
            Some(v) => Ok(Some(keys::decode_seq(&v)?)),
            None => Ok(None),
        }
    }

    /// The delta at a log position.
    ///
    /// # Errors
    /// Storage or corruption errors.
    pub fn get_seq(&self, seq: Seq) -> Result<Option<StoredDelta>, StoreError> {
        match self.handles()?.ks.log.get(keys::seq_key(seq))? {
            Some(bytes) => Ok(Some(StoredDelta::decode(seq, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The log records of the deltas with these ids, as stored, in the order asked; ids
    /// not in the log (never stored, or archived) are left out.
    ///
    /// # Errors
    /// Storage or corruption errors.
    pub fn records_of(&self, ids: &[String]) -> Result<Vec<RawRecord>, StoreError> {
        let handles = self.handles()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(v) = handles.ks.ids.get(id.as_bytes())? else {
                continue;
            };
            let seq = keys::decode_seq(&v)?;
            if let Some(record) = handles.ks.log.get(keys::seq_key(seq))? {
                out.extend(RawRecord::read(seq, record, None)?);
            }
        }
        Ok(out)
    }

    /// Which of these ids the store holds (in its log, or archived: either way a copy
    /// that arrives is a duplicate), as one flag per id.
    ///
    /// # Errors
    /// Storage errors.
    pub fn contains_ids(&self, ids: &[String]) -> Result<Vec<bool>, StoreError> {
        let handles = self.handles()?;
        ids.iter()
            .map(|id| Ok(handles.ks.ids.get(id.as_bytes())?.is_some()))
            .collect()
    }

    /// The last log position whose delta has a timestamp before `timestamp`, or the
    /// position just before the first delta at or after it; used to start an initial
    /// sync `from_timestamp` without scanning the whole log. Deltas arrive out of
    /// timestamp order, so callers must still filter by timestamp after this position.
    ///
    /// # Errors
    /// Storage errors.
    pub fn first_seq_at_or_after(&self, timestamp: u64) -> Result<Option<Seq>, StoreError> {
        let mut min: Option<Seq> = None;
        let handles = self.handles()?;
        for guard in handles
            .ks
            .by_time
            .range(keys::time_key(timestamp, Seq(0))..)
        {
            // A posting's key holds its smallest position.
            let k = guard.key()?;
            let seq = keys::seq_of_index_key(&k)?;
            min = Some(min.map_or(seq, |m| m.min(seq)));
        }
        Ok(min)
    }

    /// Whether the delta with this id is negated by a negation that is not itself negated.
    ///
    /// # Errors
    /// Storage or corruption errors.
    pub fn is_negated(&self, id: &str) -> Result<bool, StoreError> {
        query::is_negated(self, id, 0)
    }

    /// The deltas that negate the delta with this id, in log order.
    ///
    /// # Errors
    /// Storage or corruption errors.
    pub fn negations_of(&self, id: &str) -> Result<Vec<StoredDelta>, StoreError> {
        let mut out = Vec::new();
        for seq in postings::term_positions(&self.handles()?.ks.negations, id)? {
            if let Some(d) = self.get_seq(seq)? {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Reads a metadata value (system id, link cursors...); written with
    /// [`Store::put_meta`] or as a side write of an append.
    ///
    /// # Errors
    /// Storage errors.
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .handles()?
            .ks
            .meta
            .get(key.as_bytes())?
            .map(|v| v.to_vec()))
    }

    /// Metadata entries whose key starts with `prefix`.
    #[cfg(test)]
    pub(crate) fn meta_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for guard in self.handles()?.ks.meta.prefix(prefix.as_bytes()) {
            let (k, v) = guard.into_inner()?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }
}
