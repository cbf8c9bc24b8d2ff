//! The `rhizome` command: run a node, or talk to a running one over its HTTP API.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use rhizome::cli;

// glibc's allocator fragments under the node's many short-lived JSON values and index
// keys; mimalloc keeps ingest faster and resident memory flatter.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (libmimalloc-sys does not export
/// it; its position in the enum of `c_src/mimalloc/v3/include/mimalloc.h`). The test below
/// fails if an upgrade moves it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Milliseconds a freed page stays committed before mimalloc returns it to the OS.
/// mimalloc v3 waits 1000 ms, so the flush and compaction buffers of a long sync pile up
/// as resident memory no one uses: a receiver syncing 1M deltas peaked at 112 MiB with
/// the default and at 80 MiB with 10 ms (mimalloc v2's default), for about 5% more CPU.
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Applies [`PURGE_DELAY_MS`] unless the operator chose one (`MIMALLOC_PURGE_DELAY`,
/// which mimalloc itself reads at start-up).
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option; mimalloc reads options atomically.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

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
    tune_allocator();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_delay_is_the_option_we_set() {
        // mimalloc v3's purge_delay defaults to 1000 ms, and no other option has that
        // default: reading 1000 at this index proves the index names purge_delay.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads one integer option.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            default, 1000,
            "MI_OPTION_PURGE_DELAY no longer names purge_delay"
        );
        tune_allocator();
        // SAFETY: as above.
        let tuned = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(tuned, PURGE_DELAY_MS);
    }
}
