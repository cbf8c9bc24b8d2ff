//! `rhizome id`: the node's public key, read (or made, as the node would on its first
//! start) from its data directory or key file, without starting the node.

use std::path::PathBuf;

use anyhow::Context;
use rhizome::config::NodeFile;
use rhizome::identity::NodeKey;
use rhizome::Storage;

#[derive(Debug, clap::Args)]
pub struct IdArgs {
    /// The node's config file: its data directory holds the key.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The node's data directory [default: ./data, or the config file's].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// A key file, as `serve --key` takes it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "data"])]
    pub key: Option<PathBuf>,
}

pub fn run(args: IdArgs) -> anyhow::Result<()> {
    let key = match (&args.key, &args.data) {
        (Some(file), _) => NodeKey::load(file)?,
        (None, Some(dir)) => NodeKey::load_or_create(dir)?.0,
        (None, None) => {
            let file = match &args.config {
                Some(path) => NodeFile::load(path)?,
                None => NodeFile::default(),
            };
            match file.node_config().storage {
                Storage::Path(dir) => NodeKey::load_or_create(&dir)
                    .with_context(|| format!("the node in {}", dir.display()))?
                    .0,
                Storage::Memory => anyhow::bail!(
                    "this node keeps its data in memory: its key is new at each start (give it one with `serve --key FILE`)"
                ),
            }
        }
    };
    println!("{}", key.public_hex());
    Ok(())
}
