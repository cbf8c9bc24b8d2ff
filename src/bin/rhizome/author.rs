//! `rhizome author`: the authors a running node binds to keys (its `/authors` API).
//! Every command prints JSON lines.

use anyhow::Context;
use serde_json::json;

use rhizome::admission::AuthorEntry;

use crate::args::NodeArg;
use crate::client::{print_each, print_line, urlencode};

#[derive(Debug, clap::Args)]
pub struct AuthorArgs {
    #[command(subcommand)]
    pub command: AuthorCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuthorCommand {
    /// Print the bound authors, one JSON line each, then the signature settings.
    List(ListArgs),
    /// Bind an author to keys: its deltas must then be signed by one of them (until the
    /// node stops; `[[author]]` in the config file keeps it). Replaces its keys if bound.
    Add(AddArgs),
    /// Unbind an author.
    Remove(RemoveArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub node: NodeArg,
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub node: NodeArg,
    /// The author, as its deltas carry it in `author`.
    pub name: String,
    /// A public key (base64url as `rhizome keygen` prints it, or hex); repeatable.
    #[arg(long = "key", value_name = "KEY", required = true)]
    pub keys: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    pub node: NodeArg,
    pub name: String,
}

pub async fn run(args: AuthorArgs) -> anyhow::Result<()> {
    match args.command {
        AuthorCommand::List(a) => {
            let answer = a.node.client()?.get("/authors", &[]).await?;
            print_each(&answer, "authors", "/authors")?;
            print_line(&json!({ "signatures": answer["signatures"] }));
            Ok(())
        }
        AuthorCommand::Add(a) => {
            let entry = AuthorEntry {
                name: a.name.clone(),
                keys: a.keys,
            };
            let added = a
                .node
                .client()?
                .post("/authors", &json!(entry))
                .await
                .with_context(|| format!("cannot bind author {}", a.name))?;
            print_line(&added);
            Ok(())
        }
        AuthorCommand::Remove(a) => {
            let answer = a
                .node
                .client()?
                .delete(&format!("/authors/{}", urlencode(&a.name)))
                .await
                .with_context(|| format!("cannot unbind author {}", a.name))?;
            print_line(&answer);
            Ok(())
        }
    }
}
