//! The integration tests, one module per subject, in one test binary: a fresh
//! `cargo test` links the library into a single executable instead of one per file.
//!
//! Every test starts real nodes on port 0 and talks real WebSocket and HTTP, or runs the
//! `rhizome` binary itself (`common::cli`). Run one subject with
//! `cargo test --test it federation::`, one test by its name as usual.

mod common;

mod admin_auth;
mod architecture;
mod changes;
mod cli;
mod cli_link;
mod cli_policy;
mod config;
mod connections;
mod console;
mod convergence;
mod examples;
mod faults;
mod federation;
mod federation_interop;
mod federation_resume;
mod fuzz_smoke;
mod hostile_input;
mod http_api;
mod http_reads;
mod lifecycle;
mod mesh;
mod peer_auth;
mod policies;
mod readme_tour;
mod reconcile;
mod relay;
mod retention;
mod signature_vectors;
mod signatures;
mod signing_cli;
mod storage_faults;
mod tls;
mod vendored_fjall;
