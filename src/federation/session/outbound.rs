//! The sending side's part of the session: answering what the peer asks us to send.
//!
//! A `sync_request` becomes a [`SyncPlan`] for the link's sender, which serves it from
//! the durable log; the session only checks the request and translates where it starts.

use serde_json::Value;

use super::state::Established;
use super::{store_end, Session, SessionEnd};
use crate::federation::sender::{Outgoing, SyncPlan};
use crate::federation::wire::codes;
use crate::filter::DeltaFilter;
use crate::store::Seq;

/// A peer's `sync_request`, as received.
pub(super) struct SyncRequest {
    pub filter: Option<Value>,
    pub from_timestamp: Option<u64>,
    pub resume_from: Option<u64>,
    pub from_head: Option<bool>,
}

impl Session<'_> {
    /// Starts serving the peer's initial sync, or answers why it cannot be served.
    pub(super) fn serve_sync_request(
        &mut self,
        est: &Established,
        req: SyncRequest,
    ) -> Result<(), SessionEnd> {
        if !est.we_send {
            return self.send_error(
                codes::MODE_VIOLATION,
                "sync_request on a link that does not send to you (it was opened in push mode)",
            );
        }
        let filter = match req.filter {
            None | Some(Value::Null) => None,
            Some(v) => match DeltaFilter::from_value(&v) {
                Ok(f) => Some(f),
                Err(e) => {
                    return self.send_error(codes::SYNC_ERROR, &format!("sync_request.filter: {e}"))
                }
            },
        };
        let (after, min_timestamp) = if let Some(c) = req.resume_from {
            (Seq(c), None)
        } else if req.from_head == Some(true) {
            (Seq(u64::MAX), None)
        } else if let Some(ts) = req.from_timestamp {
            let first = self
                .node
                .store()
                .first_seq_at_or_after(ts)
                .map_err(store_end)?;
            (
                first.map_or(Seq(u64::MAX), |s| Seq(s.0.saturating_sub(1))),
                Some(ts),
            )
        } else {
            (Seq(0), None)
        };
        // A plain v1 peer asks again for what it already answered (it has no positions
        // to resume from, and the reference does not deduplicate): serve what follows.
        let after = if req.resume_from.is_none() && !est.peer.extension {
            let answered = est
                .keys
                .load_answered(self.node.store())
                .map_err(store_end)?;
            after.max(Seq(answered.unwrap_or(0).max(est.answered.through)))
        } else {
            after
        };
        self.queue(Outgoing::Sync(SyncPlan {
            after,
            min_timestamp,
            filter,
        }))
    }
}
