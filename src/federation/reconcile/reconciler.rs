//! The two roles' answers to a round. Neither side keeps state between rounds beyond a
//! count: each round names its ranges in full, and is answered against the snapshot.
//!
//! Per range received:
//! - a skip stays a skip;
//! - ids (only a source sends them): the puller needs those whose hash it does not hold
//!   in the range, and skips it;
//! - a fingerprint equal to ours over the same range (same count too) is a skip;
//!   otherwise the puller answers with its own fingerprints, the range split into
//!   [`BUCKETS`] by its items (one range when it holds fewer than 2 × [`BUCKETS`]); the
//!   source skips a range where it holds nothing, lists its ids where it holds at most
//!   [`ID_LIST_MAX`] or the puller holds none, and splits it like the puller otherwise.
//!
//! A reply stays within the [`Limits`]: ids past the round's allowance are left as one
//! fingerprint range of the rest, which the puller answers again; when the ranges would
//! run out, everything from the range at hand on is answered with one fingerprint range
//! to infinity (and nothing in it is acted on, so no id is needed twice), which the
//! other side splits again next round.

use std::collections::{HashMap, HashSet};
use std::ops::Range as Span;
use std::sync::Arc;

use super::bound::Bound;
use super::fingerprint::Fingerprint;
use super::item::{hash_id, Item};
use super::round::{IdBudget, Mode, Round, RoundBuilder};
use super::snapshot::Snapshot;
use super::{Limits, ReconcileError, BUCKETS, ID_LIST_MAX};
use crate::store::{Seq, StoreError};

/// Which side of a reconciliation this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Learns the ids it lacks; starts the conversation.
    Puller,
    /// Has the data; learns nothing.
    Source,
}

/// What one round received gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Step {
    /// The round to send back, if any.
    pub reply: Option<Round>,
    /// Ids of deltas the source holds and the puller lacks, found in this round, each
    /// once (an honest source never lists a range twice, so no id comes back in a later
    /// round); always empty for the source.
    pub need: Vec<String>,
    /// Whether the conversation is over for this side (see the module's termination rule).
    pub done: bool,
}

/// One side of one reconciliation.
pub(crate) struct Reconciler {
    snapshot: Arc<Snapshot>,
    role: Role,
    limits: Limits,
    sent: u32,
    received: u32,
    done: bool,
}

/// Turns positions of the snapshot into the ids of the deltas stored there, in order.
pub(crate) type IdsAt<'a> = dyn FnMut(&[Seq]) -> Result<Vec<String>, StoreError> + 'a;

impl Reconciler {
    pub(crate) fn new(snapshot: Arc<Snapshot>, role: Role) -> Reconciler {
        Reconciler::with_limits(snapshot, role, Limits::default())
    }

    /// A reconciler with other limits (raised where too low to make progress).
    pub(crate) fn with_limits(snapshot: Arc<Snapshot>, role: Role, limits: Limits) -> Reconciler {
        Reconciler {
            snapshot,
            role,
            limits: limits.usable(),
            sent: 0,
            received: 0,
            done: false,
        }
    }

    #[cfg(test)]
    pub(crate) fn role(&self) -> Role {
        self.role
    }

    #[cfg(test)]
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Rounds sent and received so far.
    pub(crate) fn rounds(&self) -> u32 {
        self.sent + self.received
    }

    /// The first round: the fingerprints of our whole set, split into up to
    /// [`BUCKETS`] ranges (one range with count 0 for an empty set). It always asks.
    pub(crate) fn initiate(&mut self) -> Round {
        let mut out = RoundBuilder::default();
        let all = 0..self.snapshot.len();
        self.split(&mut out, all, Bound::Infinity);
        self.sent += 1;
        out.finish()
    }

    /// Answers a round from the peer. `ids_at` reads the ids of the deltas at some of
    /// the snapshot's positions; it is called only for ranges listed by id (a source's),
    /// with at most [`Limits::max_ids`] positions in all per round.
    ///
    /// # Errors
    /// [`ReconcileError::Refused`] when the round breaks the protocol or the limits,
    /// with the reason; [`ReconcileError::Store`] or [`ReconcileError::Lookup`] when the
    /// ids could not be read; [`ReconcileError::Finished`] after the last round.
    pub(crate) fn step(
        &mut self,
        incoming: &Round,
        ids_at: &mut IdsAt<'_>,
    ) -> Result<Step, ReconcileError> {
        if self.done {
            return Err(ReconcileError::Finished);
        }
        self.received += 1;
        let round = self.received;
        let refuse = |reason: String| ReconcileError::Refused { round, reason };
        if round > self.limits.max_rounds {
            return Err(refuse(format!(
                "one round too many: a reconciliation takes at most {} rounds from a peer",
                self.limits.max_rounds
            )));
        }
        let ranges = incoming.read(&self.limits).map_err(refuse)?;
        if self.role == Role::Source {
            if let Some(i) = ranges.iter().position(|r| matches!(r.mode, Mode::Ids(_))) {
                return Err(refuse(format!("range {i} lists ids; a puller lists none")));
            }
        }
        let asks = incoming.asks();
        let mut out = RoundBuilder::default();
        let mut budget = IdBudget::new(&self.limits);
        let mut need = Needs::default();
        let mut lower = Bound::LOWEST;
        for range in &ranges {
            // Room for the most one range takes (a split) and for the rest after it.
            if asks && out.len() + BUCKETS + 1 > self.limits.max_ranges {
                let rest = self.snapshot.span(lower, Bound::Infinity);
                self.echo(&mut out, rest, Bound::Infinity);
                break;
            }
            let span = self.snapshot.span(lower, range.upper);
            match &range.mode {
                Mode::Skip => out.skip(range.upper),
                Mode::Ids(ids) => {
                    need.collect(ids, &self.snapshot.items()[span]);
                    out.skip(range.upper);
                }
                Mode::Fingerprint { fp, count } => {
                    let own = &self.snapshot.items()[span.clone()];
                    if own.len() as u64 == *count && Fingerprint::of(own) == *fp {
                        out.skip(range.upper);
                    } else if self.role == Role::Puller {
                        self.split(&mut out, span, range.upper);
                    } else {
                        let theirs = *count;
                        self.offer(&mut out, span, range.upper, theirs, &mut budget, ids_at)?;
                    }
                }
            }
            lower = range.upper;
        }
        if !asks {
            self.done = true;
            return Ok(Step {
                reply: None,
                need: need.ids,
                done: true,
            });
        }
        let reply = out.finish();
        self.done = !reply.asks();
        self.sent += 1;
        Ok(Step {
            reply: Some(reply),
            need: need.ids,
            done: self.done,
        })
    }

    /// Our fingerprints of a range, split into [`BUCKETS`] by our items, or as one
    /// range when we hold fewer than two per bucket.
    fn split(&self, out: &mut RoundBuilder, span: Span<usize>, upper: Bound) {
        let own = &self.snapshot.items()[span];
        if own.len() < 2 * BUCKETS {
            out.fingerprint(upper, Fingerprint::of(own), own.len());
            return;
        }
        for k in 0..BUCKETS {
            let (a, b) = (k * own.len() / BUCKETS, (k + 1) * own.len() / BUCKETS);
            let bucket_upper = if k + 1 == BUCKETS {
                upper
            } else {
                Bound::between(&own[b - 1], &own[b])
            };
            out.fingerprint(bucket_upper, Fingerprint::of(&own[a..b]), b - a);
        }
    }

    /// Our fingerprint of a range, asking the peer to answer it again; a source that
    /// holds nothing there has nothing to offer and skips it.
    fn echo(&self, out: &mut RoundBuilder, span: Span<usize>, upper: Bound) {
        let own = &self.snapshot.items()[span];
        if own.is_empty() && self.role == Role::Source {
            out.skip(upper);
        } else {
            out.fingerprint(upper, Fingerprint::of(own), own.len());
        }
    }

    /// The source's answer to a range whose fingerprints differ.
    fn offer(
        &self,
        out: &mut RoundBuilder,
        span: Span<usize>,
        upper: Bound,
        theirs: u64,
        budget: &mut IdBudget,
        ids_at: &mut IdsAt<'_>,
    ) -> Result<(), ReconcileError> {
        let own = &self.snapshot.items()[span.clone()];
        if own.is_empty() {
            out.skip(upper);
            return Ok(());
        }
        if own.len() > ID_LIST_MAX && theirs > 0 {
            self.split(out, span, upper);
            return Ok(());
        }
        // The ids that fit in what is left of the round's allowance; the rest of the
        // range goes back as a fingerprint, answered next round.
        let take = own.len().min(budget.ids);
        let seqs: Vec<Seq> = own[..take].iter().map(|i| i.seq).collect();
        let mut ids = if seqs.is_empty() {
            Vec::new()
        } else {
            ids_at(&seqs)?
        };
        if ids.len() != take {
            return Err(ReconcileError::Lookup(format!(
                "{} ids read for {take} positions",
                ids.len()
            )));
        }
        let mut fit = 0;
        for (id, item) in ids.iter().zip(own) {
            if hash_id(id) != item.hash {
                return Err(ReconcileError::Lookup(format!(
                    "the id read at seq {} is {id:?}, not the delta the snapshot holds there",
                    item.seq
                )));
            }
            if budget.take(id).is_err() {
                break;
            }
            fit += 1;
        }
        ids.truncate(fit);
        if fit == own.len() {
            out.ids(upper, ids);
        } else if fit == 0 {
            out.fingerprint(upper, Fingerprint::of(own), own.len());
        } else {
            let cut = Bound::between(&own[fit - 1], &own[fit]);
            out.ids(cut, ids);
            out.fingerprint(upper, Fingerprint::of(&own[fit..]), own.len() - fit);
        }
        Ok(())
    }
}

/// The ids a puller found it needs in one round, each once.
#[derive(Default)]
struct Needs {
    ids: Vec<String>,
    seen: HashSet<u128>,
}

impl Needs {
    /// Adds the ids among `ids` (a source's list for a range) whose hash is not among
    /// `own` (the puller's items in that range).
    fn collect(&mut self, ids: &[String], own: &[Item]) {
        let hashes: Vec<u128> = ids.iter().map(|id| hash_id(id)).collect();
        let mut held: HashMap<u128, bool> = hashes.iter().map(|&h| (h, false)).collect();
        for item in own {
            if let Some(h) = held.get_mut(&item.hash) {
                *h = true;
            }
        }
        for (id, hash) in ids.iter().zip(hashes) {
            if held.get(&hash) == Some(&false) && self.seen.insert(hash) {
                self.ids.push(id.clone());
            }
        }
    }
}
