//! Binding the node's port and serving it until shutdown.
//!
//! One port serves the HTTP API (and, with federation, the WebSocket endpoint), in
//! plain TCP or, given a certificate, only in TLS; with `adminListen`, a second port
//! serves the API too and is the only one that answers the admin routes (see
//! [`super::auth`]), with a small socket cap of its own. Both run the same accept loop,
//! stop on the same signal, and count refusals together. What a client can hold on the
//! main port is bounded:
//! - sockets: at most a cap kept below the descriptor limit ([`fd_limit`]), plus a small
//!   reserve that only answers `/status`, `/health` and `/metrics`, so a saturated node
//!   still says so;
//!   an accepted federation link holds its socket's place until it closes;
//! - time: a request head is due within `headerTimeout`, and a connection that moves no
//!   byte for `idleTimeout` is closed ([`connection`]).
//!
//! Shutdown is explicit: [`Server::shutdown`] stops accepting, closes idle connections at
//! once, gives in-flight requests a short grace, closes the links, then closes the store
//! after its last acknowledged write.
//!
//! - [`accept`]: the accept loop, the cap and the reserve, accept errors.
//! - [`connection`]: serving one connection through the API router, its timeouts.
//! - [`socket`]: the accepted socket, its place and its activity.
//! - [`fd_limit`]: raising the descriptor limit, deriving the cap.
//! - [`stats`]: what is counted, for `/metrics`.

mod accept;
mod connection;
pub mod fd_limit;
mod socket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use super::{ConnectionStats, ConnectionStatsSnapshot};
pub use connection::SHUTDOWN_GRACE;

use super::auth::{AdminRoutes, Refusals};
use crate::federation::Federation;
use crate::node::Node;

/// Beyond the connections' own grace, how long shutdown waits for their tasks: a
/// safety margin, not a timeout anything is expected to reach.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(1);

/// The most sockets the `adminListen` address holds at once: it serves an operator and
/// their scripts, not the public, so its few places come on top of the main cap.
const ADMIN_SOCKETS: usize = 64;

pub struct Server {
    addr: SocketAddr,
    /// Where the admin routes are served when `adminListen` moved them off `addr`.
    admin_addr: Option<SocketAddr>,
    fed: Federation,
    stats: Arc<ConnectionStats>,
    stop: watch::Sender<bool>,
    accept: JoinHandle<()>,
    admin_accept: Option<JoinHandle<()>>,
    /// Closed when the last connection task has ended (each holds a sender).
    tasks: mpsc::Receiver<()>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) and serves the node's API and federation
    /// endpoint in a background task; with `adminListen` in the options, binds that
    /// address too and serves the admin routes there only. Raises the process's soft
    /// descriptor limit to its hard limit first.
    ///
    /// # Errors
    /// When an address cannot be bound, or the descriptor limit cannot be read.
    pub async fn bind(fed: Federation, addr: &str) -> std::io::Result<Server> {
        let fd_limit = fd_limit::raise_nofile_limit().map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot read the descriptor limit: {e}"))
        })?;
        let options = fed.options().clone();
        let cap = fd_limit::connection_cap(fd_limit, options.max_sockets);
        let listener = listen(addr).await?;
        let admin_listener = match &options.admin_listen {
            Some(admin) => Some(listen(admin).await?),
            None => None,
        };
        let addr = listener.local_addr()?;
        fed.listening_on(addr);
        let admin_addr = admin_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let refusals = Arc::new(Refusals::default());
        let (stop, stopped) = watch::channel(false);
        let (task_tx, tasks) = mpsc::channel(1);
        let here = match admin_listener {
            Some(_) => AdminRoutes::Elsewhere,
            None => AdminRoutes::Here,
        };
        let serving = Serving {
            fed: &fed,
            refusals: &refusals,
            stop: &stopped,
            tasks: &task_tx,
        };
        let (stats, accept) = serving.spawn(listener, here, cap);
        let admin_accept = admin_listener.map(|l| {
            let (_, accept) = serving.spawn(l, AdminRoutes::Here, ADMIN_SOCKETS);
            accept
        });
        tracing::info!(%addr, admin_addr = ?admin_addr, system_id = fed.node().system_id(), max_sockets = cap, fd_limit, tls = options.tls.is_some(), "serving");
        Ok(Server {
            addr,
            admin_addr,
            fed,
            stats,
            stop,
            accept,
            admin_accept,
            tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `adminListen` address, when the admin routes are served there.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// `http://ADDR`, or `https://ADDR` when the port speaks TLS.
    pub fn url(&self) -> String {
        let scheme = if self.fed.options().tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    pub fn node(&self) -> &Node {
        self.fed.node()
    }

    pub fn federation(&self) -> &Federation {
        &self.fed
    }

    /// Connections held, refused and timed out on this server's port.
    pub fn connection_stats(&self) -> &Arc<ConnectionStats> {
        &self.stats
    }

    /// Stops accepting, closes idle connections, gives requests in flight up to
    /// `SHUTDOWN_GRACE`, closes the links, then closes the store. Bounded in time
    /// whatever the clients do.
    ///
    /// # Errors
    /// When the accept loop had failed.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        let _ = self.stop.send(true);
        let accepted = self.accept.await;
        if let Some(admin) = self.admin_accept {
            let _ = admin.await;
        }
        // Links are upgraded connections the HTTP side no longer tracks: close them
        // ourselves, so peers see a clean close and the store's last writes finish.
        self.fed.disconnect_all().await;
        // IMPORTANT: every connection task has ended (or the grace is over) before the
        // store closes, so a write acknowledged to a client is one the store has.
        let drained =
            tokio::time::timeout(SHUTDOWN_GRACE + SHUTDOWN_MARGIN, self.tasks.recv()).await;
        if drained.is_err() {
            tracing::warn!("some connections were still open when the store closed");
        }
        let node = self.fed.node().clone();
        let _ = tokio::task::spawn_blocking(move || node.close()).await;
        accepted.map_err(|e| std::io::Error::other(format!("the accept loop failed: {e}")))
    }
}

async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// What every listener of one server shares: the node, the refusal counts, the stop
/// signal and the count of connection tasks shutdown waits for.
struct Serving<'a> {
    fed: &'a Federation,
    refusals: &'a Arc<Refusals>,
    stop: &'a watch::Receiver<bool>,
    tasks: &'a mpsc::Sender<()>,
}

impl Serving<'_> {
    /// Serves the API on `listener`, at most `cap` sockets (and the reserve) at once.
    fn spawn(
        &self,
        listener: TcpListener,
        admin_routes: AdminRoutes,
        cap: usize,
    ) -> (Arc<ConnectionStats>, JoinHandle<()>) {
        let options = self.fed.options();
        let stats = Arc::new(ConnectionStats::with_limit(cap));
        let router = super::router(self.fed.clone(), admin_routes, self.refusals.clone())
            .layer(axum::Extension(stats.clone()));
        let shared = Arc::new(connection::Shared {
            router,
            stats: stats.clone(),
            header_timeout: options.header_timeout,
            idle_timeout: options.idle_timeout,
            cap,
            tls: options
                .tls
                .as_ref()
                .map(|t| tokio_rustls::TlsAcceptor::from(t.config().clone())),
        });
        let places = accept::Places::new(cap, fd_limit::RESERVE);
        let accept = tokio::spawn(accept::run(
            listener,
            shared,
            places,
            self.stop.clone(),
            self.tasks.clone(),
        ));
        (stats, accept)
    }
}
