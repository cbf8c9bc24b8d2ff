//! Live sending: tailing the durable log from the link's cursor and framing what the
//! filters keep, bounded in bytes per frame.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::{Sink, SinkExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::select::{split_by_bytes, Wanted};
use super::{Flow, SendPlan, Sender, SenderEnd, BATCH_SIZE};
use crate::federation::links::LinkStats;
use crate::federation::wire::idlist::MAX_IDS;
use crate::federation::wire::{self, BatchKind, IdList, Message, Outbound};
use crate::store::{LogBatch, LogTail, RawRecord, Seq, StoreError};

impl<S> Sender<S>
where
    S: Sink<WsMessage, Error = WsError> + Unpin + Send,
{
    pub(super) async fn send_live(&mut self, scan: LogBatch) -> Flow {
        let Some(plan) = self.plan.clone() else {
            return Flow::Continue;
        };
        let last = scan.through;
        let wanted = Wanted {
            peer_filter: plan.peer_filter.clone(),
            min_timestamp: None,
            floor: plan.initial_floor,
        };
        let ids_needed = !plan.extension || plan.announce;
        let (kept, ids) = match self
            .select_records(scan.records, &plan, wanted, ids_needed)
            .await
        {
            Ok(selected) => selected,
            Err(e) => return Flow::Stop(e),
        };
        if kept.is_empty() {
            self.link
                .stats
                .sent_through
                .fetch_max(last.0, Ordering::Relaxed);
            return Flow::Continue;
        }
        if plan.announce {
            return self.send_announcing(kept, ids, last, &plan).await;
        }
        if plan.extension {
            return self.send_live_frames(kept, ids, last, &plan).await;
        }
        // A v1 peer gets one `delta` frame each, and answers each by its id.
        self.link
            .sent_unanswered(ids.iter().cloned().zip(kept.iter().map(|r| r.seq)));
        let mut result = Flow::Continue;
        for record in &kept {
            let frame =
                wire::encode_with(Outbound::delta(record.json(), None), self.link.pointers());
            if let Err(e) = self.feed_text(frame).await {
                result = Flow::Stop(e);
                break;
            }
        }
        if let Flow::Continue = result {
            if let Err(e) = self.sink.flush().await {
                result = Flow::Stop(SenderEnd::Socket(e.to_string()));
            }
        }
        if let Flow::Continue = result {
            self.count_sent(kept.len(), ids);
            self.link
                .stats
                .sent_through
                .fetch_max(last.0, Ordering::Relaxed);
        }
        result
    }

    /// Live deltas to a peer that speaks `announce`: the ones we relay (received from
    /// another peer) as ids in `delta_announce` frames first, then ours in full. The
    /// peer asks for the relayed ones it lacks; its cursor waits for them meanwhile.
    async fn send_announcing(
        &mut self,
        kept: Vec<RawRecord>,
        ids: Vec<String>,
        through: Seq,
        plan: &SendPlan,
    ) -> Flow {
        let mut bodies = Vec::with_capacity(kept.len());
        let mut body_ids = Vec::new();
        let mut relayed = Vec::new();
        let with_ids = ids.len() == kept.len();
        let mut ids = ids.into_iter();
        for record in kept {
            let id = if with_ids { ids.next() } else { None };
            match (record.origin().is_some(), id) {
                (true, Some(id)) => relayed.push(id),
                (_, id) => {
                    body_ids.extend(id);
                    bodies.push(record);
                }
            }
        }
        if !relayed.is_empty() {
            let n = relayed.len() as u64;
            let chunks = announce_chunks(relayed, plan.frame_budget());
            let count = chunks.len();
            for (i, chunk) in chunks.into_iter().enumerate() {
                let last_seq = (bodies.is_empty() && i + 1 == count).then_some(through.0);
                let msg = Message::DeltaAnnounce {
                    ids: IdList(chunk),
                    last_seq,
                };
                if let Flow::Stop(e) = self.send_text(wire::encode(&msg)).await {
                    return Flow::Stop(e);
                }
            }
            LinkStats::add(&self.link.stats.announced_out, n);
            if bodies.is_empty() {
                self.link
                    .stats
                    .sent_through
                    .fetch_max(through.0, Ordering::Relaxed);
                return Flow::Continue;
            }
        }
        self.send_live_frames(bodies, body_ids, through, plan).await
    }

    /// Live deltas to an extension peer: `delta_batch` frames bounded in bytes, each
    /// with the position it carries the peer to.
    async fn send_live_frames(
        &mut self,
        kept: Vec<RawRecord>,
        ids: Vec<String>,
        through: Seq,
        plan: &SendPlan,
    ) -> Flow {
        for frame in split_by_bytes(kept, ids, through, plan.frame_budget()) {
            let refs: Vec<&str> = frame.records.iter().map(RawRecord::json).collect();
            let text = wire::encode_with(
                Outbound::batch(BatchKind::Live, &refs, Some(frame.through.0)),
                self.link.pointers(),
            );
            if let Flow::Stop(e) = self.send_text(text).await {
                return Flow::Stop(e);
            }
            self.count_sent(refs.len(), frame.ids);
            self.link
                .stats
                .sent_through
                .fetch_max(frame.through.0, Ordering::Relaxed);
        }
        Flow::Continue
    }
}

/// Splits ids into lists that each fit a frame of `budget` bytes.
fn announce_chunks(ids: Vec<String>, budget: usize) -> Vec<Vec<String>> {
    // Packed, an id costs at most its bytes plus a tag and a length (4 bytes), times
    // 4/3 for base64; a little room is left for the envelope.
    let budget = budget.saturating_sub(128).max(64);
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for id in ids {
        let cost = (id.len() + 4) * 4 / 3 + 1;
        if !current.is_empty() && (bytes + cost > budget || current.len() == MAX_IDS) {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += cost;
        current.push(id);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

pub(super) async fn next_live(
    live: &mut Option<LogTail>,
    skip_origin: Option<Arc<str>>,
) -> Result<Option<LogBatch>, StoreError> {
    match live {
        Some(tail) => tail.next(BATCH_SIZE, skip_origin).await,
        None => std::future::pending().await,
    }
}
