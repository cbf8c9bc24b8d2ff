//! A link's sender: the only task that writes to the socket.
//!
//! It serves two sources in one loop. Control frames (acks, pongs, errors, hello...)
//! come from the session over a bounded queue. Deltas come from the durable log,
//! read from this link's own cursor: sync requests are answered by scanning a range
//! of the log, live traffic by tailing it. Filters are applied here, on the way out,
//! and deltas that came from the peer are never sent back to it. Pausing holds the
//! cursor; nothing is dropped, because nothing was ever copied into a queue.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::links::{LinkShared, LinkStats, TimestampFloor};
use super::wire::{self, Message, PeerLimits};
use crate::events::NodeEvent;
use crate::filter::DeltaFilter;
use crate::node::Node;
use crate::policy::LinkContext;
use crate::store::LogTail;
use crate::store::{Seq, StoreError};

mod fetch;
mod live;
mod select;
mod sync;

use live::next_live;

/// Deltas per `sync_batch` and the most a live read takes from the log at once.
pub(crate) const BATCH_SIZE: usize = 1000;
/// The most delta bytes one frame carries, whatever the peer would read: a batch of
/// big deltas goes as several frames, so neither side holds a huge frame in memory.
const FRAME_BYTES: usize = 4 * 1024 * 1024;
/// Room for a frame's envelope around its deltas (type, timestamp, positions).
const ENVELOPE_BYTES: usize = 256;
/// Control frames the session may queue before the peer is judged not to be reading.
pub(crate) const CONTROL_QUEUE: usize = 4096;

/// What the session asks of the sender.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A frame to send as is.
    Frame(String),
    /// Handshake done and this link sends deltas: the filters and where live sending starts.
    Begin(Box<SendPlan>),
    /// The peer asked for a sync (`sync_request`).
    Sync(SyncPlan),
    /// The peer asked for deltas by id (`delta_request`).
    Fetch { request_id: u64, ids: Vec<String> },
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
    /// The peer speaks `announce`: deltas we relay go as ids (`delta_announce`), ours
    /// in full.
    pub announce: bool,
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
    pub initial_floor: Option<TimestampFloor>,
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

/// Why the sender stopped.
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
            Outgoing::Fetch { request_id, ids } => self.serve_fetch(request_id, ids).await,
            other => self.handle_frame(other).await,
        }
    }

    /// Commands that only write a frame or flip a flag (safe in the middle of a sync).
    async fn handle_frame(&mut self, cmd: Outgoing) -> Flow {
        match cmd {
            Outgoing::Begin(_) => Flow::Continue,
            // Asked while a sync is served: answered in its turn, between two batches.
            Outgoing::Fetch { request_id, ids } => self.serve_fetch(request_id, ids).await,
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

    /// Counts what went out, and announces it when someone listens (`ids` may also have
    /// been gathered for a v1 peer's answers).
    fn count_sent(&self, sent: usize, ids: Vec<String>) {
        LinkStats::add(&self.link.stats.deltas_sent, sent as u64);
        if !self.node.events_observed() {
            return;
        }
        for delta_id in ids {
            self.node.emit(NodeEvent::DeltaSent {
                link_id: self.link.id.clone(),
                delta_id,
            });
        }
    }
}

pub(crate) fn error_frame(code: &str, message: &str) -> String {
    wire::encode(&Message::Error {
        code: code.to_owned(),
        message: message.to_owned(),
        fatal: false,
    })
}
