//! Range-based set reconciliation: how a link without a usable cursor learns which
//! deltas its peer holds that it lacks, exchanging O(d log N) bytes for two sets of N
//! deltas that differ by d, rather than resending all N.
//!
//! The method is the one negentropy (the Nostr relays' protocol) uses; the messages are
//! our own JSON. Both sides sort their deltas by (timestamp, hash of id) and talk about
//! contiguous ranges of that order. A range is answered by its fingerprint (an additive
//! hash of its items and their count): equal fingerprints settle it, unequal ones are
//! split into [`BUCKETS`] sub-ranges, until a range is small enough to list its ids.
//!
//! - `item`: an [`Item`], one delta as reconciliation sees it (32 bytes);
//! - `snapshot`: [`Snapshot`], the sorted items of the log up to a position, read from
//!   the store;
//! - `bound`: the points between ranges, with the shortest hash prefix that tells two
//!   neighbouring items apart;
//! - `fingerprint`: a range's fingerprint;
//! - `round`: the wire form of one message ([`Round`], [`WireRange`]), its checks, and
//!   the builder replies are written with;
//! - `reconciler`: the two roles' answers to a round ([`Reconciler`]).
//!
//! # Roles
//! Pull only: the [`Role::Puller`] learns the ids it lacks ([`Step::need`]); the
//! [`Role::Source`] learns nothing (a link that wants both directions runs two
//! reconciliations, one per direction). The puller starts ([`Reconciler::initiate`]).
//!
//! # Termination
//! A round *asks* when it holds at least one fingerprint range ([`Round::asks`]). A side
//! that receives a round that asks always replies, if only with an empty round; a side
//! that receives a round that does not ask replies nothing. So the last round of a
//! conversation is the first one that does not ask: its sender is done once it has sent
//! it ([`Step::done`] with a reply), its receiver once it has read it ([`Step::done`]
//! with no reply, and for the puller the last ids it needs). The caller's loop: on each
//! round received call [`Reconciler::step`], send the reply if there is one, stop when
//! `done`. An error ends the conversation (tell the peer the reason).
//!
//! # Limits
//! A peer's round is untrusted: [`Limits`] bound every round received and sent (ranges,
//! ids, id bytes) and the rounds of one conversation. A round the other side cannot
//! answer within its limits is answered as far as they allow, and the rest with one
//! fingerprint range it will answer next round, so honest conversations always
//! progress. Memory is the snapshot plus one round in and one out.

mod bound;
mod fingerprint;
mod item;
mod reconciler;
mod round;
mod snapshot;

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) use item::Item;
#[cfg(test)]
pub(crate) use reconciler::IdsAt;
pub(crate) use reconciler::{Reconciler, Role, Step};
pub(crate) use round::Round;
#[cfg(test)]
pub(crate) use round::WireRange;
pub(crate) use snapshot::Snapshot;

use crate::store::StoreError;

/// How many sub-ranges a range whose fingerprints differ is split into.
pub(crate) const BUCKETS: usize = 16;

/// A range of at most this many deltas on the source's side is answered with their ids
/// rather than split: listing 32 ids (~40 bytes each) costs about what 16 fingerprint
/// ranges (~80 bytes each) do, and settles the range at once.
pub(crate) const ID_LIST_MAX: usize = 2 * BUCKETS;

/// The longest id a round may carry: the longest id any node stores.
pub(crate) const MAX_ID_BYTES: usize = crate::delta::MAX_ID_BYTES_CAP;

/// The most deltas a range may claim to hold: far above any real log, so a count past
/// it is a peer's mistake or lie.
pub(crate) const MAX_COUNT: u64 = 1 << 40;

/// What one reconciliation accepts and sends. Both sides of a link must use the same
/// limits, or one may send what the other refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Ranges in one round. A fingerprint range is ~60-90 bytes of JSON, so 4096 are
    /// about 300 KiB; fewer would slow the descent once more than ~ranges/16 ranges
    /// differ (each splits into 16).
    pub max_ranges: usize,
    /// Ids in one round.
    pub max_ids: usize,
    /// Bytes the ids of one round take as JSON (quotes, escapes and commas counted).
    /// With the defaults a round is at most ~4.5 MiB, well within a 16 MiB frame.
    pub max_id_bytes: usize,
    /// Rounds one side receives in one conversation. Differences beyond what 128 rounds
    /// settle (about a million ids) make reconciliation no cheaper than a full resend.
    pub max_rounds: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_ranges: 4096,
            max_ids: 10_000,
            max_id_bytes: 4 * 1024 * 1024,
            max_rounds: 128,
        }
    }
}

impl Limits {
    /// The limits raised where they are too low for a conversation to progress: a round
    /// must fit one split range and one range for the rest, and one id of the longest.
    fn usable(self) -> Limits {
        Limits {
            max_ranges: self.max_ranges.max(BUCKETS + 2),
            max_ids: self.max_ids.max(1),
            max_id_bytes: self.max_id_bytes.max(MAX_ID_BYTES * 6 + 3),
            max_rounds: self.max_rounds.max(1),
        }
    }
}

/// Why a reconciliation stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReconcileError {
    /// The peer's round breaks the protocol or our limits.
    #[error("reconcile round {round} from the peer: {reason}")]
    Refused { round: u32, reason: String },
    /// Reading the ids of the deltas to list failed.
    #[error("reading the ids to list: {0}")]
    Store(#[from] StoreError),
    /// The ids read for the snapshot's positions are not the deltas it holds.
    #[error("the ids read do not match the snapshot: {0}")]
    Lookup(String),
    /// A round arrived after the conversation ended.
    #[error("the reconciliation is over; no more rounds are expected")]
    Finished,
}
