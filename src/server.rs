//! Binding the node's port and serving it until shutdown.
//!
//! One port serves the HTTP API (and, with federation, the WebSocket endpoint).
//! Shutdown is explicit: [`Server::shutdown`] stops accepting, lets in-flight
//! requests finish, then closes the store after its last acknowledged write.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::node::Node;

pub struct Server {
    addr: SocketAddr,
    node: Node,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) and serves `node` in a background task.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(node: Node, addr: &str) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let app = crate::http::router(node.clone());
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
        });
        tracing::info!(%addr, system_id = node.system_id(), "serving");
        Ok(Server {
            addr,
            node,
            stop,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Stops serving, waits for in-flight requests, closes the store.
    ///
    /// # Errors
    /// An I/O error the server loop ended with.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.stop.send(true);
        // Links are upgraded connections the HTTP server no longer tracks: close them
        // ourselves, so peers see a clean close and the store's last writes finish.
        self.node.disconnect_all().await;
        let result = match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(format!("server task failed: {e}"))),
        };
        let node = self.node.clone();
        let _ = tokio::task::spawn_blocking(move || node.close()).await;
        result
    }
}
