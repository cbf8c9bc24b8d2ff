//! Serving one accepted connection: HTTP/1.1 (with upgrades to federation links) through
//! the API router, bounded in time.
//!
//! - A request head must be complete within `headerTimeout` of the connection opening or
//!   of the previous response; an idle keep-alive connection is closed by the same rule.
//! - With TLS, the handshake is part of the request head's time: a peer that opens a
//!   socket and never completes the handshake holds it for `headerTimeout` at most.
//! - A connection on which no byte moves for `idleTimeout` is closed, even mid-request.
//! - A connection in the reserve (accepted over the cap) answers one request, `/status`,
//!   `/health` or `/metrics` only (anything else gets a JSON 503), within
//!   [`RESERVE_TIMEOUT`].
//! - On shutdown, a connection with no request in flight is closed at once; one with a
//!   request in flight gets [`SHUTDOWN_GRACE`] to finish it.
//!
//! The timeouts are ours, not hyper's `header_read_timeout`: hyper closes a socket that
//! sent no byte at all as if it had been closed by the client, so we could not count it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower_service::Service;

use super::socket::{Activity, CountedStream, Expired, InFlight, Slot};
use crate::http::ApiError;
use crate::http::ConnectionStats;

/// How long a connection over the cap has to send its request and read the answer.
pub const RESERVE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long shutdown waits for a request in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// After a shutdown signal, how long a connection with nothing in flight is still
/// polled, so the bytes of a response just handed over reach the socket.
const FLUSH_MARGIN: Duration = Duration::from_millis(100);

/// What every connection task shares.
pub(super) struct Shared {
    pub router: axum::Router,
    pub stats: Arc<ConnectionStats>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// The cap, for the 503's message.
    pub cap: usize,
    /// With a certificate: every accepted socket speaks TLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Where the connection was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    UnderCap,
    /// Over the cap: one `/status`, `/health` or `/metrics`, then closed.
    Reserve,
}

/// Paths a connection over the cap may still ask for: what a supervisor, a monitor or an
/// operator needs to see a saturated node, each answered from memory.
fn answers_over_cap(path: &str) -> bool {
    matches!(path, "/status" | "/health" | "/metrics") || path.starts_with("/health/")
}

fn over_cap_response(cap: usize) -> Response<Body> {
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "OVERLOADED",
        format!(
            "this node holds its maximum of {cap} connections; only /status, /health and /metrics are answered; retry later"
        ),
    )
    .into_response();
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Serves `stream` until the client is done, a timeout runs out, or `stop` turns true.
/// With TLS, the handshake comes first and counts against the header timeout.
pub(super) async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    place: Place,
    mut stop: watch::Receiver<bool>,
) {
    let timeouts = match place {
        Place::UnderCap => (shared.header_timeout, shared.idle_timeout),
        Place::Reserve => (
            shared.header_timeout.min(RESERVE_TIMEOUT),
            shared.idle_timeout.min(RESERVE_TIMEOUT),
        ),
    };
    let activity = Activity::new();
    let io = CountedStream::new(stream, activity.clone(), slot);
    let Some(acceptor) = shared.tls.clone() else {
        return drive(shared, io, peer, place, activity, timeouts, stop).await;
    };
    // The request head is due `headerTimeout` after the socket was accepted, handshake
    // included: a peer that never finishes the handshake holds its socket no longer.
    let deadline = activity.next_deadline(timeouts.0, timeouts.1);
    let handshake = tokio::select! {
        done = acceptor.accept(io) => done,
        () = tokio::time::sleep_until(deadline.into()) => {
            shared.stats.header_timeout();
            tracing::debug!(%peer, header_timeout = ?timeouts.0, "closed: no TLS handshake in time");
            return;
        }
        () = async { let _ = stop.wait_for(|s| *s).await; } => return,
    };
    match handshake {
        Ok(tls) => drive(shared, tls, peer, place, activity, timeouts, stop).await,
        Err(e) => tracing::debug!(%peer, error = %e, "closed: TLS handshake failed"),
    }
}

/// Serves HTTP/1.1 on `io` (the counted socket, or TLS over it) within the timeouts.
async fn drive<S>(
    shared: Arc<Shared>,
    io: S,
    peer: SocketAddr,
    place: Place,
    activity: Arc<Activity>,
    (header_timeout, idle_timeout): (Duration, Duration),
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let activity = activity.clone();
        let shared = shared.clone();
        hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let in_flight = InFlight::begin(&activity);
            req.extensions_mut().insert(ConnectInfo(peer));
            let refuse = place == Place::Reserve && !answers_over_cap(req.uri().path());
            let mut router = shared.router.clone();
            let shared = shared.clone();
            async move {
                let response = if refuse {
                    shared.stats.refused();
                    over_cap_response(shared.cap)
                } else {
                    match router.call(req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    }
                };
                Ok::<_, Infallible>(response.map(|body| TrackedBody {
                    body,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder.keep_alive(place == Place::UnderCap);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);

    loop {
        let deadline = activity.next_deadline(header_timeout, idle_timeout);
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                return;
            }
            () = async { let _ = stop.wait_for(|s| *s).await; } => break,
            () = tokio::time::sleep_until(deadline.into()) => {
                match activity.expired(Instant::now(), header_timeout, idle_timeout) {
                    Some(Expired::Header) => {
                        shared.stats.header_timeout();
                        tracing::debug!(%peer, ?header_timeout, "closed: no complete request head in time");
                        return;
                    }
                    Some(Expired::Idle) => {
                        shared.stats.idle_timeout();
                        tracing::debug!(%peer, ?idle_timeout, "closed: idle");
                        return;
                    }
                    None => {}
                }
            }
        }
    }

    // Shutting down: no new request on this connection; the one in flight may finish.
    conn.as_mut().graceful_shutdown();
    let stopped = Instant::now();
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                let waited = stopped.elapsed();
                if waited >= SHUTDOWN_GRACE || (activity.in_flight() == 0 && waited >= FLUSH_MARGIN) {
                    return;
                }
            }
        }
    }
}

/// A response body that keeps its request counted as in flight until hyper drops it.
struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
