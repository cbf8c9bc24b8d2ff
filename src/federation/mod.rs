//! Federation: links between nodes over WebSocket, protocol v1 plus our extension.
//!
//! Data walks one way. A socket's frames are decoded ([`wire`]) and handed to the
//! link's state machine (`session`, the same for both ends), which feeds every delta
//! to the node's single ingestion path. Each link's `sender` tails the durable log
//! from its own cursor and writes to the socket, so a slow peer holds back only its
//! own link and nothing is dropped. `accept` serves the endpoint, `connect` dials
//! (with reconnect and backoff), `cursor` keeps what each link has committed.

mod accept;
pub mod config;
mod connect;
mod cursor;
mod links;
mod sender;
mod session;
pub mod trust;
pub mod wire;

pub(crate) use accept::federation_handler;
pub use config::{InitialSync, LinkConfig, ReconnectConfig, ServerOptions, SyncMode};
pub use connect::{federation_url, ConnectError};
pub(crate) use links::LinkRegistry;
pub use links::{Direction, FederationLink, LinkInfo, LinkStats, LinkStatsSnapshot, LinkStatus};
pub use trust::TrustPolicy;
