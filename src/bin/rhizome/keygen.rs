//! `rhizome keygen`: a new ed25519 key for signing deltas (`put --sign`), and the public
//! half in the forms an operator pastes: base64url (what signatures carry and
//! `[[author]] keys` takes), hex, and the config lines that bind it to an author.
//!
//! The secret key goes to a new file (PKCS#8 PEM, mode 0600, never over an existing
//! file, so a key cannot be lost by a mistyped path), or with `--print` to stdout only,
//! for a secret store; it is never written anywhere by default. With `--print`, stdout
//! carries the PEM alone and everything else goes to stderr, so it pipes cleanly.

use std::path::PathBuf;

use anyhow::{bail, Context};
use rhizome::identity::{key_text, NodeKey};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("destination").required(true).args(["out", "print"])))]
#[command(after_help = "Examples:
  rhizome keygen --out alice.key --name alice
  rhizome keygen --print > /run/secrets/alice.key")]
pub struct KeygenArgs {
    /// Write the secret key to this new file (PKCS#8 PEM, mode 0600); an existing file
    /// is never overwritten.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the secret key (PEM) on stdout instead of writing a file; the public key
    /// and the config lines go to stderr.
    #[arg(long)]
    pub print: bool,
    /// The author the printed config lines bind the key to [default: the key file's
    /// name without its extension].
    #[arg(long, value_name = "AUTHOR")]
    pub name: Option<String>,
}

pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    let key = NodeKey::generate()?;
    let name = args
        .name
        .clone()
        .or_else(|| {
            let stem = args.out.as_deref()?.file_stem()?.to_str()?;
            Some(stem.to_owned())
        })
        .unwrap_or_else(|| "AUTHOR".to_owned());
    let about = describe(&key, &name);
    match &args.out {
        Some(path) => {
            if path.exists() {
                bail!(
                    "{} already exists: keygen never overwrites a key (choose another --out, or remove the old key if you mean to replace it)",
                    path.display()
                );
            }
            key.save_new(path)
                .with_context(|| format!("writing the new key to {}", path.display()))?;
            println!(
                "wrote {} (the secret key: keep it private, mode 0600)",
                path.display()
            );
            print!("{about}");
        }
        None if args.print => {
            print!(
                "{}",
                key.to_pem().context("encoding the key as PEM")?.as_str()
            );
            eprint!("{about}");
        }
        None => bail!("give --out FILE to write the key, or --print to print it"),
    }
    Ok(())
}

/// The public key in both forms, and the config lines binding it to `name`.
fn describe(key: &NodeKey, name: &str) -> String {
    let public = key_text(&key.verifying_key());
    format!(
        "public key: {public}\npublic key (hex): {}\nto bind it to an author, add to the node's config:\n[[author]]\nname = {}\nkeys = [\"{public}\"]\n",
        key.public_hex(),
        toml_string(name),
    )
}

/// `name` as a TOML basic string, so a name with quotes pastes as the same name.
fn toml_string(name: &str) -> String {
    toml::Value::String(name.to_owned()).to_string()
}
