//! Working with the quarantine: listing what trust policies refused, and replaying it
//! under the policies on disk now (read first, not left to the watcher's debounce: an
//! operator who deletes a script and replays at once means the folder as it is).
//! Replayed deltas go through the node's one ingestion path, judged again, exactly as if
//! they had just arrived from their link.
//!
//! A peer's negation refused by the signature rules may only lack its target (who may
//! negate a delta depends on the delta). Its targets are remembered, and when one is
//! stored the negations of it are judged again at once: the same deltas give the same
//! log whichever arrives first.

use serde::Serialize;

use super::{IngestOutcome, Node, Origin};
use crate::admission::{Admission, QuarantineRecord, SIGNATURE_RULES};
use crate::store::StoreError;

/// A quarantined delta with its id in the quarantine.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineEntry {
    pub qid: u64,
    #[serde(flatten)]
    pub record: QuarantineRecord,
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayReport {
    /// Now accepted and stored (or already stored): removed from the quarantine.
    pub admitted: u64,
    /// Still refused: kept, with the current reason.
    pub still_rejected: u64,
    /// Records that could not be read (left in place).
    pub unreadable: u64,
}

/// Records replayed per ingestion batch.
const REPLAY_BATCH: usize = 500;

impl Node {
    /// Up to `limit` quarantined deltas after `after` (a `qid`), oldest first.
    ///
    /// # Errors
    /// Storage errors.
    pub fn quarantine_list(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<QuarantineEntry>, StoreError> {
        let raw = self.store().quarantine_list(after, limit)?;
        Ok(raw
            .into_iter()
            .filter_map(|(qid, bytes)| match QuarantineRecord::from_bytes(&bytes) {
                Ok(record) => Some(QuarantineEntry { qid, record }),
                Err(e) => {
                    tracing::warn!(qid, error = %e, "unreadable quarantine record");
                    None
                }
            })
            .collect())
    }

    /// Reads the policy folders, then judges every quarantined delta again; admits (and
    /// removes from the quarantine) those now accepted.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn replay_quarantine(&self) -> Result<ReplayReport, StoreError> {
        let host = self.policies().clone();
        tokio::task::spawn_blocking(move || host.refresh())
            .await
            .map_err(|e| StoreError::Corrupt(format!("policy reload task failed: {e}")))?;
        let report = self.replay_where(|_| true).await?;
        tracing::info!(
            admitted = report.admitted,
            still_rejected = report.still_rejected,
            "quarantine replayed"
        );
        Ok(report)
    }

    /// Remembers targets that quarantined negations wait for, as many as the quarantine
    /// holds records: a peer that floods negations of made-up ids fills the quarantine
    /// (which drops its oldest), never the memory. Past that, a waiting negation is
    /// judged again by an operator's replay instead.
    pub(super) fn await_targets(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let mut awaited = lock(&self.inner.awaited);
        let room = (crate::store::QUARANTINE_LIMIT as usize).saturating_sub(awaited.len());
        awaited.extend(ids.iter().take(room).cloned());
    }

    /// Whether any negation waits for its target (one cheap check per batch).
    pub(super) fn awaiting_any(&self) -> bool {
        !lock(&self.inner.awaited).is_empty()
    }

    pub(super) fn is_awaited(&self, id: &str) -> bool {
        lock(&self.inner.awaited).contains(id)
    }

    /// Judges again, in the background, the quarantined negations of `targets`, which
    /// are stored now.
    pub(super) fn rejudge_negations_of(&self, targets: Vec<String>) {
        if targets.is_empty() {
            return;
        }
        {
            let mut awaited = lock(&self.inner.awaited);
            for id in &targets {
                awaited.remove(id);
            }
        }
        let node = self.clone();
        tokio::spawn(async move {
            let targets: std::collections::HashSet<String> = targets.into_iter().collect();
            let negates_one =
                |r: &QuarantineRecord| r.delta.negated_ids().any(|id| targets.contains(id));
            match node.replay_where(negates_one).await {
                Ok(report) => tracing::info!(
                    admitted = report.admitted,
                    still_rejected = report.still_rejected,
                    "negations judged again now that their targets are here"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "negations awaiting their targets were not judged again")
                }
            }
        });
    }

    /// Fills the awaited targets from the quarantine (at start).
    pub(super) fn recall_awaited_targets(&self) -> Result<(), StoreError> {
        let mut after = 0;
        loop {
            let raw = self.store().quarantine_list(after, REPLAY_BATCH)?;
            let Some(last) = raw.last().map(|r| r.0) else {
                return Ok(());
            };
            after = last;
            for (_, bytes) in raw {
                if let Ok(record) = QuarantineRecord::from_bytes(&bytes) {
                    if record.policy == SIGNATURE_RULES {
                        let ids: Vec<String> =
                            record.delta.negated_ids().map(str::to_owned).collect();
                        self.await_targets(&ids);
                    }
                }
            }
        }
    }

    /// Judges again the quarantined deltas `pick` selects; admits (and removes from the
    /// quarantine) those now accepted.
    async fn replay_where(
        &self,
        pick: impl Fn(&QuarantineRecord) -> bool,
    ) -> Result<ReplayReport, StoreError> {
        let mut report = ReplayReport::default();
        let mut after = 0;
        loop {
            let raw = self.store().quarantine_list(after, REPLAY_BATCH)?;
            let Some(last) = raw.last().map(|r| r.0) else {
                break;
            };
            after = last;
            let mut admitted = Vec::new();
            for (qid, bytes) in raw {
                let Ok(record) = QuarantineRecord::from_bytes(&bytes) else {
                    report.unreadable += 1;
                    continue;
                };
                if !pick(&record) {
                    continue;
                }
                let admission = Admission::new(record.link.clone(), None, false);
                let origin = match &record.peer {
                    Some(system) => Origin::Remote {
                        system: system.clone(),
                    },
                    None => Origin::Local,
                };
                let outcome = self
                    .admit(vec![Ok(record.delta)], origin, Some(&admission), Vec::new())
                    .await?
                    .finish()
                    .await?;
                match outcome.first() {
                    Some(IngestOutcome::Stored(_) | IngestOutcome::Duplicate(_)) => {
                        report.admitted += 1;
                        admitted.push(qid);
                    }
                    _ => report.still_rejected += 1,
                }
            }
            self.store().quarantine_remove(&admitted)?;
        }
        Ok(report)
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
