//! Which stored deltas go to the peer (every filter keeps them, the peer's limits accept
//! them) and how they are cut into frames.

use futures_util::Sink;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::{SendPlan, Sender, SenderEnd};
use crate::delta::Delta;
use crate::federation::links::{LinkStats, TimestampFloor};
use crate::filter::DeltaFilter;
use crate::policy::{PolicySet, ScriptInput, ScriptKind, Verdict};
use crate::store::{RawRecord, Seq, StoreError};

impl<S> Sender<S>
where
    S: Sink<WsMessage, Error = WsError> + Unpin + Send,
{
    /// Runs [`select`], on a blocking thread when push scripts apply: a script may take
    /// its whole time budget for each delta, which must not hold an async worker. The
    /// ids come back when someone listens to `delta:sent`, or when `ids_needed` (a plain
    /// v1 peer answers each live delta by its id).
    pub(super) async fn select_records(
        &self,
        records: Vec<RawRecord>,
        plan: &SendPlan,
        wanted: Wanted,
        ids_needed: bool,
    ) -> Result<(Vec<RawRecord>, Vec<String>), SenderEnd> {
        let scripts = self.node.policies().current();
        let want_ids = ids_needed || self.node.events_observed();
        if !scripts.applies(ScriptKind::Push, plan.link.scope()) {
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
}

/// What the peer asked for, beyond the link's own filters.
pub(super) struct Wanted {
    /// The peer's filter (its hello, or its sync request's).
    pub peer_filter: Option<DeltaFilter>,
    /// A sync from a timestamp: nothing older.
    pub min_timestamp: Option<u64>,
    /// An initial push from a timestamp: nothing older, up to a log position.
    pub floor: Option<TimestampFloor>,
}

/// Which records go to the peer: only those every filter keeps. The peer's own deltas
/// are already left out (both callers read the log without them). Returns them and,
/// when `want_ids`, their ids.
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
    let push_scripts = scripts.applies(ScriptKind::Push, plan.link.scope());
    let link_value = push_scripts.then(|| plan.link.to_dynamic().into_shared());
    for record in records {
        let seq = record.seq;
        let floor_ts = floor.filter(|f| seq <= f.through).map(|f| f.min_timestamp);
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
                    scripts.judge_input(ScriptKind::Push, plan.link.scope(), &input)
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

/// One frame's worth of records, their ids (when they were wanted) and
/// the log position the frame carries its receiver to.
pub(super) struct FrameRecords {
    pub records: Vec<RawRecord>,
    pub ids: Vec<String>,
    pub through: Seq,
}

/// Splits a batch into frames of at most `budget` delta bytes each (every record fits
/// one: `select` withheld the rest). Each frame carries its receiver to its last
/// record's position; the last frame to `through`, where the scan ended.
pub(super) fn split_by_bytes(
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
            frames.push(FrameRecords {
                records: std::mem::take(&mut current),
                ids: frame_ids,
                through: last,
            });
            bytes = 0;
        }
        bytes += len;
        current.push(record);
    }
    if !current.is_empty() {
        frames.push(FrameRecords {
            records: current,
            ids,
            through,
        });
    }
    frames
}

/// A delta's id, read without decoding the rest.
#[derive(serde::Deserialize)]
struct IdOnly {
    id: String,
}
