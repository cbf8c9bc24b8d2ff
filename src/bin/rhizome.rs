//! The `rhizome` command: run a node, or talk to a running one over its HTTP API.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use rhizome::cli;

// glibc's allocator fragments under the node's many short-lived JSON values and index
// keys; mimalloc keeps ingest faster and resident memory flatter. `serve` tunes how long
// it keeps freed pages (`rhizome::cli::allocator`).
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
    Init(cli::init::InitArgs),
    /// Run a node: HTTP API (and federation endpoint) on one port.
    Serve(cli::serve::ServeArgs),
    /// Store deltas on a running node: shorthand flags, or JSON / JSON lines on stdin.
    Put(cli::put::PutArgs),
    /// Query a running node's deltas; prints one JSON delta per line.
    Query(cli::query::QueryArgs),
    /// Print one delta by id.
    Get(cli::query::GetArgs),
    /// Negate a delta on a running node.
    Negate(cli::put::NegateArgs),
    /// Print a running node's status.
    Status(cli::status::StatusArgs),
    /// List, open, pause, resume or close a running node's federation links.
    Link(cli::link::LinkArgs),
    /// Check, test and try trust policies and filter scripts offline (no node needed).
    Policy(cli::policy::PolicyArgs),
    /// List a running node's quarantined deltas, or replay them under its current policies.
    Quarantine(cli::quarantine::QuarantineArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => cli::init::run(args),
        Command::Serve(args) => cli::serve::run(args).await,
        Command::Put(args) => cli::put::run(args).await,
        Command::Query(args) => cli::query::run(args).await,
        Command::Get(args) => cli::query::get(args).await,
        Command::Negate(args) => cli::put::negate(args).await,
        Command::Status(args) => cli::status::run(args).await,
        Command::Link(args) => cli::link::run(args).await,
        Command::Policy(args) => cli::policy::run(args),
        Command::Quarantine(args) => cli::quarantine::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
