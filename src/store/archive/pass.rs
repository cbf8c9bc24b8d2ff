//! One archival pass (see the parent module for what it keeps and why it is safe):
//! finishing an interrupted pass, choosing deltas by age (the time index) or by size
//! (oldest log positions first), writing their parts, then removing them.

use std::collections::BTreeMap;
use std::path::Path;

use super::{files, remove, ArchiveError, ArchiveReport, ArchiveRule, APPLIED_PREFIX, STATS_KEY};
use crate::delta::Delta;
use crate::store::error::StoreError;
use crate::store::record::RawRecord;
use crate::store::seq::Seq;
use crate::store::{keys, postings, Store};

/// Deltas one chunk holds at most (they are held parsed until the chunk is applied).
const CHUNK_DELTAS: usize = 5_000;
/// Record bytes one chunk holds at most; the chunk's remaining candidates wait for the
/// next pass.
const CHUNK_BYTES: usize = 16 * 1024 * 1024;
/// Parts one chunk writes at most (one per month met); a delta of a further month
/// waits for the next pass.
const MAX_OPEN_PARTS: usize = 32;
/// Deltas a recovering pass removes per batch.
const RECOVERY_BATCH: usize = 1_000;
/// When over `max_bytes`, archive down to this share of it, so that the next appends
/// do not start another pass at once.
const SIZE_TARGET_PERCENT: u64 = 90;

impl Store {
    /// Runs one archival pass: finishes what an interrupted pass left, then moves the
    /// deltas `rule` selects into new parts. Blocks (file and store I/O): async callers
    /// use `spawn_blocking`. One pass runs at a time; a second waits for the first.
    ///
    /// # Errors
    /// [`ArchiveError::NoDirectory`] for a store in memory; file and storage errors
    /// (what was done before them stays done and consistent).
    pub fn archive(&self, rule: &ArchiveRule) -> Result<ArchiveReport, ArchiveError> {
        let dir = self.archive_dir().ok_or(ArchiveError::NoDirectory)?;
        let _one_at_a_time = self
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
            self.archive_by_size(&dir, rule, max_bytes, &mut report)?;
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
    /// `max_bytes`'s target. Each round archives as many deltas as the excess holds at
    /// the live deltas' average size on disk (what the tables hold beyond the ids, the
    /// metadata and the quarantine, which archival does not shrink), chunk by chunk;
    /// then it compacts once and measures again.
    fn archive_by_size(
        &self,
        dir: &Path,
        rule: &ArchiveRule,
        max_bytes: u64,
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
            let live = self.head().0.saturating_sub(self.archive_stats()?.count);
            let per_delta = self.handles()?.delta_bytes() / live.max(1);
            let want = (size - target).div_ceil(per_delta.max(1)) as usize;
            let mut archived = 0usize;
            while archived < want && cursor < self.head() {
                let (chunk, next) = self.oldest_after(cursor, want - archived)?;
                cursor = next;
                archived += self.archive_chunk(dir, rule, &chunk, report)?;
            }
            if archived > 0 {
                self.handles()?.reclaim()?;
            }
        }
    }

    /// Up to `count` positions after `cursor` (at most a chunk), oldest first, and the
    /// last position looked at.
    fn oldest_after(&self, cursor: Seq, count: usize) -> Result<(Vec<Seq>, Seq), StoreError> {
        let handles = self.handles()?;
        let head = self.head();
        let mut chunk = Vec::new();
        let mut last = head;
        for guard in handles
            .ks
            .log
            .range(keys::seq_key(Seq(cursor.0 + 1))..=keys::seq_key(head))
            .take(count.min(CHUNK_DELTAS))
        {
            last = keys::decode_seq(&guard.key()?)?;
            chunk.push(last);
        }
        Ok((chunk, last))
    }

    /// Archives those of `seqs` (ascending) that may be: writes their parts, then
    /// removes them from the store. Returns how many were archived.
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
        Ok(gone.len())
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
}

fn applied_key(part: &str) -> String {
    format!("{APPLIED_PREFIX}{part}")
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
