//! The continuous feed: one change per JSON line (`application/x-ndjson`, an empty line
//! as heartbeat), or Server-Sent Events (`text/event-stream`: event `change`, `id` the
//! sequence number so that an `EventSource` resumes with `Last-Event-ID`, a comment as
//! heartbeat). It ends only at its `limit`, its `timeout`, or when the node stops.
//!
//! Changes already in the log are written in chunks of up to [`CHUNK_BYTES`]; once caught
//! up, each change goes out as it is stored. A heartbeat is written when nothing was for
//! a whole interval, also while a filter passes over a long stretch of the log.

use std::time::{Duration, Instant};

use axum::body::Bytes;

use super::scan::{Scan, Step, BATCH};
use super::{Woke, CHUNK_BYTES};
use crate::store::{RawRecord, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Lines,
    Events,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Lines => "application/x-ndjson",
            Format::Events => "text/event-stream",
        }
    }

    fn write(self, out: &mut Vec<u8>, change: &RawRecord) {
        match self {
            Format::Lines => {
                super::write_change(out, change);
                out.push(b'\n');
            }
            Format::Events => {
                // Stored JSON is compact: it holds no newline to break the `data:` line.
                out.extend_from_slice(
                    format!("id: {}\nevent: change\ndata: ", change.seq).as_bytes(),
                );
                super::write_change(out, change);
                out.extend_from_slice(b"\n\n");
            }
        }
    }

    fn heartbeat(self) -> &'static [u8] {
        match self {
            Format::Lines => b"\n",
            Format::Events => b": heartbeat\n\n",
        }
    }
}

pub(super) struct Follow {
    scan: Scan,
    format: Format,
    /// Changes still to write, when the feed has a `limit`.
    left: Option<usize>,
    deadline: Option<Instant>,
    heartbeat: Duration,
    last_write: Instant,
    finished: bool,
}

impl Follow {
    pub fn new(
        scan: Scan,
        format: Format,
        limit: Option<usize>,
        timeout: Option<Duration>,
        heartbeat: Duration,
    ) -> Follow {
        let now = Instant::now();
        Follow {
            scan,
            format,
            left: limit,
            deadline: timeout.map(|t| now + t),
            heartbeat,
            last_write: now,
            finished: false,
        }
    }

    /// The next piece of the stream; `None` once it has ended.
    ///
    /// # Errors
    /// Storage errors while reading the log.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        let mut out = Vec::new();
        while !self.finished {
            if self.left == Some(0) || self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.finished = true;
                break;
            }
            match self.scan.step(self.left.unwrap_or(BATCH)).await? {
                Step::Change(change) => {
                    self.format.write(&mut out, &change);
                    self.left = self.left.map(|n| n - 1);
                    if out.len() >= CHUNK_BYTES {
                        break;
                    }
                }
                Step::Examined => {
                    if out.is_empty() && self.last_write.elapsed() >= self.heartbeat {
                        out.extend_from_slice(self.format.heartbeat());
                        break;
                    }
                }
                Step::CaughtUp => {
                    if !out.is_empty() {
                        break;
                    }
                    let beat = self.last_write + self.heartbeat;
                    match super::wait(&mut self.scan, self.deadline, beat).await {
                        Woke::Changed | Woke::Deadline => {}
                        Woke::Closed => self.finished = true,
                        Woke::Heartbeat => {
                            out.extend_from_slice(self.format.heartbeat());
                            break;
                        }
                    }
                }
            }
        }
        if out.is_empty() {
            return Ok(None);
        }
        self.last_write = Instant::now();
        Ok(Some(out.into()))
    }
}
