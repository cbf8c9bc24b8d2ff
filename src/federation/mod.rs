//! Federation: links between nodes over WebSocket, protocol v1 plus our extension.
//!
//! [`Federation`] is a node plus its links: it dials ([`Federation::connect_to_remote`]),
//! accepts sockets an HTTP server upgraded ([`Federation::accept`]), lists and closes
//! links. The node below knows nothing of it.
//!
//! Data walks one way. A socket's frames are decoded ([`wire`]) and handed to the
//! link's state machine (`session`, the same for both ends), which feeds every delta
//! to the node's single ingestion path. Each link's `sender` tails the durable log
//! from its own cursor and writes to the socket, so a slow peer holds back only its
//! own link and nothing is dropped. `accept` runs an accepted socket, `connect` dials
//! (with reconnect and backoff), `cursor` keeps what each link has committed.

mod accept;
mod claims;
mod connect;
mod cursor;
mod links;
mod options;
pub(crate) mod reconcile;
mod sender;
mod session;
pub mod wire;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

pub use connect::{federation_url, ConnectError};
pub use links::{
    AuthRefusals, Direction, FederationLink, LinkInfo, LinkStats, LinkStatsSnapshot, LinkStatus,
    ReconcileReport,
};
pub use options::{InitialSync, LinkConfig, PointerForm, ReconnectConfig, ServerOptions, SyncMode};

use crate::node::Node;
use crate::policy::LinkPeer;
use links::LinkRegistry;

/// Why federation cannot start with these options.
/// How many reconciliations (ours and the ones we answer) may run at once, node-wide.
const RECONCILE_SLOTS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The node's delta limits do not fit in the WebSocket message limit.
    #[error("{0}")]
    Limits(String),
}

/// A node and its links; cheap to clone.
#[derive(Clone)]
pub struct Federation {
    inner: Arc<Inner>,
}

struct Inner {
    node: Node,
    options: ServerOptions,
    links: LinkRegistry,
    /// Whether peers that prove no configured identity may link, when the options leave
    /// it open: only on loopback ([`Federation::listening_on`]).
    anonymous_by_default: AtomicBool,
    auth_refusals: Arc<AuthRefusals>,
    /// Announced deltas a link is fetching now (see `claims`).
    claims: Arc<claims::Claims>,
    /// Reconciliations running at once, node-wide: each holds a sorted copy of the log's
    /// ids (32 bytes a delta).
    reconcile_slots: Arc<tokio::sync::Semaphore>,
    /// Where the endpoint listens ([`Federation::listening_on`]).
    listening: std::sync::Mutex<Option<std::net::SocketAddr>>,
}

impl Federation {
    /// Federation for `node` with these endpoint options.
    ///
    /// # Errors
    /// When the node's largest delta could not travel in the largest message.
    pub fn new(node: Node, options: ServerOptions) -> Result<Federation, FederationError> {
        node.limits()
            .check_settings(options.max_message_size)
            .map_err(FederationError::Limits)?;
        Ok(Federation {
            inner: Arc::new(Inner {
                node,
                options,
                links: LinkRegistry::default(),
                anonymous_by_default: AtomicBool::new(true),
                auth_refusals: Arc::default(),
                claims: Arc::default(),
                reconcile_slots: Arc::new(tokio::sync::Semaphore::new(RECONCILE_SLOTS)),
                listening: std::sync::Mutex::new(None),
            }),
        })
    }

    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    pub fn options(&self) -> &ServerOptions {
        &self.inner.options
    }

    /// Tells federation where its endpoint listens. Unless `allow_anonymous` says
    /// otherwise, peers that prove no configured identity may link only to a node on a
    /// loopback address: one reachable from other machines takes authenticated peers.
    /// Returns whether anonymous peers are accepted.
    pub fn listening_on(&self, addr: std::net::SocketAddr) -> bool {
        self.inner
            .anonymous_by_default
            .store(addr.ip().is_loopback(), Ordering::Relaxed);
        if let Ok(mut at) = self.inner.listening.lock() {
            *at = Some(addr);
        }
        self.allows_anonymous()
    }

    /// Where the endpoint listens, once it does.
    pub fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.listening.lock().ok().and_then(|at| *at)
    }

    /// Whether a peer that proves no configured identity may link (as `anonymous`).
    pub fn allows_anonymous(&self) -> bool {
        self.inner
            .options
            .allow_anonymous
            .unwrap_or_else(|| self.inner.anonymous_by_default.load(Ordering::Relaxed))
    }

    /// Links refused in the handshake because of who the peer is.
    pub fn auth_refusals(&self) -> &Arc<AuthRefusals> {
        &self.inner.auth_refusals
    }

    pub(crate) fn reconcile_slots(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.inner.reconcile_slots
    }

    pub(crate) fn claims(&self) -> &Arc<claims::Claims> {
        &self.inner.claims
    }

    pub(crate) fn links(&self) -> &LinkRegistry {
        &self.inner.links
    }

    /// The WebSocket limits of every link, dialed or accepted.
    pub fn websocket_config(&self) -> WebSocketConfig {
        let max = self.inner.options.max_message_size;
        WebSocketConfig::default()
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
    }

    /// Opens a federation link to a remote node and keeps it up (reconnecting per
    /// `config.reconnect`). Returns at once; watch [`FederationLink::watch_status`]
    /// or the node's events to see it connect.
    ///
    /// # Errors
    /// When the url cannot be used.
    pub fn connect_to_remote(
        &self,
        url: &str,
        config: LinkConfig,
    ) -> Result<FederationLink, ConnectError> {
        if let Some(key) = &config.peer_key {
            crate::identity::parse_public_key(key).map_err(ConnectError::PeerKey)?;
        }
        connect::start(self, url, config)
    }

    /// Runs a socket a peer opened to our endpoint (already upgraded) until it closes.
    /// Over `max_connections` links, the socket is closed with 1008 and a reason.
    /// `by_token`: the configured peer whose token came with the upgrade, if any.
    pub async fn accept<S>(
        &self,
        ws: WebSocketStream<S>,
        peer_addr: Option<String>,
        by_token: Option<LinkPeer>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        accept::serve_inbound(self, ws, peer_addr, by_token).await;
    }

    /// Every link, both those we dialed and those dialed to us.
    pub fn get_federation_links(&self) -> Vec<FederationLink> {
        self.links().all()
    }

    pub fn get_federation_link(&self, id: &str) -> Option<FederationLink> {
        self.links().get(id)
    }

    /// Closes a link for good; `false` when there is no such link.
    pub fn disconnect_from_remote(&self, id: &str) -> bool {
        match self.links().get(id) {
            Some(link) => {
                link.disconnect();
                true
            }
            None => false,
        }
    }

    /// Closes the links the authenticated peer `name` opened to this node (it was
    /// removed or changed: when it reconnects it is judged afresh). Returns how many.
    pub fn close_links_of_peer(&self, name: &str) -> usize {
        let mut closed = 0;
        for link in self.get_federation_links() {
            let theirs = link.shared.direction == Direction::Inbound
                && link
                    .shared
                    .peer()
                    .is_some_and(|p| p.authenticated && p.name == name);
            if theirs {
                link.disconnect();
                closed += 1;
            }
        }
        closed
    }

    /// What `GET /links` shows.
    pub fn link_infos(&self) -> Vec<LinkInfo> {
        self.get_federation_links()
            .iter()
            .map(FederationLink::info)
            .collect()
    }

    /// Disconnects every link and waits (a bounded time) for them to close: shutdown.
    pub async fn disconnect_all(&self) {
        for link in self.get_federation_links() {
            link.disconnect();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while !self.links().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
