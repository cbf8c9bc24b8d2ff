//! Archive files: gzip-compressed JSON lines, one delta per line, exactly the compact
//! JSON the log stored (the format `export` writes and `import` reads).
//!
//! Layout: `<data dir>/archive/<period>.<first seq>.jsonl.gz`, where `<period>` is the
//! UTC month (`YYYY-MM`) of the deltas' timestamps and `<first seq>` (12 digits) the log
//! position of the part's first delta. One archival pass writes one part per month it
//! meets; a later pass for the same month writes a new part. Names sort by month, then
//! by log position.
//!
//! Invariants: a part is written under a `.tmp` name, fsynced, renamed to its final name
//! and its directory fsynced, and never changed after; a `.tmp` file is what a crash in
//! the middle of writing left, and is removed by the next pass.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::ArchiveError;

/// The folder under the data directory that holds the archive.
pub(crate) const DIR: &str = "archive";
const SUFFIX: &str = ".jsonl.gz";
/// How a part still being written is named (a backup leaves it out).
pub(crate) const TMP: &str = ".tmp";

/// The `YYYY-MM` (UTC) of a timestamp in ms.
pub(crate) fn period_of(timestamp_ms: u64) -> String {
    // Past year 9999 `time` has no date: such deltas share the last month it has.
    let date = i128::from(timestamp_ms)
        .checked_mul(1_000_000)
        .and_then(|ns| time::OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc());
    format!("{:04}-{:02}", date.year(), u8::from(date.month()))
}

/// The final name of a part.
pub(crate) fn part_name(period: &str, first_seq: u64) -> String {
    format!("{period}.{first_seq:012}{SUFFIX}")
}

/// The finished parts in `dir`, sorted by name (month, then log position).
///
/// # Errors
/// When the folder exists but cannot be listed.
pub(crate) fn list(dir: &Path) -> Result<Vec<PathBuf>, ArchiveError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ArchiveError::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| ArchiveError::io(dir, e))?.path();
        let is_part = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(SUFFIX));
        if is_part {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Removes what a pass that crashed while writing left behind.
///
/// # Errors
/// When the folder cannot be listed or a leftover removed.
pub(crate) fn remove_leftovers(dir: &Path) -> Result<(), ArchiveError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry.map_err(|e| ArchiveError::io(dir, e))?.path();
        if path.extension().is_some_and(|e| e == &TMP[1..]) {
            std::fs::remove_file(&path).map_err(|e| ArchiveError::io(&path, e))?;
        }
    }
    Ok(())
}

/// Bytes the finished parts take on disk.
pub(crate) fn total_bytes(dir: &Path) -> u64 {
    list(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// A part being written; nothing is visible under its final name until [`PartWriter::finish`].
pub(crate) struct PartWriter {
    tmp: PathBuf,
    path: PathBuf,
    out: GzEncoder<BufWriter<File>>,
    pub(crate) lines: u64,
}

impl PartWriter {
    /// Starts a part named `name` in `dir` (created if missing).
    ///
    /// # Errors
    /// When the folder or the temporary file cannot be created.
    pub(crate) fn create(dir: &Path, name: &str) -> Result<PartWriter, ArchiveError> {
        std::fs::create_dir_all(dir).map_err(|e| ArchiveError::io(dir, e))?;
        let path = dir.join(name);
        let tmp = dir.join(format!("{name}{TMP}"));
        let file = File::create(&tmp).map_err(|e| ArchiveError::io(&tmp, e))?;
        Ok(PartWriter {
            tmp,
            path,
            // The fastest level: archival runs beside the node's own writes, and level 6
            // compresses JSON lines only a little better for several times the CPU.
            out: GzEncoder::new(BufWriter::new(file), Compression::fast()),
            lines: 0,
        })
    }

    /// Appends one delta's stored JSON as a line.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub(crate) fn line(&mut self, json: &str) -> Result<(), ArchiveError> {
        self.out
            .write_all(json.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| ArchiveError::io(&self.tmp, e))?;
        self.lines += 1;
        Ok(())
    }

    /// Ends the gzip stream, fsyncs the file, renames it to its final name and fsyncs
    /// the folder: once this returns, the part survives a crash whole.
    ///
    /// # Errors
    /// When any of those steps fails; the temporary file is then left for the next
    /// pass to remove.
    pub(crate) fn finish(self) -> Result<PathBuf, ArchiveError> {
        let tmp = self.tmp;
        let file = self
            .out
            .finish()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .map_err(|e| ArchiveError::io(&tmp, e))?;
        file.sync_all().map_err(|e| ArchiveError::io(&tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(|e| ArchiveError::io(&self.path, e))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| ArchiveError::io(dir, e))?;
        }
        Ok(self.path)
    }
}

/// The lines of a part, read through a small buffer: memory stays bounded by the longest line.
pub(crate) struct PartReader {
    path: PathBuf,
    lines: std::io::Lines<BufReader<MultiGzDecoder<BufReader<File>>>>,
}

impl PartReader {
    /// Opens a part.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub(crate) fn open(path: &Path) -> Result<PartReader, ArchiveError> {
        let file = File::open(path).map_err(|e| ArchiveError::io(path, e))?;
        Ok(PartReader {
            path: path.to_owned(),
            lines: BufReader::new(MultiGzDecoder::new(BufReader::new(file))).lines(),
        })
    }

    /// The part's path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Iterator for PartReader {
    type Item = Result<String, ArchiveError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.lines.next()? {
                Ok(line) if line.trim().is_empty() => continue,
                Ok(line) => return Some(Ok(line)),
                Err(e) => return Some(Err(ArchiveError::io(&self.path, e))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_utc_months() {
        assert_eq!(period_of(0), "1970-01");
        // 2026-11-30T23:59:59.999Z and the next millisecond.
        assert_eq!(period_of(1_796_083_199_999), "2026-11");
        assert_eq!(period_of(1_796_083_200_000), "2026-12");
        // 2024-02-29 (a leap day).
        assert_eq!(period_of(1_709_164_800_000), "2024-02");
    }

    #[test]
    fn a_part_is_invisible_until_finished_and_reads_back_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PartWriter::create(dir.path(), &part_name("2026-11", 7)).unwrap();
        w.line("{\"id\":\"a\"}").unwrap();
        w.line("{\"id\":\"b\"}").unwrap();
        assert!(list(dir.path()).unwrap().is_empty());
        let path = w.finish().unwrap();
        assert_eq!(list(dir.path()).unwrap(), vec![path.clone()]);
        assert!(path.ends_with("2026-11.000000000007.jsonl.gz"));
        let lines: Vec<String> = PartReader::open(&path)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(lines, ["{\"id\":\"a\"}", "{\"id\":\"b\"}"]);
        assert!(total_bytes(dir.path()) > 0);
    }

    #[test]
    fn leftovers_of_a_crashed_write_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let w = PartWriter::create(dir.path(), &part_name("2026-11", 1)).unwrap();
        drop(w);
        remove_leftovers(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
