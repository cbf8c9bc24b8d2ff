//! Answering a `delta_request`: the deltas the peer asked for by id (ids we announced,
//! or found missing by reconciliation), read from the log, through the same filters as
//! everything else we send, in `delta_response` frames bounded in bytes.

use futures_util::Sink;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::select::{split_by_bytes, FrameRecords, Wanted};
use super::{error_frame, Flow, Sender, SenderEnd};
use crate::federation::wire::{self, BatchKind, Outbound};
use crate::store::{RawRecord, Seq, StoreError};

impl<S> Sender<S>
where
    S: Sink<WsMessage, Error = WsError> + Unpin + Send,
{
    /// Sends what we hold of `ids` and may send; the frame marked `last` tells the peer
    /// the request is answered (what it did not carry is not available here).
    pub(super) async fn serve_fetch(&mut self, request_id: u64, ids: Vec<String>) -> Flow {
        let Some(plan) = self.plan.clone() else {
            return self
                .send_text(error_frame(
                    wire::codes::MESSAGE_ERROR,
                    "delta_request on a link that sends us nothing",
                ))
                .await;
        };
        let store = self.node.store().clone();
        let records = match tokio::task::spawn_blocking(move || store.records_of(&ids)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Flow::Stop(SenderEnd::Store(e)),
            Err(e) => {
                return Flow::Stop(SenderEnd::Store(StoreError::Corrupt(format!(
                    "log reader task failed: {e}"
                ))))
            }
        };
        let wanted = Wanted {
            peer_filter: plan.peer_filter.clone(),
            min_timestamp: None,
            floor: None,
        };
        let (kept, ids) = match self.select_records(records, &plan, wanted, false).await {
            Ok(selected) => selected,
            Err(e) => return Flow::Stop(e),
        };
        let mut frames = split_by_bytes(kept, ids, Seq(0), plan.frame_budget());
        if frames.is_empty() {
            // Nothing to send still gets its answer: the `last` frame, empty.
            frames.push(FrameRecords {
                records: Vec::new(),
                ids: Vec::new(),
                through: Seq(0),
            });
        }
        let count = frames.len();
        for (i, frame) in frames.into_iter().enumerate() {
            let refs: Vec<&str> = frame.records.iter().map(RawRecord::json).collect();
            let kind = BatchKind::Response {
                request_id,
                last: i + 1 == count,
            };
            let text = wire::encode_with(Outbound::batch(kind, &refs, None), self.link.pointers());
            if let Flow::Stop(e) = self.send_text(text).await {
                return Flow::Stop(e);
            }
            self.count_sent(refs.len(), frame.ids);
        }
        Flow::Continue
    }
}
