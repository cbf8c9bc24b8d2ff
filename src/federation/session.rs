//! The link state machine: one for both ends of a link.
//!
//! `handshake` -> (initial sync) -> live, with pause / resume and heartbeat throughout,
//! until close. The role only decides who speaks first (the initiator sends `hello`,
//! the acceptor answers `hello_ack`) and who asks for the initial sync; everything
//! after the handshake is symmetric. Frames are read here and every delta goes to
//! the node's single ingestion path; everything written goes through the link's
//! [`Sender`], which this machine starts and steers.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use super::config::{InitialSync, SyncMode};
use super::cursor::{self, CursorKeys, V1_RESUME_MARGIN_MS};
use super::links::{Control, Direction, LinkShared, LinkStats, LinkStatus};
use super::protocol::{self, codes, HelloExt, Message, EXTENSION_VERSION, PROTOCOL_VERSION};
use super::sender::{error_frame, Outgoing, SendPlan, Sender, SenderEnd, SyncPlan, CONTROL_QUEUE};
use crate::delta::{now_millis, Delta};
use crate::events::NodeEvent;
use crate::filter::DeltaFilter;
use crate::node::{Admission, IngestOutcome, Node, Origin};
use crate::store::Seq;

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
    /// The connection was lost or closed by the peer: reconnect if configured.
    Lost,
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

/// What the peer asked for in its `hello.config`. Lenient on purpose: reference
/// clients send more (`trustPolicy`, `reconnect`...) and we only read what we honour.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct PeerConfig {
    mode: SyncMode,
    pull_filter: Option<Value>,
}

/// What the handshake established.
struct Peer {
    system: String,
    extension: bool,
    /// The acceptor's committed position of our log (in its `hello_ack`).
    their_cursor_of_us: Option<u64>,
    /// The peer's hello config (acceptor side).
    config: PeerConfig,
    peer_filter: Option<DeltaFilter>,
}

/// Receiving state after the handshake.
struct Established {
    peer: Peer,
    we_send: bool,
    we_receive: bool,
    keys: CursorKeys,
    /// Newest timestamp received (the v1 resume point).
    max_ts: u64,
    syncing: bool,
    sync_processed: u64,
}

/// How a received delta is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// v1 live `delta`: `delta_ack` once durable, or `delta_nack`.
    AckEach,
    /// Batches: only refusals are answered (`delta_nack`).
    NackOnly,
}

/// Deltas read from consecutive frames, ingested together in one store batch.
#[derive(Default)]
struct Pending {
    values: Vec<(Value, Reply, bool)>,
    last_seq: Option<u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.values.is_empty() && self.last_seq.is_none()
    }
}

/// Frames read in one go before the deltas among them are ingested together, and
/// the most text they may add up to: big enough for group commit to pay off, small
/// enough to bound memory and what a crash can leave uncommitted.
const MAX_FRAMES_PER_INGEST: usize = 64;
const MAX_BYTES_PER_INGEST: usize = 1 << 20;

pub(crate) struct Session<'a> {
    node: Node,
    link: Arc<LinkShared>,
    role: Role,
    out: mpsc::Sender<Outgoing>,
    control: &'a mut mpsc::UnboundedReceiver<Control>,
    heartbeat: Duration,
}

/// Runs one connection of a link to its end.
pub(crate) async fn run<S>(
    node: Node,
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
        .unwrap_or(node.server_options().heartbeat)
        .max(Duration::from_millis(100));
    let (sink, mut stream) = ws.split();
    let (out, queue) = mpsc::channel(CONTROL_QUEUE);
    let sender = Sender::new(node.clone(), link.clone(), sink, queue, heartbeat);
    let mut sender_task = tokio::spawn(sender.run());
    let mut session = Session {
        node,
        link,
        role,
        out,
        control,
        heartbeat,
    };
    let end = tokio::select! {
        end = session.drive(&mut stream) => end,
        finished = &mut sender_task => {
            let reason = match finished {
                Ok(SenderEnd::Socket(e)) => format!("send failed: {e}"),
                Ok(SenderEnd::Store(e)) => format!("reading the log failed: {e}"),
                Ok(SenderEnd::Closed) => "writer closed".to_owned(),
                Err(e) => format!("writer task failed: {e}"),
            };
            SessionEnd::new(EndKind::Lost, reason)
        }
    };
    // Dropping the queue tells the writer to close the socket once it has sent what
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
        St: futures_util::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>>
            + Unpin,
    {
        let peer = match self.handshake(stream).await {
            Ok(peer) => peer,
            Err(end) => return end,
        };
        let mut est = match self.establish(peer).await {
            Ok(est) => est,
            Err(end) => return end,
        };
        let mut end = self.live(stream, &mut est).await;
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
            mpsc::error::TrySendError::Closed(_) => SessionEnd::new(EndKind::Lost, "writer closed"),
        })
    }

    fn send(&self, msg: &Message) -> Result<(), SessionEnd> {
        self.queue(Outgoing::Frame(protocol::encode(msg)))
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

    /// The next text frames: one, waiting up to `wait`, plus whatever else is already
    /// there (up to a bound), so a burst is ingested in one store batch.
    async fn read_frames<St>(
        &mut self,
        stream: &mut St,
        wait: Duration,
    ) -> Result<Vec<String>, SessionEnd>
    where
        St: futures_util::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>>
            + Unpin,
    {
        let first = tokio::select! {
            biased;
            ctrl = self.control.recv() => {
                self.on_control(ctrl)?;
                return Ok(Vec::new());
            }
            next = tokio::time::timeout(wait, stream.next()) => match next {
                Ok(next) => next,
                Err(_) => return Err(SessionEnd::new(
                    EndKind::Lost,
                    format!("no frame from the peer for {} ms (heartbeat)", wait.as_millis()),
                )),
            },
        };
        let mut texts = Vec::new();
        let mut bytes = 0;
        if let Some(text) = self.accept_ws(first)? {
            bytes += text.len();
            texts.push(text);
        }
        while texts.len() < MAX_FRAMES_PER_INGEST && bytes < MAX_BYTES_PER_INGEST {
            match stream.next().now_or_never() {
                Some(next) => {
                    if let Some(text) = self.accept_ws(next)? {
                        bytes += text.len();
                        texts.push(text);
                    }
                }
                None => break,
            }
        }
        Ok(texts)
    }

    /// Sorts out one WebSocket message: text is returned, the rest handled here.
    fn accept_ws(
        &self,
        next: Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<Option<String>, SessionEnd> {
        match next {
            None => Err(SessionEnd::new(EndKind::Lost, "connection closed")),
            Some(Err(e)) => Err(SessionEnd::new(
                EndKind::Lost,
                format!("connection failed: {e}"),
            )),
            Some(Ok(WsMessage::Text(t))) => {
                LinkStats::add(&self.link.stats.bytes_received, t.len() as u64);
                Ok(Some(t.as_str().to_owned()))
            }
            Some(Ok(WsMessage::Binary(b))) => {
                LinkStats::add(&self.link.stats.bytes_received, b.len() as u64);
                self.send_error(
                    codes::MESSAGE_ERROR,
                    "Failed to decode message: binary frames are not part of the protocol; send JSON text frames",
                )?;
                Ok(None)
            }
            Some(Ok(WsMessage::Close(frame))) => {
                let reason = match frame {
                    Some(f) if !f.reason.is_empty() => {
                        format!("closed by the peer ({}): {}", u16::from(f.code), f.reason)
                    }
                    Some(f) => format!("closed by the peer ({})", u16::from(f.code)),
                    None => "closed by the peer".to_owned(),
                };
                // 1008 (policy: full, refused) is worth retrying later; the rest is a normal loss.
                Err(SessionEnd::new(EndKind::Lost, reason))
            }
            // WebSocket-level pings are answered by tungstenite itself.
            Some(Ok(_)) => Ok(None),
        }
    }

    fn on_control(&mut self, ctrl: Option<Control>) -> Result<(), SessionEnd> {
        match ctrl {
            Some(Control::Pause) => {
                self.send(&Message::Pause)?;
                self.link.set_status(LinkStatus::Paused);
            }
            Some(Control::Resume) => {
                self.send(&Message::Resume)?;
                self.link.set_status(LinkStatus::Connected);
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

    // ---- handshake -----------------------------------------------------------------

    async fn handshake<St>(&mut self, stream: &mut St) -> Result<Peer, SessionEnd>
    where
        St: futures_util::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>>
            + Unpin,
    {
        if self.role == Role::Initiator {
            self.send(&Message::Hello {
                system_id: self.node.system_id().to_owned(),
                protocol: PROTOCOL_VERSION.to_owned(),
                config: serde_json::to_value(&self.link.config).ok(),
                rhizome: Some(HelloExt {
                    version: EXTENSION_VERSION,
                    cursor: None,
                }),
            })?;
        }
        let deadline = tokio::time::Instant::now() + self.node.server_options().handshake_timeout;
        loop {
            let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            if wait.is_zero() {
                return Err(self.refuse_timeout());
            }
            let texts = match self.read_frames(stream, wait).await {
                Ok(t) => t,
                Err(end) if end.reason.starts_with("no frame") => return Err(self.refuse_timeout()),
                Err(end) => return Err(end),
            };
            for text in texts {
                let msg = match protocol::decode(&text) {
                    Ok(m) => m,
                    Err(e) => {
                        self.send_error(codes::MESSAGE_ERROR, &e.0)?;
                        continue;
                    }
                };
                match (self.role, msg) {
                    (_, Message::Ping) => self.send(&Message::Pong)?,
                    (_, Message::Pong) => {}
                    (
                        _,
                        Message::Error {
                            code,
                            message,
                            fatal,
                        },
                    ) => {
                        self.peer_error(&code, &message);
                        if fatal {
                            let kind = if code == codes::PROTOCOL_MISMATCH {
                                EndKind::Refused
                            } else {
                                EndKind::Lost
                            };
                            return Err(SessionEnd::new(
                                kind,
                                format!("the peer refused the link: {code}: {message}"),
                            ));
                        }
                    }
                    (
                        Role::Acceptor,
                        Message::Hello {
                            system_id,
                            protocol,
                            config,
                            rhizome,
                        },
                    ) => {
                        return self.on_hello(system_id, protocol, config, rhizome);
                    }
                    (
                        Role::Initiator,
                        Message::HelloAck {
                            system_id,
                            protocol,
                            rhizome,
                            ..
                        },
                    ) => {
                        if protocol != PROTOCOL_VERSION {
                            return Err(self.refuse(
                                codes::PROTOCOL_MISMATCH,
                                &format!(
                                    "the peer speaks {protocol:?}; we speak {PROTOCOL_VERSION:?}"
                                ),
                                CloseCode::Protocol,
                            ));
                        }
                        return Ok(Peer {
                            system: system_id,
                            extension: rhizome.as_ref().is_some_and(|r| r.version >= 1),
                            their_cursor_of_us: rhizome.and_then(|r| r.cursor),
                            config: PeerConfig::default(),
                            peer_filter: None,
                        });
                    }
                    (role, other) => {
                        let expected = if role == Role::Acceptor {
                            "hello"
                        } else {
                            "hello_ack"
                        };
                        self.send_error(
                            codes::HANDSHAKE_REQUIRED,
                            &format!(
                                "{} before the handshake: expected {expected} first",
                                type_name(&other)
                            ),
                        )?;
                    }
                }
            }
        }
    }

    fn refuse_timeout(&self) -> SessionEnd {
        let mut end = self.refuse(
            codes::HANDSHAKE_REQUIRED,
            "handshake not completed in time",
            CloseCode::Policy,
        );
        end.kind = EndKind::Lost;
        end
    }

    fn on_hello(
        &self,
        system_id: String,
        protocol: String,
        config: Option<Value>,
        rhizome: Option<HelloExt>,
    ) -> Result<Peer, SessionEnd> {
        if protocol != PROTOCOL_VERSION {
            return Err(self.refuse(
                codes::PROTOCOL_MISMATCH,
                &format!(
                    "Unsupported protocol {protocol:?}; this node speaks {PROTOCOL_VERSION:?}"
                ),
                CloseCode::Protocol,
            ));
        }
        if system_id.is_empty() {
            return Err(self.refuse(
                codes::MESSAGE_ERROR,
                "hello.systemId must not be empty",
                CloseCode::Policy,
            ));
        }
        if system_id == self.node.system_id() {
            return Err(self.refuse(
                codes::MESSAGE_ERROR,
                &format!("hello.systemId {system_id:?} is this node's own id: a node cannot link to itself"),
                CloseCode::Policy,
            ));
        }
        let config: PeerConfig = match config {
            None | Some(Value::Null) => PeerConfig::default(),
            Some(v) => serde_json::from_value(v).map_err(|e| {
                self.refuse(
                    codes::MESSAGE_ERROR,
                    &format!("hello.config: {e}"),
                    CloseCode::Policy,
                )
            })?,
        };
        let peer_filter = match &config.pull_filter {
            None | Some(Value::Null) => None,
            Some(v) => Some(DeltaFilter::from_value(v).map_err(|e| {
                self.refuse(
                    codes::MESSAGE_ERROR,
                    &format!("hello.config.pullFilter: {e}"),
                    CloseCode::Policy,
                )
            })?),
        };
        let extension = rhizome.is_some_and(|r| r.version >= 1);
        let keys = CursorKeys::new(&system_id, "inbound");
        let cursor = if extension {
            Some(
                keys.load_seq(self.node.store())
                    .map_err(store_end)?
                    .unwrap_or(0),
            )
        } else {
            None
        };
        self.send(&Message::HelloAck {
            system_id: self.node.system_id().to_owned(),
            link_id: self.link.id.clone(),
            protocol: PROTOCOL_VERSION.to_owned(),
            rhizome: extension.then_some(HelloExt {
                version: EXTENSION_VERSION,
                cursor,
            }),
        })?;
        Ok(Peer {
            system: system_id,
            extension,
            their_cursor_of_us: None,
            config,
            peer_filter,
        })
    }

    /// After the handshake: decide who sends and receives, arm the writer, ask for the
    /// initial sync, announce the link.
    async fn establish(&mut self, peer: Peer) -> Result<Established, SessionEnd> {
        let (we_send, we_receive) = match self.role {
            Role::Initiator => (
                self.link.config.mode != SyncMode::Pull,
                self.link.config.mode != SyncMode::Push,
            ),
            Role::Acceptor => (
                peer.config.mode != SyncMode::Push,
                peer.config.mode != SyncMode::Pull,
            ),
        };
        let scope = match self.link.direction {
            Direction::Outbound => self
                .link
                .config
                .name
                .clone()
                .or_else(|| self.link.remote_url.clone())
                .unwrap_or_else(|| self.link.id.clone()),
            Direction::Inbound => "inbound".to_owned(),
        };
        let keys = CursorKeys::new(&peer.system, &scope);
        let store = self.node.store();
        let max_ts = keys.load_ts(store).map_err(store_end)?.unwrap_or(0);
        self.link.set_remote_system(&peer.system);
        self.link.mark_connected();
        let paused = *self.link.paused.borrow();
        self.link.set_status(if paused {
            LinkStatus::Paused
        } else {
            LinkStatus::Connected
        });
        tracing::info!(link = %self.link.id, peer = %peer.system, extension = peer.extension, we_send, we_receive, "link up");
        self.node.emit(NodeEvent::LinkConnected {
            link_id: self.link.id.clone(),
            remote_system_id: peer.system.clone(),
            remote_url: self.link.remote_url.clone(),
            extension: peer.extension,
        });
        if paused {
            self.send(&Message::Pause)?;
        }
        if we_send {
            let plan = self.send_plan(&peer)?;
            self.queue(Outgoing::Begin(Box::new(plan)))?;
        }
        if self.role == Role::Initiator && we_receive {
            if let Some(request) = self.sync_request(&peer, &keys, max_ts)? {
                self.send(&request)?;
                // "connected" then means caught up: the link is syncing until sync_complete.
                if !paused {
                    self.link.set_status(LinkStatus::Syncing);
                }
            }
        }
        Ok(Established {
            peer,
            we_send,
            we_receive,
            keys,
            max_ts,
            syncing: false,
            sync_processed: 0,
        })
    }

    /// Where this side's writer starts and what it filters.
    fn send_plan(&self, peer: &Peer) -> Result<SendPlan, SessionEnd> {
        let store = self.node.store();
        let head = store.head();
        let mut initial_floor = None;
        let live_from = match self.role {
            // The acceptor of an extension peer waits for its sync_request, which names
            // the resume point; a v1 peer gets live deltas from now on (its sync_request
            // covers the past).
            Role::Acceptor => (!peer.extension).then_some(head),
            Role::Initiator => Some(match (peer.extension, peer.their_cursor_of_us) {
                (true, Some(c)) if c > 0 => Seq(c),
                _ => match self.link.config.initial_sync {
                    InitialSync::Full => Seq(0),
                    InitialSync::None => head,
                    InitialSync::FromTimestamp => {
                        let ts = self.link.config.sync_from_timestamp.unwrap_or(0);
                        initial_floor = Some((head, ts));
                        match store.first_seq_at_or_after(ts).map_err(store_end)? {
                            Some(s) => Seq(s.0.saturating_sub(1)),
                            None => head,
                        }
                    }
                },
            }),
        };
        Ok(SendPlan {
            peer_system: peer.system.clone(),
            extension: peer.extension,
            push_filter: self.link.config.push_filter.clone(),
            peer_filter: peer.peer_filter.clone(),
            live_from,
            initial_floor,
        })
    }

    /// The initiator's `sync_request`, or none (v1 peer, initial sync `none`, nothing to resume).
    fn sync_request(
        &self,
        peer: &Peer,
        keys: &CursorKeys,
        max_ts: u64,
    ) -> Result<Option<Message>, SessionEnd> {
        let config = &self.link.config;
        let filter = config
            .pull_filter
            .as_ref()
            .and_then(|f| serde_json::to_value(f).ok());
        let from_ts_config = (config.initial_sync == InitialSync::FromTimestamp)
            .then(|| config.sync_from_timestamp.unwrap_or(0));
        let mut request = Message::SyncRequest {
            filter,
            from_timestamp: None,
            resume_from: None,
            from_head: None,
        };
        let Message::SyncRequest {
            from_timestamp,
            resume_from,
            from_head,
            ..
        } = &mut request
        else {
            return Ok(None);
        };
        if peer.extension {
            match keys.load_seq(self.node.store()).map_err(store_end)? {
                Some(c) => *resume_from = Some(c),
                None => match config.initial_sync {
                    InitialSync::Full => *resume_from = Some(0),
                    InitialSync::FromTimestamp => *from_timestamp = from_ts_config,
                    InitialSync::None => *from_head = Some(true),
                },
            }
        } else if max_ts > 0 {
            // Resuming with a plain v1 peer: ask again from a little before the newest
            // delta we have from it; what we already hold is deduplicated.
            let resume = max_ts.saturating_sub(V1_RESUME_MARGIN_MS);
            *from_timestamp = Some(from_ts_config.map_or(resume, |t| t.max(resume)));
        } else {
            match config.initial_sync {
                InitialSync::Full => {}
                InitialSync::FromTimestamp => *from_timestamp = from_ts_config,
                InitialSync::None => return Ok(None),
            }
        }
        Ok(Some(request))
    }

    // ---- live ----------------------------------------------------------------------

    async fn live<St>(&mut self, stream: &mut St, est: &mut Established) -> SessionEnd
    where
        St: futures_util::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>>
            + Unpin,
    {
        let dead_after = self.heartbeat * 2 + Duration::from_secs(1);
        loop {
            let texts = match self.read_frames(stream, dead_after).await {
                Ok(t) => t,
                Err(end) => return end,
            };
            if let Err(end) = self.process(texts, est).await {
                return end;
            }
        }
    }

    async fn process(
        &mut self,
        texts: Vec<String>,
        est: &mut Established,
    ) -> Result<(), SessionEnd> {
        let mut pending = Pending::default();
        for text in texts {
            let msg = match protocol::decode(&text) {
                Ok(m) => m,
                Err(e) => {
                    self.flush(&mut pending, est).await?;
                    self.send_error(codes::MESSAGE_ERROR, &e.0)?;
                    continue;
                }
            };
            match msg {
                Message::Delta { delta, seq } => {
                    if self.may_receive(est, Some(&delta))? {
                        pending.values.push((delta, Reply::AckEach, false));
                        pending.last_seq = seq.or(pending.last_seq);
                    }
                }
                Message::SyncBatch {
                    deltas, last_seq, ..
                } => {
                    if self.may_receive(est, None)? {
                        pending
                            .values
                            .extend(deltas.into_iter().map(|d| (d, Reply::NackOnly, true)));
                        pending.last_seq = last_seq.or(pending.last_seq);
                    }
                }
                Message::DeltaBatch { deltas, last_seq } => {
                    if self.may_receive(est, None)? {
                        pending
                            .values
                            .extend(deltas.into_iter().map(|d| (d, Reply::NackOnly, false)));
                        pending.last_seq = Some(last_seq);
                    }
                }
                other => {
                    self.flush(&mut pending, est).await?;
                    self.on_message(other, est).await?;
                }
            }
        }
        self.flush(&mut pending, est).await
    }

    /// Refuses deltas on a link that does not carry them toward us.
    fn may_receive(&self, est: &Established, delta: Option<&Value>) -> Result<bool, SessionEnd> {
        if est.we_receive {
            return Ok(true);
        }
        let why = match self.role {
            Role::Acceptor => "this link was opened in pull mode: the connecting side receives only and may not send deltas",
            Role::Initiator => "this link was opened in push mode: the connecting side does not receive deltas",
        };
        if let Some(id) = delta.and_then(|d| d.get("id")).and_then(Value::as_str) {
            self.send(&Message::DeltaNack {
                delta_id: id.to_owned(),
                reason: why.to_owned(),
            })?;
        }
        self.send_error(codes::MODE_VIOLATION, why)?;
        Ok(false)
    }

    /// Ingests pending deltas in one batch with the cursor they advance, then answers.
    async fn flush(
        &mut self,
        pending: &mut Pending,
        est: &mut Established,
    ) -> Result<(), SessionEnd> {
        if pending.is_empty() {
            return Ok(());
        }
        let Pending { values, last_seq } = std::mem::take(pending);
        let checked: Vec<Result<Delta, crate::InvalidDelta>> = values
            .iter()
            .map(|(v, _, _)| Delta::from_value(v))
            .collect();
        let mut meta = Vec::new();
        if est.peer.extension {
            if let Some(seq) = last_seq {
                meta.push((est.keys.seq.clone(), cursor::encode(seq)));
            }
        } else {
            let newest = checked
                .iter()
                .flatten()
                .map(|d| d.timestamp)
                .max()
                .unwrap_or(0);
            if newest > est.max_ts {
                est.max_ts = newest;
                meta.push((est.keys.ts.clone(), cursor::encode(newest)));
            }
        }
        let pull_filter = match self.link.direction {
            Direction::Outbound => self.link.config.pull_filter.as_ref(),
            Direction::Inbound => None,
        };
        let admission = Admission {
            link_id: &self.link.id,
            pull_filter,
        };
        let origin = Origin::Remote {
            system: est.peer.system.clone(),
        };
        let outcomes = self
            .node
            .ingest_checked(checked, origin, Some(&admission), meta)
            .await
            .map_err(store_end)?;
        let stats = &self.link.stats;
        for ((value, reply, in_sync), outcome) in values.iter().zip(outcomes) {
            let id = value.get("id").and_then(Value::as_str).unwrap_or_default();
            if *in_sync {
                est.sync_processed += 1;
            }
            let refusal = match outcome {
                IngestOutcome::Stored(_) | IngestOutcome::Duplicate(_) => {
                    LinkStats::add(&stats.deltas_received, 1);
                    self.node.emit(NodeEvent::DeltaReceived {
                        link_id: self.link.id.clone(),
                        delta_id: id.to_owned(),
                        duplicate: matches!(outcome, IngestOutcome::Duplicate(_)),
                    });
                    if *reply == Reply::AckEach {
                        self.send(&Message::DeltaAck {
                            delta_id: id.to_owned(),
                        })?;
                    }
                    continue;
                }
                IngestOutcome::Invalid(e) => {
                    LinkStats::add(&stats.deltas_rejected, 1);
                    format!("invalid delta: {e}")
                }
                IngestOutcome::Rejected(reason) => {
                    LinkStats::add(&stats.deltas_rejected, 1);
                    reason
                }
                IngestOutcome::Filtered => {
                    LinkStats::add(&stats.deltas_filtered, 1);
                    "not kept: outside this link's pull filter".to_owned()
                }
            };
            self.send(&Message::DeltaNack {
                delta_id: id.to_owned(),
                reason: refusal,
            })?;
        }
        Ok(())
    }

    async fn on_message(&mut self, msg: Message, est: &mut Established) -> Result<(), SessionEnd> {
        match msg {
            Message::Hello { .. } | Message::HelloAck { .. } => self.send_error(
                codes::MESSAGE_ERROR,
                &format!(
                    "{} after the handshake: the link is already established",
                    type_name(&msg)
                ),
            ),
            Message::SyncRequest {
                filter,
                from_timestamp,
                resume_from,
                from_head,
            } => {
                if !est.we_send {
                    return self.send_error(
                        codes::MODE_VIOLATION,
                        "sync_request on a link that does not send to you (it was opened in push mode)",
                    );
                }
                let filter = match filter {
                    None | Some(Value::Null) => None,
                    Some(v) => match DeltaFilter::from_value(&v) {
                        Ok(f) => Some(f),
                        Err(e) => {
                            return self.send_error(
                                codes::SYNC_ERROR,
                                &format!("sync_request.filter: {e}"),
                            )
                        }
                    },
                };
                let (after, min_timestamp) = if let Some(c) = resume_from {
                    (Seq(c), None)
                } else if from_head == Some(true) {
                    (Seq(u64::MAX), None)
                } else if let Some(ts) = from_timestamp {
                    let first = self
                        .node
                        .store()
                        .first_seq_at_or_after(ts)
                        .map_err(store_end)?;
                    (
                        first.map_or(Seq(u64::MAX), |s| Seq(s.0.saturating_sub(1))),
                        Some(ts),
                    )
                } else {
                    (Seq(0), None)
                };
                self.queue(Outgoing::Sync(SyncPlan {
                    after,
                    min_timestamp,
                    filter,
                }))
            }
            Message::SyncStart { total_deltas, .. } => {
                est.syncing = true;
                est.sync_processed = 0;
                if !*self.link.paused.borrow() {
                    self.link.set_status(LinkStatus::Syncing);
                }
                self.node.emit(NodeEvent::SyncStarted {
                    link_id: self.link.id.clone(),
                    total_deltas,
                });
                Ok(())
            }
            Message::SyncComplete { last_seq, .. } => {
                // Every batch before this frame is already durable (flushed in order).
                if est.peer.extension {
                    if let Some(seq) = last_seq {
                        self.node
                            .store()
                            .put_meta(&est.keys.seq, cursor::encode(seq))
                            .await
                            .map_err(store_end)?;
                    }
                }
                est.syncing = false;
                self.link
                    .stats
                    .last_sync_timestamp
                    .store(now_millis(), std::sync::atomic::Ordering::Relaxed);
                if !*self.link.paused.borrow() {
                    self.link.set_status(LinkStatus::Connected);
                }
                tracing::info!(link = %self.link.id, deltas = est.sync_processed, "initial sync complete");
                self.node.emit(NodeEvent::SyncCompleted {
                    link_id: self.link.id.clone(),
                    deltas_processed: est.sync_processed,
                });
                Ok(())
            }
            Message::DeltaAck { .. } => Ok(()),
            Message::DeltaNack { delta_id, reason } => {
                tracing::warn!(link = %self.link.id, %delta_id, %reason, "the peer refused a delta");
                Ok(())
            }
            Message::Pause => self.queue(Outgoing::PeerPaused(true)),
            Message::Resume => self.queue(Outgoing::PeerPaused(false)),
            Message::Ping => self.send(&Message::Pong),
            Message::Pong => Ok(()),
            Message::Error {
                code,
                message,
                fatal,
            } => {
                self.peer_error(&code, &message);
                if fatal {
                    let kind = if code == codes::PROTOCOL_MISMATCH {
                        EndKind::Refused
                    } else {
                        EndKind::Lost
                    };
                    return Err(SessionEnd::new(
                        kind,
                        format!("the peer closed the link: {code}: {message}"),
                    ));
                }
                Ok(())
            }
            // Delta-carrying messages are handled by `process`.
            Message::Delta { .. } | Message::SyncBatch { .. } | Message::DeltaBatch { .. } => {
                Ok(())
            }
        }
    }

    fn peer_error(&self, code: &str, message: &str) {
        tracing::warn!(link = %self.link.id, %code, %message, "error from the peer");
        self.link.set_error(&format!("{code}: {message}"));
        self.node.emit(NodeEvent::LinkError {
            link_id: self.link.id.clone(),
            error: format!("peer: {code}: {message}"),
        });
    }
}

fn store_end(e: crate::store::StoreError) -> SessionEnd {
    SessionEnd::new(EndKind::Lost, format!("storage: {e}"))
}

fn type_name(msg: &Message) -> String {
    serde_json::to_value(msg)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
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
