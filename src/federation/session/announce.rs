//! The session's side of the `announce` feature: announcements read, ids asked for when
//! their grace is over, requests from the peer passed to our sender, and the cursor
//! committed as far as `fetching` allows.

use super::fetching::{Requests, MAX_OPEN_IDS, MAX_REQUEST_IDS};
use super::state::Established;
use super::{store_end, EndKind, Session, SessionEnd};
use crate::federation::cursor;
use crate::federation::links::LinkStats;
use crate::federation::sender::Outgoing;
use crate::federation::wire::{codes, IdList, Message};
use crate::store::{Store, StoreError};

impl Session<'_> {
    /// The peer announced relayed deltas by id: the ones we lack wait to be fetched,
    /// holding the cursor before this announcement.
    pub(super) async fn on_announce(
        &mut self,
        ids: Vec<String>,
        est: &mut Established,
    ) -> Result<(), SessionEnd> {
        LinkStats::add(&self.link.stats.announced_in, ids.len() as u64);
        let (ids, stored) = contains(self.node.store(), ids).await?;
        let missing: Vec<String> = ids
            .into_iter()
            .zip(stored)
            .filter_map(|(id, have)| (!have).then_some(id))
            .collect();
        if est.fetch.open_ids() + missing.len() > MAX_OPEN_IDS {
            return Err(SessionEnd::new(
                EndKind::Lost,
                format!(
                    "the peer announced more than {MAX_OPEN_IDS} deltas it has not yet sent us; reconnecting from the last position resolved"
                ),
            ));
        }
        est.fetch.announced(missing);
        Ok(())
    }

    /// The peer asks for deltas by id: our sender answers, through our push filters.
    pub(super) async fn on_request(
        &mut self,
        request_id: u64,
        ids: Vec<String>,
        est: &mut Established,
    ) -> Result<(), SessionEnd> {
        if !est.we_send {
            return self.send_error(
                codes::MODE_VIOLATION,
                "delta_request on a link that does not send to you",
            );
        }
        if ids.len() > MAX_REQUEST_IDS {
            return self.send_error(
                codes::MESSAGE_ERROR,
                &format!(
                    "delta_request {request_id} asks for {} deltas; at most {MAX_REQUEST_IDS} at a time",
                    ids.len()
                ),
            );
        }
        LinkStats::add(&self.link.stats.requested_in, ids.len() as u64);
        self.queue_paced(Outgoing::Fetch { request_id, ids }).await
    }

    /// Checks the announced ids whose grace is over, and asks for the ones still
    /// missing that no other link is fetching.
    pub(super) async fn fetch_due(&mut self, est: &mut Established) -> Result<(), SessionEnd> {
        // A paused link asks for nothing; what waits is asked for after `resume`.
        if *self.link.paused.borrow() {
            return Ok(());
        }
        let due = est.fetch.take_due();
        if due.is_empty() {
            return Ok(());
        }
        let (ids, holds): (Vec<String>, Vec<u64>) = due.into_iter().unzip();
        let (ids, stored) = contains(self.node.store(), ids).await?;
        let due = ids.into_iter().zip(holds).collect();
        let Requests(requests) = est.fetch.after_check(due, &stored);
        for (request_id, ids) in requests {
            LinkStats::add(&self.link.stats.requested_out, ids.len() as u64);
            self.send_paced(&Message::DeltaRequest {
                request_id,
                ids: IdList(ids),
            })
            .await?;
        }
        self.commit_gate(est).await
    }

    /// Commits the cursor as far as resolved announcements and durable batches allow.
    pub(super) async fn commit_gate(&mut self, est: &mut Established) -> Result<(), SessionEnd> {
        if est.cursor_held || !est.peer.extension {
            return Ok(());
        }
        let Some(seq) = est.fetch.committable() else {
            return Ok(());
        };
        self.node
            .store()
            .put_meta(&est.keys.seq, cursor::encode(seq))
            .await
            .map_err(store_end)?;
        est.fetch.committed = seq;
        self.send_paced(&Message::CursorAck { last_seq: seq }).await
    }
}

/// Which of `ids` the store holds, read on a blocking thread; the ids come back with
/// one flag each.
async fn contains(store: &Store, ids: Vec<String>) -> Result<(Vec<String>, Vec<bool>), SessionEnd> {
    if ids.is_empty() {
        return Ok((ids, Vec::new()));
    }
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.contains_ids(&ids).map(|held| (ids, held)))
        .await
        .map_err(|e| store_end(StoreError::Corrupt(format!("id lookup task failed: {e}"))))?
        .map_err(store_end)
}
