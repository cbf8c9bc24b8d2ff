//! Opening a link: `hello` / `hello_ack`, then deciding who sends and receives, where
//! each side's sending starts, and what the initial sync asks for.

use futures_util::Stream;
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::proof::{Signer, Transcript};
use super::state::{Established, Peer, PeerConfig};
use super::{store_end, type_name, EndKind, Frame, Role, Session, SessionEnd};
use crate::admission::Admission;
use crate::delta::identifier;
use crate::events::NodeEvent;
use crate::federation::cursor::{CursorKeys, V1_RESUME_MARGIN_MS};
use crate::federation::links::{Direction, FirstStart, LinkStatus, TimestampFloor};
use crate::federation::sender::{Outgoing, SendPlan};
use crate::federation::wire::{
    codes, features, AuthHello, HelloExt, Message, WireLimits, EXTENSION_VERSION, PROTOCOL_VERSION,
};
use crate::federation::{InitialSync, SyncMode};
use crate::filter::DeltaFilter;
use crate::policy::{LinkContext, LinkPeer};
use crate::store::Seq;

impl Session<'_> {
    /// Returns the peer and any frames that arrived right behind its hello / hello_ack:
    /// they belong to the established link and are processed first.
    pub(super) async fn handshake<St>(
        &mut self,
        stream: &mut St,
    ) -> Result<(Peer, Vec<Frame>), SessionEnd>
    where
        St: Stream<Item = Result<WsMessage, WsError>> + Unpin,
    {
        // The connecting side's nonce and hello.config as sent: its proof covers them.
        let mut ours: Option<(String, String)> = None;
        // The accepting side: a key proof asked for and answered, awaiting the peer's.
        let mut awaiting: Option<AwaitingProof> = None;
        if self.role == Role::Initiator {
            let config = serde_json::to_value(&self.link.config).ok();
            let nonce = fresh_nonce()?;
            self.send(&Message::Hello {
                system_id: self.node.system_id().to_owned(),
                protocol: PROTOCOL_VERSION.to_owned(),
                config: config.clone(),
                rhizome: Some(HelloExt {
                    version: EXTENSION_VERSION,
                    cursor: None,
                    log: Some(self.node.log_id().to_owned()),
                    limits: Some(self.our_limits()),
                    auth: Some(AuthHello {
                        key: self.node.public_key(),
                        nonce: nonce.clone(),
                        proof: None,
                    }),
                    features: self.options.features(),
                    head: Some(self.node.store().head().0),
                }),
            })?;
            ours = Some((nonce, config_text(config.as_ref())));
        }
        let deadline = Instant::now() + self.options.handshake_timeout;
        loop {
            let texts = match self.read_frames(stream, deadline, true, None).await {
                Ok(t) => t,
                Err(end) if end.reason.starts_with("no frame") => return Err(self.refuse_timeout()),
                Err(end) => return Err(end),
            };
            let mut texts = texts.into_iter();
            while let Some(text) = texts.next() {
                let msg = match text.decode() {
                    Ok(m) => m,
                    Err(e) => {
                        self.send_error(codes::MESSAGE_ERROR, &e)?;
                        continue;
                    }
                };
                let peer = match (self.role, msg) {
                    (_, Message::Ping) => {
                        self.send(&Message::Pong)?;
                        continue;
                    }
                    (_, Message::Pong) => continue,
                    (
                        _,
                        Message::Error {
                            code,
                            message,
                            fatal,
                        },
                    ) => {
                        self.peer_error(&code, &message);
                        if !fatal {
                            continue;
                        }
                        // A refused hello (wrong protocol, our own id, a bad config) will be
                        // refused again: do not retry. Other fatal errors may pass.
                        // A peer that wants us authenticated may be configured to know us
                        // later: that one is retried.
                        let kind = if code == codes::PROTOCOL_MISMATCH
                            || code == codes::MESSAGE_ERROR
                            || code == codes::AUTH_FAILED
                        {
                            EndKind::Refused
                        } else {
                            EndKind::Lost
                        };
                        return Err(SessionEnd::new(
                            kind,
                            format!("the peer refused the link: {code}: {message}"),
                        ));
                    }
                    (Role::Acceptor, Message::Auth { proof }) if awaiting.is_some() => {
                        let Some(wait) = awaiting.take() else {
                            continue;
                        };
                        self.on_auth(wait, &proof)?
                    }
                    (
                        Role::Acceptor,
                        Message::Hello {
                            system_id,
                            protocol,
                            config,
                            rhizome,
                        },
                    ) if awaiting.is_none() => {
                        match self.on_hello(system_id, protocol, config, rhizome)? {
                            Hello::Done(peer) => *peer,
                            Hello::AwaitingProof(wait) => {
                                awaiting = Some(*wait);
                                continue;
                            }
                        }
                    }
                    (
                        Role::Initiator,
                        Message::HelloAck {
                            system_id,
                            link_id,
                            protocol,
                            rhizome,
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
                        if let Err(e) = identifier(&system_id, "hello_ack.systemId") {
                            let why = format!("{} {}", e.field, e.reason);
                            return Err(self.refuse(codes::MESSAGE_ERROR, &why, CloseCode::Policy));
                        }
                        let ext = rhizome.filter(|r| r.version >= 1);
                        let (nonce, config) = ours.take().unwrap_or_default();
                        let identity = self.check_acceptor(
                            &system_id,
                            &link_id,
                            ext.as_ref().and_then(|r| r.auth.as_ref()),
                            &nonce,
                            &config,
                        )?;
                        let (announce, reconcile) = self.shared_features(ext.as_ref());
                        Peer {
                            system: system_id,
                            identity,
                            extension: ext.is_some(),
                            announce,
                            reconcile,
                            head: ext.as_ref().and_then(|r| r.head),
                            log: ext.as_ref().and_then(|r| r.log.clone()),
                            their_cursor_of_us: ext.as_ref().and_then(|r| r.cursor),
                            limits: ext.and_then(|r| r.limits).unwrap_or_default().to_peer(),
                            config: PeerConfig::default(),
                            peer_filter: None,
                        }
                    }
                    (role, other) => {
                        let expected = match role {
                            Role::Acceptor if awaiting.is_some() => "auth",
                            Role::Acceptor => "hello",
                            Role::Initiator => "hello_ack",
                        };
                        self.send_error(
                            codes::HANDSHAKE_REQUIRED,
                            &format!(
                                "{} before the handshake: expected {expected} first",
                                type_name(&other)
                            ),
                        )?;
                        continue;
                    }
                };
                return Ok((peer, texts.collect()));
            }
        }
    }

    /// Which optional features both ends speak: (`announce`, `reconcile`).
    fn shared_features(&self, ext: Option<&HelloExt>) -> (bool, bool) {
        let theirs = |name: &str| ext.is_some_and(|e| e.features.iter().any(|f| f == name));
        (
            self.options.announce_relayed && theirs(features::ANNOUNCE),
            self.options.reconcile && theirs(features::RECONCILE),
        )
    }

    fn our_limits(&self) -> WireLimits {
        WireLimits::of(self.node.limits(), self.options.max_message_size)
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
    ) -> Result<Hello, SessionEnd> {
        if protocol != PROTOCOL_VERSION {
            return Err(self.refuse(
                codes::PROTOCOL_MISMATCH,
                &format!(
                    "Unsupported protocol {protocol:?}; this node speaks {PROTOCOL_VERSION:?}"
                ),
                CloseCode::Protocol,
            ));
        }
        // A peer's system id keys its cursors and appears in logs and events: it
        // follows the rules of a delta's `system`.
        if let Err(e) = identifier(&system_id, "hello.systemId") {
            let why = format!("{} {}", e.field, e.reason);
            return Err(self.refuse(codes::MESSAGE_ERROR, &why, CloseCode::Policy));
        }
        if system_id == self.node.system_id() {
            return Err(self.refuse(
                codes::MESSAGE_ERROR,
                &format!("hello.systemId {system_id:?} is this node's own id: a node cannot link to itself"),
                CloseCode::Policy,
            ));
        }
        let signed_config = config_text(config.as_ref());
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
        let mut ext = rhizome.filter(|r| r.version >= 1);
        let offer = ext.as_mut().and_then(|r| r.auth.take());
        // A peer token presented on the upgrade (a plain v1 client's way).
        let by_token = self.link.peer();
        if let Some(offer) = &offer {
            crate::identity::parse_public_key(&offer.key).map_err(|e| {
                self.refuse(
                    codes::AUTH_FAILED,
                    &format!("hello.rhizome.auth.key: {e}"),
                    CloseCode::Policy,
                )
            })?;
        }
        // Before anything is signed: a peer that could only ever be anonymous is told now.
        let known_key = offer
            .as_ref()
            .is_some_and(|o| self.node.peers().by_key(&o.key).is_some());
        if by_token.is_none() && !known_key {
            self.check_anonymous_allowed(&system_id)?;
        }
        let (announce, reconcile) = self.shared_features(ext.as_ref());
        let peer = Peer {
            system: system_id,
            identity: by_token.unwrap_or_else(LinkPeer::anonymous),
            extension: ext.is_some(),
            announce,
            reconcile,
            head: ext.as_ref().and_then(|r| r.head),
            limits: ext
                .as_ref()
                .and_then(|r| r.limits)
                .unwrap_or_default()
                .to_peer(),
            log: ext.and_then(|r| r.log),
            their_cursor_of_us: None,
            config,
            peer_filter,
        };
        let cursor = if peer.extension {
            let keys = self.cursor_keys(&peer);
            Some(
                keys.load_seq(self.node.store())
                    .map_err(store_end)?
                    .unwrap_or(0),
            )
        } else {
            None
        };
        let hello = match offer {
            Some(offer) => Hello::AwaitingProof(Box::new(AwaitingProof {
                key: offer.key,
                initiator_nonce: offer.nonce,
                acceptor_nonce: fresh_nonce()?,
                acceptor_key: self.node.public_key(),
                config: signed_config,
                peer,
            })),
            None => Hello::Done(Box::new(peer)),
        };
        let (extension, auth) = match &hello {
            Hello::Done(peer) => (peer.extension, None),
            Hello::AwaitingProof(w) => (
                w.peer.extension,
                Some(AuthHello {
                    key: w.acceptor_key.clone(),
                    nonce: w.acceptor_nonce.clone(),
                    proof: Some(
                        w.transcript(self.node.system_id(), &self.link.id)
                            .sign(self.node.key(), Signer::Acceptor),
                    ),
                }),
            ),
        };
        self.send(&Message::HelloAck {
            system_id: self.node.system_id().to_owned(),
            link_id: self.link.id.clone(),
            protocol: PROTOCOL_VERSION.to_owned(),
            rhizome: extension.then(|| HelloExt {
                version: EXTENSION_VERSION,
                cursor,
                log: Some(self.node.log_id().to_owned()),
                limits: Some(self.our_limits()),
                auth,
                features: self.options.features(),
                head: Some(self.node.store().head().0),
            }),
        })?;
        Ok(hello)
    }

    /// The connecting side's proof: it holds its key, for this connection.
    fn on_auth(&self, wait: AwaitingProof, proof: &str) -> Result<Peer, SessionEnd> {
        let verified = wait
            .transcript(self.node.system_id(), &self.link.id)
            .verify(Signer::Initiator, proof);
        let AwaitingProof { mut peer, key, .. } = wait;
        if let Err(e) = verified {
            return Err(self.refuse_auth(
                &peer.system,
                format!("the key proof for {key} was not made for this connection ({e}): replayed, relayed or forged"),
            ));
        }
        let by_key = self.node.peers().identify_key(&key);
        peer.identity = match (by_key, peer.identity) {
            (k, t) if t.authenticated && k.authenticated && k.name != t.name => {
                return Err(self.refuse_auth(
                    &peer.system,
                    format!(
                        "the peer token names peer {:?} but the key proves peer {:?}",
                        t.name, k.name
                    ),
                ))
            }
            (k, _) if k.authenticated => k,
            (k, t) if t.authenticated => LinkPeer { key: k.key, ..t },
            (k, _) => k,
        };
        if !peer.identity.authenticated {
            self.check_anonymous_allowed(&peer.system)?;
        }
        Ok(peer)
    }

    /// The accepting side's proof, and the key this link expects; then ours. Returns who
    /// the peer is.
    fn check_acceptor(
        &self,
        system: &str,
        link_id: &str,
        auth: Option<&AuthHello>,
        nonce: &str,
        config: &str,
    ) -> Result<LinkPeer, SessionEnd> {
        let url = self.link.remote_url.as_deref().unwrap_or("the peer");
        let expected = self.link.config.peer_key.as_deref();
        let (Some(auth), Some(proof)) = (auth, auth.and_then(|a| a.proof.as_deref())) else {
            if let Some(expected) = expected {
                return Err(self.refuse_auth(
                    system,
                    format!("{url} proved no key; this link expects key {expected} (peerKey): is it a rhizome node that supports key proofs?"),
                ));
            }
            return Ok(LinkPeer {
                name: self.link.name(),
                authenticated: false,
                key: None,
            });
        };
        let ours = self.node.public_key();
        let transcript = Transcript {
            initiator_system: self.node.system_id(),
            acceptor_system: system,
            initiator_key: &ours,
            acceptor_key: &auth.key,
            initiator_nonce: nonce,
            acceptor_nonce: &auth.nonce,
            link_id,
            config,
        };
        if let Err(e) = transcript.verify(Signer::Acceptor, proof) {
            return Err(self.refuse_auth(
                system,
                format!("{url}'s key proof does not hold for this connection: {e}"),
            ));
        }
        if let Some(expected) = expected {
            if !expected.eq_ignore_ascii_case(&auth.key) {
                return Err(self.refuse_auth(
                    system,
                    format!(
                        "{url} proved key {}, but this link expects key {expected} (peerKey)",
                        auth.key
                    ),
                ));
            }
        }
        self.send(&Message::Auth {
            proof: transcript.sign(self.node.key(), Signer::Initiator),
        })?;
        let known = self.node.peers().identify_key(&auth.key);
        Ok(if known.authenticated {
            known
        } else {
            // The operator named this link; with `peerKey` they also said who must answer.
            LinkPeer {
                name: self.link.name(),
                authenticated: expected.is_some(),
                key: known.key,
            }
        })
    }

    /// Refuses a peer that proved no configured identity when this node takes none.
    fn check_anonymous_allowed(&self, system: &str) -> Result<(), SessionEnd> {
        if self.allow_anonymous {
            return Ok(());
        }
        let why = "this node accepts only authenticated peers: configure this node as a [[peer]] there (its key, from `rhizome id`) or present a peer token";
        self.refusals.count(codes::AUTH_REQUIRED);
        tracing::warn!(link = %self.link.id, peer = %system, addr = ?self.link.remote_url, "refused an anonymous peer: {why}");
        let mut end = self.refuse(codes::AUTH_REQUIRED, why, CloseCode::Policy);
        end.kind = EndKind::Refused;
        Err(end)
    }

    fn refuse_auth(&self, system: &str, why: String) -> SessionEnd {
        self.refusals.count(codes::AUTH_FAILED);
        tracing::warn!(link = %self.link.id, peer = %system, "link authentication failed: {why}");
        self.refuse(codes::AUTH_FAILED, &why, CloseCode::Policy)
    }

    /// Where what we received from this peer is committed: per peer log and per link.
    fn cursor_keys(&self, peer: &Peer) -> CursorKeys {
        let scope = match self.link.direction {
            Direction::Outbound => self
                .link
                .config
                .name
                .clone()
                .or_else(|| self.link.remote_url.clone())
                .unwrap_or_else(|| self.link.id.clone()),
            // An authenticated peer's cursors are its own: another peer claiming its
            // system id must not move them.
            Direction::Inbound => {
                let base = if peer.identity.authenticated {
                    format!("inbound@{}", peer.identity.name)
                } else {
                    "inbound".to_owned()
                };
                match &peer.config.name {
                    Some(name) => format!("{base}:{name}"),
                    None => base,
                }
            }
        };
        CursorKeys::new(&peer.system, peer.log.as_deref().unwrap_or("v1"), &scope)
    }

    /// After the handshake: decide who sends and receives, arm the sender, ask for the
    /// initial sync, announce the link.
    pub(super) async fn establish(&mut self, peer: Peer) -> Result<Established, SessionEnd> {
        let mode = match self.role {
            Role::Initiator => self.link.config.mode,
            Role::Acceptor => peer.config.mode,
        };
        // The mode is the connecting side's point of view.
        let (we_send, we_receive) = match self.role {
            Role::Initiator => (mode != SyncMode::Pull, mode != SyncMode::Push),
            Role::Acceptor => (mode != SyncMode::Push, mode != SyncMode::Pull),
        };
        // Set first: a link dialed to us is named by the peer's system id.
        self.link.set_remote_system(&peer.system);
        self.link.set_peer(Some(peer.identity.clone()));
        let keys = self.cursor_keys(&peer);
        let max_ts = keys
            .load_ts(self.node.store())
            .map_err(store_end)?
            .unwrap_or(0);
        let link_ctx = LinkContext {
            id: self.link.id.clone(),
            name: self.link.name(),
            remote_system: peer.system.clone(),
            remote_url: self.link.remote_url.clone().unwrap_or_default(),
            mode: serde_json::to_value(mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            direction: match self.link.direction {
                Direction::Outbound => "outbound".into(),
                Direction::Inbound => "inbound".into(),
            },
            peer: peer.identity.clone(),
        };
        self.link.mark_connected();
        let paused = *self.link.paused.borrow();
        tracing::info!(link = %self.link.id, peer = %peer.system, as_peer = %peer.identity.name, authenticated = peer.identity.authenticated, extension = peer.extension, announce = peer.announce, reconcile = peer.reconcile, we_send, we_receive, "link up");
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
            let (plan, invite) = self.send_plan(&peer, link_ctx.clone())?;
            // Before the first live frame: the peer must hold its cursor from here.
            if let Some(through) = invite {
                self.send(&Message::ReconcileInvite { through: through.0 })?;
            }
            self.queue(Outgoing::Begin(Box::new(plan)))?;
        }
        let mut awaiting_sync = false;
        let mut reconcile_at_start = false;
        if self.role == Role::Initiator && we_receive {
            if let Some((request, reconcile)) = self.sync_request(&peer, &keys, max_ts)? {
                self.send(&request)?;
                awaiting_sync = true;
                reconcile_at_start = reconcile;
            }
        }
        // "connected" means caught up: a link that asked for a sync is syncing until
        // sync_complete (set once, so nobody waiting for "connected" wakes too early).
        self.link.set_status(if paused {
            LinkStatus::Paused
        } else if awaiting_sync {
            LinkStatus::Syncing
        } else {
            LinkStatus::Connected
        });
        let pull_filter = match self.link.direction {
            Direction::Outbound => self.link.config.pull_filter.clone(),
            Direction::Inbound => None,
        };
        Ok(Established {
            admission: Admission::new(link_ctx, pull_filter, true),
            peer,
            we_send,
            we_receive,
            keys,
            max_ts,
            awaiting_sync,
            syncing: false,
            sync_processed: 0,
            sync_total: 0,
            sync_started: std::time::Instant::now(),
            progress_logged: std::time::Instant::now(),
            cursor_held: false,
            fetch: super::fetching::Fetching::new(self.claims.clone(), next_owner()),
            reconciling: Default::default(),
            reconcile_at_start,
            admitted: None,
            answered: Default::default(),
        })
    }

    /// Where this side's sender starts and what it filters, and the position to invite
    /// the peer to reconcile up to when it starts live from our head instead of
    /// replaying our whole log (the peer has no cursor of it and speaks `reconcile`).
    fn send_plan(
        &self,
        peer: &Peer,
        link: LinkContext,
    ) -> Result<(SendPlan, Option<Seq>), SessionEnd> {
        let store = self.node.store();
        let head = store.head();
        let mut initial_floor = None;
        let mut invite = None;
        let live_from = match self.role {
            // The acceptor of an extension peer waits for its sync_request, which names
            // the resume point; a v1 peer gets live deltas from now on (its sync_request
            // covers the past).
            Role::Acceptor => (!peer.extension).then_some(head),
            Role::Initiator => {
                // Where this link first started (kept across reconnects), with the
                // timestamp floor of a from_timestamp initial sync.
                let first = match self.link.first_start.get() {
                    Some(first) => *first,
                    None => {
                        let at = |after, floor| FirstStart { after, floor };
                        let computed = match self.link.config.initial_sync {
                            InitialSync::Full => at(Seq(0), None),
                            InitialSync::None => at(head, None),
                            InitialSync::FromTimestamp => {
                                let ts = self.link.config.sync_from_timestamp.unwrap_or(0);
                                let start =
                                    match store.first_seq_at_or_after(ts).map_err(store_end)? {
                                        Some(s) => Seq(s.0.saturating_sub(1)),
                                        None => head,
                                    };
                                at(
                                    start,
                                    Some(TimestampFloor {
                                        through: head,
                                        min_timestamp: ts,
                                    }),
                                )
                            }
                        };
                        *self.link.first_start.get_or_init(|| computed)
                    }
                };
                initial_floor = first.floor;
                Some(match (peer.extension, peer.their_cursor_of_us) {
                    (true, Some(c)) if c > 0 => Seq(c),
                    (true, _)
                        if peer.reconcile
                            && first.after == Seq(0)
                            && first.floor.is_none()
                            && self.link.config.push_filter.is_none()
                            && head > Seq(0) =>
                    {
                        invite = Some(head);
                        head
                    }
                    (true, _) => first.after,
                    // A v1 peer says nothing of what it holds, but it answered each
                    // `delta` we sent it: resume after those answers, restarts included.
                    (false, _) => {
                        let answered = self
                            .cursor_keys(peer)
                            .load_answered(store)
                            .map_err(store_end)?;
                        first.after.max(Seq(answered.unwrap_or(0)))
                    }
                })
            }
        };
        let plan = SendPlan {
            peer_system: peer.system.as_str().into(),
            extension: peer.extension,
            announce: peer.announce,
            push_filter: self.link.config.push_filter.clone(),
            peer_filter: peer.peer_filter.clone(),
            link,
            live_from,
            initial_floor,
            peer_limits: peer.limits,
            check_peer_limits: !self.node.limits().within(&peer.limits.delta),
        };
        Ok((plan, invite))
    }

    /// The initiator's `sync_request`, or none (v1 peer, initial sync `none`, nothing to
    /// resume); and whether to reconcile instead of a full sync (the request then asks for
    /// live deltas only).
    fn sync_request(
        &self,
        peer: &Peer,
        keys: &CursorKeys,
        max_ts: u64,
    ) -> Result<Option<(Message, bool)>, SessionEnd> {
        let config = &self.link.config;
        let filter = config
            .pull_filter
            .as_ref()
            .and_then(|f| serde_json::to_value(f).ok());
        let from_ts_config = (config.initial_sync == InitialSync::FromTimestamp)
            .then(|| config.sync_from_timestamp.unwrap_or(0));
        let (mut from_timestamp, mut resume_from, mut from_head) = (None, None, None);
        let mut reconcile = false;
        if peer.extension {
            match keys.load_seq(self.node.store()).map_err(store_end)? {
                Some(c) => resume_from = Some(c),
                None => match config.initial_sync {
                    // Most of what the peer holds may be here already (a new link in a
                    // mesh, a restored backup): compare rather than receive it all.
                    InitialSync::Full
                        if peer.reconcile
                            && config.pull_filter.is_none()
                            && worth_reconciling(self.node.store().head().0, peer.head) =>
                    {
                        from_head = Some(true);
                        reconcile = true;
                    }
                    InitialSync::Full => resume_from = Some(0),
                    InitialSync::FromTimestamp => from_timestamp = from_ts_config,
                    InitialSync::None => from_head = Some(true),
                },
            }
        } else if max_ts > 0 {
            // Resuming with a plain v1 peer: ask again from a little before the newest
            // delta a completed sync gave us; what we already hold is deduplicated.
            let resume = max_ts.saturating_sub(V1_RESUME_MARGIN_MS);
            from_timestamp = Some(from_ts_config.map_or(resume, |t| t.max(resume)));
        } else {
            match config.initial_sync {
                InitialSync::Full => {}
                InitialSync::FromTimestamp => from_timestamp = from_ts_config,
                InitialSync::None => return Ok(None),
            }
        }
        Ok(Some((
            Message::SyncRequest {
                filter,
                from_timestamp,
                resume_from,
                from_head,
            },
            reconcile,
        )))
    }
}

/// Whether comparing pays: we hold at least half as many deltas as the peer's log has
/// positions (otherwise most of it is new here, and receiving it all costs less).
pub(super) fn worth_reconciling(ours: u64, peer_head: Option<u64>) -> bool {
    ours > 0 && peer_head.is_some_and(|theirs| ours.saturating_mul(2) >= theirs)
}

/// A number for this connection's claims (see `claims`), unique in the process.
fn next_owner() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// What a hello leads to: the peer, or a key proof to wait for.
enum Hello {
    Done(Box<Peer>),
    AwaitingProof(Box<AwaitingProof>),
}

/// The accepting side answered a key proof offer; the peer's own proof comes next.
struct AwaitingProof {
    peer: Peer,
    key: String,
    initiator_nonce: String,
    acceptor_nonce: String,
    acceptor_key: String,
    config: String,
}

impl AwaitingProof {
    /// The transcript both proofs of this connection sign.
    fn transcript<'a>(&'a self, acceptor_system: &'a str, link_id: &'a str) -> Transcript<'a> {
        Transcript {
            initiator_system: &self.peer.system,
            acceptor_system,
            initiator_key: &self.key,
            acceptor_key: &self.acceptor_key,
            initiator_nonce: &self.initiator_nonce,
            acceptor_nonce: &self.acceptor_nonce,
            link_id,
            config: &self.config,
        }
    }
}

/// `hello.config` as both sides sign it: the JSON text of the value as sent and as
/// received (object keys keep their order and numbers their text, so both are equal).
fn config_text(config: Option<&Value>) -> String {
    config.map_or_else(|| "null".to_owned(), Value::to_string)
}

fn fresh_nonce() -> Result<String, SessionEnd> {
    crate::identity::random_hex(32).map_err(|e| SessionEnd::new(EndKind::Lost, e.to_string()))
}
