//! The answer of the normal and longpoll feeds: one JSON document, streamed a chunk at a
//! time as the connection takes it (as `stream` does for queries):
//! `{"results":[{"seq":N,"delta":{...}},...],"last_seq":N,"pending":M}`.
//!
//! It ends at `limit` changes, at [`PAGE_BYTES`] of deltas, after [`MAX_EXAMINED`]
//! positions, or when the log has nothing more; `last_seq` and `pending` come last since
//! they are known only then. A longpoll that found nothing waits for the first matching
//! change (or its timeout), writing a newline every heartbeat meanwhile: JSON allows
//! the whitespace, and it keeps the connection from looking idle.

use std::time::{Duration, Instant};

use axum::body::Bytes;

use super::scan::{Scan, Step};
use super::CHUNK_BYTES;
use crate::http::stream::PAGE_BYTES;
use crate::store::StoreError;

/// The most positions one answer examines: a filter that matches little ends its answer
/// with `pending` set rather than read the whole log before a first byte.
const MAX_EXAMINED: u64 = 100_000;

/// What a longpoll waits for.
pub(super) struct Waiting {
    pub deadline: Instant,
    pub heartbeat: Duration,
}

pub(super) struct Page {
    scan: Scan,
    limit: usize,
    count: usize,
    delta_bytes: usize,
    /// Where the answer started, to bound the positions it examines.
    from: u64,
    /// `Some` for a longpoll.
    waiting: Option<Waiting>,
    last_write: Instant,
    started: bool,
    finished: bool,
}

impl Page {
    pub fn new(scan: Scan, limit: usize, waiting: Option<Waiting>) -> Page {
        Page {
            from: scan.examined().0,
            scan,
            limit,
            count: 0,
            delta_bytes: 0,
            waiting,
            last_write: Instant::now(),
            started: false,
            finished: false,
        }
    }

    /// The next piece of the body; `None` once it is all written.
    ///
    /// # Errors
    /// Storage errors while reading the log.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        if self.finished {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(CHUNK_BYTES + 1024);
        if !self.started {
            out.extend_from_slice(b"{\"results\":[");
            self.started = true;
        }
        while self.count < self.limit
            && self.delta_bytes < PAGE_BYTES
            && self.scan.examined().0 - self.from < MAX_EXAMINED
        {
            match self.scan.step(self.limit - self.count).await? {
                Step::Change(change) => {
                    if self.count > 0 {
                        out.push(b',');
                    }
                    super::write_change(&mut out, &change);
                    self.count += 1;
                    self.delta_bytes += change.json().len();
                    if out.len() >= CHUNK_BYTES {
                        return Ok(Some(self.wrote(out)));
                    }
                }
                Step::Examined => {}
                Step::CaughtUp => {
                    let Some((deadline, heartbeat)) = (self.count == 0)
                        .then_some(self.waiting.as_ref())
                        .flatten()
                        .map(|w| (w.deadline, w.heartbeat))
                    else {
                        break;
                    };
                    // The opening goes out before the wait, with the response's head.
                    if !out.is_empty() {
                        return Ok(Some(self.wrote(out)));
                    }
                    match super::wait(&mut self.scan, Some(deadline), self.last_write + heartbeat)
                        .await
                    {
                        super::Woke::Changed => {}
                        super::Woke::Closed | super::Woke::Deadline => break,
                        super::Woke::Heartbeat => return Ok(Some(self.wrote(b"\n".to_vec()))),
                    }
                }
            }
        }
        out.extend_from_slice(
            format!(
                "],\"last_seq\":{},\"pending\":{}}}",
                self.scan.examined(),
                self.scan.pending()
            )
            .as_bytes(),
        );
        self.finished = true;
        Ok(Some(self.wrote(out)))
    }

    fn wrote(&mut self, out: Vec<u8>) -> Bytes {
        self.last_write = Instant::now();
        out.into()
    }
}
