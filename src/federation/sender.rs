//! A link's writer: the only task that writes to the socket.
//!
//! It serves two sources in one loop. Control frames (acks, pongs, errors, hello...)
//! come from the session over a bounded queue. Deltas come from the durable log,
//! read from this link's own cursor: sync requests are answered by scanning a range
//! of the log, live traffic by tailing it. Filters are applied here, on the way out,
//! and deltas that came from the peer are never sent back to it. Pausing holds the
//! cursor; nothing is dropped, because nothing was ever copied into a queue.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::links::{LinkShared, LinkStats};
use super::wire::{self, BatchKind, Message, Outbound, PeerLimits};
use crate::delta::Delta;
use crate::events::NodeEvent;
use crate::filter::DeltaFilter;
use crate::node::Node;
use crate::policy::{LinkContext, PolicySet, ScriptInput, ScriptKind, Verdict};
use crate::store::{LogBatch, ReadLimit, Seq, StoreError};
use crate::store::{LogTail, RawRecord};

/// Deltas per `sync_batch` and the most a live read takes from the log at once.
pub(crate) const BATCH_SIZE: usize = 1000;
/// The most delta bytes one frame carries, whatever the peer would read: a batch of
/// big deltas goes as several frames, so neither side holds a huge frame in memory.
const FRAME_BYTES: usize = 4 * 1024 * 1024;
/// Room for a frame's envelope around its deltas (type, timestamp, positions).
const ENVELOPE_BYTES: usize = 256;
/// Control frames the session may queue before the peer is judged not to be reading.
pub(crate) const CONTROL_QUEUE: usize = 4096;

/// What the session asks of the writer.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A frame to send as is.
    Frame(String),
    /// Handshake done and this link sends deltas: the filters and where live sending starts.
    Begin(Box<SendPlan>),
    /// The peer asked for a sync (`sync_request`).
    Sync(SyncPlan),
    /// The peer sent `pause` / `resume`.
    PeerPaused(bool),
    /// Send a close frame and stop.
    Close(CloseCode, String),
}

#[derive(Debug, Clone)]
pub(crate) struct SendPlan {
    /// The peer's system id: its own deltas are passed over when reading the log.
    pub peer_system: Arc<str>,
    /// The peer speaks our extension: live deltas go as `delta_batch` with positions.
    pub extension: bool,
    /// Our own push filter for this link.
    pub push_filter: Option<DeltaFilter>,
    /// The filter the peer asked for (hello config); a sync_request's filter replaces it.
    pub peer_filter: Option<DeltaFilter>,
    /// The link as push-filter scripts see it.
    pub link: LinkContext,
    /// Start tailing the log after this position; `None` waits for a sync request.
    pub live_from: Option<Seq>,
    /// Only deltas at or after this timestamp, for log positions up to `.0` (an initial
    /// push from a timestamp; later deltas go regardless).
    pub initial_floor: Option<(Seq, u64)>,
    /// What the peer reads. A delta it would refuse is withheld (counted), never sent:
    /// a frame the peer cannot read would block the link for good.
    pub peer_limits: PeerLimits,
    /// The peer's delta limits are tighter than ours somewhere, so stored deltas are
    /// checked against them one by one (otherwise every stored delta fits).
    pub check_peer_limits: bool,
}

impl SendPlan {
    /// The most delta bytes one frame may carry to this peer.
    fn frame_budget(&self) -> usize {
        self.peer_limits
            .max_message_bytes
            .saturating_sub(ENVELOPE_BYTES)
            .min(FRAME_BYTES)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SyncPlan {
    /// Send what follows this position...
    pub after: Seq,
    /// ...with a timestamp at or after this.
    pub min_timestamp: Option<u64>,
    /// The request's filter, when it has one.
    pub filter: Option<DeltaFilter>,
}

pub(crate) struct Sender<S> {
    node: Node,
    link: Arc<LinkShared>,
    sink: S,
    queue: mpsc::Receiver<Outgoing>,
    heartbeat: Duration,
    plan: Option<SendPlan>,
    live: Option<LogTail>,
    peer_paused: bool,
    paused: watch::Receiver<bool>,
    /// Where live sending started: a v1 peer's sync covers the log up to here and live
    /// sending the rest, so no delta goes twice.
    live_origin: Option<Seq>,
    next_ping: tokio::time::Instant,
}

/// Why the writer stopped.
#[derive(Debug)]
pub(crate) enum SenderEnd {
    /// Asked to close, or the session went away.
    Closed,
    Socket(String),
    Store(StoreError),
}

enum Flow {
    Continue,
    Stop(SenderEnd),
}

impl<S> Sender<S>
where
    S: Sink<WsMessage, Error = WsError> + Unpin + Send,
{
    pub fn new(
        node: Node,
        link: Arc<LinkShared>,
        sink: S,
        queue: mpsc::Receiver<Outgoing>,
        heartbeat: Duration,
    ) -> Self {
        let paused = link.paused.subscribe();
        Sender {
            node,
            link,
            sink,
            queue,
            heartbeat,
            plan: None,
            live: None,
            peer_paused: false,
            paused,
            live_origin: None,
            next_ping: tokio::time::Instant::now() + heartbeat,
        }
    }

    pub async fn run(mut self) -> SenderEnd {
        loop {
            let may_send = self.live.is_some() && !self.is_held();
            let flow = tokio::select! {
                biased;
                cmd = self.queue.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => Flow::Stop(SenderEnd::Closed),
                },
                () = tokio::time::sleep_until(self.next_ping) => self.ping().await,
                changed = self.paused.changed() => match changed {
                    Ok(()) => Flow::Continue,
                    Err(_) => Flow::Stop(SenderEnd::Closed),
                },
                batch = next_live(&mut self.live, self.plan.as_ref().map(|p| p.peer_system.clone())), if may_send => match batch {
                    Ok(Some(scan)) => self.send_live(scan).await,
                    Ok(None) => Flow::Stop(SenderEnd::Closed),
                    Err(e) => Flow::Stop(SenderEnd::Store(e)),
                },
            };
            if let Flow::Stop(end) = flow {
                let _ = self.sink.close().await;
                return end;
            }
        }
    }

    async fn ping(&mut self) -> Flow {
        self.next_ping = tokio::time::Instant::now() + self.heartbeat;
        self.send_text(wire::encode(&Message::Ping)).await
    }

    fn is_held(&self) -> bool {
        self.peer_paused || *self.paused.borrow()
    }

    async fn handle(&mut self, cmd: Outgoing) -> Flow {
        match cmd {
            Outgoing::Begin(plan) => {
                if let Some(from) = plan.live_from {
                    self.live = Some(LogTail::new(self.node.store().clone(), from));
                    self.live_origin = Some(from);
                }
                self.plan = Some(*plan);
                Flow::Continue
            }
            Outgoing::Sync(sync) => self.serve_sync(sync).await,
            other => self.handle_frame(other).await,
        }
    }

    /// Commands that only write a frame or flip a flag (safe in the middle of a sync).
    async fn handle_frame(&mut self, cmd: Outgoing) -> Flow {
        match cmd {
            Outgoing::Begin(_) => Flow::Continue,
            Outgoing::Sync(_) => {
                self.send_text(error_frame(
                    wire::codes::SYNC_ERROR,
                    "a sync is already being served on this link; ask again when it completes",
                ))
                .await
            }
            Outgoing::Frame(text) => self.send_text(text).await,
            Outgoing::PeerPaused(p) => {
                self.peer_paused = p;
                Flow::Continue
            }
            Outgoing::Close(code, reason) => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                if let Err(e) = self.sink.send(WsMessage::Close(Some(frame))).await {
                    return Flow::Stop(SenderEnd::Socket(e.to_string()));
                }
                // The session decides when the socket goes (it may hold it a moment so
                // the peer can read what was sent before a reset): wait for it to let
                // go of the queue, briefly.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while self.queue.recv().await.is_some() {}
                })
                .await;
                Flow::Stop(SenderEnd::Closed)
            }
        }
    }

    async fn send_text(&mut self, text: String) -> Flow {
        LinkStats::add(&self.link.stats.bytes_sent, text.len() as u64);
        match self.sink.send(WsMessage::text(text)).await {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::Stop(SenderEnd::Socket(e.to_string())),
        }
    }

    /// Queues a frame without flushing (the caller flushes once per batch).
    async fn feed_text(&mut self, text: String) -> Result<(), SenderEnd> {
        LinkStats::add(&self.link.stats.bytes_sent, text.len() as u64);
        self.sink
            .feed(WsMessage::text(text))
            .await
            .map_err(|e| SenderEnd::Socket(e.to_string()))
    }

    /// Sends control frames that queued up while a long sync runs, and waits out a
    /// pause, so pongs and acks keep flowing and a paused link really stops.
    async fn between_batches(&mut self) -> Flow {
        loop {
            while let Ok(cmd) = self.queue.try_recv() {
                let flow = self.handle_frame(cmd).await;
                if let Flow::Stop(_) = flow {
                    return flow;
                }
            }
            if tokio::time::Instant::now() >= self.next_ping {
                if let Flow::Stop(end) = self.ping().await {
                    return Flow::Stop(end);
                }
            }
            if !self.is_held() {
                return Flow::Continue;
            }
            tokio::select! {
                () = tokio::time::sleep_until(self.next_ping) => {}
                cmd = self.queue.recv() => match cmd {
                    Some(cmd) => {
                        if let Flow::Stop(end) = self.handle_frame(cmd).await {
                            return Flow::Stop(end);
                        }
                    }
                    None => return Flow::Stop(SenderEnd::Closed),
                },
                changed = self.paused.changed() => if changed.is_err() {
                    return Flow::Stop(SenderEnd::Closed);
                },
            }
        }
    }

    /// Answers a sync request: `sync_start`, the matching deltas between the request's
    /// start and where live sending stands (or the head) in `sync_batch`es, then
    /// `sync_complete`. Live sending continues from the range's end: no gap, no repeat.
    async fn serve_sync(&mut self, sync: SyncPlan) -> Flow {
        let Some(plan) = self.plan.clone() else {
            return self
                .send_text(error_frame(
                    wire::codes::SYNC_ERROR,
                    "sync_request before the handshake completed",
                ))
                .await;
        };
        let end = self.live_origin.unwrap_or_else(|| self.node.store().head());
        let filter = sync.filter.clone().or(plan.peer_filter.clone());
        let mut cursor = sync.after.min(end);
        let total = end.0 - cursor.0;
        tracing::info!(link = %self.link.id, from = cursor.0, to = end.0, "serving sync");
        let start = Message::SyncStart {
            total_deltas: total,
            batch_size: BATCH_SIZE as u64,
        };
        if let Flow::Stop(e) = self.send_text(wire::encode(&start)).await {
            return Flow::Stop(e);
        }
        let mut held: Option<(Vec<RawRecord>, Vec<String>, Seq)> = None;
        let mut batch_number = 0u64;
        let mut sent = 0u64;
        while cursor < end {
            let store = self.node.store().clone();
            let after = cursor;
            let want = BATCH_SIZE.min((end.0 - cursor.0) as usize);
            let peer = plan.peer_system.clone();
            let scan = match tokio::task::spawn_blocking(move || {
                store.read_log(after, ReadLimit::Batch(want), Some(&peer))
            })
            .await
            {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return Flow::Stop(SenderEnd::Store(e)),
                Err(e) => {
                    return Flow::Stop(SenderEnd::Store(StoreError::Corrupt(format!(
                        "log reader task failed: {e}"
                    ))))
                }
            };
            if scan.through <= after {
                break;
            }
            cursor = scan.through;
            self.link
                .stats
                .sent_through
                .fetch_max(cursor.0, Ordering::Relaxed);
            let wanted = Wanted {
                peer_filter: filter.clone(),
                min_timestamp: sync.min_timestamp,
                floor: None,
            };
            let (kept, ids) = match self.select_records(scan.records, &plan, wanted).await {
                Ok(selected) => selected,
                Err(e) => return Flow::Stop(e),
            };
            if kept.is_empty() {
                // A stretch the filters skip entirely still yields to control frames
                // and to a pause.
                if let Flow::Stop(e) = self.between_batches().await {
                    return Flow::Stop(e);
                }
                continue;
            }
            sent += kept.len() as u64;
            for frame in split_by_bytes(kept, ids, cursor, plan.frame_budget()) {
                if let Some(prev) = held.replace(frame) {
                    if let Flow::Stop(e) =
                        self.send_sync_batch(prev, batch_number, false, &plan).await
                    {
                        return Flow::Stop(e);
                    }
                    batch_number += 1;
                }
            }
            if let Flow::Stop(e) = self.between_batches().await {
                return Flow::Stop(e);
            }
        }
        if let Some(last) = held.take() {
            if let Flow::Stop(e) = self.send_sync_batch(last, batch_number, true, &plan).await {
                return Flow::Stop(e);
            }
        }
        let complete = Message::SyncComplete {
            deltas_processed: sent,
            last_seq: plan.extension.then_some(end.0),
        };
        if let Flow::Stop(e) = self.send_text(wire::encode(&complete)).await {
            return Flow::Stop(e);
        }
        if self.live.is_none() {
            self.live = Some(LogTail::new(self.node.store().clone(), end));
            self.live_origin = Some(end);
        }
        tracing::info!(link = %self.link.id, deltas = sent, "sync served");
        Flow::Continue
    }

    async fn send_sync_batch(
        &mut self,
        (kept, ids, last): (Vec<RawRecord>, Vec<String>, Seq),
        batch_number: u64,
        is_last: bool,
        plan: &SendPlan,
    ) -> Flow {
        let refs: Vec<&str> = kept.iter().map(RawRecord::json).collect();
        let frame = wire::encode(Outbound::batch(
            BatchKind::Sync {
                batch_number,
                is_last,
            },
            &refs,
            plan.extension.then_some(last.0),
        ));
        let flow = self.send_text(frame).await;
        if let Flow::Continue = flow {
            self.count_sent(refs.len(), ids);
        }
        flow
    }

    async fn send_live(&mut self, scan: LogBatch) -> Flow {
        let Some(plan) = self.plan.clone() else {
            return Flow::Continue;
        };
        let last = scan.through;
        let wanted = Wanted {
            peer_filter: plan.peer_filter.clone(),
            min_timestamp: None,
            floor: plan.initial_floor,
        };
        let (kept, ids) = match self.select_records(scan.records, &plan, wanted).await {
            Ok(selected) => selected,
            Err(e) => return Flow::Stop(e),
        };
        if kept.is_empty() {
            self.link
                .stats
                .sent_through
                .fetch_max(last.0, Ordering::Relaxed);
            return Flow::Continue;
        }
        if plan.extension {
            return self.send_live_frames(kept, ids, last, &plan).await;
        }
        // A v1 peer gets one `delta` frame each.
        let mut result = Flow::Continue;
        for record in &kept {
            let frame = wire::encode(Outbound::delta(record.json(), None));
            if let Err(e) = self.feed_text(frame).await {
                result = Flow::Stop(e);
                break;
            }
        }
        if let Flow::Continue = result {
            if let Err(e) = self.sink.flush().await {
                result = Flow::Stop(SenderEnd::Socket(e.to_string()));
            }
        }
        if let Flow::Continue = result {
            self.count_sent(kept.len(), ids);
            self.link
                .stats
                .sent_through
                .fetch_max(last.0, Ordering::Relaxed);
        }
        result
    }

    /// Live deltas to an extension peer: `delta_batch` frames bounded in bytes, each
    /// with the position it carries the peer to.
    async fn send_live_frames(
        &mut self,
        kept: Vec<RawRecord>,
        ids: Vec<String>,
        through: Seq,
        plan: &SendPlan,
    ) -> Flow {
        for (records, ids, last) in split_by_bytes(kept, ids, through, plan.frame_budget()) {
            let refs: Vec<&str> = records.iter().map(RawRecord::json).collect();
            let frame = wire::encode(Outbound::batch(BatchKind::Live, &refs, Some(last.0)));
            if let Flow::Stop(e) = self.send_text(frame).await {
                return Flow::Stop(e);
            }
            self.count_sent(records.len(), ids);
            self.link
                .stats
                .sent_through
                .fetch_max(last.0, Ordering::Relaxed);
        }
        Flow::Continue
    }

    /// Runs [`select`], on a blocking thread when push scripts apply: a script may take
    /// its whole time budget for each delta, which must not hold an async worker.
    async fn select_records(
        &self,
        records: Vec<RawRecord>,
        plan: &SendPlan,
        wanted: Wanted,
    ) -> Result<(Vec<RawRecord>, Vec<String>), SenderEnd> {
        let scripts = self.node.policies().current();
        let want_ids = self.node.events_observed();
        if !scripts.applies(ScriptKind::Push, &plan.link.name) {
            let stats = &self.link.stats;
            return Ok(select(records, plan, &scripts, &wanted, want_ids, stats));
        }
        let plan = plan.clone();
        let link = self.link.clone();
        tokio::task::spawn_blocking(move || {
            select(records, &plan, &scripts, &wanted, want_ids, &link.stats)
        })
        .await
        .map_err(|e| SenderEnd::Store(StoreError::Corrupt(format!("push filter task failed: {e}"))))
    }

    fn count_sent(&self, sent: usize, ids: Vec<String>) {
        LinkStats::add(&self.link.stats.deltas_sent, sent as u64);
        for delta_id in ids {
            self.node.emit(NodeEvent::DeltaSent {
                link_id: self.link.id.clone(),
                delta_id,
            });
        }
    }
}

async fn next_live(
    live: &mut Option<LogTail>,
    skip_origin: Option<Arc<str>>,
) -> Result<Option<LogBatch>, StoreError> {
    match live {
        Some(tail) => tail.next(BATCH_SIZE, skip_origin).await,
        None => std::future::pending().await,
    }
}

/// What the peer asked for, beyond the link's own filters.
struct Wanted {
    /// The peer's filter (its hello, or its sync request's).
    peer_filter: Option<DeltaFilter>,
    /// A sync from a timestamp: nothing older.
    min_timestamp: Option<u64>,
    /// An initial push from a timestamp: nothing older, up to a log position.
    floor: Option<(Seq, u64)>,
}

/// Which records go to the peer: only those every filter keeps. The peer's own deltas
/// are already left out: both callers read the log with `read_log` for it. Returns them and, when `want_ids` (someone listens to `delta:sent`),
/// their ids.
fn select(
    records: Vec<RawRecord>,
    plan: &SendPlan,
    scripts: &PolicySet,
    wanted: &Wanted,
    want_ids: bool,
    stats: &LinkStats,
) -> (Vec<RawRecord>, Vec<String>) {
    let Wanted {
        peer_filter,
        min_timestamp,
        floor,
    } = wanted;
    let peer_filter = peer_filter.as_ref();
    let (min_timestamp, floor) = (*min_timestamp, *floor);
    let mut kept = Vec::with_capacity(records.len());
    let mut ids = Vec::with_capacity(records.len());
    // The same for every record of the batch: whether push scripts apply, and the link
    // as they see it.
    let push_scripts = scripts.applies(ScriptKind::Push, &plan.link.name);
    let link_value = push_scripts.then(|| plan.link.to_dynamic().into_shared());
    for record in records {
        let seq = record.seq;
        let floor_ts = floor.filter(|(until, _)| seq <= *until).map(|f| f.1);
        let min_ts = min_timestamp.max(floor_ts);
        let len = record.json().len();
        if len > plan.frame_budget() || len > plan.peer_limits.delta.max_delta_bytes {
            withhold(
                plan,
                stats,
                seq,
                &format!("{len} bytes; the peer reads deltas of at most {} bytes in frames of at most {}",
                    plan.peer_limits.delta.max_delta_bytes, plan.peer_limits.max_message_bytes),
            );
            continue;
        }
        let filtered = min_ts.is_some()
            || plan.push_filter.is_some()
            || peer_filter.is_some()
            || push_scripts
            || plan.check_peer_limits;
        // The log holds only valid deltas, so parsing fails only on corruption. Without
        // filters nothing is parsed but, for the events, the id.
        let id = if filtered {
            let delta = match Delta::parse(record.json()) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(seq = seq.0, error = %e, "unreadable delta in the log; not sent");
                    continue;
                }
            };
            if plan.check_peer_limits {
                if let Err(e) = plan.peer_limits.delta.check(&delta) {
                    withhold(plan, stats, seq, &e.to_string());
                    continue;
                }
            }
            if min_ts.is_some_and(|t| delta.timestamp < t)
                || plan
                    .push_filter
                    .as_ref()
                    .is_some_and(|f| !f.matches(&delta))
                || peer_filter.is_some_and(|f| !f.matches(&delta))
            {
                continue;
            }
            if let Some(link_value) = &link_value {
                let input = ScriptInput::new(link_value.clone(), &delta);
                if let Verdict::Reject { script, reason } =
                    scripts.judge_input(ScriptKind::Push, &plan.link.name, &input)
                {
                    tracing::trace!(link = %plan.link.id, delta_id = %delta.id, %script, %reason, "not pushed");
                    continue;
                }
            }
            delta.id
        } else if !want_ids {
            String::new()
        } else {
            match serde_json::from_str::<IdOnly>(record.json()) {
                Ok(d) => d.id,
                Err(e) => {
                    tracing::error!(seq = seq.0, error = %e, "unreadable delta in the log; not sent");
                    continue;
                }
            }
        };
        if want_ids {
            ids.push(id);
        }
        kept.push(record);
    }
    (kept, ids)
}

/// Counts and reports a stored delta the peer's limits refuse. Only a peer with
/// tighter limits than ours, or a delta stored before the limits existed, gets here.
fn withhold(plan: &SendPlan, stats: &LinkStats, seq: Seq, why: &str) {
    LinkStats::add(&stats.deltas_withheld, 1);
    tracing::warn!(link = %plan.link.id, seq = seq.0, reason = %why, "delta withheld: the peer's limits refuse it");
}

/// One frame's worth of records, its ids (when wanted) and the log position it
/// carries the receiver to.
type FrameRecords = (Vec<RawRecord>, Vec<String>, Seq);

/// Splits a batch into frames of at most `budget` delta bytes each (every record fits
/// one: `select` withheld the rest). Each frame carries its receiver to its last
/// record's position; the last frame to `through`, where the scan ended.
fn split_by_bytes(
    records: Vec<RawRecord>,
    mut ids: Vec<String>,
    through: Seq,
    budget: usize,
) -> Vec<FrameRecords> {
    let with_ids = !ids.is_empty();
    let mut frames: Vec<FrameRecords> = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for record in records {
        let len = record.json().len() + 1;
        if !current.is_empty() && bytes + len > budget {
            let last = current.last().map_or(through, |r: &RawRecord| r.seq);
            let n = current.len();
            let frame_ids = if with_ids {
                ids.drain(..n).collect()
            } else {
                Vec::new()
            };
            frames.push((std::mem::take(&mut current), frame_ids, last));
            bytes = 0;
        }
        bytes += len;
        current.push(record);
    }
    if !current.is_empty() {
        frames.push((current, ids, through));
    }
    frames
}

#[derive(serde::Deserialize)]
struct IdOnly {
    id: String,
}

pub(crate) fn error_frame(code: &str, message: &str) -> String {
    wire::encode(&Message::Error {
        code: code.to_owned(),
        message: message.to_owned(),
        fatal: false,
    })
}
