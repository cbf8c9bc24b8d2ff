//! Link and server configuration, in the v1 `FederationConfig` shape (camelCase JSON).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::filter::DeltaFilter;
use crate::tls::{ClientTls, ServerTls};

/// Which way deltas flow, from the connecting side's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// The connecting side only sends.
    Push,
    /// The connecting side only receives.
    Pull,
    #[default]
    Bidirectional,
}

/// What the connecting side receives when a link first comes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialSync {
    /// Every existing delta.
    #[default]
    Full,
    /// Deltas with a timestamp at or after `syncFromTimestamp`.
    FromTimestamp,
    /// Only deltas stored after the link is up.
    None,
}

/// Which pointer form a link's outgoing deltas take (`pointerForm`). Stored deltas keep
/// the current form; the conversion happens when a frame is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PointerForm {
    /// `role` / `target.context`: the reference implementation's current version.
    Current,
    /// `localContext` / `targetContext`: peers of the seed's version, which exit on any
    /// other form (docs/PROTOCOL.md, 7.5).
    Legacy,
    /// Current, until a plain v1 peer sends a delta in the legacy form; legacy from then
    /// on, for the rest of the link's life (peers that speak our extension are our own
    /// nodes and are not watched). A legacy peer that never sends a delta (one we only
    /// push to) is not recognised: configure `legacy` for it.
    #[default]
    Auto,
}

/// Reconnection with exponential backoff and jitter (connecting side only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReconnectConfig {
    pub enabled: bool,
    /// Attempts after a failure before giving up; 0 means forever.
    pub max_attempts: u32,
    /// Milliseconds before the first retry.
    pub initial_delay: u64,
    /// Milliseconds the delay grows to at most.
    pub max_delay: u64,
    pub backoff_multiplier: f64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            enabled: true,
            max_attempts: 0,
            initial_delay: 1000,
            max_delay: 30_000,
            backoff_multiplier: 2.0,
        }
    }
}

impl ReconnectConfig {
    /// The delay before retry number `attempt` (1-based), with +/-20% jitter so that many
    /// links cut at once do not all come back in the same instant.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .backoff_multiplier
            .max(1.0)
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let base = (self.initial_delay as f64 * exp)
            .min(self.max_delay as f64)
            .max(0.0);
        let jitter = 0.8 + rand::random::<f64>() * 0.4;
        Duration::from_millis((base * jitter) as u64)
    }
}

/// One link's configuration (the connecting side's `connect_to_remote(url, config)`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct LinkConfig {
    pub mode: SyncMode,
    pub initial_sync: InitialSync,
    /// With `initialSync: from_timestamp`: the lower bound in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_from_timestamp: Option<u64>,
    /// Which local deltas this link sends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_filter: Option<DeltaFilter>,
    /// Which remote deltas this link keeps (also sent to the peer so it need not send the rest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_filter: Option<DeltaFilter>,
    pub reconnect: ReconnectConfig,
    /// A name for logs, events and scoped scripts; defaults to the link id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Seconds between pings; the link is dead after two intervals without any frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<u64>,
    /// The pointer form of the deltas this link sends.
    pub pointer_form: PointerForm,
    /// The key the node at the other end must prove it holds (lowercase hex, what
    /// `rhizome id` prints there). Unset: whoever answers, known by its key if it proves one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_key: Option<String>,
}

/// The accepting side's options.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerOptions {
    /// WebSocket endpoint path.
    pub path: String,
    /// Concurrent accepted federation links; over it, a new link is closed with 1008.
    /// (Sockets of every kind are bounded by `max_sockets`; a link holds one of those too.)
    pub max_connections: usize,
    /// Concurrent sockets on the port (HTTP connections and accepted links together).
    /// `None`: derived from the file-descriptor limit (see `server::fd_limit`); a value
    /// above that derived cap is lowered to it, so the node never runs out of descriptors.
    pub max_sockets: Option<usize>,
    /// How long a connection may take to send a complete request head; it also bounds how
    /// long a keep-alive connection may sit idle between requests.
    pub header_timeout: Duration,
    /// An HTTP connection on which no byte moves either way for this long is closed (a
    /// body that stalls, a client that stops reading). Links have heartbeats instead.
    pub idle_timeout: Duration,
    /// Ping interval for every link of this node.
    pub heartbeat: Duration,
    /// How long a new socket may take to send its hello.
    pub handshake_timeout: Duration,
    /// Largest WebSocket message accepted, in bytes.
    pub max_message_size: usize,
    /// The pointer form of what inbound links send (links we dial have their own).
    pub pointer_form: PointerForm,
    /// Accept links from peers that prove no configured identity (they are `anonymous`).
    /// `None`: only when the listener is on a loopback address ([`Federation::listening_on`]).
    pub allow_anonymous: Option<bool>,
    /// The bearer token the admin routes of the HTTP API take (links, policies, the
    /// quarantine, negation). `None` leaves them open: the default for a node built
    /// in-process; the `rhizome` binary always sets one.
    pub admin_token: Option<String>,
    /// The bearer token `POST /deltas` takes (or the admin token); `None`: open.
    pub write_token: Option<String>,
    /// The bearer token the read routes take (or the admin token); `None`: open.
    pub read_token: Option<String>,
    /// A second address (host:port) that serves the admin routes; when set, the main
    /// address answers them 403, so admin can stay on loopback while federation
    /// listens on every interface.
    pub admin_listen: Option<String>,
    /// With a certificate, the port speaks only TLS: `https` for the API, `wss` for links.
    pub tls: Option<ServerTls>,
    /// What the `wss://` links this node dials trust; `None`: the system's roots.
    pub client_tls: Option<ClientTls>,
    /// Offer the `announce` feature: deltas this node relays (received from another
    /// peer) go to peers that speak it as ids, and a body only to a peer that asks.
    pub announce_relayed: bool,
    /// Offer the `reconcile` feature: a link without a cursor learns what it lacks by
    /// range-based set reconciliation rather than receiving everything.
    pub reconcile: bool,
}

impl ServerOptions {
    /// The extension features this node offers (hello / hello_ack).
    pub(crate) fn features(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.announce_relayed {
            f.push(super::wire::features::ANNOUNCE.to_owned());
        }
        if self.reconcile {
            f.push(super::wire::features::RECONCILE.to_owned());
        }
        f
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            path: "/federation".into(),
            max_connections: 1000,
            max_sockets: None,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            heartbeat: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            max_message_size: super::wire::DEFAULT_MAX_MESSAGE_BYTES,
            pointer_form: PointerForm::Auto,
            allow_anonymous: None,
            admin_token: None,
            write_token: None,
            read_token: None,
            admin_listen: None,
            tls: None,
            client_tls: None,
            announce_relayed: true,
            reconcile: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reference_client_config_decodes() {
        let v = json!({"mode":"bidirectional","initialSync":"full","syncFromTimestamp":12345,
            "pullFilter":{"authors":["alice"]},"pushFilter":{"systems":["node-a"]},
            "reconnect":{"enabled":true,"maxAttempts":5,"initialDelay":1000,"maxDelay":30000,"backoffMultiplier":2}});
        let c: LinkConfig = serde_json::from_value(v).unwrap();
        assert_eq!(c.initial_sync, InitialSync::Full);
        assert_eq!(c.reconnect.max_attempts, 5);
        assert_eq!(
            c.pull_filter.unwrap().authors,
            Some(vec!["alice".to_owned()])
        );
        let err = serde_json::from_value::<LinkConfig>(json!({"mode": "sideways"})).unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }

    #[test]
    fn backoff_grows_to_the_cap() {
        let r = ReconnectConfig {
            initial_delay: 100,
            max_delay: 1000,
            backoff_multiplier: 2.0,
            ..Default::default()
        };
        let ms = |a| r.delay(a).as_millis() as f64;
        assert!((80.0..=120.0).contains(&ms(1)));
        assert!((320.0..=480.0).contains(&ms(3)));
        assert!((800.0..=1200.0).contains(&ms(30)));
    }
}
