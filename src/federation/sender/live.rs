//! Live sending: tailing the durable log from the link's cursor and framing what the
//! filters keep, bounded in bytes per frame.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::{Sink, SinkExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::select::{split_by_bytes, Wanted};
use super::{Flow, SendPlan, Sender, SenderEnd, BATCH_SIZE};
use crate::federation::wire::{self, BatchKind, Outbound};
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
        let ids_needed = !plan.extension;
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

pub(super) async fn next_live(
    live: &mut Option<LogTail>,
    skip_origin: Option<Arc<str>>,
) -> Result<Option<LogBatch>, StoreError> {
    match live {
        Some(tail) => tail.next(BATCH_SIZE, skip_origin).await,
        None => std::future::pending().await,
    }
}
