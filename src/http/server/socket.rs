//! An accepted socket that holds its place under the cap and records when bytes last
//! moved and how many requests it is serving.
//!
//! The place ([`Slot`]) lives inside the socket, not in the task serving it: when a
//! request is upgraded to a federation link, hyper hands this very socket to the link,
//! so the link keeps counting against the cap until the socket is closed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::http::ConnectionStats;

/// A place under the cap (or in the reserve above it); given back when dropped.
pub(super) struct Slot {
    _permit: OwnedSemaphorePermit,
    stats: Arc<ConnectionStats>,
}

impl Slot {
    pub(super) fn new(permit: OwnedSemaphorePermit, stats: Arc<ConnectionStats>) -> Slot {
        stats.opened();
        Slot {
            _permit: permit,
            stats,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.closed();
    }
}

/// What the connection task reads to decide on timeouts and shutdown. Times are
/// milliseconds after `start`, kept in atomics so the socket and the service can
/// update them without a lock.
#[derive(Debug)]
pub(super) struct Activity {
    start: Instant,
    /// When a byte was last read or written.
    last_io_ms: AtomicU64,
    /// When the connection last had no request in flight (accepted, or the last
    /// response handed over): the next request head is due `headerTimeout` after it.
    waiting_since_ms: AtomicU64,
    /// Requests whose response body hyper has not yet finished with.
    in_flight: AtomicUsize,
}

/// Why a connection's time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expired {
    /// No complete request head within the header timeout.
    Header,
    /// No byte moved within the idle timeout.
    Idle,
}

impl Activity {
    pub(super) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            waiting_since_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: &AtomicU64) -> Instant {
        self.start + Duration::from_millis(ms.load(Ordering::Relaxed))
    }

    fn touch(&self) {
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The next instant at which a timeout may have run out. Checked again then: a
    /// byte or a request in between moves it.
    pub(super) fn next_deadline(&self, header: Duration, idle: Duration) -> Instant {
        let idle_at = self.at(&self.last_io_ms) + idle;
        if self.in_flight() == 0 {
            idle_at.min(self.at(&self.waiting_since_ms) + header)
        } else {
            idle_at
        }
    }

    /// Which timeout has run out at `now`, if any.
    pub(super) fn expired(
        &self,
        now: Instant,
        header: Duration,
        idle: Duration,
    ) -> Option<Expired> {
        if self.in_flight() == 0 && now >= self.at(&self.waiting_since_ms) + header {
            Some(Expired::Header)
        } else if now >= self.at(&self.last_io_ms) + idle {
            Some(Expired::Idle)
        } else {
            None
        }
    }
}

/// One request being served, from its parsed head until hyper drops its response body.
pub(super) struct InFlight(Arc<Activity>);

impl InFlight {
    pub(super) fn begin(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0
                .waiting_since_ms
                .store(self.0.now_ms(), Ordering::Relaxed);
        }
    }
}

/// The accepted stream with its slot and its activity record.
pub(super) struct CountedStream {
    stream: TcpStream,
    activity: Arc<Activity>,
    _slot: Slot,
}

impl CountedStream {
    pub(super) fn new(stream: TcpStream, activity: Arc<Activity>, slot: Slot) -> CountedStream {
        CountedStream {
            stream,
            activity,
            _slot: slot,
        }
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
