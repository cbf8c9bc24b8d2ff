//! Serving an initial sync: a range of the durable log in `sync_batch` frames between
//! `sync_start` and `sync_complete`, after which live sending goes on from the range's
//! end, so no delta goes twice and none is skipped.

use std::sync::atomic::Ordering;

use futures_util::Sink;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::select::{split_by_bytes, FrameRecords, Wanted};
use super::{error_frame, Flow, SendPlan, Sender, SenderEnd, SyncPlan, BATCH_SIZE};
use crate::federation::wire::{self, BatchKind, Message, Outbound};
use crate::store::{LogTail, RawRecord, ReadLimit, StoreError};

impl<S> Sender<S>
where
    S: Sink<WsMessage, Error = WsError> + Unpin + Send,
{
    /// Answers a sync request: `sync_start`, the matching deltas between the request's
    /// start and where live sending stands (or the head) in `sync_batch`es, then
    /// `sync_complete`. Live sending continues from the range's end: no gap, no repeat.
    pub(super) async fn serve_sync(&mut self, sync: SyncPlan) -> Flow {
        let Some(plan) = self.plan.clone() else {
            return self
                .send_text(error_frame(
                    wire::codes::SYNC_ERROR,
                    "sync_request before the handshake completed",
                ))
                .await;
        };
        let end = self.live_origin.unwrap_or_else(|| self.node.store().head());
        let filter = sync.filter.clone().or(plan.peer_filter.clone());
        let mut cursor = sync.after.min(end);
        let total = end.0 - cursor.0;
        tracing::info!(link = %self.link.id, from = cursor.0, to = end.0, "serving sync");
        // What this node archived is not served; the peer learns how much and when.
        let archived = self
            .node
            .store()
            .archive_stats()
            .ok()
            .filter(|s| s.count > 0)
            .map(|s| wire::ArchivedCounts {
                deltas: s.count,
                oldest: s.oldest,
                newest: s.newest,
            });
        let start = Message::SyncStart {
            total_deltas: total,
            batch_size: BATCH_SIZE as u64,
            archived,
        };
        if let Flow::Stop(e) = self.send_text(wire::encode(&start)).await {
            return Flow::Stop(e);
        }
        let mut held: Option<FrameRecords> = None;
        let mut batch_number = 0u64;
        let mut sent = 0u64;
        while cursor < end {
            let store = self.node.store().clone();
            let after = cursor;
            let want = BATCH_SIZE.min((end.0 - cursor.0) as usize);
            let peer = plan.peer_system.clone();
            let scan = match tokio::task::spawn_blocking(move || {
                store.read_log(after, ReadLimit::Batch(want), Some(&peer))
            })
            .await
            {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return Flow::Stop(SenderEnd::Store(e)),
                Err(e) => {
                    return Flow::Stop(SenderEnd::Store(StoreError::Corrupt(format!(
                        "log reader task failed: {e}"
                    ))))
                }
            };
            if scan.through <= after {
                break;
            }
            cursor = scan.through;
            self.link
                .stats
                .sent_through
                .fetch_max(cursor.0, Ordering::Relaxed);
            let wanted = Wanted {
                peer_filter: filter.clone(),
                min_timestamp: sync.min_timestamp,
                floor: None,
            };
            let (kept, ids) = match self
                .select_records(scan.records, &plan, wanted, false)
                .await
            {
                Ok(selected) => selected,
                Err(e) => return Flow::Stop(e),
            };
            if kept.is_empty() {
                // A stretch the filters skip entirely still yields to control frames
                // and to a pause.
                if let Flow::Stop(e) = self.between_batches().await {
                    return Flow::Stop(e);
                }
                continue;
            }
            sent += kept.len() as u64;
            for frame in split_by_bytes(kept, ids, cursor, plan.frame_budget()) {
                if let Some(prev) = held.replace(frame) {
                    if let Flow::Stop(e) =
                        self.send_sync_batch(prev, batch_number, false, &plan).await
                    {
                        return Flow::Stop(e);
                    }
                    batch_number += 1;
                }
            }
            if let Flow::Stop(e) = self.between_batches().await {
                return Flow::Stop(e);
            }
        }
        if let Some(last) = held.take() {
            if let Flow::Stop(e) = self.send_sync_batch(last, batch_number, true, &plan).await {
                return Flow::Stop(e);
            }
        }
        let complete = Message::SyncComplete {
            deltas_processed: sent,
            last_seq: plan.extension.then_some(end.0),
        };
        if let Flow::Stop(e) = self.send_text(wire::encode(&complete)).await {
            return Flow::Stop(e);
        }
        if self.live.is_none() {
            self.live = Some(LogTail::new(self.node.store().clone(), end));
            self.live_origin = Some(end);
        }
        tracing::info!(link = %self.link.id, deltas = sent, "sync served");
        Flow::Continue
    }

    async fn send_sync_batch(
        &mut self,
        frame: FrameRecords,
        batch_number: u64,
        is_last: bool,
        plan: &SendPlan,
    ) -> Flow {
        let refs: Vec<&str> = frame.records.iter().map(RawRecord::json).collect();
        let text = wire::encode_with(
            Outbound::batch(
                BatchKind::Sync {
                    batch_number,
                    is_last,
                },
                &refs,
                plan.extension.then_some(frame.through.0),
            ),
            self.link.pointers(),
        );
        let flow = self.send_text(text).await;
        if let Flow::Continue = flow {
            self.count_sent(refs.len(), frame.ids);
        }
        flow
    }
}
