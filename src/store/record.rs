//! What a log record holds, in its two views: [`RawRecord`], the stored bytes unparsed
//! (what a sender forwards without re-encoding), and [`StoredDelta`], the delta parsed.
//! A `RawRecord`'s text is checked as UTF-8 once, when it is read, so its accessors
//! never fail; parsing it fails only on a corrupt store.

use std::ops::Range;

use super::backend::Slice;
use super::error::StoreError;
use super::keys;
use super::seq::Seq;
use crate::delta::Delta;

/// A delta as it sits in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDelta {
    pub seq: Seq,
    /// The peer system this delta arrived from; `None` when it was made or posted here.
    pub origin: Option<String>,
    pub delta: Delta,
}

impl StoredDelta {
    /// Parses the log record stored at `seq`.
    pub(super) fn decode(seq: Seq, bytes: &[u8]) -> Result<StoredDelta, StoreError> {
        let (origin, json) = keys::decode_record(bytes)?;
        Ok(StoredDelta {
            seq,
            origin: origin.map(str::to_owned),
            delta: parse(seq, json)?,
        })
    }
}

fn parse(seq: Seq, json: &str) -> Result<Delta, StoreError> {
    Delta::parse(json).map_err(|e| StoreError::Corrupt(format!("delta at seq {seq}: {e}")))
}

/// A log record as stored, unparsed. It shares the stored bytes (reference-counted), so
/// reading it copies nothing.
#[derive(Clone)]
pub struct RawRecord {
    pub seq: Seq,
    record: Slice,
    origin: Option<Range<usize>>,
    json_at: usize,
}

impl RawRecord {
    /// Reads a record's layout once; `None` for a record from `skip_origin`, whose delta
    /// is not looked at. A kept record's text is checked here, so the accessors need not.
    pub(super) fn read(
        seq: Seq,
        record: Slice,
        skip_origin: Option<&str>,
    ) -> Result<Option<RawRecord>, StoreError> {
        let (origin, json) = keys::split_record(&record)?;
        if skip_origin.is_some() && origin == skip_origin {
            return Ok(None);
        }
        std::str::from_utf8(json).map_err(|_| {
            StoreError::Corrupt(format!("log record at seq {seq}: delta is not UTF-8"))
        })?;
        let json_at = record.len() - json.len();
        let origin = origin.map(|o| keys::RECORD_HEADER..keys::RECORD_HEADER + o.len());
        Ok(Some(RawRecord {
            seq,
            record,
            origin,
            json_at,
        }))
    }

    /// The peer system the delta arrived from; `None` when it was made or posted here.
    pub fn origin(&self) -> Option<&str> {
        let range = self.origin.clone()?;
        // Checked as UTF-8 in `read`, so this never falls back.
        self.record
            .get(range)
            .and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The delta's JSON as stored.
    pub fn json(&self) -> &str {
        // Checked as UTF-8 in `read`, so this never falls back.
        self.record
            .get(self.json_at..)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }

    /// The parsed view of this record.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the stored JSON is not a valid delta.
    pub fn delta(&self) -> Result<StoredDelta, StoreError> {
        Ok(StoredDelta {
            seq: self.seq,
            origin: self.origin().map(str::to_owned),
            delta: parse(self.seq, self.json())?,
        })
    }
}

impl std::fmt::Debug for RawRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRecord")
            .field("seq", &self.seq)
            .field("origin", &self.origin())
            .field("json", &self.json())
            .finish()
    }
}
