//! What the node knows about each link: identity, status, statistics, and the
//! control channel to its task. `FederationLink` is the handle users hold.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::options::{LinkConfig, PointerForm};
use super::wire::{shows_legacy, Pointers};
use crate::delta::now_millis;
use crate::policy::LinkPeer;
use crate::store::Seq;

/// Where a link is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkStatus {
    Connecting,
    Connected,
    Syncing,
    Paused,
    Disconnected,
    Error,
}

/// Which end of the link this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// We connected to the peer (`connect_to_remote`).
    Outbound,
    /// The peer connected to our endpoint.
    Inbound,
}

/// Per-link counters.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub deltas_sent: AtomicU64,
    pub deltas_received: AtomicU64,
    pub deltas_rejected: AtomicU64,
    pub deltas_filtered: AtomicU64,
    /// Received deltas refused as invalid (also counted in `deltas_rejected`).
    pub deltas_invalid: AtomicU64,
    /// Frames from the peer that could not be decoded at all.
    pub frames_invalid: AtomicU64,
    /// Our deltas the peer refused (`delta_nack`).
    pub deltas_nacked: AtomicU64,
    /// Our deltas not sent because the peer's advertised limits refuse them.
    pub deltas_withheld: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub last_sync_timestamp: AtomicU64,
    pub connected_at: AtomicU64,
    /// Our log position this link has sent up to.
    pub sent_through: AtomicU64,
    /// Our log position the peer has acknowledged: committed (extension peers), or
    /// answered every `delta` up to (plain v1 peers).
    pub peer_acked: AtomicU64,
    /// Initial sync progress on the receiving side: deltas announced and processed.
    pub sync_total: AtomicU64,
    pub sync_done: AtomicU64,
    pub reconnects: AtomicU64,
    /// Relayed deltas announced by id (feature `announce`): by us, and to us.
    pub announced_out: AtomicU64,
    pub announced_in: AtomicU64,
    /// Deltas asked for by id (`delta_request`): by us, and of us.
    pub requested_out: AtomicU64,
    pub requested_in: AtomicU64,
    /// Reconciliations this side completed as the one learning what it lacks, and the
    /// deltas they found missing.
    pub reconciliations: AtomicU64,
    pub reconciled_missing: AtomicU64,
}

/// A snapshot of a link's counters, as `GET /links` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkStatsSnapshot {
    pub deltas_sent: u64,
    pub deltas_received: u64,
    pub deltas_rejected: u64,
    pub deltas_filtered: u64,
    pub deltas_invalid: u64,
    pub frames_invalid: u64,
    pub deltas_nacked: u64,
    pub deltas_withheld: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub last_sync_timestamp: Option<u64>,
    pub connected_at: Option<u64>,
    pub sent_through: u64,
    /// Our log position the peer has acknowledged: committed (extension peers), or
    /// answered every `delta` up to (plain v1 peers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_acked: Option<u64>,
    /// While an initial sync runs: `{total, done}` (total is an upper bound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_progress: Option<SyncProgress>,
    pub reconnects: u64,
    /// Relayed deltas sent to the peer as ids only (feature `announce`).
    pub announced_out: u64,
    /// Deltas the peer announced to us by id.
    pub announced_in: u64,
    /// Deltas we asked the peer for by id (announced ones we lacked, or found missing
    /// by reconciliation).
    pub requested_out: u64,
    /// Deltas the peer asked us for by id.
    pub requested_in: u64,
    /// Reconciliations completed on this link (this side learning what it lacked).
    pub reconciliations: u64,
    /// Deltas those reconciliations found missing here.
    pub reconciled_missing: u64,
}

impl LinkStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LinkStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let opt = |c: &AtomicU64| Some(get(c)).filter(|v| *v > 0);
        LinkStatsSnapshot {
            deltas_sent: get(&self.deltas_sent),
            deltas_received: get(&self.deltas_received),
            deltas_rejected: get(&self.deltas_rejected),
            deltas_filtered: get(&self.deltas_filtered),
            deltas_invalid: get(&self.deltas_invalid),
            frames_invalid: get(&self.frames_invalid),
            deltas_nacked: get(&self.deltas_nacked),
            deltas_withheld: get(&self.deltas_withheld),
            bytes_sent: get(&self.bytes_sent),
            bytes_received: get(&self.bytes_received),
            last_sync_timestamp: opt(&self.last_sync_timestamp),
            connected_at: opt(&self.connected_at),
            sent_through: get(&self.sent_through),
            peer_acked: opt(&self.peer_acked),
            sync_progress: (get(&self.sync_total) > 0).then(|| SyncProgress {
                total: get(&self.sync_total),
                done: get(&self.sync_done),
            }),
            reconnects: get(&self.reconnects),
            announced_out: get(&self.announced_out),
            announced_in: get(&self.announced_in),
            requested_out: get(&self.requested_out),
            requested_in: get(&self.requested_in),
            reconciliations: get(&self.reconciliations),
            reconciled_missing: get(&self.reconciled_missing),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SyncProgress {
    pub total: u64,
    pub done: u64,
}

/// State changes kept per link (for `GET /links`, `GET /status`).
const HISTORY: usize = 20;

/// One state change of a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateChange {
    /// When (ms).
    pub at: u64,
    pub status: LinkStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Commands from a handle to its link's task.
#[derive(Debug)]
pub(crate) enum Control {
    Pause,
    Resume,
    Disconnect,
    /// Reconcile what the peer holds with what we hold now, and fetch what we lack.
    Reconcile(ReconcileAsk),
}

/// Where the outcome of an operator's reconciliation goes.
pub(crate) type ReconcileAsk = tokio::sync::oneshot::Sender<Result<ReconcileReport, String>>;

/// What a reconciliation found and fetched (`POST /links/{id}/reconcile`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileReport {
    /// Deltas this node held when it began (its side of the comparison).
    pub held: u64,
    /// Deltas the peer held that this node lacked, all fetched (or refused) since.
    pub missing: u64,
    /// Messages exchanged, both ways.
    pub rounds: u32,
    pub millis: u64,
}

/// Where a link we dial first started sending: later connections without a better
/// cursor from the peer start there again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FirstStart {
    /// Sending starts after this position of our log.
    pub after: Seq,
    /// Set by a from-timestamp initial sync.
    pub floor: Option<TimestampFloor>,
}

/// A from-timestamp initial push: deltas up to log position `through` go only from
/// `min_timestamp` on; later ones go regardless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimestampFloor {
    pub through: Seq,
    pub min_timestamp: u64,
}

/// State shared between a link's task and its handles.
pub(crate) struct LinkShared {
    pub id: String,
    pub direction: Direction,
    pub remote_url: Option<String>,
    pub config: LinkConfig,
    pub remote_system: Mutex<Option<String>>,
    /// Who the peer proved to be (an inbound link's peer token sets it before the
    /// handshake; the handshake settles it).
    pub peer: Mutex<Option<LinkPeer>>,
    pub status: watch::Sender<LinkStatus>,
    pub stats: LinkStats,
    pub last_error: Mutex<Option<String>>,
    /// Set by pause(): survives reconnects until resume().
    pub paused: watch::Sender<bool>,
    pub control: mpsc::UnboundedSender<Control>,
    /// The last state changes, newest last.
    pub history: Mutex<std::collections::VecDeque<StateChange>>,
    /// Where this link first started sending (links we dial): a later connection that
    /// has no better cursor from the peer starts there again, so nothing written while
    /// the link was down is skipped.
    pub first_start: std::sync::OnceLock<FirstStart>,
    /// The peer sent a delta in the legacy pointer form (see [`PointerForm::Auto`]).
    pub legacy_seen: std::sync::atomic::AtomicBool,
    /// `delta` frames sent to a plain v1 peer and not answered yet: (delta id, position),
    /// oldest first. Its acks, in order, move the `answered` cursor.
    pub unanswered: Mutex<std::collections::VecDeque<(String, Seq)>>,
}

/// The most unanswered `delta` frames remembered per link; older ones are forgotten (an
/// answer to one of them then moves nothing, and the resume point stays behind: safe).
const UNANSWERED: usize = 100_000;

impl LinkShared {
    pub(crate) fn new(
        id: String,
        direction: Direction,
        remote_url: Option<String>,
        config: LinkConfig,
    ) -> (Arc<LinkShared>, mpsc::UnboundedReceiver<Control>) {
        let (control, rx) = mpsc::unbounded_channel();
        let shared = LinkShared {
            id,
            direction,
            remote_url,
            config,
            remote_system: Mutex::new(None),
            peer: Mutex::new(None),
            status: watch::channel(LinkStatus::Connecting).0,
            stats: LinkStats::default(),
            last_error: Mutex::new(None),
            paused: watch::channel(false).0,
            control,
            first_start: std::sync::OnceLock::new(),
            legacy_seen: Default::default(),
            unanswered: Mutex::default(),
            history: Mutex::default(),
        };
        (Arc::new(shared), rx)
    }

    pub(crate) fn set_status(&self, status: LinkStatus) {
        self.transition(status, None);
    }

    /// Moves to `status`, remembering why in the link's recent history.
    pub(crate) fn transition(&self, status: LinkStatus, reason: Option<&str>) {
        let previous = self.status.send_replace(status);
        if previous == status && reason.is_none() {
            return;
        }
        if let Ok(mut h) = self.history.lock() {
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(StateChange {
                at: now_millis(),
                status,
                reason: reason.map(str::to_owned),
            });
        }
    }

    /// The pointer form this link's deltas go out in now.
    pub(crate) fn pointers(&self) -> Pointers {
        match self.config.pointer_form {
            PointerForm::Current => Pointers::Current,
            PointerForm::Legacy => Pointers::Legacy,
            PointerForm::Auto if self.legacy_seen.load(Ordering::Relaxed) => Pointers::Legacy,
            PointerForm::Auto => Pointers::Current,
        }
    }

    /// Notes the pointer form of a delta-carrying frame from the peer: under `auto`, the
    /// first legacy delta switches the link to the legacy form.
    pub(crate) fn observe_pointers(&self, frame: &str) {
        if self.config.pointer_form == PointerForm::Auto
            && !self.legacy_seen.load(Ordering::Relaxed)
            && shows_legacy(frame)
        {
            self.legacy_seen.store(true, Ordering::Relaxed);
            tracing::info!(link = %self.id, "the peer speaks the legacy pointer form: sending it from now on");
        }
    }

    /// Remembers `delta` frames sent to a plain v1 peer, to match its answers.
    pub(crate) fn sent_unanswered(&self, sent: impl IntoIterator<Item = (String, Seq)>) {
        if let Ok(mut q) = self.unanswered.lock() {
            q.extend(sent);
            let excess = q.len().saturating_sub(UNANSWERED);
            q.drain(..excess);
        }
    }

    /// The peer answered `delta_id`: the position it was sent from, when it is one we
    /// remember. Answers come in the order the frames went, so earlier ones are done too.
    pub(crate) fn answered(&self, delta_id: &str) -> Option<Seq> {
        let mut q = self.unanswered.lock().ok()?;
        let at = q.iter().position(|(id, _)| id == delta_id)?;
        let seq = q.get(at).map(|(_, seq)| *seq);
        q.drain(..=at);
        seq
    }

    pub(crate) fn set_peer(&self, peer: Option<LinkPeer>) {
        if let Ok(mut p) = self.peer.lock() {
            *p = peer;
        }
    }

    pub(crate) fn peer(&self) -> Option<LinkPeer> {
        self.peer.lock().ok().and_then(|p| p.clone())
    }

    pub(crate) fn set_remote_system(&self, system: &str) {
        if let Ok(mut r) = self.remote_system.lock() {
            *r = Some(system.to_owned());
        }
    }

    pub(crate) fn set_error(&self, error: &str) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error.to_owned());
        }
    }

    pub(crate) fn mark_connected(&self) {
        self.stats
            .connected_at
            .store(now_millis(), Ordering::Relaxed);
    }

    /// The link's name for logs and link-scoped scripts. A link we dial: its configured
    /// name, else its id. A link dialed to us: the peer's system id, never a name the
    /// peer picks, so a peer cannot choose which link-scoped policies judge it.
    pub fn name(&self) -> String {
        match (&self.config.name, self.direction) {
            (Some(name), _) => name.clone(),
            (None, Direction::Inbound) => self
                .remote_system
                .lock()
                .ok()
                .and_then(|r| r.clone())
                .unwrap_or_else(|| self.id.clone()),
            (None, Direction::Outbound) => self.id.clone(),
        }
    }
}

/// A federation link as users see it.
#[derive(Clone)]
pub struct FederationLink {
    pub(crate) shared: Arc<LinkShared>,
}

/// What `GET /links` shows for a link.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkInfo {
    pub id: String,
    pub name: String,
    pub direction: Direction,
    pub remote_system_id: Option<String>,
    pub remote_url: Option<String>,
    /// Who the peer proved to be, once the handshake has settled it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<LinkPeer>,
    pub status: LinkStatus,
    pub paused: bool,
    pub stats: LinkStatsSnapshot,
    pub last_error: Option<String>,
    pub config: LinkConfig,
    /// Recent state changes with their reasons, oldest first.
    pub history: Vec<StateChange>,
}

impl FederationLink {
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Its name for logs and scoped scripts (see `LinkShared::name`).
    pub fn name(&self) -> String {
        self.shared.name()
    }

    pub fn status(&self) -> LinkStatus {
        *self.shared.status.borrow()
    }

    /// A receiver that changes with the link's status (await a state instead of polling).
    pub fn watch_status(&self) -> watch::Receiver<LinkStatus> {
        self.shared.status.subscribe()
    }

    pub fn remote_system_id(&self) -> Option<String> {
        self.shared
            .remote_system
            .lock()
            .ok()
            .and_then(|r| r.clone())
    }

    pub fn stats(&self) -> LinkStatsSnapshot {
        self.shared.stats.snapshot()
    }

    pub fn info(&self) -> LinkInfo {
        LinkInfo {
            id: self.shared.id.clone(),
            name: self.shared.name(),
            direction: self.shared.direction,
            remote_system_id: self.remote_system_id(),
            remote_url: self.shared.remote_url.clone(),
            peer: self.shared.peer(),
            status: self.status(),
            paused: *self.shared.paused.borrow(),
            stats: self.stats(),
            last_error: self.shared.last_error.lock().ok().and_then(|e| e.clone()),
            config: self.shared.config.clone(),
            history: self
                .shared
                .history
                .lock()
                .map(|h| h.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// Stops delta flow both ways: our sender holds its cursor and the peer is asked to
    /// pause. Nothing is dropped; `resume` continues from the cursor.
    pub fn pause(&self) {
        self.shared.paused.send_replace(true);
        self.shared.status.send_if_modified(|s| {
            let up = matches!(*s, LinkStatus::Connected | LinkStatus::Syncing);
            if up {
                *s = LinkStatus::Paused;
            }
            up
        });
        let _ = self.shared.control.send(Control::Pause);
    }

    pub fn resume(&self) {
        self.shared.paused.send_replace(false);
        self.shared.status.send_if_modified(|s| {
            let was = *s == LinkStatus::Paused;
            if was {
                *s = LinkStatus::Connected;
            }
            was
        });
        let _ = self.shared.control.send(Control::Resume);
    }

    /// Closes the link for good (no reconnect) and removes it from the node's links.
    pub fn disconnect(&self) {
        let _ = self.shared.control.send(Control::Disconnect);
    }

    /// Reconciles the deltas the peer holds with ours (range-based set reconciliation)
    /// and fetches what we lack; answers once every missing delta is in (or refused).
    ///
    /// # Errors
    /// Why it could not run: the link is not connected, does not receive from the peer,
    /// the peer does not speak `reconcile`, one is already running, or it took longer
    /// than `timeout`.
    pub async fn reconcile(&self, timeout: std::time::Duration) -> Result<ReconcileReport, String> {
        let (ask, answer) = tokio::sync::oneshot::channel();
        self.shared
            .control
            .send(Control::Reconcile(ask))
            .map_err(|_| "the link has stopped".to_owned())?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err("the link's connection ended before the reconciliation did".into()),
            Err(_) => Err(format!(
                "not finished after {} s; it goes on, and its outcome is logged",
                timeout.as_secs()
            )),
        }
    }
}

/// Links refused in the handshake because of who the peer is (or is not), node-wide.
#[derive(Debug, Default)]
pub struct AuthRefusals {
    /// The peer proved no configured identity and this node takes no anonymous peers.
    pub anonymous: AtomicU64,
    /// A key proof did not verify, or a key was not the one expected.
    pub failed: AtomicU64,
}

impl AuthRefusals {
    pub(crate) fn count(&self, code: &str) {
        let counter = if code == super::wire::codes::AUTH_REQUIRED {
            &self.anonymous
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The node's links by id.
#[derive(Default)]
pub(crate) struct LinkRegistry {
    links: Mutex<HashMap<String, FederationLink>>,
}

impl LinkRegistry {
    /// Registers a link we dial under `base` (its name, or the peer's address), or
    /// `base#2`, `base#3`... when another link holds that id: ids stay the same across
    /// restarts, so logs, events, metrics and `/links/{id}` keep naming the same link.
    pub(crate) fn insert_named<T>(
        &self,
        base: &str,
        make: impl FnOnce(String) -> (FederationLink, T),
    ) -> (FederationLink, T) {
        let Ok(mut l) = self.links.lock() else {
            return make(base.to_owned());
        };
        let id = std::iter::once(base.to_owned())
            .chain((2..).map(|n| format!("{base}#{n}")))
            .find(|id| !l.contains_key(id))
            .unwrap_or_else(|| base.to_owned());
        let (link, extra) = make(id.clone());
        l.insert(id, link.clone());
        (link, extra)
    }

    pub(crate) fn remove(&self, id: &str) {
        if let Ok(mut l) = self.links.lock() {
            l.remove(id);
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<FederationLink> {
        self.links.lock().ok().and_then(|l| l.get(id).cloned())
    }

    pub(crate) fn all(&self) -> Vec<FederationLink> {
        let mut all: Vec<(u64, FederationLink)> = self
            .links
            .lock()
            .map(|l| {
                l.values()
                    .map(|link| {
                        (
                            link.shared.stats.connected_at.load(Ordering::Relaxed),
                            link.clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Keys are read once: sorting on a live atomic that handshakes update could see
        // an inconsistent order (and the sort would panic).
        all.sort_by_key(|(at, _)| *at);
        all.into_iter().map(|(_, link)| link).collect()
    }

    /// Registers a link dialed to us unless `max` such links are already registered.
    pub(crate) fn insert_inbound_within(&self, link: FederationLink, max: usize) -> bool {
        let Ok(mut links) = self.links.lock() else {
            return false;
        };
        let inbound = links
            .values()
            .filter(|l| l.shared.direction == Direction::Inbound)
            .count();
        if inbound >= max {
            return false;
        }
        links.insert(link.id().to_owned(), link);
        true
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.links.lock().map(|l| l.is_empty()).unwrap_or(true)
    }
}
