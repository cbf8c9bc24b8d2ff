//! `rhizome serve`: run a node until Ctrl-C or SIGTERM.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::sync::broadcast::error::RecvError;

use rhizome::config::live::ConfigLinks;
use rhizome::config::NodeFile;
use rhizome::federation::{Federation, ServerOptions};
use rhizome::tls::{ClientTls, ServerTls};
use rhizome::{Node, NodeConfig, Storage};
use rhizome::{Server, TrustPolicy};

/// Paths of the HTTP API the federation endpoint may not take.
const RESERVED_PATHS: [&str; 7] = [
    "/deltas",
    "/query",
    "/status",
    "/links",
    "/policies",
    "/quarantine",
    "/metrics",
];

/// What `serve --help` ends with.
const EXAMPLES: &str = "\
Examples:
  rhizome serve                                    a node on 127.0.0.1:8080, data in ./data
  rhizome serve --data ./b --listen 127.0.0.1:8081 --connect http://127.0.0.1:8080
                                                   a second node that links to the first
  rhizome serve --memory --listen 127.0.0.1:0      a throwaway node on a free port
  rhizome serve --config node/rhizome.toml         a node set up by `rhizome init node`
  rhizome serve --tls-cert cert.pem --tls-key key.pem --listen 0.0.0.0:8443
                                                   https and wss on port 8443

The client commands (put, query, status, ...) find the node with --node URL or the
RHIZOME_NODE environment variable (default http://127.0.0.1:8080), and its admin token
beside its data directory (--data DIR, default ./data) or with --token / RHIZOME_TOKEN.
RUST_LOG sets the log levels (default: info, the storage engine at warn).";

#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct ServeArgs {
    /// A TOML config file (see `rhizome init`); flags given here override it, and its
    /// `[[link]]`, `[[peer]]` and `[trust]` are reloaded when it changes.
    #[arg(long, value_name = "FILE", help_heading = "Node")]
    pub config: Option<PathBuf>,
    /// This node's system id [default: generated once and kept in the data directory].
    #[arg(long, value_name = "ID", help_heading = "Node")]
    pub system_id: Option<String>,
    /// Print the node's events to stdout as JSON lines, each with its `time` (ms).
    #[arg(long, help_heading = "Node")]
    pub events: bool,
    /// Log format on stderr (`RUST_LOG` sets the levels).
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value = "text",
        help_heading = "Node"
    )]
    pub log_format: LogFormat,
    /// Directory of the fjall database, created if missing [default: ./data].
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "memory",
        help_heading = "Storage"
    )]
    pub data: Option<PathBuf>,
    /// Keep deltas in memory only: nothing reaches the disk, nothing survives shutdown.
    #[arg(long, help_heading = "Storage")]
    pub memory: bool,
    /// The node's ed25519 key (PKCS#8 PEM, e.g. from `openssl genpkey -algorithm
    /// ed25519`) [default: node.key in the data directory, made on first start].
    #[arg(long, value_name = "FILE", help_heading = "Node")]
    pub key: Option<PathBuf>,
    /// Open a federation link to this node (repeatable), e.g. `http://10.0.0.2:8080`.
    #[arg(long = "connect", value_name = "URL", help_heading = "Links")]
    pub connect: Vec<String>,
    /// How the links opened with --connect sync.
    #[command(flatten, next_help_heading = "Links")]
    pub link: crate::args::LinkFlags,
    /// Seconds between heartbeat pings on every link; a link silent for two is dead
    /// [default: 30].
    #[arg(long, value_name = "SECONDS", help_heading = "Links")]
    pub heartbeat: Option<u64>,
    /// Accept remote deltas only from these authors (repeatable).
    #[arg(long = "trust-author", value_name = "AUTHOR", help_heading = "Trust")]
    pub trust_authors: Vec<String>,
    /// Accept remote deltas only from these systems (repeatable).
    #[arg(long = "trust-system", value_name = "SYSTEM", help_heading = "Trust")]
    pub trust_systems: Vec<String>,
    /// Refuse remote deltas stamped further than this many ms in the future.
    #[arg(long, value_name = "MS", help_heading = "Trust")]
    pub max_clock_skew: Option<u64>,
    /// Trust policy scripts (`*.rhai`; `<link name>/*.rhai` for one link), hot-reloaded.
    #[arg(long, value_name = "DIR", help_heading = "Scripts")]
    pub policies: Option<PathBuf>,
    /// Push / pull filter scripts (`push/`, `pull/`, each with `<link name>/`), hot-reloaded.
    #[arg(long, value_name = "DIR", help_heading = "Scripts")]
    pub filters: Option<PathBuf>,
    /// Address (host:port) of the HTTP API and the federation endpoint; port 0 picks a
    /// free one [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR", help_heading = "Server")]
    pub listen: Option<String>,
    /// Path of the federation WebSocket endpoint [default: /federation].
    #[arg(long, value_name = "PATH", help_heading = "Server")]
    pub federation_path: Option<String>,
    /// Most inbound links at once; more are closed with 1008 [default: 1000].
    #[arg(long, value_name = "N", help_heading = "Server")]
    pub max_connections: Option<usize>,
    /// The pointer form inbound links send in: `legacy` for peers of the seed's
    /// version, `auto` to switch when a peer sends a legacy delta [default: auto].
    #[arg(long, value_enum, value_name = "FORM", help_heading = "Server")]
    pub inbound_pointer_form: Option<crate::args::PointerFormArg>,
    /// Accept links from peers that prove no configured identity (as `anonymous`)
    /// [default: only when listening on a loopback address].
    #[arg(long, conflicts_with = "refuse_anonymous", help_heading = "Peers")]
    pub allow_anonymous: bool,
    /// Refuse links from peers that prove no configured identity, even on loopback.
    #[arg(long, help_heading = "Peers")]
    pub refuse_anonymous: bool,
    /// A peer known by its key, NAME=KEY (repeatable; `[[peer]]` in the config file
    /// also takes tokens and bound systems). Its scripts are in policies/NAME/ and
    /// filters/push/NAME/.
    #[arg(long = "peer", value_name = "NAME=KEY", help_heading = "Peers")]
    pub peers: Vec<String>,
    /// An author bound to a key, NAME=KEY (repeatable; base64url or hex): its deltas
    /// must be signed by that key (`[[author]]` in the config file takes several keys).
    #[arg(long = "author", value_name = "NAME=KEY", help_heading = "Signatures")]
    pub authors: Vec<String>,
    /// Which deltas must be signed besides bound authors': `remote` (every peer's) or
    /// `all` (local clients' too) [default: none, or `[signatures] require`].
    #[arg(long, value_enum, value_name = "WHICH", help_heading = "Signatures")]
    pub require_signatures: Option<RequireArg>,
    /// A key (PKCS#8 PEM, `rhizome keygen`) that signs the deltas this node completes
    /// from the authoring shorthand and the negations it makes.
    #[arg(long, value_name = "FILE", help_heading = "Signatures")]
    pub signing_key: Option<PathBuf>,
    /// A file holding the admin routes' bearer token [default: admin.token in the data
    /// directory, made on first start; for --memory, one per start in the runtime folder].
    #[arg(long, value_name = "FILE", help_heading = "Server")]
    pub admin_token_file: Option<PathBuf>,
    /// Serve the admin routes (links, policies, quarantine, negate) only on this address,
    /// e.g. loopback while --listen faces the network.
    #[arg(long, value_name = "ADDR", help_heading = "Server")]
    pub admin_listen: Option<String>,
    /// TLS on the port and on the links this node dials.
    #[command(flatten)]
    pub tls: Box<TlsFlags>,
    /// Not a flag of `serve`: caught to point at `--listen`.
    #[arg(long, value_name = "PORT", hide = true)]
    pub port: Option<String>,
}

/// `serve`'s TLS flags (boxed in [`ServeArgs`]: three paths would make every command's
/// arguments that much larger).
#[derive(Debug, clap::Args)]
pub struct TlsFlags {
    /// PEM certificate chain (leaf first); with --tls-key, the port speaks only TLS
    /// (https for the API, wss for links).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        help_heading = "Server"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        help_heading = "Server"
    )]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) that wss:// links trust besides the system's roots.
    #[arg(long, value_name = "FILE", help_heading = "Links")]
    pub tls_ca: Option<PathBuf>,
}

impl ServeArgs {
    /// The node's config and its endpoint's options: the file's, with every flag given
    /// here taking precedence.
    fn node_config(&self, file: &NodeFile) -> anyhow::Result<(NodeConfig, ServerOptions)> {
        let mut config = file.node_config();
        let mut server = file.server_options();
        if self.memory {
            config.storage = Storage::Memory;
        } else if let Some(dir) = &self.data {
            config.storage = Storage::Path(dir.clone());
        }
        if self.system_id.is_some() {
            config.system_id = self.system_id.clone();
        }
        if self.key.is_some() {
            config.key_file = self.key.clone();
        }
        config.trust = self.trust(config.trust);
        if let Some(path) = &self.federation_path {
            server.path = path.clone();
        }
        anyhow::ensure!(
            server.path.starts_with('/') && server.path.len() > 1,
            "the federation path {:?} must start with '/' and name a path",
            server.path
        );
        anyhow::ensure!(
            !RESERVED_PATHS.iter().any(|p| server.path.starts_with(p)),
            "the federation path {:?} collides with the HTTP API ({})",
            server.path,
            RESERVED_PATHS.join(", ")
        );
        if let Some(form) = self.inbound_pointer_form {
            server.pointer_form = form.into();
        }
        if self.admin_listen.is_some() {
            server.admin_listen = self.admin_listen.clone();
        }
        if let Some(n) = self.max_connections {
            server.max_connections = n;
        }
        if self.allow_anonymous {
            server.allow_anonymous = Some(true);
        } else if self.refuse_anonymous {
            server.allow_anonymous = Some(false);
        }
        for peer in &self.peers {
            let (name, key) = peer
                .split_once('=')
                .with_context(|| format!("--peer {peer:?}: give NAME=KEY"))?;
            config.peers.push(rhizome::PeerEntry {
                name: name.trim().to_owned(),
                key: Some(key.trim().to_owned()),
                ..Default::default()
            });
        }
        for author in &self.authors {
            let (name, key) = author
                .split_once('=')
                .with_context(|| format!("--author {author:?}: give NAME=KEY"))?;
            config.authors.push(rhizome::admission::AuthorEntry {
                name: name.trim().to_owned(),
                keys: vec![key.trim().to_owned()],
            });
        }
        if let Some(which) = self.require_signatures {
            config.signatures.require = match which {
                RequireArg::None => rhizome::admission::Require::None,
                RequireArg::Remote => rhizome::admission::Require::Remote,
                RequireArg::All => rhizome::admission::Require::All,
            };
        }
        if self.signing_key.is_some() {
            config.signing_key = self.signing_key.clone();
        }
        if let Some(s) = self.heartbeat {
            server.heartbeat = std::time::Duration::from_secs(s.max(1));
        }
        if self.policies.is_some() {
            config.policies.policies = self.policies.clone();
        }
        if self.filters.is_some() {
            config.policies.filters = self.filters.clone();
        }
        self.tls(file, &mut server)?;
        Ok((config, server))
    }

    /// The listener's certificate and what links trust: the flags', else the file's.
    fn tls(&self, file: &NodeFile, server: &mut ServerOptions) -> anyhow::Result<()> {
        let flags = &self.tls;
        let (cert, key) = match (&flags.tls_cert, &flags.tls_key) {
            (Some(cert), Some(key)) => (Some(cert), Some(key)),
            _ => (file.server.tls_cert.as_ref(), file.server.tls_key.as_ref()),
        };
        match (cert, key) {
            (Some(cert), Some(key)) => {
                let tls = ServerTls::from_pem_files(cert, key)
                    .context("the TLS listener (--tls-cert, --tls-key)")?;
                server.tls = Some(tls);
            }
            (None, None) => {}
            _ => anyhow::bail!(
                "[server] tlsCert and tlsKey go together: give both (the certificate and its private key) or neither"
            ),
        }
        if let Some(ca) = flags.tls_ca.as_ref().or(file.server.tls_ca.as_ref()) {
            let trust = ClientTls::new(Some(ca)).context("the CA links trust (--tls-ca)")?;
            server.client_tls = Some(trust);
        }
        Ok(())
    }

    /// The file's trust rules, narrowed by the flags' (both apply: AND).
    fn trust(&self, file: TrustPolicy) -> TrustPolicy {
        let mut trust = file;
        if !self.trust_authors.is_empty() {
            trust = trust.and(TrustPolicy::authors(self.trust_authors.iter().cloned()));
        }
        if !self.trust_systems.is_empty() {
            trust = trust.and(TrustPolicy::systems(self.trust_systems.iter().cloned()));
        }
        if self.max_clock_skew.is_some() {
            trust.max_clock_skew_ms = self.max_clock_skew;
        }
        trust
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    if let Some(port) = &args.port {
        anyhow::bail!(
            "serve has no --port: give the whole address with --listen, e.g. --listen 127.0.0.1:{port}"
        );
    }
    init_logging(args.log_format);
    let file = match &args.config {
        Some(path) => NodeFile::load(path)?,
        None => NodeFile::default(),
    };
    let (config, mut options) = args.node_config(&file)?;
    crate::allocator::tune_for(&config.storage);
    let listen = args
        .listen
        .clone()
        .or_else(|| file.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let store_desc = match &config.storage {
        Storage::Memory => "a temporary store".to_owned(),
        Storage::Path(p) => format!("the store in {}", p.display()),
    };
    if let Storage::Path(dir) = &config.storage {
        check_data_dir(dir)?;
    }
    // IMPORTANT: before the store is opened, so that a busy port leaves no new database
    // (a fresh one preallocates a 64 MiB journal) behind.
    check_port_free(&listen)?;
    if let Some(admin) = &options.admin_listen {
        check_port_free(admin)?;
    }
    let mut token = crate::token::protect(
        &mut options,
        args.admin_token_file.as_deref(),
        &config.storage,
    )?;
    let node = Node::open(config)
        .await
        .with_context(|| format!("cannot open {store_desc}"))?;
    if args.events {
        spawn_event_printer(&node);
    }
    let fed = Federation::new(node.clone(), options)?;
    let server = Server::bind(fed.clone(), &listen).await?;
    say_who_may_link(&fed, server.local_addr());
    let shutdown = shutdown_signal();
    let mut ports = vec![server.local_addr().port()];
    ports.extend(server.admin_addr().map(|a| a.port()));
    // Kept while serving: a node in memory's token files go when it stops.
    let _token_files = token.publish(&ports)?;
    match &token.file {
        Some(file) => {
            tracing::info!(file = %file.display(), "the admin routes take the token in this file")
        }
        None => tracing::info!("the admin routes take the configured token"),
    }
    // Tests and scripts read this line to learn the port when --listen ends in :0.
    let mut listening = serde_json::json!({"listening": server.url(), "systemId": node.system_id(), "adminTokenFile": token.file});
    if let Some(admin) = server.admin_addr() {
        listening["adminListening"] = format!("http://{admin}").into();
    }
    println!("{listening}");
    for url in &args.connect {
        let link = fed
            .connect_to_remote(url, args.link.link_config())
            .with_context(|| format!("--connect {url}"))?;
        tracing::info!(link = link.id(), %url, "link opened");
    }
    // Kept alive while serving: it owns the config file's links and its watcher.
    let _config_links = match &args.config {
        Some(path) => Some(
            ConfigLinks::start(fed.clone(), path, file)
                .with_context(|| format!("cannot watch {}", path.display()))?,
        ),
        None => None,
    };
    shutdown.await;
    tracing::info!("shutting down");
    server.shutdown().await.context("while shutting down")?;
    tracing::info!("stopped");
    Ok(())
}

/// Says at start who may open links, and how to change it.
fn say_who_may_link(fed: &Federation, addr: std::net::SocketAddr) {
    let peers = fed.node().peers().entries().len();
    let key = fed.node().public_key();
    if fed.allows_anonymous() {
        let why = match fed.options().allow_anonymous {
            Some(_) => "allowAnonymous is set",
            None => "the listen address is loopback",
        };
        tracing::info!(%key, configured_peers = peers, "links: peers that do not authenticate are accepted as `anonymous` ({why})");
    } else {
        let why = match fed.options().allow_anonymous {
            Some(_) => "allowAnonymous = false".to_owned(),
            None => format!("{addr} is reachable from other machines"),
        };
        tracing::warn!(%key, configured_peers = peers, "links: only authenticated peers are accepted ({why}); configure peers with [[peer]] / --peer NAME=KEY, or pass --allow-anonymous to accept anonymous ones");
    }
}

/// `--data` names a directory: one that exists, or a path where one can be created.
fn check_data_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => anyhow::bail!(
            "--data {} is a file, not a directory: give the node a directory of its own (created if missing)",
            dir.display()
        ),
        _ => Ok(()),
    }
}

/// Fails with a readable message when `listen` cannot be bound. The probe listener is
/// closed again at once (it accepted nothing, so the port is free to bind right after);
/// port 0 asks for any free port and is always fine.
fn check_port_free(listen: &str) -> anyhow::Result<()> {
    match std::net::TcpListener::bind(listen) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "cannot listen on {listen}: the address is in use (another rhizome serve?); stop that process or pick another address with --listen"
        ),
        Err(e) => Err(e).with_context(|| format!("cannot listen on {listen} (--listen)")),
    }
}

/// An event as `--events` prints it: when it was seen (ms since the epoch), then the event.
#[derive(serde::Serialize)]
struct Stamped<'a, E: serde::Serialize> {
    time: u64,
    #[serde(flatten)]
    event: &'a E,
}

fn stamped<E: serde::Serialize>(event: &E) -> String {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    serde_json::to_string(&Stamped { time, event }).unwrap_or_default()
}

fn spawn_event_printer(node: &Node) {
    let mut events = node.events();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                // Stamped as received: the broadcast hands events over within microseconds.
                Ok(event) => println!("{}", stamped(&event)),
                Err(RecvError::Lagged(n)) => {
                    let lagged = serde_json::json!({"type": "events:lagged", "missed": n});
                    println!("{}", stamped(&lagged));
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
}

/// The log levels when `RUST_LOG` is not set: our events at info; the storage engine's
/// info lines (one per keyspace opened, a dozen per recovery) are its own bookkeeping,
/// so it speaks from warn up.
const DEFAULT_LOG_FILTER: &str = "info,fjall=warn,lsm_tree=warn";

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        // Field values come from peers and files: escaped, one event stays one line.
        LogFormat::Text => builder.fmt_fields(crate::logging::EscapedFields).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(unix)]
async fn recv(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called, not
/// when it is first awaited: a supervisor (or a test) may stop the node as soon as it
/// reads the listening line, and a signal before the handler would kill the process
/// without a clean shutdown.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (mut int, mut term) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            tokio::select! {
                () = recv(int.as_mut()) => {},
                () = recv(term.as_mut()) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `--require-signatures`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RequireArg {
    None,
    Remote,
    All,
}
