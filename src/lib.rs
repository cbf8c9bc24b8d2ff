//! # rhizome: a RhizomeDB federation node
//!
//! Stores immutable deltas in fjall and (with the federation modules) keeps them
//! converged with other RhizomeDB instances over WebSocket links.
//!
//! # Layout
//! - [`delta`]: the `Delta` / `Pointer` / `Target` types in the v1 wire shape,
//!   decoding that names the bad field, validation, authoring and negation.
//! - [`filter`]: `DeltaFilter`, strict JSON and `matches`.
//! - [`store`]: the delta store, on fjall or in memory: gap-free log by sequence number,
//!   id index (dedup), query indexes, negations, metadata; one writer thread with group
//!   commit; the newest durable records kept in memory for log tailers.
//! - [`events`]: what the node announces.
//! - [`admission`]: what a remote delta must pass (pull filters, trust policies) and
//!   the quarantine record of one that failed.
//! - [`node`]: `Node`, the one ingestion path, queries and subscriptions.
//! - [`federation`]: links to other nodes: protocol v1 and our extension, the link
//!   state machine, log-tailing senders, the endpoint and the dialer.
//! - [`policy`]: trust policies and push / pull filters as hot-reloaded Rhai scripts.
//! - [`quarantine`]: listing and replaying deltas trust policies refused.
//! - [`http`]: the JSON API served by `rhizome serve`.
//! - [`config`]: the TOML config file and its hot-reloaded links.
//! - [`watch`]: debounced file watching behind every hot reload.
//! - [`server`]: binding the port, serving it within bounds (connection cap below the
//!   descriptor limit, header and idle timeouts), graceful shutdown.
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admission;
pub mod config;
pub mod delta;
pub mod events;
pub mod federation;
pub mod file_watch;
pub mod filter;
pub mod http;
pub mod node;
pub mod policy;
pub mod store;

pub use admission::TrustPolicy;
pub use delta::{Delta, InvalidDelta, Limits, Pointer, Reference, Target};
pub use federation::{Federation, FederationLink, LinkConfig, LinkStatus, ServerOptions};
pub use filter::DeltaFilter;
pub use http::server::Server;
pub use node::{IngestOutcome, Node, NodeConfig, Origin, Storage};
pub use store::{Seq, Store, StoredDelta};

/// The README's Rust examples, compiled by `cargo test` so they cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
