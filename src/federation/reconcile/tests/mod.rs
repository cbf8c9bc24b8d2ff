//! Conversations between a puller and a source over serde_json, as the link carries
//! them (`conversation`), and rounds a hostile peer could send (`hostile`).

mod conversation;
mod hostile;

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{IdsAt, Item, Limits, Reconciler, Role, Round, Snapshot, Step};
use crate::store::{Seq, StoreError};

/// A test delta: its id and timestamp.
type Delta = (String, u64);

/// A node's side: its snapshot and the id at each of its positions.
struct Side {
    snapshot: Arc<Snapshot>,
    ids: Vec<String>,
}

impl Side {
    /// A node whose log holds `deltas`, in this order.
    fn new(deltas: &[Delta]) -> Side {
        let items = deltas
            .iter()
            .enumerate()
            .map(|(i, (id, t))| Item::of(id, *t, Seq(i as u64 + 1)))
            .collect();
        Side {
            snapshot: Arc::new(Snapshot::from_items(items, Seq(deltas.len() as u64))),
            ids: deltas.iter().map(|(id, _)| id.clone()).collect(),
        }
    }

    /// The ids at these positions, as the link reads them from the store.
    fn ids_at(&self, seqs: &[Seq]) -> Result<Vec<String>, StoreError> {
        seqs.iter()
            .map(|s| {
                let at = usize::try_from(s.0).ok().and_then(|s| s.checked_sub(1));
                at.and_then(|i| self.ids.get(i).cloned())
                    .ok_or_else(|| StoreError::Corrupt(format!("no delta at seq {s}")))
            })
            .collect()
    }
}

/// `n` deltas with uuid ids and timestamps spread over 30 days.
fn deltas(rng: &mut StdRng, n: usize) -> Vec<Delta> {
    (0..n)
        .map(|_| {
            let id = uuid::Uuid::from_u128(rng.random()).to_string();
            let t = 1_795_000_000_000 + rng.random_range(0..30 * 86_400_000u64);
            (id, t)
        })
        .collect()
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// What a whole conversation took.
#[derive(Debug, Default)]
struct Outcome {
    /// Every id the puller needed, in the order it learnt them.
    need: Vec<String>,
    /// Rounds sent, both ways (the puller's first one included).
    messages: u32,
    /// Bytes of every round as JSON, both ways.
    bytes: usize,
    /// The largest round: ranges, ids, bytes.
    max_ranges: usize,
    max_ids: usize,
    max_round_bytes: usize,
    /// Each round as (ranges, ids, bytes), in order.
    rounds: Vec<(usize, usize, usize)>,
}

impl Outcome {
    /// Serialises a round as the link would, and reads it back as the peer would.
    fn carry(&mut self, round: &Round) -> Round {
        let text = serde_json::to_string(round).unwrap();
        self.messages += 1;
        self.bytes += text.len();
        self.max_round_bytes = self.max_round_bytes.max(text.len());
        self.max_ranges = self.max_ranges.max(round.ranges.len());
        let ids = round
            .ranges
            .iter()
            .filter_map(|r| r.ids.as_ref())
            .map(Vec::len);
        let ids = ids.sum();
        self.max_ids = self.max_ids.max(ids);
        self.rounds.push((round.ranges.len(), ids, text.len()));
        serde_json::from_str(&text).unwrap()
    }
}

/// Runs a reconciliation to its end by the termination rule, checking it on the way.
fn converse(puller: &Side, source: &Side, limits: Limits) -> Outcome {
    let mut p = Reconciler::with_limits(puller.snapshot.clone(), Role::Puller, limits);
    let mut s = Reconciler::with_limits(source.snapshot.clone(), Role::Source, limits);
    assert_eq!((p.role(), s.role()), (Role::Puller, Role::Source));
    let source_ids: &mut IdsAt = &mut |seqs| source.ids_at(seqs);
    let puller_ids: &mut IdsAt = &mut |_| panic!("a puller never lists ids");
    let mut outcome = Outcome::default();
    let first = p.initiate();
    assert!(first.asks(), "the first round always asks");
    let mut pending = Some(outcome.carry(&first));
    let mut to = Role::Source;
    while let Some(round) = pending.take() {
        let step: Step = match to {
            Role::Source => s.step(&round, source_ids),
            Role::Puller => p.step(&round, puller_ids),
        }
        .unwrap_or_else(|e| panic!("round {}: {e}", outcome.messages));
        if to == Role::Source {
            assert!(step.need.is_empty(), "a source learns nothing");
        }
        outcome.need.extend(step.need);
        // A round that asks is always answered; one that does not, never.
        assert_eq!(step.reply.is_some(), round.asks());
        assert_eq!(step.done, step.reply.as_ref().is_none_or(|r| !r.asks()));
        pending = step.reply.map(|r| outcome.carry(&r));
        to = match to {
            Role::Source => Role::Puller,
            Role::Puller => Role::Source,
        };
        assert!(outcome.messages < 300, "the conversation does not end");
    }
    assert!(p.is_done() && s.is_done(), "both sides know it is over");
    assert_eq!(
        p.rounds() + s.rounds(),
        2 * outcome.messages,
        "each sent and received"
    );
    assert!(outcome.max_ranges <= limits.max_ranges);
    assert!(outcome.max_ids <= limits.max_ids);
    outcome
}

/// Sorted, for comparing sets of ids.
fn sorted(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = ids.into_iter().collect();
    v.sort();
    v
}
