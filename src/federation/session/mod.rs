//! The link state machine: one for both ends of a link.
//!
//! `handshake` -> `establish` (who sends, who receives, the initial sync) -> `inbound`
//! (live: frames read, deltas ingested and answered; `outbound` answers what the peer
//! asks us to send), with pause / resume and heartbeat throughout, until close. `state`
//! holds what the handshake established. The role only
//! decides who speaks first (the initiator sends `hello`, the acceptor answers
//! `hello_ack`) and who asks for the initial sync; after that both ends run the same
//! code. Frames are read here and every delta goes to the node's single ingestion
//! path; everything written goes through the link's [`Sender`], which this machine
//! starts and steers.

mod announce;
mod fetching;
mod handshake;
mod inbound;
mod outbound;
mod proof;
mod reconciliation;
mod state;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

use super::links::{AuthRefusals, Control, LinkShared, LinkStats, LinkStatus};
use super::options::ServerOptions;
use super::sender::{error_frame, Outgoing, Sender, SenderEnd, CONTROL_QUEUE};
use super::wire::{self, Message};
use super::Federation;
use crate::node::Node;

/// Which end of the link this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Dialed the peer: sends `hello`, asks for the initial sync.
    Initiator,
    /// Was dialed: answers `hello_ack`, serves sync requests.
    Acceptor,
}

/// How a session ended, which decides what the connecting side does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndKind {
    /// Closed on purpose on this side (`disconnect`, shutdown): do not reconnect.
    Disconnected,
    /// The connection was lost, or failed: reconnect if configured.
    Lost,
    /// The peer closed normally (it shut down): reconnect if configured, not an error.
    PeerClosed,
    /// The peer or we refused the link for a reason a retry will not fix.
    Refused,
}

#[derive(Debug, Clone)]
pub(crate) struct SessionEnd {
    pub kind: EndKind,
    pub reason: String,
    /// The handshake completed (a reconnect loop resets its backoff then).
    pub handshaken: bool,
}

impl SessionEnd {
    fn new(kind: EndKind, reason: impl Into<String>) -> SessionEnd {
        SessionEnd {
            kind,
            reason: reason.into(),
            handshaken: false,
        }
    }
}

/// Frames read in one go before the deltas among them are ingested together, and the
/// most text they may add up to: enough for group commit to pay off, little enough to
/// bound memory and what a crash can leave uncommitted.
const MAX_FRAMES_PER_INGEST: usize = 64;
const MAX_BYTES_PER_INGEST: usize = 1 << 20;

pub(crate) struct Session<'a> {
    node: Node,
    options: ServerOptions,
    link: Arc<LinkShared>,
    role: Role,
    out: mpsc::Sender<Outgoing>,
    control: &'a mut mpsc::UnboundedReceiver<Control>,
    heartbeat: Duration,
    /// When the peer last sent anything: the heartbeat's liveness clock.
    last_frame: Instant,
    /// The handshake is done (frames other than hello / ping / error may be sent).
    established: bool,
    /// How the connection ended, held back until the frames read before it are handled.
    ended: Option<SessionEnd>,
    /// Peers that prove no configured identity may link (see [`Federation::allows_anonymous`]).
    allow_anonymous: bool,
    refusals: Arc<AuthRefusals>,
    claims: Arc<super::claims::Claims>,
    /// An operator asked for a reconciliation (started by the live loop).
    reconcile_asked: Option<super::links::ReconcileAsk>,
    reconcile_slots: Arc<tokio::sync::Semaphore>,
}

/// A frame as read: text to decode, or bytes that cannot be (answered with an error).
pub(super) enum Frame {
    Text(String),
    Bad(String),
}

impl Frame {
    fn len(&self) -> usize {
        match self {
            Frame::Text(t) | Frame::Bad(t) => t.len(),
        }
    }

    /// Whether a frame that did not decode may have carried deltas.
    fn may_carry_deltas(&self) -> bool {
        match self {
            Frame::Text(t) => wire::may_carry_deltas(t),
            Frame::Bad(_) => true,
        }
    }

    /// The decoded message, or the error text to answer with.
    pub(super) fn decode(&self) -> Result<Message, String> {
        match self {
            Frame::Text(t) => wire::decode(t).map_err(|e| e.0),
            Frame::Bad(why) => Err(why.clone()),
        }
    }
}

/// Runs one connection of a link to its end.
pub(crate) async fn run<S>(
    fed: &Federation,
    link: Arc<LinkShared>,
    role: Role,
    ws: WebSocketStream<S>,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> SessionEnd
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let heartbeat = link
        .config
        .heartbeat_interval
        .map(Duration::from_secs)
        .unwrap_or(fed.options().heartbeat)
        .max(Duration::from_millis(100));
    let (sink, mut stream) = ws.split();
    let (out, queue) = mpsc::channel(CONTROL_QUEUE);
    let node = fed.node().clone();
    let sender = Sender::new(node.clone(), link.clone(), sink, queue, heartbeat);
    let mut sender_task = tokio::spawn(sender.run());
    let mut session = Session {
        node,
        options: fed.options().clone(),
        link,
        role,
        out,
        control,
        heartbeat,
        last_frame: Instant::now(),
        established: false,
        ended: None,
        allow_anonymous: fed.allows_anonymous(),
        refusals: fed.auth_refusals().clone(),
        claims: fed.claims().clone(),
        reconcile_asked: None,
        reconcile_slots: fed.reconcile_slots().clone(),
    };
    let end = tokio::select! {
        end = session.drive(&mut stream) => end,
        finished = &mut sender_task => {
            let reason = match finished {
                Ok(SenderEnd::Socket(e)) => format!("send failed: {e}"),
                Ok(SenderEnd::Store(e)) => format!("reading the log failed: {e}"),
                Ok(SenderEnd::Closed) => "the link's sender stopped".to_owned(),
                Err(e) => format!("the link's sender failed: {e}"),
            };
            SessionEnd::new(EndKind::Lost, reason)
        }
    };
    // Dropping the queue tells the sender to close the socket once it has sent what
    // is queued (a fatal error frame, a close frame).
    drop(session);
    if !sender_task.is_finished()
        && tokio::time::timeout(Duration::from_secs(2), &mut sender_task)
            .await
            .is_err()
    {
        sender_task.abort();
    }
    end
}

impl Session<'_> {
    async fn drive<St>(&mut self, stream: &mut St) -> SessionEnd
    where
        St: Stream<Item = Result<WsMessage, WsError>> + Unpin,
    {
        let (peer, early) = match self.handshake(stream).await {
            Ok(done) => done,
            Err(end) => return end,
        };
        let mut est = match self.establish(peer).await {
            Ok(est) => est,
            Err(end) => return end,
        };
        self.established = true;
        if est.reconcile_at_start {
            if let Err(end) = self.start_pull(&mut est, None).await {
                return end;
            }
        }
        let mut end = match self.process(early, &mut est).await {
            Ok(()) => self.live(stream, &mut est).await,
            Err(end) => end,
        };
        end.handshaken = true;
        end
    }

    // ---- sending -------------------------------------------------------------------

    fn queue(&self, cmd: Outgoing) -> Result<(), SessionEnd> {
        self.out.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SessionEnd::new(
                EndKind::Lost,
                "the peer is not reading what we send (control queue full)",
            ),
            mpsc::error::TrySendError::Closed(_) => {
                SessionEnd::new(EndKind::Lost, "the link's sender stopped")
            }
        })
    }

    /// Queues a frame, waiting while the sender is behind. Answers to a burst of
    /// deltas (one nack each) can outnumber the queue without the peer being at fault;
    /// only a sender stuck for two heartbeats means the peer is not reading.
    async fn send_paced(&self, msg: &Message) -> Result<(), SessionEnd> {
        self.queue_paced(Outgoing::Frame(wire::encode(msg))).await
    }

    /// Queues a command for the sender, waiting while it is behind (as `send_paced`).
    async fn queue_paced(&self, cmd: Outgoing) -> Result<(), SessionEnd> {
        match tokio::time::timeout(self.heartbeat * 2, self.out.send(cmd)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(SessionEnd::new(EndKind::Lost, "the link's sender stopped")),
            Err(_) => Err(SessionEnd::new(
                EndKind::Lost,
                "the peer is not reading what we send (our sender stuck for two heartbeats)",
            )),
        }
    }

    fn send(&self, msg: &Message) -> Result<(), SessionEnd> {
        self.queue(Outgoing::Frame(wire::encode(msg)))
    }

    fn send_error(&self, code: &str, message: &str) -> Result<(), SessionEnd> {
        self.queue(Outgoing::Frame(error_frame(code, message)))
    }

    /// Tells the peer why, closes, and ends the session as refused.
    fn refuse(&self, code: &str, message: &str, close: CloseCode) -> SessionEnd {
        let _ = self.send(&Message::Error {
            code: code.to_owned(),
            message: message.to_owned(),
            fatal: true,
        });
        let _ = self.queue(Outgoing::Close(close, truncate(message, 120)));
        self.link.set_error(message);
        SessionEnd::new(EndKind::Refused, message)
    }

    // ---- reading -------------------------------------------------------------------

    /// The next text frames: one, waiting until `deadline`, plus whatever else is
    /// already there (up to a bound), so a burst is ingested in one store batch.
    /// Returns no frames when a local control command came first.
    /// The frames waiting, at most a burst's worth; with `wait` false, none (at once)
    /// when none is waiting yet.
    async fn read_frames<St>(
        &mut self,
        stream: &mut St,
        deadline: Instant,
        wait: bool,
        wake: Option<Instant>,
    ) -> Result<Vec<Frame>, SessionEnd>
    where
        St: Stream<Item = Result<WsMessage, WsError>> + Unpin,
    {
        // The connection ended behind frames returned last time: report it now.
        if let Some(end) = self.ended.take() {
            return Err(end);
        }
        if !wait {
            // An operator's pause or close comes first, as when waiting.
            match self.control.try_recv() {
                Ok(ctrl) => {
                    self.on_control(Some(ctrl))?;
                    return Ok(Vec::new());
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.on_control(None)?;
                    return Ok(Vec::new());
                }
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            let Some(first) = stream.next().now_or_never() else {
                return Ok(Vec::new());
            };
            return self.read_burst(stream, first).await;
        }
        let first = tokio::select! {
            biased;
            ctrl = self.control.recv() => {
                self.on_control(ctrl)?;
                return Ok(Vec::new());
            }
            // Announced ids are due to be fetched (see `fetching`).
            () = tokio::time::sleep_until(wake.unwrap_or(deadline)), if wake.is_some_and(|w| w < deadline) => {
                return Ok(Vec::new());
            }
            next = tokio::time::timeout_at(deadline, stream.next()) => match next {
                Ok(next) => next,
                Err(_) => return Err(SessionEnd::new(
                    EndKind::Lost,
                    format!("no frame from the peer for {} ms (heartbeat)", self.last_frame.elapsed().as_millis()),
                )),
            },
        };
        self.read_burst(stream, first).await
    }

    /// `first` and the frames already waiting behind it, at most a burst's worth.
    async fn read_burst<St>(
        &mut self,
        stream: &mut St,
        first: Option<Result<WsMessage, WsError>>,
    ) -> Result<Vec<Frame>, SessionEnd>
    where
        St: Stream<Item = Result<WsMessage, WsError>> + Unpin,
    {
        self.last_frame = Instant::now();
        let mut frames = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            let oversized = matches!(item, Some(Err(WsError::Capacity(_))));
            let accepted = self.accept_ws(item);
            if oversized {
                linger_after_oversized().await;
            }
            match accepted {
                Ok(Some(frame)) => {
                    bytes += frame.len();
                    frames.push(frame);
                }
                Ok(None) => {}
                // Frames read before the end (a last delta, a fatal error) still count.
                Err(end) if !frames.is_empty() => {
                    self.ended = Some(end);
                    break;
                }
                Err(end) => return Err(end),
            }
            if frames.len() < MAX_FRAMES_PER_INGEST && bytes < MAX_BYTES_PER_INGEST {
                next = stream.next().now_or_never();
            }
        }
        Ok(frames)
    }

    /// Sorts out one WebSocket message: text is returned, the rest handled here.
    fn accept_ws(
        &self,
        next: Option<Result<WsMessage, WsError>>,
    ) -> Result<Option<Frame>, SessionEnd> {
        match next {
            None => Err(SessionEnd::new(EndKind::Lost, "connection closed")),
            // Too large to read: say so (1009, and an error frame naming the limit)
            // rather than drop the connection without a word.
            Some(Err(WsError::Capacity(e))) => {
                LinkStats::add(&self.link.stats.frames_invalid, 1);
                let mut end = self.refuse(
                    wire::codes::MESSAGE_ERROR,
                    &format!(
                        "frame refused: {e}; this node reads frames of at most {} bytes",
                        self.options.max_message_size
                    ),
                    CloseCode::Size,
                );
                end.kind = EndKind::Lost;
                Err(end)
            }
            Some(Err(e)) => Err(SessionEnd::new(
                EndKind::Lost,
                format!("connection failed: {e}"),
            )),
            Some(Ok(WsMessage::Text(t))) => {
                LinkStats::add(&self.link.stats.bytes_received, t.len() as u64);
                Ok(Some(Frame::Text(t.as_str().to_owned())))
            }
            // v1 accepts UTF-8 JSON in a binary frame too; other bytes are answered in
            // their turn, so answers keep the order of the frames.
            Some(Ok(WsMessage::Binary(b))) => {
                LinkStats::add(&self.link.stats.bytes_received, b.len() as u64);
                Ok(Some(match String::from_utf8(b.to_vec()) {
                    Ok(text) => Frame::Text(text),
                    Err(e) => Frame::Bad(format!(
                        "Failed to decode message: a binary frame must hold UTF-8 JSON ({e})"
                    )),
                }))
            }
            Some(Ok(WsMessage::Close(frame))) => {
                let frame_code = frame.as_ref().map(|f| u16::from(f.code));
                let reason = match frame {
                    Some(f) if !f.reason.is_empty() => {
                        format!("closed by the peer ({}): {}", u16::from(f.code), f.reason)
                    }
                    Some(f) => format!("closed by the peer ({})", u16::from(f.code)),
                    None => "closed by the peer".to_owned(),
                };
                // A normal close (1000, 1001: the peer shut down or went away) is not an
                // error; the link still comes back when the peer does.
                let normal = frame_code.is_some_and(|c| c == 1000 || c == 1001);
                let kind = if normal {
                    EndKind::PeerClosed
                } else {
                    EndKind::Lost
                };
                Err(SessionEnd::new(kind, reason))
            }
            // WebSocket-level pings are answered by tungstenite itself.
            Some(Ok(_)) => Ok(None),
        }
    }

    fn on_control(&mut self, ctrl: Option<Control>) -> Result<(), SessionEnd> {
        match ctrl {
            Some(Control::Pause) if self.established => {
                self.send(&Message::Pause)?;
                self.link.set_status(LinkStatus::Paused);
            }
            Some(Control::Resume) if self.established => {
                self.send(&Message::Resume)?;
                self.link.set_status(LinkStatus::Connected);
            }
            // Before the handshake the paused flag alone counts: `establish` sends it.
            Some(Control::Pause | Control::Resume) => {}
            Some(Control::Reconcile(ask)) if self.established => {
                if let Some(earlier) = self.reconcile_asked.replace(ask) {
                    let _ = earlier.send(Err("asked again meanwhile".into()));
                }
            }
            Some(Control::Reconcile(ask)) => {
                let _ = ask.send(Err("the link is still connecting".into()));
            }
            Some(Control::Disconnect) | None => {
                let _ = self.queue(Outgoing::Close(
                    CloseCode::Normal,
                    "link disconnected".into(),
                ));
                return Err(SessionEnd::new(
                    EndKind::Disconnected,
                    "disconnected locally",
                ));
            }
        }
        Ok(())
    }
}

/// After a frame too large to read, the reader stops (the peer's unread payload stays
/// in the socket), and a socket closed with unread bytes is reset: the reset would
/// overtake the error frame and the 1009 close on their way out. Holding the socket a
/// moment lets the sender deliver them first.
async fn linger_after_oversized() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn store_end(e: crate::store::StoreError) -> SessionEnd {
    SessionEnd::new(EndKind::Lost, format!("storage: {e}"))
}

fn type_name(msg: &Message) -> String {
    serde_json::to_value(msg)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "message".to_owned())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
