//! `rhizome init DIR`: a starter node directory: a commented config, a policy with its
//! test cases, and the filter folders.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The directory to set up (created if needed).
    pub dir: PathBuf,
    /// Overwrite files that already exist.
    #[arg(long)]
    pub force: bool,
}

const FILES: [(&str, &str); 3] = [
    ("rhizome.toml", rhizome::config::STARTER),
    (
        "policies/reject-future-timestamps.rhai",
        include_str!("init/future.rhai"),
    ),
    (
        "policies/tests/reject-future-timestamps.jsonl",
        include_str!("init/cases.jsonl"),
    ),
];

/// Folders the starter config names and no starter file creates: `serve` watches them
/// from the first start, so an operator drops scripts in without a restart.
const DIRS: [&str; 2] = ["filters/push", "filters/pull"];

pub fn run(args: InitArgs) -> anyhow::Result<()> {
    if !args.force {
        let existing: Vec<String> = FILES
            .iter()
            .map(|(f, _)| args.dir.join(f))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "{} already exist(s); pass --force to overwrite",
                existing.join(", ")
            );
        }
    }
    for (file, template) in FILES {
        write(&args.dir.join(file), &fill(template, now_ms()))?;
    }
    for dir in DIRS {
        let d = args.dir.join(dir);
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let config = args.dir.join("rhizome.toml");
    println!("wrote {}", config.display());
    println!(
        "next: rhizome policy test --policies {0}/policies {0}/policies/tests",
        args.dir.display()
    );
    println!("      rhizome serve --config {}", config.display());
    Ok(())
}

/// A starter file with its `NOW_MS` (a test case's "now") replaced by `now`: a fixed
/// date would drift into the past, and the case would no longer test what it says.
fn fill(template: &str, now: u64) -> String {
    template.replace("NOW_MS", &now.to_string())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn write(path: &Path, content: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, content).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_starter_file_is_filled_and_valid_issue_16() {
        for (file, template) in FILES {
            let text = fill(template, 1_795_483_208_095);
            assert!(!text.contains("NOW_MS"), "{file}");
            if file.ends_with(".jsonl") {
                for line in text.lines() {
                    serde_json::from_str::<serde_json::Value>(line)
                        .unwrap_or_else(|e| panic!("{file}: {e}: {line}"));
                }
                assert!(text.contains("\"timestamp\": 1795483208095"), "{text}");
            }
        }
    }
}
