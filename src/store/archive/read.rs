//! Reading the archive for a query: every part in name order (month, then log
//! position), line by line, with the query's filter applied. Memory stays bounded by
//! one line and one decompression buffer, however large the archive.
//!
//! A line whose delta is still live (an archival pass stopped between writing its part
//! and removing its deltas) is skipped: the live answer has it already. Negation is
//! judged as for live deltas: by the live negations (archived deltas are never
//! negations, nor targets of one when they were archived).

use std::path::PathBuf;

use super::files::PartReader;
use super::ArchiveError;
use crate::delta::Delta;
use crate::filter::DeltaFilter;
use crate::store::Store;

/// The archived deltas matching a filter, read a line at a time.
pub struct ArchiveScan {
    store: Store,
    filter: DeltaFilter,
    parts: std::vec::IntoIter<PathBuf>,
    reader: Option<PartReader>,
    line: u64,
}

impl ArchiveScan {
    /// A scan of every part this store's archive holds now.
    ///
    /// # Errors
    /// When the archive folder cannot be listed.
    pub fn new(store: Store, filter: DeltaFilter) -> Result<ArchiveScan, ArchiveError> {
        let parts = store.archive_parts()?;
        Ok(ArchiveScan {
            store,
            filter,
            parts: parts.into_iter(),
            reader: None,
            line: 0,
        })
    }

    /// The next matching archived delta's JSON (as stored), or `None` at the end.
    ///
    /// # Errors
    /// File, storage and parse errors, naming the part and line.
    pub fn next_match(&mut self) -> Result<Option<String>, ArchiveError> {
        loop {
            let reader = match &mut self.reader {
                Some(reader) => reader,
                None => match self.parts.next() {
                    Some(path) => {
                        self.line = 0;
                        self.reader.insert(PartReader::open(&path)?)
                    }
                    None => return Ok(None),
                },
            };
            let Some(line) = reader.next() else {
                self.reader = None;
                continue;
            };
            let line = line?;
            self.line += 1;
            let delta = Delta::parse(&line).map_err(|e| ArchiveError::BadLine {
                path: reader.path().to_owned(),
                line: self.line,
                message: e.to_string(),
            })?;
            if !self.filter.matches(&delta) || self.store.get(&delta.id)?.is_some() {
                continue;
            }
            if !self.filter.include_negated() && self.store.is_negated(&delta.id)? {
                continue;
            }
            return Ok(Some(line));
        }
    }
}
