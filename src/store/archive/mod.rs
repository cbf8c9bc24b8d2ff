//! Archival: moving old deltas out of the live store into archive files (see `files`
//! for their layout), in bounded memory, a chunk at a time.
//!
//! Crash safety, per chunk: the chunk's parts are written and fsynced first, and only
//! then are its deltas removed from the store, in one durable batch that also marks the
//! parts applied (`archive/applied/<part>` in the metadata). A crash in between leaves
//! the deltas in both places, never in neither; the next pass first applies every part
//! not marked applied (removing what is still live), so it neither loses nor duplicates
//! a delta. Readers of the archive skip a line whose delta is still live, so a query
//! never shows one twice in that window.
//!
//! What is never archived (so that no query answer can change because of archival,
//! except by missing archived deltas):
//! - a negation, and a delta that a stored negation targets: whether a delta is
//!   negated is decided from live deltas only;
//! - the newest delta (the head): the log's last record carries the head across restarts.
//!
//! Archived ids stay in the id index, so a peer sending an archived delta again is
//! answered as a duplicate and it does not come back.

mod files;
mod read;
mod remove;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use read::ArchiveScan;

use super::error::StoreError;
use super::record::RawRecord;
use super::seq::Seq;
use super::{keys, postings, Store};
use crate::delta::Delta;
use crate::filter::DeltaFilter;

/// Deltas one chunk holds at most (they are held parsed until the chunk is applied).
const CHUNK_DELTAS: usize = 5_000;
/// Record bytes one chunk holds at most.
const CHUNK_BYTES: usize = 16 * 1024 * 1024;
/// Parts one chunk writes at most (one per month met); a delta of a further month
/// waits for the next chunk.
const MAX_OPEN_PARTS: usize = 32;
/// Deltas a recovering pass removes per batch.
const RECOVERY_BATCH: usize = 1_000;
/// When over `max_bytes`, archive down to this share of it, so that the next appends
/// do not start another pass at once.
const SIZE_TARGET_PERCENT: u64 = 90;

const STATS_KEY: &str = "archive/stats";
const APPLIED_PREFIX: &str = "archive/applied/";

/// What archival passes learn about this store, kept between passes.
#[derive(Debug, Default)]
pub(crate) struct Learned {
    /// Table bytes freed on disk per record byte archived, from the last size round:
    /// below 1 where records compress well, above where the indexes weigh more.
    freed_per_byte: Option<f64>,
}

impl Learned {
    /// The last round's ratio; 1 before any (a record takes its own size on disk).
    fn freed_per_byte(&self) -> f64 {
        self.freed_per_byte.unwrap_or(1.0)
    }

    fn freed(&mut self, freed: u64, archived: usize) {
        // Bounded, so that a round that freed little (a compaction still catching up)
        // cannot make the next one archive the whole store.
        let ratio = (freed as f64 / archived.max(1) as f64).clamp(0.02, 4.0);
        self.freed_per_byte = Some(ratio);
    }
}

/// Which deltas a pass moves to the archive. A delta is archived when it is old enough
/// (`before`) or the store is over its size (`max_bytes`, oldest first by log
/// position), and it matches `filter`, and it is not one the rules above keep live.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArchiveRule {
    /// Deltas whose timestamp (ms) is before this.
    pub before: Option<u64>,
    /// Only deltas matching this filter may be archived.
    pub filter: Option<DeltaFilter>,
    /// Archive oldest first while the store's tables take more bytes on disk than this
    /// (see [`Store::table_bytes`]).
    pub max_bytes: Option<u64>,
}

/// What one pass did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveReport {
    /// Deltas moved out of the live store by this pass.
    pub archived: u64,
    /// Of those, deltas an earlier, interrupted pass had already written to a part.
    pub recovered: u64,
    /// Parts written by this pass (file names under `archive/`).
    pub parts: Vec<String>,
    /// Candidates kept live: negations, negated deltas, the newest delta.
    pub kept: u64,
    /// The store's table bytes on disk before and after (see [`Store::table_bytes`]).
    pub store_bytes_before: u64,
    pub store_bytes_after: u64,
    /// Timestamps (ms) of the oldest and newest delta archived by this pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest: Option<u64>,
    pub took_ms: u64,
}

/// What the archive holds, all passes together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveStats {
    /// Deltas archived (moved out of the live store).
    pub count: u64,
    /// The oldest and newest timestamps (ms) among them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest: Option<u64>,
}

impl ArchiveStats {
    /// Whether deltas in `range` (ms, inclusive; `None` for every time) may have been archived.
    pub fn overlaps(&self, start: Option<u64>, end: Option<u64>) -> bool {
        match (self.count, self.oldest, self.newest) {
            (0, _, _) => false,
            (_, Some(oldest), Some(newest)) => {
                start.is_none_or(|s| s <= newest) && end.is_none_or(|e| e >= oldest)
            }
            _ => true,
        }
    }

    fn add(&mut self, gone: &[(Seq, Delta)]) {
        for (_, d) in gone {
            self.count += 1;
            self.oldest = Some(self.oldest.map_or(d.timestamp, |o| o.min(d.timestamp)));
            self.newest = Some(self.newest.map_or(d.timestamp, |n| n.max(d.timestamp)));
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a store in memory has no data directory to archive into")]
    NoDirectory,
    #[error("archive file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("archive file {path}, line {line}: {message}")]
    BadLine {
        path: PathBuf,
        line: u64,
        message: String,
    },
}

impl ArchiveError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> ArchiveError {
        ArchiveError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

impl Store {
    /// Where this store's archive files are: `archive/` in the data directory.
    pub fn archive_dir(&self) -> Option<PathBuf> {
        self.path().map(|p| p.join(files::DIR))
    }

    /// What the archive holds (from the store's metadata).
    ///
    /// # Errors
    /// Storage errors, or [`StoreError::Corrupt`] for unreadable counters.
    pub fn archive_stats(&self) -> Result<ArchiveStats, StoreError> {
        match self.get_meta(STATS_KEY)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("{STATS_KEY}: {e}"))),
            None => Ok(ArchiveStats::default()),
        }
    }

    /// Bytes the store's tables take on disk: its flushed data (log, indexes, metadata),
    /// without fjall's journal, which is preallocated and recycled once the memtables
    /// it covers are flushed. What `maxBytes` bounds. 0 in memory.
    pub fn table_bytes(&self) -> u64 {
        self.handles().map_or(0, |h| h.table_bytes())
    }

    /// Bytes the archive's files take on disk.
    pub fn archive_bytes(&self) -> u64 {
        self.archive_dir().map_or(0, |d| files::total_bytes(&d))
    }

    /// Runs one archival pass: finishes what an interrupted pass left, then moves the
    /// deltas `rule` selects into new parts. Blocks (file and store I/O): async callers
    /// use `spawn_blocking`. One pass runs at a time; a second waits for the first.
    ///
    /// # Errors
    /// [`ArchiveError::NoDirectory`] for a store in memory; file and storage errors
    /// (what was done before them stays done and consistent).
    pub fn archive(&self, rule: &ArchiveRule) -> Result<ArchiveReport, ArchiveError> {
        let dir = self.archive_dir().ok_or(ArchiveError::NoDirectory)?;
        let mut learned = self
            .inner
            .archive_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let started = std::time::Instant::now();
        if rule.max_bytes.is_some() {
            // What sits in memtables counts too: written out first, it is measured.
            self.handles()?.flush()?;
        }
        let mut report = ArchiveReport {
            store_bytes_before: self.table_bytes(),
            ..ArchiveReport::default()
        };
        files::remove_leftovers(&dir)?;
        self.finish_interrupted(&dir, &mut report)?;
        if let Some(before) = rule.before {
            self.archive_by_age(&dir, rule, before, &mut report)?;
        }
        if let Some(max_bytes) = rule.max_bytes {
            self.archive_by_size(&dir, rule, max_bytes, &mut learned, &mut report)?;
        }
        report.store_bytes_after = self.table_bytes();
        report.took_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Removes from the store what parts not yet marked applied hold (a pass stopped
    /// between writing a part and removing its deltas), and marks them applied.
    fn finish_interrupted(
        &self,
        dir: &Path,
        report: &mut ArchiveReport,
    ) -> Result<(), ArchiveError> {
        for part in files::list(dir)? {
            let name = file_name(&part);
            if self.get_meta(&applied_key(&name))?.is_some() {
                continue;
            }
            let mut reader = files::PartReader::open(&part)?;
            let mut gone = Vec::new();
            let mut line_no = 0u64;
            loop {
                let line = reader.next().transpose()?;
                if let Some(line) = &line {
                    line_no += 1;
                    let d = Delta::parse(line).map_err(|e| ArchiveError::BadLine {
                        path: reader.path().to_owned(),
                        line: line_no,
                        message: e.to_string(),
                    })?;
                    if let Some(seq) = self.seq_of(&d.id)? {
                        if self.get_seq(seq)?.is_some_and(|s| s.delta.id == d.id) {
                            gone.push((seq, d));
                        }
                    }
                }
                let last = line.is_none();
                if gone.len() >= RECOVERY_BATCH || last {
                    // The part is marked done with its last deltas, not before.
                    let marks: &[String] = if last {
                        std::slice::from_ref(&name)
                    } else {
                        &[]
                    };
                    self.remove_chunk(&gone, marks, report)?;
                    report.recovered += gone.len() as u64;
                    gone.clear();
                }
                if last {
                    break;
                }
            }
            tracing::warn!(part = %name, "finished an interrupted archival pass");
        }
        Ok(())
    }

    /// Archives the deltas older than `before`, found through the time index.
    fn archive_by_age(
        &self,
        dir: &Path,
        rule: &ArchiveRule,
        before: u64,
        report: &mut ArchiveReport,
    ) -> Result<(), ArchiveError> {
        let end = keys::time_key(before, Seq(0));
        let mut from = keys::time_key(0, Seq(0)).to_vec();
        loop {
            let mut chunk = Vec::new();
            let mut next_from = None;
            {
                let handles = self.handles()?;
                for guard in handles.ks.by_time.range(from.clone()..end.to_vec()) {
                    let (k, v) = guard.into_inner()?;
                    chunk.extend(postings::positions(&k, &v)?);
                    let mut after = k.to_vec();
                    after.push(0);
                    next_from = Some(after);
                    if chunk.len() >= CHUNK_DELTAS {
                        break;
                    }
                }
            }
            let Some(next) = next_from else {
                return Ok(());
            };
            from = next;
            chunk.sort_unstable();
            self.archive_chunk(dir, rule, &chunk, report)?;
        }
    }

    /// Archives the oldest deltas by log position until the store's tables are under
    /// `max_bytes`'s target. Each round archives about the excess, converted to record
    /// bytes by what earlier rounds freed per record byte (records compress on disk, and
    /// the ids stay), chunk by chunk; then it compacts once and measures again.
    fn archive_by_size(
        &self,
        dir: &Path,
        rule: &ArchiveRule,
        max_bytes: u64,
        learned: &mut Learned,
        report: &mut ArchiveReport,
    ) -> Result<(), ArchiveError> {
        if self.table_bytes() <= max_bytes {
            return Ok(());
        }
        let target = max_bytes / 100 * SIZE_TARGET_PERCENT;
        let mut cursor = Seq(0);
        loop {
            let size = self.table_bytes();
            if size <= target || cursor >= self.head() {
                return Ok(());
            }
            let want = ((size - target) as f64 / learned.freed_per_byte()) as usize;
            let mut archived = 0usize;
            while archived < want && cursor < self.head() {
                let (chunk, next) = self.oldest_after(cursor, want - archived)?;
                cursor = next;
                archived += self.archive_chunk(dir, rule, &chunk, report)?;
            }
            if archived > 0 {
                self.handles()?.reclaim()?;
                learned.freed(size.saturating_sub(self.table_bytes()), archived);
            }
        }
    }

    /// Positions after `cursor`, oldest first, whose records add up to about `bytes`
    /// (at most a chunk), and the last position looked at.
    fn oldest_after(&self, cursor: Seq, bytes: usize) -> Result<(Vec<Seq>, Seq), StoreError> {
        let handles = self.handles()?;
        let head = self.head();
        let (mut chunk, mut last, mut sum) = (Vec::new(), head, 0usize);
        for guard in handles
            .ks
            .log
            .range(keys::seq_key(Seq(cursor.0 + 1))..=keys::seq_key(head))
        {
            let (k, v) = guard.into_inner()?;
            last = keys::decode_seq(&k)?;
            chunk.push(last);
            sum += v.len();
            if sum >= bytes || chunk.len() >= CHUNK_DELTAS {
                break;
            }
        }
        Ok((chunk, last))
    }

    /// Archives those of `seqs` (ascending) that may be: writes their parts, then
    /// removes them from the store. Returns the record bytes archived.
    fn archive_chunk(
        &self,
        dir: &Path,
        rule: &ArchiveRule,
        seqs: &[Seq],
        report: &mut ArchiveReport,
    ) -> Result<usize, ArchiveError> {
        let head = self.head();
        let handles = self.handles()?;
        let mut parts: BTreeMap<String, files::PartWriter> = BTreeMap::new();
        let mut gone: Vec<(Seq, Delta)> = Vec::new();
        let mut bytes = 0usize;
        for &seq in seqs {
            if bytes >= CHUNK_BYTES {
                break;
            }
            let Some(record) = handles.ks.log.get(keys::seq_key(seq))? else {
                continue;
            };
            let Some(raw) = RawRecord::read(seq, record, None)? else {
                continue;
            };
            let delta = Delta::parse(raw.json())
                .map_err(|e| StoreError::Corrupt(format!("delta at seq {seq}: {e}")))?;
            if rule.filter.as_ref().is_some_and(|f| !f.matches(&delta)) {
                continue;
            }
            let negation = delta.negated_ids().next().is_some();
            if seq >= head
                || negation
                || !postings::term_positions(&handles.ks.negations, &delta.id)?.is_empty()
            {
                report.kept += 1;
                continue;
            }
            let period = files::period_of(delta.timestamp);
            if !parts.contains_key(&period) {
                if parts.len() >= MAX_OPEN_PARTS {
                    continue;
                }
                let part = files::PartWriter::create(dir, &files::part_name(&period, seq.0))?;
                parts.insert(period.clone(), part);
            }
            if let Some(part) = parts.get_mut(&period) {
                part.line(raw.json())?;
            }
            bytes += raw.json().len();
            gone.push((seq, delta));
        }
        drop(handles);
        if gone.is_empty() {
            return Ok(0);
        }
        let mut names = Vec::with_capacity(parts.len());
        // IMPORTANT: every part is durable under its final name before anything is removed.
        for part in parts.into_values() {
            names.push(file_name(&part.finish()?));
        }
        self.remove_chunk(&gone, &names, report)?;
        report.parts.extend(names);
        Ok(bytes)
    }

    /// Removes `gone` from the store and marks `parts` applied, in one durable batch,
    /// counting them in the archive's stats and in `report`.
    fn remove_chunk(
        &self,
        gone: &[(Seq, Delta)],
        parts: &[String],
        report: &mut ArchiveReport,
    ) -> Result<(), ArchiveError> {
        let mut stats = self.archive_stats()?;
        stats.add(gone);
        let mut meta = vec![(
            STATS_KEY.to_owned(),
            serde_json::to_vec(&stats).unwrap_or_default(),
        )];
        meta.extend(parts.iter().map(|p| (applied_key(p), Vec::new())));
        remove::remove(self, gone, &meta)?;
        report.archived += gone.len() as u64;
        for (_, d) in gone {
            report.oldest = Some(report.oldest.map_or(d.timestamp, |o| o.min(d.timestamp)));
            report.newest = Some(report.newest.map_or(d.timestamp, |n| n.max(d.timestamp)));
        }
        Ok(())
    }

    /// Every finished archive part, in name order (month, then log position).
    ///
    /// # Errors
    /// When the archive folder cannot be listed.
    pub fn archive_parts(&self) -> Result<Vec<PathBuf>, ArchiveError> {
        match self.archive_dir() {
            Some(dir) => files::list(&dir),
            None => Ok(Vec::new()),
        }
    }
}

fn applied_key(part: &str) -> String {
    format!("{APPLIED_PREFIX}{part}")
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
