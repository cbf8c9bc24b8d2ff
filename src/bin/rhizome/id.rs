//! `rhizome id`: the node's public key, read (or made, as the node would on its first
//! start) from its data directory or key file, without starting the node.

use std::path::PathBuf;

use rhizome::config::NodeFile;
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
    let file = match &args.config {
        Some(path) => NodeFile::load(path)?,
        None => NodeFile::default(),
    };
    let mut config = file.node_config();
    if let Some(dir) = args.data {
        config.storage = Storage::Path(dir);
    }
    config.key_file = args.key;
    if config.key_file.is_none() && matches!(config.storage, Storage::Memory) {
        anyhow::bail!(
            "this node keeps its data in memory: its key is new at each start (give it one with `serve --key FILE`)"
        );
    }
    println!("{}", config.node_key()?.0.public_hex());
    Ok(())
}
