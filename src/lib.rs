//! # rhizome: a RhizomeDB federation node
//!
//! Stores immutable deltas in fjall and keeps them converged with other RhizomeDB
//! instances over WebSocket links. The types most programs need are re-exported here:
//! open a [`Node`] (store, admission, events, one ingestion path), give it links with a
//! [`Federation`], serve both on a port with a [`Server`].
//!
//! # Layout, lowest floor first (a module uses only floors below it)
//! - [`delta`]: the `Delta` / `Pointer` / `Target` types in the v1 wire shape, the one
//!   JSON parse (naming the bad field), validation, limits, authoring and negation.
//!   `events`: what the node announces. `file_watch`: debounced watching for reloads.
//!   [`tls`]: the listener's certificate and the roots clients trust (rustls).
//! - `filter`: [`DeltaFilter`], strict JSON and `matches`.
//! - [`store`]: the delta store, on fjall or in memory: log by sequence number,
//!   id index (dedup), query indexes, negations, metadata; one writer thread with group
//!   commit; one read of the log ([`store::LogTail`]); archival of old deltas to files. [`policy`]: trust policies and
//!   push / pull filters as hot-reloaded Rhai scripts.
//! - [`admission`]: what a remote delta must pass (pull filters, trust policies) and the
//!   quarantine record of one that failed.
//! - `node`: [`Node`], the one ingestion path, queries, subscriptions, the quarantine,
//!   the retention rule ([`RetentionSettings`]).
//! - [`federation`]: [`Federation`] (a node and its links): protocol v1 and our
//!   extension (`wire`), the link state machine, log-tailing senders, dialing.
//! - `http`: the JSON API and the WebSocket upgrade, served within bounds by [`Server`].
//!   [`config`]: the TOML config file and its hot-reloaded links.
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admission;
pub mod config;
pub mod delta;
pub mod events;
pub mod federation;
mod file_watch;
mod filter;
mod http;
pub mod identity;
mod node;
pub mod policy;
pub mod store;
pub mod tls;

pub use admission::{PeerEntry, PeerTable, TrustPolicy};
pub use delta::{Delta, InvalidDelta, Limits, Pointer, Reference, Target};
pub use federation::{Federation, FederationLink, LinkConfig, LinkStatus, ServerOptions};
pub use filter::DeltaFilter;
pub use http::server::{fd_limit, ConnectionStats, ConnectionStatsSnapshot, Server};
pub use node::retention::{LastArchival, RetentionSettings};
pub use node::{
    backup_store, CreateError, ImportTrust, IngestOutcome, Node, NodeConfig, NodeError, Origin,
    QuarantineEntry, ReplayReport, Storage, Subscription, IMPORT_SCOPE,
};
pub use policy::{LinkPeer, ANONYMOUS};
pub use store::{Seq, Store, StoredDelta};

/// The README's Rust examples, compiled by `cargo test` so they cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
