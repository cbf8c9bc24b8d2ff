//! The one ingestion path: every delta, authored here, posted over HTTP, received from a
//! peer or replayed from the quarantine, enters the log through [`Node::admit`]:
//! limits and validation, then (remote deltas) the link's pull filter and the node's
//! trust policy, then one append with dedup, then the announcements. Nothing reaches
//! the log any other way.

use crate::admission::{self, Admission, Judged, Rules, SIGNATURE_RULES};
use crate::delta::{self, Delta, InvalidDelta, Signed};
use crate::events::NodeEvent;
use crate::store::{AppendOutcome, NewEntry, PendingAppend, Seq, SideWrites, StoreError};

use super::verify::{verify_signatures, Checked};
use super::Node;

/// Where a delta came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Authored on this node or handed to it by a local client (library, HTTP, CLI).
    Local,
    /// Received from a peer system over a federation link.
    Remote { system: String },
}

impl Origin {
    pub(crate) fn system(&self) -> Option<&str> {
        match self {
            Origin::Local => None,
            Origin::Remote { system } => Some(system),
        }
    }
}

/// The result of ingesting one delta.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestOutcome {
    Stored(Seq),
    Duplicate(Seq),
    Invalid(InvalidDelta),
    /// A remote delta the link's pull filter (declarative or scripted) does not keep.
    Filtered(String),
    /// A remote delta a trust policy refused: which one and why. It is kept in quarantine.
    Rejected {
        policy: String,
        reason: String,
    },
}

impl Node {
    /// The single ingestion path for deltas already in memory.
    ///
    /// # Errors
    /// Only storage failures; per-delta problems are in the outcomes.
    pub async fn ingest(
        &self,
        deltas: Vec<Delta>,
        origin: Origin,
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        let checked = deltas
            .into_iter()
            .map(|d| delta::validate(&d).map(|()| d))
            .collect();
        self.admit(checked, origin, None, Vec::new())
            .await?
            .finish()
            .await
    }

    /// Where every way in meets: checks the limits, records invalid deltas, checks
    /// signatures (`verify`), holds every delta to the signature rules and judges remote
    /// ones (`admission`: the link's pull filter, then the node's trust policy),
    /// queues the rest for append with `meta` (a link's cursor) in the same atomic batch,
    /// and returns without waiting for the disk: a link that reads many batches decodes
    /// and judges the next one while this one is written. Appends commit in the order
    /// they were admitted; [`PendingIngest::finish`] waits for durability and announces.
    pub(crate) async fn admit(
        &self,
        checked: Vec<Result<Delta, InvalidDelta>>,
        origin: Origin,
        admission: Option<&Admission>,
        meta: Vec<(String, Vec<u8>)>,
    ) -> Result<PendingIngest, StoreError> {
        let verified = self.verify(checked).await?;
        self.admit_verified(verified, origin, admission, meta).await
    }

    /// The first half of [`Node::admit`], which needs no order: the limits and the
    /// signatures. A link verifies its next batch while the one before is admitted.
    ///
    /// # Errors
    /// Only when a verification task fails.
    pub(crate) async fn verify(
        &self,
        checked: Vec<Result<Delta, InvalidDelta>>,
    ) -> Result<Verified, StoreError> {
        let limits = self.inner.limits;
        let checked = checked
            .into_iter()
            .map(|item| item.and_then(|d| limits.check(&d).map(|()| d)))
            .collect();
        let (checked, signed) = verify_signatures(checked).await?;
        let verified = signed.iter().filter(|s| s.signer().is_some()).count();
        self.inner
            .signatures_verified
            .fetch_add(verified as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(Verified { checked, signed })
    }

    /// The second half of [`Node::admit`]: judging and queueing, in the order batches
    /// are to be appended.
    ///
    /// # Errors
    /// Storage failures.
    pub(crate) async fn admit_verified(
        &self,
        verified: Verified,
        origin: Origin,
        admission: Option<&Admission>,
        meta: Vec<(String, Vec<u8>)>,
    ) -> Result<PendingIngest, StoreError> {
        let origin_system = origin.system().map(str::to_owned);
        let Verified { checked, signed } = verified;
        let (checked, verdicts) = self.judge(checked, signed, admission).await?;
        let observed = self.events_observed();
        // Targets of negations held for want of them, and awaited targets arriving now.
        let mut held: Vec<String> = Vec::new();
        let mut arriving: Vec<String> = Vec::new();
        let awaiting = self.awaiting_any();
        let mut outcomes: Vec<Option<IngestOutcome>> = Vec::with_capacity(checked.len());
        let mut entries = Vec::new();
        let mut ids = Vec::new();
        let mut quarantine = Vec::new();
        for (item, verdict) in checked.into_iter().zip(verdicts) {
            match (item, verdict, admission) {
                (Ok(_), Some(Judged::Filtered(reason)), _) => {
                    outcomes.push(Some(IngestOutcome::Filtered(reason)));
                }
                (Ok(delta), Some(Judged::Rejected { policy, reason }), Some(a)) => {
                    self.count_refusal(&policy);
                    tracing::info!(link = %a.link.name, delta_id = %delta.id, author = %delta.author, %policy, %reason, replay = !a.quarantine, "delta rejected by policy");
                    self.emit(NodeEvent::DeltaRejected {
                        link_id: a.link.id.clone(),
                        delta_id: delta.id.clone(),
                        author: delta.author.clone(),
                        reason: format!("{policy}: {reason}"),
                        // Only a quarantine replay judges without quarantining.
                        replay: !a.quarantine,
                    });
                    if a.quarantine {
                        self.emit(NodeEvent::DeltaQuarantined {
                            link_id: a.link.id.clone(),
                            delta_id: delta.id.clone(),
                            policy: policy.clone(),
                        });
                        if policy == SIGNATURE_RULES {
                            held.extend(delta.negated_ids().map(str::to_owned));
                        }
                        let record = admission::QuarantineRecord::new(
                            delta,
                            a.link.clone(),
                            origin_system.clone(),
                            policy.clone(),
                            reason.clone(),
                        );
                        quarantine.push(record.to_bytes());
                    }
                    outcomes.push(Some(IngestOutcome::Rejected { policy, reason }));
                }
                (Ok(delta), Some(Judged::Rejected { policy, reason }), None) => {
                    // A local client's delta: the refusal is its answer; nothing is kept.
                    tracing::info!(delta_id = %delta.id, author = %delta.author, %policy, %reason, "local delta refused");
                    self.count_refusal(&policy);
                    outcomes.push(Some(IngestOutcome::Rejected { policy, reason }));
                }
                (Ok(delta), _, _) => {
                    // Ids are kept for the stored/duplicate events only.
                    if observed {
                        ids.push(delta.id.clone());
                    }
                    if awaiting && self.is_awaited(&delta.id) {
                        arriving.push(delta.id.clone());
                    }
                    entries.push(NewEntry {
                        delta,
                        origin: origin_system.clone(),
                    });
                    outcomes.push(None);
                }
                (Err(e), _, _) => {
                    self.report_invalid(None, &e, &origin);
                    outcomes.push(Some(IngestOutcome::Invalid(e)));
                }
            }
        }
        let append = if entries.is_empty() && meta.is_empty() && quarantine.is_empty() {
            None
        } else {
            let side = SideWrites { meta, quarantine };
            Some(self.inner.store.append(entries, side)?)
        };
        self.await_targets(&held);
        Ok(PendingIngest {
            node: self.clone(),
            append,
            outcomes,
            ids: observed.then_some(ids),
            origin: origin_system,
            held,
            arriving,
        })
    }
    /// Holds a local client's deltas to the signature rules, and judges remote ones
    /// against one consistent policy set. Scripts cost CPU, so when any apply the work
    /// moves to a blocking thread, off the async workers.
    async fn judge(
        &self,
        checked: Checked,
        signed: Vec<Signed>,
        admission: Option<&Admission>,
    ) -> Result<JudgedBatch, StoreError> {
        let rules = self.rules();
        let store = self.inner.store.clone();
        let Some(a) = admission else {
            let verdicts = judge_local(&rules, &store, &checked, &signed);
            return Ok((checked, verdicts));
        };
        let set = self.inner.policies.settled().await;
        let scripts = a.runs_scripts(&set);
        let judge = move |checked: &Checked, a: &Admission| {
            let stored = |id: &str| accepted(&store, checked, id);
            a.judge_all(&rules, &set, checked, &signed, &stored)
        };
        if !scripts {
            let verdicts = judge(&checked, a);
            return Ok((checked, verdicts));
        }
        let a = a.clone();
        tokio::task::spawn_blocking(move || {
            let verdicts = judge(&checked, &a);
            (checked, verdicts)
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("policy task failed: {e}")))
    }

    fn count_refusal(&self, policy: &str) {
        if policy == SIGNATURE_RULES {
            self.inner
                .signature_refusals
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The signature rules over a local client's deltas.
fn judge_local(
    rules: &Rules,
    store: &crate::store::Store,
    checked: &Checked,
    signed: &[Signed],
) -> Vec<Option<Judged>> {
    let stored = |id: &str| accepted(store, checked, id);
    checked
        .iter()
        .zip(signed)
        .map(|(d, signed)| {
            let d = d.as_ref().ok()?;
            let reason = rules.check_local(d, signed, &stored).err()?;
            Some(Judged::Rejected {
                policy: SIGNATURE_RULES.into(),
                reason,
            })
        })
        .collect()
}

/// A delta accepted here, or offered earlier in the same batch: what a negation in
/// the batch may negate.
fn accepted(store: &crate::store::Store, batch: &Checked, id: &str) -> Option<Delta> {
    batch
        .iter()
        .filter_map(|d| d.as_ref().ok())
        .find(|d| d.id == id)
        .cloned()
        .or_else(|| store.get(id).ok().flatten().map(|s| s.delta))
}

/// A batch whose limits and signatures were checked ([`Node::verify`]).
pub(crate) struct Verified {
    checked: Checked,
    signed: Vec<Signed>,
}

type JudgedBatch = (Vec<Result<Delta, InvalidDelta>>, Vec<Option<Judged>>);

/// An ingestion queued by [`Node::admit`]: its append is on its way to disk.
#[must_use = "nothing is acknowledged until `finish` resolves"]
pub(crate) struct PendingIngest {
    node: Node,
    append: Option<PendingAppend>,
    /// One slot per delta offered; `None` where the append decides.
    outcomes: Vec<Option<IngestOutcome>>,
    /// The ids of the appended deltas, when someone listens to events.
    ids: Option<Vec<String>>,
    origin: Option<String>,
    /// Targets of negations this batch quarantined for want of them.
    held: Vec<String>,
    /// Targets that held negations wait for, stored by this batch.
    arriving: Vec<String>,
}

impl PendingIngest {
    /// Waits for the append to be durable, announces what was stored, and returns
    /// one outcome per delta offered, in order.
    ///
    /// # Errors
    /// Storage failures.
    pub(crate) async fn finish(self) -> Result<Vec<IngestOutcome>, StoreError> {
        let PendingIngest {
            node,
            append,
            mut outcomes,
            ids,
            origin,
            held,
            arriving,
        } = self;
        let appended = match append {
            Some(pending) => pending.durable().await?,
            None => Vec::new(),
        };
        // Appends commit in admission order, so a target admitted before the negation
        // that missed it is readable now: look again, or its arrival would go unseen.
        let mut arrived = arriving;
        arrived.extend(
            held.into_iter()
                .filter(|id| node.store().seq_of(id).ok().flatten().is_some()),
        );
        node.rejudge_negations_of(arrived);
        let mut ids = ids.map(Vec::into_iter);
        let mut appended = appended.into_iter();
        for slot in outcomes.iter_mut().filter(|o| o.is_none()) {
            let Some(result) = appended.next() else {
                break;
            };
            let delta_id = ids.as_mut().and_then(Iterator::next);
            *slot = Some(match result {
                AppendOutcome::Stored(seq) => {
                    if let Some(delta_id) = delta_id {
                        node.emit(NodeEvent::DeltaStored {
                            delta_id,
                            seq: seq.0,
                            origin: origin.clone(),
                        });
                    }
                    IngestOutcome::Stored(seq)
                }
                AppendOutcome::Duplicate(seq) => {
                    if let Some(delta_id) = delta_id {
                        node.emit(NodeEvent::DeltaDuplicate {
                            delta_id,
                            origin: origin.clone(),
                        });
                    }
                    IngestOutcome::Duplicate(seq)
                }
            });
        }
        Ok(outcomes.into_iter().flatten().collect())
    }
}
