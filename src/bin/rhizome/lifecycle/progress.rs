//! What an import has done, kept beside its input file (`<file>.import-state`) so an
//! interrupted import resumes where the node last acknowledged a batch.
//!
//! The state is written (to a temporary name, then renamed) after each batch the node
//! acknowledged, never before: resuming re-reads at most the batch in flight, which
//! dedup absorbs, and skips nothing. It holds the file's identity (path, length,
//! modification time) and the node's, so a changed file or another target starts over
//! rather than skipping lines it never sent there. It goes once the file is imported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Refusal reasons counted one by one; past this many, the rest are counted together.
const MAX_REASONS: usize = 50;
const OTHER_REASONS: &str = "(other reasons)";

/// Counts of what happened to the deltas offered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    pub stored: u64,
    pub duplicates: u64,
    pub refused: u64,
    /// Refusals by reason.
    pub reasons: BTreeMap<String, u64>,
}

impl Tally {
    pub fn refuse(&mut self, reason: String) {
        self.refuse_many(reason, 1);
    }

    fn refuse_many(&mut self, reason: String, n: u64) {
        self.refused += n;
        let key = if self.reasons.len() < MAX_REASONS || self.reasons.contains_key(&reason) {
            reason
        } else {
            OTHER_REASONS.to_owned()
        };
        *self.reasons.entry(key).or_default() += n;
    }

    pub fn add(&mut self, other: &Tally) {
        self.stored += other.stored;
        self.duplicates += other.duplicates;
        for (reason, n) in &other.reasons {
            self.refuse_many(reason.clone(), *n);
        }
    }
}

/// The identity of an input file: the same path, length and modification time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileId {
    path: PathBuf,
    len: u64,
    modified_ns: u128,
}

impl FileId {
    fn of(path: &Path) -> anyhow::Result<FileId> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Ok(FileId {
            path: std::path::absolute(path)?,
            len: meta.len(),
            modified_ns,
        })
    }
}

/// An import of one file into one node, as far as the node acknowledged it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    file: FileId,
    target: String,
    /// Bytes of the file's text (uncompressed) whose deltas the node answered.
    pub offset: u64,
    /// Batches the node answered.
    pub batches: u64,
    pub tally: Tally,
}

/// Where the progress of importing `path` is kept; `None` for stdin.
fn state_path(path: &Path) -> Option<PathBuf> {
    if path == Path::new("-") {
        return None;
    }
    let mut name = path.file_name()?.to_os_string();
    name.push(".import-state");
    Some(path.with_file_name(name))
}

impl Progress {
    /// The progress kept for importing `path` into `target`, or a fresh start (with
    /// a note on stderr when a kept state no longer applies). `restart` ignores it.
    pub fn load(path: &Path, target: &str, restart: bool) -> anyhow::Result<Progress> {
        let file = if path == Path::new("-") {
            FileId {
                path: path.to_path_buf(),
                len: 0,
                modified_ns: 0,
            }
        } else {
            FileId::of(path)?
        };
        let fresh = Progress {
            file,
            target: target.to_owned(),
            offset: 0,
            batches: 0,
            tally: Tally::default(),
        };
        let Some(state) = state_path(path) else {
            return Ok(fresh);
        };
        if restart {
            return Ok(fresh);
        }
        let text = match std::fs::read_to_string(&state) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(fresh),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", state.display())),
        };
        let kept: Progress = match serde_json::from_str(&text) {
            Ok(kept) => kept,
            Err(e) => {
                eprintln!(
                    "import: {} is unreadable ({e}); starting from the beginning",
                    state.display()
                );
                return Ok(fresh);
            }
        };
        if kept.file != fresh.file || kept.target != fresh.target {
            eprintln!(
                "import: {} was for {} into {}; starting from the beginning",
                state.display(),
                kept.file.path.display(),
                kept.target
            );
            return Ok(fresh);
        }
        eprintln!(
            "import: resuming {} after {} batches (byte {}); --restart starts over",
            path.display(),
            kept.batches,
            kept.offset
        );
        Ok(kept)
    }

    /// Keeps this progress beside the input (nothing for stdin).
    pub fn save(&self) -> anyhow::Result<()> {
        let Some(state) = state_path(&self.file.path) else {
            return Ok(());
        };
        let mut tmp = state.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let text = serde_json::to_string(self)?;
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &state))
            .with_context(|| {
                format!(
                    "cannot keep the import's progress in {} (beside the input)",
                    state.display()
                )
            })
    }

    /// Forgets the progress once the file is imported.
    pub fn done(&self) -> anyhow::Result<()> {
        match state_path(&self.file.path) {
            Some(state) => match std::fs::remove_file(&state) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).with_context(|| format!("cannot remove {}", state.display())),
            },
            None => Ok(()),
        }
    }
}
