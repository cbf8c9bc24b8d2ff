//! `GET /changes`: the log as a change feed, like CouchDB's `_changes`. Every stored
//! delta after `since` that matches the filter, in log order, each with its sequence
//! number, so a client resumes exactly where it stopped.
//!
//! The feed is the log itself: every stored delta appears, a negation included (it is a
//! delta like any other), and a negated delta is not taken back; `includeNegated` in a
//! `filter` has no effect here. A client that wants the current state asks `/query`.
//!
//! - `feed=normal` (the default): `{"results":[{"seq":N,"delta":{...}},...],
//!   "last_seq":N,"pending":M}` ([`page`]). `last_seq` is the last position examined,
//!   matching or not, so `since=last_seq` neither scans again nor misses; `pending`
//!   counts the positions after it when the answer ended (0 when caught up).
//! - `feed=longpoll`: the same, but when nothing matches yet it waits for the first
//!   matching change, up to `timeout` ms (60 s by default).
//! - `feed=continuous`: a stream that ends only at `limit`, `timeout` or shutdown
//!   ([`follow`]): JSON lines, or Server-Sent Events with `Accept: text/event-stream`.
//!
//! Parameters ([`params`]): `since` (a sequence number or `now`; an `EventSource`'s
//! `Last-Event-ID` wins over it), `feed`, `limit`, the criteria of `GET /deltas`
//! (`author`, `system`, `targetId`, `context`, `id`) or `filter` (a `DeltaFilter` as
//! JSON), `timeout` and `heartbeat` (ms, 15 s by default; never longer than half the
//! node's `idleTimeout`, which would close the quiet connection first).
//!
//! Memory is bounded per client: the feed reads the log through its own tail a batch at
//! a time ([`scan`]), and the next batch only once the connection has taken what was
//! written, so a slow client holds back nothing but itself. The deltas are written from
//! the stored compact JSON, as is.

mod follow;
mod page;
mod params;
mod scan;

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::ApiError;
use crate::federation::Federation;
use crate::store::{RawRecord, StoreError};
use follow::{Follow, Format};
use page::{Page, Waiting};
use params::{ChangesParams, Feed, FeedRequest, Since, MIN_HEARTBEAT};
use scan::Scan;

/// Bytes of answer written per chunk (plus at most one change past it).
const CHUNK_BYTES: usize = 128 * 1024;

pub(super) async fn feed(
    State(fed): State<Federation>,
    headers: HeaderMap,
    params: Result<Query<ChangesParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))?;
    let last_event_id = match headers.get("last-event-id") {
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::bad_request("INVALID_QUERY", "Last-Event-ID is not text")
                .with_field(Some("Last-Event-ID".into()))
        })?),
        None => None,
    };
    let req = FeedRequest::parse(p, last_event_id)?;
    let store = fed.node().store().clone();
    let head = store.head();
    let after = match req.since {
        Since::Now => head,
        Since::After(seq) if seq > head => {
            let field = if last_event_id.is_some() {
                "Last-Event-ID"
            } else {
                "since"
            };
            return Err(ApiError::bad_request(
                "INVALID_QUERY",
                format!(
                    "{field} {seq} is past this node's head {head}: no such position in its \
                     log (a sequence number from another node, or from a data directory \
                     since wiped?)"
                ),
            )
            .with_field(Some(field.into())));
        }
        Since::After(seq) => seq,
    };
    let scan = Scan::new(store, after, req.filter);
    let heartbeat = heartbeat_within(req.heartbeat, fed.options().idle_timeout);
    let (writer, content_type) = match req.feed {
        Feed::Normal | Feed::Longpoll => {
            let waiting = (req.feed == Feed::Longpoll).then(|| Waiting {
                deadline: Instant::now() + req.timeout.unwrap_or_default(),
                heartbeat,
            });
            let limit = req.limit.unwrap_or(super::DEFAULT_LIMIT);
            (
                Writer::Page(Page::new(scan, limit, waiting)),
                "application/json",
            )
        }
        Feed::Continuous => {
            let format = if wants_events(&headers) {
                Format::Events
            } else {
                Format::Lines
            };
            let follow = Follow::new(scan, format, req.limit, req.timeout, heartbeat);
            (Writer::Follow(follow), format.content_type())
        }
    };
    respond(writer, content_type).await
}

/// The feed's writer, one per kind of answer.
enum Writer {
    Page(Page),
    Follow(Follow),
}

impl Writer {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        match self {
            Writer::Page(page) => page.next_chunk().await,
            Writer::Follow(follow) => follow.next_chunk().await,
        }
    }
}

/// Streams what `writer` writes. A page's first chunk is read before answering, so an
/// error there is an ordinary JSON error; a continuous feed answers at once, since its
/// first change may be a long way off. An error later cuts the body off, so a client
/// never takes a partial answer for a whole one.
async fn respond(mut writer: Writer, content_type: &'static str) -> Result<Response, ApiError> {
    let first = match writer {
        Writer::Page(ref mut page) => page.next_chunk().await?,
        Writer::Follow(_) => None,
    };
    let rest = futures_util::stream::unfold(Some(writer), |writer| async move {
        let mut writer = writer?;
        match writer.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(writer))),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "a change feed was cut off");
                Some((Err(std::io::Error::other(e)), None))
            }
        }
    });
    let body = futures_util::stream::iter(first.map(Ok)).chain(rest);
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// Whether the client asked for Server-Sent Events (what an `EventSource` sends).
fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// The heartbeat asked for, shortened to half the node's idle timeout, which would
/// otherwise close a quiet feed before its heartbeat.
fn heartbeat_within(asked: Duration, idle_timeout: Duration) -> Duration {
    if idle_timeout.is_zero() {
        return asked;
    }
    asked.min(idle_timeout / 2).max(MIN_HEARTBEAT)
}

/// `{"seq":N,"delta":...}`, the delta as stored.
fn write_change(out: &mut Vec<u8>, change: &RawRecord) {
    out.extend_from_slice(format!("{{\"seq\":{},\"delta\":", change.seq).as_bytes());
    out.extend_from_slice(change.json().as_bytes());
    out.push(b'}');
}

/// Why a wait for the log ended.
enum Woke {
    /// The log has something after the scan's cursor.
    Changed,
    Deadline,
    /// A heartbeat is due.
    Heartbeat,
    /// The store has closed: the node is stopping.
    Closed,
}

/// Waits for the log to grow past `scan`, until `deadline` or the next heartbeat.
async fn wait(scan: &mut Scan, deadline: Option<Instant>, heartbeat: Instant) -> Woke {
    let never = heartbeat + Duration::from_secs(1);
    tokio::select! {
        open = scan.wait() => if open { Woke::Changed } else { Woke::Closed },
        () = tokio::time::sleep_until(deadline.unwrap_or(never).into()), if deadline.is_some() => Woke::Deadline,
        () = tokio::time::sleep_until(heartbeat.into()) => Woke::Heartbeat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_comes_well_within_the_idle_timeout() {
        let s = Duration::from_secs;
        assert_eq!(heartbeat_within(s(15), s(60)), s(15));
        assert_eq!(heartbeat_within(s(50), s(60)), s(30));
        assert_eq!(heartbeat_within(s(50), Duration::ZERO), s(50));
        assert_eq!(
            heartbeat_within(s(1), Duration::from_millis(50)),
            MIN_HEARTBEAT
        );
    }

    #[test]
    fn event_streams_are_asked_for_by_accept() {
        let mut h = HeaderMap::new();
        assert!(!wants_events(&h));
        h.insert(header::ACCEPT, "application/x-ndjson".parse().unwrap());
        assert!(!wants_events(&h));
        h.append(header::ACCEPT, "text/event-stream".parse().unwrap());
        assert!(wants_events(&h));
    }
}
