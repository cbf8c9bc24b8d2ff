//! The `rhizome` command: run a node, or talk to a running one over its HTTP API.
//!
//! A thin clap layer over the library: each subcommand lives in its own module and reaches
//! the node only through `rhizome`'s public items (or, for the client subcommands, through
//! the node's HTTP API). Errors end the process with their whole chain on stderr and a
//! failing exit code.
//!
//! # Layout
//! - `args`: flags shared by several subcommands (`--node`, a link's sync flags).
//! - `client`: the HTTP client behind the subcommands that talk to a running node.
//! - `init`, `serve`, `put` (and `negate`), `query` (and `get`), `status`, `link`,
//!   `policy`, `quarantine`, `keygen`, `verify`, `watch`, `archive`: one subcommand each.
//! - `lifecycle`: `export`, `import`, `backup`, `compact`: a node's data in and out.
//! - `token`: where a node's admin token lives (`serve`) and how the client commands
//!   find it.
//! - `table`: aligned columns and binary sizes for the readable output of `status` and
//!   `quarantine list`.
//! - `logging`: the escaping field formatter of `serve`'s text log.
//! - `allocator`: how long `serve`'s allocator keeps freed pages.

mod allocator;
mod archive;
mod args;
mod author;
mod client;
mod id;
mod init;
mod keygen;
mod lifecycle;
mod link;
mod logging;
mod peer;
mod policy;
mod put;
mod quarantine;
mod query;
mod serve;
mod status;
mod table;
mod token;
mod verify;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// glibc's allocator fragments under the node's many short-lived JSON values and index
// keys; mimalloc keeps ingest faster and resident memory flatter. `serve` tunes how long
// it keeps freed pages (`allocator`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "rhizome", version, about = "A RhizomeDB federation node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a starter node directory: a commented rhizome.toml, a policy and its test cases.
    Init(init::InitArgs),
    /// Run a node: HTTP API (and federation endpoint) on one port.
    Serve(Box<serve::ServeArgs>),
    /// Store deltas on a running node: shorthand flags, or JSON / JSON lines on stdin.
    Put(put::PutArgs),
    /// Query a running node's deltas; prints one JSON delta per line.
    Query(query::QueryArgs),
    /// Print one delta by id.
    Get(query::GetArgs),
    /// Negate a delta on a running node.
    Negate(put::NegateArgs),
    /// Print a running node's status.
    Status(status::StatusArgs),
    /// Print this node's public key (from its data directory or key file; made if new).
    Id(id::IdArgs),
    /// List, open, pause, resume or close a running node's federation links.
    Link(link::LinkArgs),
    /// List, add or remove the peers a running node knows by key or token; make a token.
    Peer(peer::PeerArgs),
    /// List, bind or unbind the authors whose deltas a running node wants signed.
    Author(author::AuthorArgs),
    /// Check, test and try trust policies and filter scripts offline (no node needed).
    Policy(policy::PolicyArgs),
    /// List a running node's quarantined deltas, or replay them under its current policies.
    Quarantine(quarantine::QuarantineArgs),
    /// Make a key for signing deltas (`put --sign`); print its public half and config lines.
    Keygen(keygen::KeygenArgs),
    /// Check the signatures of deltas in a file or on stdin, offline (no node needed).
    Verify(verify::VerifyArgs),
    /// Follow a running node's changes as they are stored; resumes after a dropped connection.
    Watch(watch::WatchArgs),
    /// Write a stopped node's deltas as JSON lines, exactly as stored.
    Export(lifecycle::export::ExportArgs),
    /// Ingest JSON lines of deltas into a node, resumably, with a summary.
    Import(lifecycle::import::ImportArgs),
    /// Copy a node's store consistently to a new directory that `serve --data` opens.
    Backup(lifecycle::backup::BackupArgs),
    /// Compact a node's store, and say its size on disk before and after.
    Compact(lifecycle::compact::CompactArgs),
    /// Move old deltas of a stopped node into archive files (its `[retention]` rule, or flags).
    Archive(archive::ArchiveArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => init::run(args),
        Command::Serve(args) => serve::run(*args).await,
        Command::Put(args) => put::run(args).await,
        Command::Query(args) => query::run(args).await,
        Command::Get(args) => query::get(args).await,
        Command::Negate(args) => put::negate(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Id(args) => id::run(args),
        Command::Link(args) => link::run(args).await,
        Command::Peer(args) => peer::run(args).await,
        Command::Author(args) => author::run(args).await,
        Command::Policy(args) => policy::run(args),
        Command::Quarantine(args) => quarantine::run(args).await,
        Command::Keygen(args) => keygen::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Watch(args) => watch::run(args).await,
        Command::Export(args) => lifecycle::export::run(args).await,
        Command::Import(args) => lifecycle::import::run(args).await,
        Command::Backup(args) => lifecycle::backup::run(args).await,
        Command::Compact(args) => lifecycle::compact::run(args).await,
        Command::Archive(args) => archive::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
