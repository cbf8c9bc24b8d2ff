//! What the port's connections did, for `/metrics` and for tests.
//!
//! One [`ConnectionStats`] per [`Server`](crate::http::server::Server), shared by its accept
//! loop and every connection task, and handed to the router so `/metrics` can render
//! it. It lives here, below the server, so the HTTP layer never imports the server. Plain atomics: each event touches one counter, and readers only
//! need each figure on its own, not a consistent snapshot of all of them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Sockets held now: HTTP connections (under the cap and in the reserve) and
    /// accepted federation links. Decremented when the socket is closed.
    open: AtomicUsize,
    /// The cap on `open` below the reserve, fixed at bind.
    limit: AtomicUsize,
    /// Connections over the cap answered 503, or closed unanswered when the reserve was
    /// full too.
    refused: AtomicU64,
    /// Connections closed because their request head was not complete in time.
    header_timeouts: AtomicU64,
    /// Connections closed because no byte moved for the idle timeout.
    idle_timeouts: AtomicU64,
    /// `accept` failures (descriptors exhausted, mostly).
    accept_errors: AtomicU64,
}

/// The figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionStatsSnapshot {
    pub open: usize,
    pub limit: usize,
    pub refused: u64,
    pub header_timeouts: u64,
    pub idle_timeouts: u64,
    pub accept_errors: u64,
}

impl ConnectionStats {
    pub(crate) fn with_limit(limit: usize) -> ConnectionStats {
        ConnectionStats {
            limit: AtomicUsize::new(limit),
            ..Default::default()
        }
    }

    pub fn snapshot(&self) -> ConnectionStatsSnapshot {
        ConnectionStatsSnapshot {
            open: self.open.load(Ordering::Relaxed),
            limit: self.limit.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            header_timeouts: self.header_timeouts.load(Ordering::Relaxed),
            idle_timeouts: self.idle_timeouts.load(Ordering::Relaxed),
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn header_timeout(&self) {
        self.header_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn idle_timeout(&self) {
        self.idle_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }
}
