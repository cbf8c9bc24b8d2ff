//! What a session knows once the handshake is done: who the peer is, and the receiving
//! state of the established link. Shared by `handshake` (which makes them) and
//! `inbound` / `outbound` (which use them), so neither imports the other.

use serde::Deserialize;
use serde_json::Value;

use crate::admission::Admission;
use crate::federation::cursor::CursorKeys;
use crate::federation::links::ReconcileAsk;
use crate::federation::reconcile::Reconciler;
use crate::federation::wire::PeerLimits;
use crate::federation::SyncMode;
use crate::filter::DeltaFilter;
use crate::policy::LinkPeer;
use tokio::sync::OwnedSemaphorePermit;

/// What the peer asked for in its `hello.config`. Lenient on purpose: reference
/// clients send more (`trustPolicy`, `reconnect`...) and we only read what we honour.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct PeerConfig {
    pub mode: SyncMode,
    pub pull_filter: Option<Value>,
    pub name: Option<String>,
}

/// What the handshake established about the peer.
pub(super) struct Peer {
    pub system: String,
    /// Who it proved to be; nothing it merely said counts here.
    pub identity: LinkPeer,
    /// The peer speaks our extension.
    pub extension: bool,
    /// Both ends speak the `announce` feature: relayed deltas go as ids.
    pub announce: bool,
    /// Both ends speak the `reconcile` feature.
    pub reconcile: bool,
    /// The peer's log identity (extension peers).
    pub log: Option<String>,
    /// The acceptor's committed position of our log (in its `hello_ack`).
    pub their_cursor_of_us: Option<u64>,
    /// How many positions the peer's log held at the handshake, when it said.
    pub head: Option<u64>,
    /// What the peer reads (advertised, or the defaults).
    pub limits: PeerLimits,
    /// The peer's hello config (acceptor side).
    pub config: PeerConfig,
    pub peer_filter: Option<DeltaFilter>,
}

/// Receiving state after the handshake.
pub(super) struct Established {
    pub peer: Peer,
    pub admission: Admission,
    pub we_send: bool,
    pub we_receive: bool,
    pub keys: CursorKeys,
    /// Newest timestamp received (the v1 resume point).
    pub max_ts: u64,
    /// We asked for a sync and it has not completed: the v1 resume point must not move
    /// yet, or a sync cut short would be resumed from its end, skipping its middle.
    pub awaiting_sync: bool,
    pub syncing: bool,
    pub sync_processed: u64,
    pub sync_total: u64,
    pub sync_started: std::time::Instant,
    pub progress_logged: std::time::Instant,
    /// A frame that may have carried deltas could not be decoded: the deltas in it were
    /// never judged, so for the rest of this connection the cursor stays where it is
    /// (the peer sends from there again next time; what we already hold is deduplicated).
    pub cursor_held: bool,
    /// What a plain v1 peer answered of what we sent (see `cursor`'s `answered`).
    pub answered: Answered,
    /// Announced ids being fetched, and how far that lets the cursor go (`announce`).
    pub fetch: super::fetching::Fetching,
    /// Reconciliations on this connection (feature `reconcile`).
    pub reconciling: Reconciling,
    /// Start a reconciliation as soon as the link is up: we asked for live deltas only
    /// (`fromHead`) because we have no cursor of the peer's log.
    pub reconcile_at_start: bool,
    /// Resolves once the batch submitted last is admitted: the next one is admitted
    /// after it, so batches reach the store (and move the cursor) in the order read.
    pub admitted: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// The `answered` cursor of a plain v1 peer: where its answers have reached, and what of
/// it is committed. Committed once per batch of frames read (up to 64), not per answer:
/// a crash in between re-sends at most that batch's deltas.
#[derive(Debug, Default)]
pub(super) struct Answered {
    pub through: u64,
    pub committed: u64,
}

/// The reconciliations of one connection: ours, learning what we lack of the peer's
/// deltas, and the peer's, which we answer. At most one of each at a time.
#[derive(Default)]
pub(super) struct Reconciling {
    pub pull: Option<Pull>,
    /// The peer's conversation number, our side of it, and its node-wide slot.
    pub source: Option<(u64, Reconciler, OwnedSemaphorePermit)>,
    pub next_conversation: u64,
    /// The hold of a full sync asked for instead of (or after a failed) reconciliation.
    pub sync_hold: Option<u64>,
    /// Conversations the peer started on this connection (each sorts our whole log).
    pub sources_started: u32,
}

/// Our reconciliation as the puller.
pub(super) struct Pull {
    pub conversation: u64,
    /// Taken while a round is being answered on a blocking thread.
    pub reconciler: Option<Reconciler>,
    /// The cursor hold it resolves once every delta it found missing is resolved.
    pub hold: u64,
    /// The conversation is over (every missing id is known).
    pub talked: bool,
    pub held: u64,
    pub missing: u64,
    pub started: std::time::Instant,
    /// The operator who asked, when one did.
    pub ask: Option<ReconcileAsk>,
    /// Its node-wide slot, held while the conversation runs (with the snapshot).
    pub slot: Option<OwnedSemaphorePermit>,
    /// Messages exchanged, once the conversation is over.
    pub rounds: u32,
}
