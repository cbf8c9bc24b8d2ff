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
    for (file, content) in FILES {
        write(&args.dir.join(file), content)?;
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

fn write(path: &Path, content: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, content).with_context(|| format!("cannot write {}", path.display()))
}
