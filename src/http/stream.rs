//! Query answers (`GET /deltas`, `POST /query`) streamed, with memory bounded per request.
//!
//! A page of 100,000 large deltas built whole in memory would hold hundreds of MiB per
//! request (BENCHMARKS.md, "Large parallel reads"). So the answer is written a chunk at a
//! time from the stored JSON (the log keeps each delta's compact JSON, which is forwarded
//! as is), each chunk read by a
//! short blocking task only when the connection has taken the previous one, so a slow
//! client holds back the reading and no blocking thread waits on a socket. A request
//! holds about one chunk ([`CHUNK_BYTES`] plus one delta).
//!
//! A page also stops after [`PAGE_BYTES`] of deltas (and at least one delta), with
//! `next` set, like a page that reached its `limit`: the client pages on, and neither
//! side holds a 4 GB document. The body is `{"deltas": [...], "count": n, "next": seq}`,
//! `count` and `next` last since they are known only at the end.
//!
//! Archival (see [`crate::store::Store::archive`]): when the query's time range overlaps
//! what the archive holds, the body ends with `"archived": {...}` (what the archive
//! holds, and whether it was read) and `"mayBeIncomplete"`. With `includeArchive`, the
//! page whose live part ends (`next` null) goes on with the archived matches, read from
//! the archive files in their order (month, then log position) after the live ones;
//! they are not paged, since they have no position in the log.
//!
//! An error before the first chunk is an ordinary JSON error. An error after it cannot
//! change the status any more: the body is cut off (an incomplete chunked response), so
//! a client never mistakes a partial answer for a whole one.

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::ApiError;
use crate::node::Node;
use crate::store::{
    self, ArchiveError, ArchiveScan, ArchiveStats, QueryReader, ReadStop, Seq, StoreError,
};

/// Bytes of answer written per chunk (plus at most one delta past it).
const CHUNK_BYTES: usize = 128 * 1024;

/// Bytes of deltas after which a page ends with `next` set.
pub(super) const PAGE_BYTES: usize = 8 * 1024 * 1024;

/// The answer to a query, streamed.
///
/// # Errors
/// Storage errors met before the answer starts.
pub(super) async fn answer(
    node: &Node,
    q: store::Query,
    include_archive: bool,
) -> Result<Response, ApiError> {
    let store = node.store().clone();
    let (page, first) = blocking(move || {
        let stats = store.archive_stats()?;
        let range = q.filter.timestamp_range.unwrap_or_default();
        let overlap = stats.overlaps(range.start, range.end);
        let archive = if include_archive && overlap {
            Some(ArchiveScan::new(store.clone(), q.filter.clone()).map_err(archive_error)?)
        } else {
            None
        };
        let mut page = Page::new(QueryReader::new(store, q)?);
        page.archived = overlap.then_some(stats);
        page.archive = archive;
        page.include_archive = include_archive;
        let first = page.next_chunk()?;
        Ok((page, first))
    })
    .await?;
    let rest = futures_util::stream::unfold(Some(page), |page| async move {
        let mut page = page?;
        match blocking(move || Ok((page.next_chunk()?, page))).await {
            Ok((Some(chunk), page)) => Some((Ok(chunk), Some(page))),
            Ok((None, _)) => None,
            Err(e) => {
                tracing::warn!(error = %e, "a streamed query answer was cut off");
                Some((Err(std::io::Error::other(e)), None))
            }
        }
    });
    let body = futures_util::stream::iter(first.map(Ok)).chain(rest);
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Runs store reads off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Corrupt(format!("query task failed: {e}")))?
}

/// A failure reading the archive, as the store's kind of error.
fn archive_error(e: ArchiveError) -> StoreError {
    match e {
        ArchiveError::Store(e) => e,
        e => StoreError::Io(std::io::Error::other(e.to_string())),
    }
}

/// One page of an answer being written.
struct Page {
    reader: QueryReader,
    /// What the archive holds, when it overlaps the query's time range.
    archived: Option<ArchiveStats>,
    /// The archived matches still to write (with `includeArchive`).
    archive: Option<ArchiveScan>,
    include_archive: bool,
    /// Whether the live part is written and the archived one is being read.
    in_archive: bool,
    archived_count: usize,
    count: usize,
    delta_bytes: usize,
    last: Option<Seq>,
    started: bool,
    finished: bool,
}

impl Page {
    fn new(reader: QueryReader) -> Page {
        Page {
            reader,
            archived: None,
            archive: None,
            include_archive: false,
            in_archive: false,
            archived_count: 0,
            count: 0,
            delta_bytes: 0,
            last: None,
            started: false,
            finished: false,
        }
    }

    /// The next piece of the body; `None` once it is all written.
    fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        if self.finished {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(CHUNK_BYTES + 1024);
        if !self.started {
            out.extend_from_slice(b"{\"deltas\":[");
            self.started = true;
        }
        if self.in_archive {
            return self.archive_chunk(out).map(Some);
        }
        let stop = self.reader.read(|raw, _delta| {
            if self.count > 0 {
                out.push(b',');
            }
            out.extend_from_slice(raw.json().as_bytes());
            self.count += 1;
            self.delta_bytes += raw.json().len();
            self.last = Some(raw.seq);
            out.len() < CHUNK_BYTES && self.delta_bytes < PAGE_BYTES
        })?;
        let next = match stop {
            ReadStop::Paused if self.delta_bytes < PAGE_BYTES => return Ok(Some(out.into())),
            // `next` is the cursor to pass as `after` for the following page.
            ReadStop::Paused | ReadStop::Limit => self.last,
            ReadStop::End if self.archive.is_some() => {
                self.in_archive = true;
                return self.archive_chunk(out).map(Some);
            }
            ReadStop::End => None,
        };
        self.end(&mut out, next);
        Ok(Some(out.into()))
    }

    /// The next archived matches, up to a chunk; the end of the body after the last.
    fn archive_chunk(&mut self, mut out: Vec<u8>) -> Result<Bytes, StoreError> {
        while out.len() < CHUNK_BYTES {
            let Some(scan) = self.archive.as_mut() else {
                break;
            };
            match scan.next_match().map_err(archive_error)? {
                Some(json) => {
                    if self.count > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(json.as_bytes());
                    self.count += 1;
                    self.archived_count += 1;
                }
                None => {
                    self.archive = None;
                    self.end(&mut out, None);
                }
            }
        }
        Ok(out.into())
    }

    /// Closes the array and writes the fields known only at the end.
    fn end(&mut self, out: &mut Vec<u8>, next: Option<Seq>) {
        let next = next.map_or_else(|| "null".to_owned(), |seq| seq.to_string());
        out.extend_from_slice(format!("],\"count\":{},\"next\":{next}", self.count).as_bytes());
        if let Some(stats) = &self.archived {
            let note = serde_json::json!({
                "deltas": stats.count,
                "oldest": stats.oldest,
                "newest": stats.newest,
                "included": self.include_archive,
                "returned": self.archived_count,
            });
            out.extend_from_slice(
                format!(
                    ",\"archived\":{note},\"mayBeIncomplete\":{}",
                    !self.include_archive
                )
                .as_bytes(),
            );
        }
        out.push(b'}');
        self.finished = true;
    }
}
