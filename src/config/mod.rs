//! The node's configuration file (TOML), in the same camelCase vocabulary as the JSON
//! link config and the HTTP API.
//!
//! ```toml
//! systemId = "bridge-1"
//! listen = "0.0.0.0:8080"
//! data = "./data"            # or: storage = "memory"
//! durability = "sync"        # or "buffered"
//! policies = "./policies"
//! filters = "./filters"
//! scriptTimeoutMs = 50       # wall time per script evaluation (applied live)
//!
//! [server]
//! path = "/federation"
//! maxConnections = 1000     # inbound federation links
//! maxSockets = 16384         # sockets of every kind (default: from the fd limit)
//! headerTimeout = 30         # seconds to send a request head
//! idleTimeout = 60           # seconds an HTTP connection may move no byte
//! heartbeat = 30             # seconds
//! adminToken = "..."         # admin routes' bearer token (default: data/admin.token)
//! writeToken = "..."         # POST /deltas takes it when set
//! readToken = "..."          # the read routes take it when set
//! adminListen = "127.0.0.1:8090"  # admin routes served only there
//! tlsCert = "cert.pem"       # with tlsKey: serve https and wss (PEM files)
//! tlsKey = "key.pem"
//! tlsCa = "ca.pem"           # trusted by wss:// links besides the system's roots
//!
//! [limits]                 # what a delta may weigh, on every way in
//! maxDeltaBytes = 1048576
//!
//! [trust]
//! trustedAuthors = ["alice"]
//! maxClockSkewMs = 300000
//!
//! signingKey = "author.key" # signs the deltas this node completes (POST /deltas shorthand)
//!
//! [signatures]
//! require = "none"           # or "remote" (every peer) or "all" (local clients too)
//! requireFrom = ["anonymous"] # scopes that must sign: peer names, link names, anonymous
//! moderators = ["<key>"]     # may negate any protected delta
//! negations = "author"       # or "any"
//!
//! [retention]                # move old deltas to archive files (applied live)
//! maxAge = "90d"             # older than this (ms, s, m, h, d)
//! maxBytes = 10737418240     # or: while the store takes more on disk
//! filter = { targetContexts = ["logs"] }  # only these may be archived
//! interval = "10m"           # how often the rule is applied
//!
//! [[author]]                 # deltas by "alice" must be signed by one of these keys
//! name = "alice"
//! keys = ["<base64url or hex>"]
//!
//! [[link]]
//! name = "upstream"
//! url = "http://10.0.0.2:8080"
//! mode = "pull"
//! initialSync = "full"
//! pullFilter = { authors = ["alice"] }
//! reconnect = { maxAttempts = 0, initialDelay = 1000 }
//! requireSignatures = true   # deltas on this link must be signed
//! ```
//!
//! [`live`] applies the `[[link]]` tables to a running node and reloads them when the
//! file changes.

pub mod live;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::admission::{
    AuthorEntry, AuthorTable, PeerEntry, PeerTable, SignaturePolicy, SignatureSettings, TrustPolicy,
};
use crate::delta::Limits;
use crate::federation::{LinkConfig, PointerForm, ServerOptions};
use crate::node::retention::RetentionSettings;
use crate::node::{NodeConfig, Storage};
use crate::policy::PolicyDirs;
use crate::store::Durability;

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Fjall,
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityKind {
    /// fsync before anything is acknowledged.
    Sync,
    /// Leave writes in OS buffers (faster; a power cut can lose acknowledged deltas).
    Buffered,
}

/// `[server]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServerSection {
    pub path: Option<String>,
    /// Inbound federation links at once.
    pub max_connections: Option<usize>,
    /// Sockets of every kind at once (default: derived from the fd limit).
    pub max_sockets: Option<usize>,
    /// Seconds a connection has to send a complete request head.
    pub header_timeout: Option<u64>,
    /// Seconds an HTTP connection may move no byte before it is closed.
    pub idle_timeout: Option<u64>,
    /// Seconds between pings.
    pub heartbeat: Option<u64>,
    /// Seconds a new socket has to complete the handshake.
    pub handshake_timeout: Option<u64>,
    /// Largest WebSocket message, in bytes.
    pub max_message_size: Option<usize>,
    /// The pointer form inbound links send in: `current`, `legacy` or `auto` (default).
    pub pointer_form: Option<PointerForm>,
    /// Accept links from peers that did not authenticate (default: only when listening
    /// on a loopback address).
    pub allow_anonymous: Option<bool>,
    /// Relay deltas received from one peer to the others as ids, bodies on request
    /// (feature `announce`; default true). Peers without the feature get bodies.
    pub announce_relayed: Option<bool>,
    /// Reconcile links without a cursor by range-based set reconciliation (feature
    /// `reconcile`; default true).
    pub reconcile: Option<bool>,
    /// The bearer token of the admin routes (default for `rhizome serve`: one made on
    /// first start, in `admin.token` in the data directory).
    pub admin_token: Option<String>,
    /// The bearer token `POST /deltas` takes (default: open).
    pub write_token: Option<String>,
    /// The bearer token the read routes take (default: open).
    pub read_token: Option<String>,
    /// A second address (host:port) that alone serves the admin routes.
    pub admin_listen: Option<String>,
    /// PEM certificate chain (leaf first): with `tlsKey`, the port serves https and wss.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tlsCert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) that `wss://` links trust besides the system's roots.
    pub tls_ca: Option<PathBuf>,
}

/// One `[[link]]`: a name (unique), the peer's url, and the link config.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkEntry {
    pub name: String,
    pub url: String,
    pub config: LinkConfig,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFile {
    pub system_id: Option<String>,
    pub listen: Option<String>,
    pub data: Option<PathBuf>,
    pub storage: Option<StorageKind>,
    pub durability: Option<DurabilityKind>,
    pub policies: Option<PathBuf>,
    pub filters: Option<PathBuf>,
    /// Wall time one script evaluation may take, in ms; over it the delta is rejected.
    pub script_timeout_ms: Option<u64>,
    pub server: ServerSection,
    pub limits: Limits,
    pub trust: TrustPolicy,
    pub links: Vec<LinkEntry>,
    /// `[[peer]]`: the peers known by key or token.
    pub peers: Vec<PeerEntry>,
    /// `[[author]]`: authors bound to keys.
    pub authors: Vec<AuthorEntry>,
    /// `[signatures]`, with the names of the links marked `requireSignatures` added to
    /// `requireFrom`.
    pub signatures: SignatureSettings,
    /// Signs the deltas this node completes from the authoring shorthand.
    pub signing_key: Option<PathBuf>,
    /// `[retention]`: which deltas move to the archive.
    pub retention: RetentionSettings,
}

/// The file as serde sees it; links are checked one by one for precise errors.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct RawFile {
    system_id: Option<String>,
    listen: Option<String>,
    data: Option<PathBuf>,
    storage: Option<StorageKind>,
    durability: Option<DurabilityKind>,
    policies: Option<PathBuf>,
    filters: Option<PathBuf>,
    script_timeout_ms: Option<u64>,
    server: ServerSection,
    limits: Limits,
    trust: TrustPolicy,
    link: Vec<toml::Table>,
    peer: Vec<PeerEntry>,
    author: Vec<AuthorEntry>,
    signatures: SignatureSettings,
    signing_key: Option<PathBuf>,
    retention: RetentionSettings,
}

impl NodeFile {
    /// Reads and checks a config file. Relative paths in it are relative to the file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and, where it can, the line and the key.
    pub fn load(path: &Path) -> Result<NodeFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        NodeFile::from_text(path, &text)
    }

    /// Checks config text already read from `path` (a reload reads it itself, to be
    /// sure the text it checked is the text it applies).
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and, where it can, the line and the key.
    pub fn from_text(path: &Path, text: &str) -> Result<NodeFile, ConfigError> {
        let mut file = NodeFile::parse(text).map_err(|message| ConfigError {
            file: path.display().to_string(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut file.data,
            &mut file.policies,
            &mut file.filters,
            &mut file.server.tls_cert,
            &mut file.server.tls_key,
            &mut file.server.tls_ca,
            &mut file.signing_key,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(file)
    }

    /// Parses config text.
    ///
    /// # Errors
    /// A message naming the line or key that is wrong.
    pub fn parse(text: &str) -> Result<NodeFile, String> {
        let mut raw: RawFile =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        let mut links = Vec::with_capacity(raw.link.len());
        let mut names = BTreeSet::new();
        for (i, mut table) in raw.link.into_iter().enumerate() {
            let at = |key: &str| format!("link[{i}].{key}");
            let url = match table.remove("url") {
                Some(toml::Value::String(u)) => u,
                Some(_) => return Err(format!("{}: must be a string", at("url"))),
                None => return Err(format!("{}: missing (the peer to connect to)", at("url"))),
            };
            // A link's requirement is the node's, for the link's scope (its name), so a
            // quarantine replay judges by what is configured now.
            let require_signatures = match table.remove("requireSignatures") {
                Some(toml::Value::Boolean(b)) => b,
                Some(_) => {
                    return Err(format!(
                        "{}: must be true or false",
                        at("requireSignatures")
                    ))
                }
                None => false,
            };
            let config: LinkConfig = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| format!("link[{i}]: {}", e.message()))?;
            let name = config.name.clone().ok_or_else(|| {
                format!(
                    "{}: missing (links in a config file need a unique name)",
                    at("name")
                )
            })?;
            if name.is_empty() || name.contains('/') {
                return Err(format!(
                    "{}: {name:?} must be non-empty and have no '/'",
                    at("name")
                ));
            }
            if !names.insert(name.clone()) {
                return Err(format!("{}: {name:?} is used by another link", at("name")));
            }
            crate::federation::federation_url(&url).map_err(|e| format!("{}: {e}", at("url")))?;
            if require_signatures && !raw.signatures.require_from.contains(&name) {
                raw.signatures.require_from.push(name.clone());
            }
            links.push(LinkEntry { name, url, config });
        }
        if let Some(path) = &raw.server.path {
            if !path.starts_with('/') {
                return Err(format!("server.path: {path:?} must start with '/'"));
            }
        }
        PeerTable::new(raw.peer.clone()).map_err(|e| format!("peer: {e}"))?;
        AuthorTable::new(raw.author.clone()).map_err(|e| format!("author: {e}"))?;
        SignaturePolicy::new(raw.signatures.clone())?;
        raw.retention.check()?;
        let max_message = raw
            .server
            .max_message_size
            .unwrap_or(ServerOptions::default().max_message_size);
        raw.limits.check_settings(max_message)?;
        let most = crate::policy::engine::MAX_TIME_BUDGET.as_millis() as u64;
        if let Some(ms) = raw.script_timeout_ms {
            if !(1..=most).contains(&ms) {
                return Err(format!(
                    "scriptTimeoutMs: {ms} must be between 1 and {most} (ms)"
                ));
            }
        }
        Ok(NodeFile {
            system_id: raw.system_id,
            listen: raw.listen,
            data: raw.data,
            storage: raw.storage,
            durability: raw.durability,
            policies: raw.policies,
            filters: raw.filters,
            script_timeout_ms: raw.script_timeout_ms,
            server: raw.server,
            limits: raw.limits,
            trust: raw.trust,
            links,
            peers: raw.peer,
            authors: raw.author,
            signatures: raw.signatures,
            signing_key: raw.signing_key,
            retention: raw.retention,
        })
    }

    /// The federation endpoint options, defaults filled in.
    pub fn server_options(&self) -> ServerOptions {
        let d = ServerOptions::default();
        let s = &self.server;
        ServerOptions {
            path: s.path.clone().unwrap_or(d.path),
            max_connections: s.max_connections.unwrap_or(d.max_connections),
            max_sockets: s.max_sockets.or(d.max_sockets),
            header_timeout: s
                .header_timeout
                .map(|t| Duration::from_secs(t.max(1)))
                .unwrap_or(d.header_timeout),
            idle_timeout: s
                .idle_timeout
                .map(|t| Duration::from_secs(t.max(1)))
                .unwrap_or(d.idle_timeout),
            heartbeat: s.heartbeat.map(Duration::from_secs).unwrap_or(d.heartbeat),
            handshake_timeout: s
                .handshake_timeout
                .map(Duration::from_secs)
                .unwrap_or(d.handshake_timeout),
            max_message_size: s.max_message_size.unwrap_or(d.max_message_size),
            pointer_form: s.pointer_form.unwrap_or(d.pointer_form),
            allow_anonymous: s.allow_anonymous.or(d.allow_anonymous),
            admin_token: s.admin_token.clone(),
            write_token: s.write_token.clone(),
            read_token: s.read_token.clone(),
            admin_listen: s.admin_listen.clone(),
            // Read from their files by the caller, who may override them with flags.
            tls: None,
            client_tls: None,
            announce_relayed: s.announce_relayed.unwrap_or(d.announce_relayed),
            reconcile: s.reconcile.unwrap_or(d.reconcile),
        }
    }

    /// The node's config (links are opened separately, once the node runs).
    pub fn node_config(&self) -> NodeConfig {
        let storage = match (self.storage, &self.data) {
            (Some(StorageKind::Memory), _) => Storage::Memory,
            (_, Some(dir)) => Storage::Path(dir.clone()),
            (_, None) => Storage::Path(PathBuf::from("./data")),
        };
        NodeConfig {
            storage,
            system_id: self.system_id.clone(),
            trust: self.trust.clone(),
            policies: PolicyDirs {
                policies: self.policies.clone(),
                filters: self.filters.clone(),
            },
            durability: self.durability.map(|d| match d {
                DurabilityKind::Sync => Durability::Sync,
                DurabilityKind::Buffered => Durability::Buffered,
            }),
            limits: self.limits,
            key_file: None,
            peers: self.peers.clone(),
            authors: self.authors.clone(),
            signatures: self.signatures.clone(),
            signing_key: self.signing_key.clone(),
        }
    }
}

/// A commented starter config, written by `rhizome init`.
pub const STARTER: &str = include_str!("starter.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_config_parses() {
        let f = NodeFile::parse(STARTER).unwrap();
        assert_eq!(f.links.len(), 0);
        assert!(f.policies.is_some());
    }

    #[test]
    fn links_and_sections_parse_with_camel_case_keys() {
        let f = NodeFile::parse(
            r#"
systemId = "n1"
storage = "memory"
[server]
maxConnections = 5
maxSockets = 40
headerTimeout = 3
heartbeat = 2
[trust]
trustedAuthors = ["alice"]
[[link]]
name = "up"
url = "http://127.0.0.1:9"
mode = "pull"
initialSync = "from_timestamp"
syncFromTimestamp = 5
pullFilter = { authors = ["alice"] }
reconnect = { maxAttempts = 3 }
"#,
        )
        .unwrap();
        assert_eq!(f.server_options().max_connections, 5);
        assert_eq!(f.server_options().max_sockets, Some(40));
        assert_eq!(f.server_options().header_timeout, Duration::from_secs(3));
        assert_eq!(f.links[0].config.reconnect.max_attempts, 3);
        assert_eq!(
            f.links[0].config.pull_filter.as_ref().unwrap().authors,
            Some(vec!["alice".into()])
        );
        assert!(matches!(f.node_config().storage, Storage::Memory));
    }

    #[test]
    fn the_retention_rule_parses_and_a_bad_one_names_its_key() {
        let f = NodeFile::parse(
            "[retention]\nmaxAge = \"90d\"\nmaxBytes = 1000\ninterval = \"5m\"\nfilter = { authors = [\"a\"] }",
        )
        .unwrap();
        assert_eq!(f.retention.max_age.as_deref(), Some("90d"));
        assert_eq!(f.retention.interval(), Duration::from_secs(300));
        assert_eq!(
            f.retention.filter.unwrap().authors,
            Some(vec!["a".to_owned()])
        );
        let e = NodeFile::parse("[retention]\nmaxAge = \"90 days\"").unwrap_err();
        assert!(e.contains("retention.maxAge"), "{e}");
        let e = NodeFile::parse("[retention]\nmaxage = \"9d\"").unwrap_err();
        assert!(e.contains("maxage"), "{e}");
    }

    #[test]
    fn bad_files_get_errors_that_name_the_key() {
        let e = NodeFile::parse("listen = 5").unwrap_err();
        assert!(e.contains("listen"), "{e}");
        let e = NodeFile::parse("bogus = 1").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = NodeFile::parse("[[link]]\nname = \"a\"").unwrap_err();
        assert!(e.contains("link[0].url"), "{e}");
        let e = NodeFile::parse("[[link]]\nurl = \"http://h:1\"").unwrap_err();
        assert!(e.contains("link[0].name"), "{e}");
        let e =
            NodeFile::parse("[[link]]\nname = \"a\"\nurl = \"http://h:1\"\nmode = \"sideways\"")
                .unwrap_err();
        assert!(e.contains("link[0]") && e.contains("sideways"), "{e}");
        let e = NodeFile::parse(
            "[[link]]\nname = \"a\"\nurl = \"h:1\"\n[[link]]\nname = \"a\"\nurl = \"h:2\"",
        )
        .unwrap_err();
        assert!(e.contains("used by another link"), "{e}");
    }
}
