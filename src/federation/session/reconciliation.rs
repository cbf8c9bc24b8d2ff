//! The session's side of the `reconcile` feature (docs/PROTOCOL.md 6.10): running our
//! reconciliation as the puller (a link without a cursor, a peer's invitation, an
//! operator's `rhizome link reconcile`), answering the peer's as the source, and
//! fetching what ours found missing through the same path as announced deltas.
//!
//! The cursor is held from the moment a reconciliation starts until every delta it
//! found missing is resolved: the live deltas that arrive meanwhile are stored at once,
//! but their positions are committed only then, so a connection lost halfway starts the
//! reconciliation again rather than resuming past what it never compared.

use std::sync::Arc;

use serde_json::Value;
use tokio::time::Instant;

use super::state::{Established, Pull};
use super::{store_end, Session, SessionEnd};
use crate::events::NodeEvent;
use crate::federation::links::{LinkStats, ReconcileAsk, ReconcileReport};
use crate::federation::reconcile::{ReconcileError, Reconciler, Role, Round, Snapshot, Step};
use crate::federation::wire::{codes, Message};
use crate::store::{Seq, Store, StoreError};

/// Reconciliations a peer may start on one connection: each makes us read and sort our
/// whole log, which one peer must not be able to ask for without end.
const MAX_SOURCE_CONVERSATIONS: u32 = 4;

impl Session<'_> {
    /// Starts our reconciliation, or tells the operator who asked why it cannot run.
    pub(super) async fn start_pull(
        &mut self,
        est: &mut Established,
        ask: Option<ReconcileAsk>,
    ) -> Result<(), SessionEnd> {
        let refused = if !est.we_receive {
            Some("this link does not receive from the peer")
        } else if !est.peer.reconcile {
            Some("the peer does not speak the reconcile feature")
        } else if est.reconciling.pull.is_some() {
            Some("a reconciliation is already running on this link")
        } else {
            None
        };
        if let Some(why) = refused {
            if let Some(ask) = ask {
                let _ = ask.send(Err(why.to_owned()));
            }
            return Ok(());
        }
        let Ok(slot) = self.reconcile_slots.clone().try_acquire_owned() else {
            let why = "this node runs as many reconciliations as it may at once";
            return match ask {
                Some(ask) => {
                    let _ = ask.send(Err(format!("{why}; try again later")));
                    Ok(())
                }
                // A link that needed it to start gets everything instead.
                None => {
                    tracing::info!(link = %self.link.id, "{why}: asking for a full sync instead");
                    self.full_sync_instead(est)
                }
            };
        };
        let hold = est.fetch.open_hold();
        let snapshot = snapshot(self.node.store()).await?;
        let held = snapshot.len() as u64;
        let through = snapshot.through.0;
        let mut reconciler = Reconciler::new(snapshot, Role::Puller);
        let round = reconciler.initiate();
        est.reconciling.next_conversation += 1;
        let conversation = est.reconciling.next_conversation;
        est.reconciling.pull = Some(Pull {
            conversation,
            reconciler: Some(reconciler),
            hold,
            talked: false,
            held,
            missing: 0,
            started: std::time::Instant::now(),
            ask,
            slot: Some(slot),
            rounds: 0,
        });
        tracing::info!(link = %self.link.id, held, through, "reconciling with the peer");
        self.send_round(conversation, true, &round).await
    }

    /// The peer invites us to reconcile its log up to `through`: its live deltas start
    /// after it. When we hold too little of it for comparing to pay, we ask for all of it
    /// instead; either way the cursor waits until what came before is here.
    pub(super) async fn on_invite(
        &mut self,
        through: u64,
        est: &mut Established,
    ) -> Result<(), SessionEnd> {
        if !est.we_receive || !est.peer.reconcile {
            return Ok(());
        }
        let held = self.node.store().head().0;
        if !super::handshake::worth_reconciling(held, Some(through)) {
            tracing::info!(link = %self.link.id, held, through, "the peer's log is mostly new here: asking for all of it");
            return self.full_sync_instead(est);
        }
        self.start_pull(est, None).await
    }

    /// Asks for everything the peer holds (what a reconciliation could not settle),
    /// holding the cursor until the sync completes.
    fn full_sync_instead(&mut self, est: &mut Established) -> Result<(), SessionEnd> {
        let hold = est.fetch.open_hold();
        est.reconciling.sync_hold = Some(hold);
        est.awaiting_sync = true;
        self.send(&Message::SyncRequest {
            filter: None,
            from_timestamp: None,
            resume_from: Some(0),
            from_head: None,
        })
    }

    /// A round of a reconciliation: the peer's (we answer as the source), or an answer
    /// to ours.
    pub(super) async fn on_reconcile(
        &mut self,
        conversation: u64,
        puller: bool,
        round: Value,
        est: &mut Established,
    ) -> Result<(), SessionEnd> {
        let round: Round = match serde_json::from_value(round) {
            Ok(r) => r,
            Err(e) => {
                return self.reconcile_failed(
                    conversation,
                    puller,
                    &format!("reconcile round unreadable: {e}"),
                    est,
                )
            }
        };
        if puller {
            self.answer_as_source(conversation, round, est).await
        } else {
            self.continue_pull(conversation, round, est).await
        }
    }

    async fn answer_as_source(
        &mut self,
        conversation: u64,
        round: Round,
        est: &mut Established,
    ) -> Result<(), SessionEnd> {
        if !est.we_send {
            return self.send_error(
                codes::MODE_VIOLATION,
                "reconcile on a link that does not send to you",
            );
        }
        let (reconciler, slot) = match est.reconciling.source.take() {
            Some((c, r, slot)) if c == conversation => (r, slot),
            // A new conversation replaces one the peer gave up; each sorts our whole log,
            // so a connection gets a few.
            _ if est.reconciling.sources_started >= MAX_SOURCE_CONVERSATIONS => {
                return self.reconcile_failed(
                    conversation,
                    true,
                    &format!(
                        "more than {MAX_SOURCE_CONVERSATIONS} reconciliations asked on one connection; reconnect to ask again"
                    ),
                    est,
                );
            }
            _ => {
                let Ok(slot) = self.reconcile_slots.clone().try_acquire_owned() else {
                    return self.reconcile_failed(
                        conversation,
                        true,
                        "this node answers as many reconciliations as it may at once; ask for a sync instead, or again later",
                        est,
                    );
                };
                est.reconciling.sources_started += 1;
                let snapshot = snapshot(self.node.store()).await?;
                (Reconciler::new(snapshot, Role::Source), slot)
            }
        };
        let (reconciler, step) = step(self.node.store(), reconciler, round).await?;
        match step {
            Ok(step) => {
                if let Some(reply) = &step.reply {
                    self.send_round(conversation, false, reply).await?;
                }
                if !step.done {
                    est.reconciling.source = Some((conversation, reconciler, slot));
                }
                Ok(())
            }
            Err(e) => self.reconcile_failed(conversation, true, &e.to_string(), est),
        }
    }

    async fn continue_pull(
        &mut self,
        conversation: u64,
        round: Round,
        est: &mut Established,
    ) -> Result<(), SessionEnd> {
        let reconciler = match est.reconciling.pull.as_mut() {
            Some(p) if p.conversation == conversation && !p.talked => p.reconciler.take(),
            _ => None,
        };
        let Some(reconciler) = reconciler else {
            return self.send_error(
                codes::RECONCILE_ERROR,
                &format!(
                    "reconcile round for conversation {conversation}, which is not ours or is over"
                ),
            );
        };
        let (reconciler, step) = step(self.node.store(), reconciler, round).await?;
        let step = match step {
            Ok(step) => step,
            Err(e) => return self.reconcile_failed(conversation, false, &e.to_string(), est),
        };
        let Some(pull) = est.reconciling.pull.as_mut() else {
            return Ok(());
        };
        let Step { reply, need, done } = step;
        pull.missing += need.len() as u64;
        let hold = pull.hold;
        if done {
            // The snapshot and the slot go; what is left is fetching.
            pull.talked = true;
            pull.rounds = reconciler.rounds();
            pull.slot = None;
        } else {
            pull.reconciler = Some(reconciler);
        }
        if !need.is_empty() {
            est.fetch.wait(hold, need, Instant::now());
        }
        if let Some(reply) = &reply {
            self.send_round(conversation, true, reply).await?;
        }
        if done {
            // The conversation's own part of the hold; its ids resolve the rest.
            est.fetch.resolve(hold);
        }
        Ok(())
    }

    /// Reports our reconciliation once every delta it found missing is resolved.
    pub(super) fn check_reconciled(&mut self, est: &mut Established) {
        let finished = est
            .reconciling
            .pull
            .as_ref()
            .is_some_and(|p| p.talked && est.fetch.released(p.hold));
        if !finished {
            return;
        }
        let Some(pull) = est.reconciling.pull.take() else {
            return;
        };
        let rounds = pull.rounds;
        let report = ReconcileReport {
            held: pull.held,
            missing: pull.missing,
            rounds,
            millis: pull.started.elapsed().as_millis() as u64,
        };
        LinkStats::add(&self.link.stats.reconciliations, 1);
        LinkStats::add(&self.link.stats.reconciled_missing, pull.missing);
        tracing::info!(link = %self.link.id, held = report.held, missing = report.missing, rounds, millis = report.millis, "reconciled with the peer");
        self.node.emit(NodeEvent::LinkReconciled {
            link_id: self.link.id.clone(),
            held: report.held,
            missing: report.missing,
            rounds,
        });
        if let Some(ask) = pull.ask {
            let _ = ask.send(Ok(report));
        }
    }

    /// A sync asked for instead of reconciling is complete: its hold goes.
    pub(super) fn full_sync_done(&mut self, est: &mut Established) {
        if let Some(hold) = est.reconciling.sync_hold.take() {
            est.fetch.resolve(hold);
        }
    }

    /// A conversation broke the protocol or a limit: the peer is told why. Ours falls
    /// back to asking for everything (its hold stays until that sync completes).
    fn reconcile_failed(
        &mut self,
        conversation: u64,
        peer_is_puller: bool,
        why: &str,
        est: &mut Established,
    ) -> Result<(), SessionEnd> {
        tracing::warn!(link = %self.link.id, conversation, reason = %why, "reconciliation failed");
        self.send_error(codes::RECONCILE_ERROR, why)?;
        if peer_is_puller {
            est.reconciling.source = None;
            return Ok(());
        }
        let Some(pull) = est.reconciling.pull.take() else {
            return Ok(());
        };
        if let Some(ask) = pull.ask {
            let _ = ask.send(Err(format!("the reconciliation failed: {why}")));
        }
        // The failed conversation's hold stays until the full sync releases its own.
        est.fetch.resolve(pull.hold);
        self.full_sync_instead(est)
    }

    async fn send_round(
        &mut self,
        conversation: u64,
        puller: bool,
        round: &Round,
    ) -> Result<(), SessionEnd> {
        let round = serde_json::to_value(round).unwrap_or(Value::Null);
        self.send_paced(&Message::Reconcile {
            conversation,
            puller,
            round,
        })
        .await
    }
}

/// Our store's deltas as reconciliation sees them, read on a blocking thread.
async fn snapshot(store: &Store) -> Result<Arc<Snapshot>, SessionEnd> {
    let store = store.clone();
    let through = store.head();
    tokio::task::spawn_blocking(move || Snapshot::read(&store, through))
        .await
        .map_err(|e| store_end(StoreError::Corrupt(format!("snapshot task failed: {e}"))))?
        .map(Arc::new)
        .map_err(store_end)
}

/// Answers one round on a blocking thread (the first rounds sum over the whole snapshot;
/// a source reads the ids of the ranges it lists).
async fn step(
    store: &Store,
    mut reconciler: Reconciler,
    round: Round,
) -> Result<(Reconciler, Result<Step, ReconcileError>), SessionEnd> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut ids_at = |seqs: &[Seq]| -> Result<Vec<String>, StoreError> {
            seqs.iter()
                .map(|&seq| {
                    store.get_seq(seq)?.map(|d| d.delta.id).ok_or_else(|| {
                        StoreError::Corrupt(format!("no delta at position {seq} of the snapshot"))
                    })
                })
                .collect()
        };
        let step = reconciler.step(&round, &mut ids_at);
        (reconciler, step)
    })
    .await
    .map_err(|e| store_end(StoreError::Corrupt(format!("reconcile task failed: {e}"))))
}
