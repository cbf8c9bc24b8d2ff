//! The receiving side of an established link: reading frames, ingesting the deltas they
//! carry through the node's single path, answering them, following the peer's sync
//! and pause. What the peer asks us to send (`sync_request`) goes to [`super::outbound`].

use std::collections::VecDeque;

use futures_util::Stream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::outbound::SyncRequest;
use super::state::Established;
use super::{store_end, type_name, EndKind, Frame, Role, Session, SessionEnd};
use crate::delta::{now_millis, Delta};
use crate::events::NodeEvent;
use crate::federation::cursor::{self};
use crate::federation::links::{LinkStats, LinkStatus};
use crate::federation::sender::Outgoing;
use crate::federation::wire::{codes, Message, WireDelta};
use crate::node::{IngestOutcome, Origin, PendingIngest};

/// How a received delta is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// v1 live `delta`: `delta_ack` once durable, or `delta_nack`.
    AckEach,
    /// Batches: only refusals are answered (`delta_nack`).
    NackOnly,
}

fn nack(id: &str, reason: String) -> Message {
    Message::DeltaNack {
        delta_id: id.to_owned(),
        reason,
    }
}

/// Pending deltas go to the store once this many have been read (a sync batch is
/// 1000): large enough for cheap group commits, small enough that decoding and
/// judging the next frames overlaps with writing these.
const SUBMIT_AT: usize = 1000;
/// Batches a link may have queued for the store while it reads and judges more;
/// the oldest is answered before another is submitted.
const MAX_IN_FLIGHT: usize = 2;

/// A batch on its way to disk and the answers it owes.
struct InFlight {
    /// Verifying, then admitting (see [`Session::submit`]).
    ingest: tokio::task::JoinHandle<Result<PendingIngest, crate::store::StoreError>>,
    /// (delta id, how it is answered, part of the initial sync) per delta, in order.
    answered: Vec<(String, Reply, bool)>,
    last_seq: Option<u64>,
    /// The batch commits the cursor to `last_seq` itself (no announcement held it).
    cursor_in_batch: bool,
    /// Our `delta_request`s this batch completes the answers to.
    resolves: Vec<u64>,
}

/// Deltas read from consecutive frames, ingested together in one store batch.
#[derive(Default)]
struct Pending {
    values: Vec<(WireDelta, Reply, bool)>,
    last_seq: Option<u64>,
    resolves: Vec<u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.values.is_empty() && self.last_seq.is_none() && self.resolves.is_empty()
    }
}

impl Session<'_> {
    pub(super) async fn live<St>(&mut self, stream: &mut St, est: &mut Established) -> SessionEnd
    where
        St: Stream<Item = Result<WsMessage, WsError>> + Unpin,
    {
        let dead_after = self.heartbeat * 2 + std::time::Duration::from_secs(1);
        // Batches still verifying or on their way to disk carry over to the next burst
        // of frames while more frames are already waiting, so verifying one burst
        // overlaps reading the next; once none is waiting, everything is answered.
        let mut in_flight = VecDeque::new();
        let end = loop {
            if let Err(end) = self.fetch_due(est).await {
                break end;
            }
            if let Some(ask) = self.reconcile_asked.take() {
                if let Err(end) = self.start_pull(est, Some(ask)).await {
                    break end;
                }
            }
            self.check_reconciled(est);
            let deadline = self.last_frame + dead_after;
            let wait = in_flight.is_empty();
            // A paused link fetches nothing (see `fetch_due`): no wake-up for it either.
            let wake = est.fetch.next_due().filter(|_| !*self.link.paused.borrow());
            let texts = match self.read_frames(stream, deadline, wait, wake).await {
                Ok(t) if t.is_empty() && !wait => {
                    match self.complete_until(&mut in_flight, 0, est).await {
                        Ok(()) => continue,
                        Err(end) => break end,
                    }
                }
                Ok(t) => t,
                Err(end) => {
                    // What was read before the end is still counted and answered.
                    let _ = self.complete_until(&mut in_flight, 0, est).await;
                    break end;
                }
            };
            if let Err(end) = self.process_carrying(texts, est, &mut in_flight).await {
                break end;
            }
        };
        if let Err(e) = self.commit_answered(est).await {
            tracing::warn!(link = %self.link.id, reason = %e.reason, "the v1 answered cursor was not saved");
        }
        end
    }

    /// A plain v1 peer answered one of our `delta`s (ack or nack): its answers reach
    /// that delta's position, and the link resumes after it next time. Committed with
    /// the rest of the frames read (`process`).
    fn on_answer(&self, delta_id: &str, est: &mut Established) {
        if est.peer.extension {
            return;
        }
        if let Some(seq) = self.link.answered(delta_id) {
            est.answered.through = est.answered.through.max(seq.0);
            self.link
                .stats
                .peer_acked
                .fetch_max(seq.0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Commits how far a v1 peer's answers reached, once per batch of frames read.
    async fn commit_answered(&mut self, est: &mut Established) -> Result<(), SessionEnd> {
        let a = &mut est.answered;
        if a.through <= a.committed {
            return Ok(());
        }
        self.node
            .store()
            .put_meta(&est.keys.answered, cursor::encode(a.through))
            .await
            .map_err(store_end)?;
        a.committed = a.through;
        Ok(())
    }

    /// Ingests `frames` and answers everything they carried.
    pub(super) async fn process(
        &mut self,
        frames: Vec<Frame>,
        est: &mut Established,
    ) -> Result<(), SessionEnd> {
        let mut in_flight = VecDeque::new();
        self.process_carrying(frames, est, &mut in_flight).await?;
        self.complete_until(&mut in_flight, 0, est).await
    }

    /// Ingests `frames`, leaving up to [`MAX_IN_FLIGHT`] batches in `in_flight`, in
    /// order, for the caller to complete.
    async fn process_carrying(
        &mut self,
        frames: Vec<Frame>,
        est: &mut Established,
        in_flight: &mut VecDeque<InFlight>,
    ) -> Result<(), SessionEnd> {
        let mut pending = Pending::default();
        for frame in frames {
            // Only plain v1 peers can be of the seed's version: frames of extension
            // peers (our own nodes) are not scanned.
            if let (Frame::Text(text), false) = (&frame, est.peer.extension) {
                self.link.observe_pointers(text);
            }
            let msg = match frame.decode() {
                Ok(m) => m,
                Err(e) => {
                    self.settle(&mut pending, in_flight, est).await?;
                    self.undecodable(&frame, &e, est);
                    self.send_error(codes::MESSAGE_ERROR, &e)?;
                    continue;
                }
            };
            match msg {
                Message::Delta { delta, seq } => {
                    if self.may_receive(est, Some(&delta))? {
                        pending.values.push((delta, Reply::AckEach, false));
                        pending.last_seq = seq.or(pending.last_seq);
                    }
                }
                Message::DeltaResponse {
                    request_id,
                    deltas,
                    last,
                } => {
                    if self.may_receive(est, None)? {
                        pending
                            .values
                            .extend(deltas.into_iter().map(|d| (d, Reply::NackOnly, false)));
                        if last {
                            pending.resolves.push(request_id);
                        }
                    }
                }
                Message::SyncBatch {
                    deltas, last_seq, ..
                } => {
                    if self.may_receive(est, None)? {
                        pending
                            .values
                            .extend(deltas.into_iter().map(|d| (d, Reply::NackOnly, true)));
                        pending.last_seq = last_seq.or(pending.last_seq);
                    }
                }
                Message::DeltaBatch { deltas, last_seq } => {
                    if self.may_receive(est, None)? {
                        pending
                            .values
                            .extend(deltas.into_iter().map(|d| (d, Reply::NackOnly, false)));
                        pending.last_seq = Some(last_seq);
                    }
                }
                Message::DeltaAnnounce { ids, last_seq } => {
                    // In the stream of positions, like a batch: the ids it lacks hold the
                    // cursor from here, and its position (when no batch carries it) is
                    // committed with the batch it joins, once that is durable.
                    if self.may_receive(est, None)? {
                        if let Some(seq) = pending.last_seq {
                            est.fetch.saw(seq);
                        }
                        self.on_announce(ids.0, est).await?;
                        pending.last_seq = last_seq.or(pending.last_seq);
                    }
                }
                // Nothing read before these needs to be durable to answer them: the
                // batches in flight go on meanwhile. (A `pong` still waits: it answers
                // after everything read before its `ping`, which a peer may rely on.)
                other @ (Message::DeltaRequest { .. } | Message::CursorAck { .. }) => {
                    self.on_message(other, est).await?;
                    continue;
                }
                other => {
                    self.settle(&mut pending, in_flight, est).await?;
                    self.on_message(other, est).await?;
                    continue;
                }
            }
            if pending.values.len() >= SUBMIT_AT {
                in_flight.extend(self.submit(&mut pending, est).await?);
                self.complete_until(in_flight, MAX_IN_FLIGHT, est).await?;
            }
        }
        in_flight.extend(self.submit(&mut pending, est).await?);
        self.complete_until(in_flight, MAX_IN_FLIGHT, est).await?;
        self.commit_answered(est).await
    }

    /// Submits what is pending and waits for everything in flight, in order: before
    /// any other message is handled, every delta read before it is answered.
    async fn settle(
        &mut self,
        pending: &mut Pending,
        in_flight: &mut VecDeque<InFlight>,
        est: &mut Established,
    ) -> Result<(), SessionEnd> {
        in_flight.extend(self.submit(pending, est).await?);
        self.complete_until(in_flight, 0, est).await
    }

    /// Answers the oldest batches in flight, in order, until at most `left` remain.
    async fn complete_until(
        &mut self,
        in_flight: &mut VecDeque<InFlight>,
        left: usize,
        est: &mut Established,
    ) -> Result<(), SessionEnd> {
        while in_flight.len() > left {
            if let Some(oldest) = in_flight.pop_front() {
                self.complete(oldest, est).await?;
            }
        }
        Ok(())
    }

    /// Counts and announces a frame that could not be decoded and, when it may have
    /// carried deltas, holds the cursor (see [`Established::cursor_held`]).
    fn undecodable(&self, frame: &Frame, error: &str, est: &mut Established) {
        LinkStats::add(&self.link.stats.frames_invalid, 1);
        let origin = Origin::Remote {
            system: est.peer.system.clone(),
        };
        let e = crate::delta::InvalidDelta::new("frame", error);
        self.node.report_invalid(None, &e, &origin);
        if frame.may_carry_deltas() && !est.cursor_held {
            est.cursor_held = true;
            let why = format!(
                "cursor held for this connection: a frame that may carry deltas could not be decoded ({})",
                super::truncate(error, 200)
            );
            tracing::warn!(link = %self.link.id, peer = %est.peer.system, "{why}");
            self.link.set_error(&why);
        }
    }

    /// Refuses deltas on a link that does not carry them toward us.
    pub(super) fn may_receive(
        &self,
        est: &Established,
        delta: Option<&WireDelta>,
    ) -> Result<bool, SessionEnd> {
        if est.we_receive {
            return Ok(true);
        }
        let why = match self.role {
            Role::Acceptor => {
                "this link was opened in pull mode: the connecting side receives only and may not send deltas"
            }
            Role::Initiator => "this link was opened in push mode: the connecting side does not receive deltas",
        };
        if let Some(id) = delta.and_then(WireDelta::id_str) {
            self.send(&Message::DeltaNack {
                delta_id: id.to_owned(),
                reason: why.to_owned(),
            })?;
        }
        self.send_error(codes::MODE_VIOLATION, why)?;
        Ok(false)
    }

    /// Judges pending deltas and queues them for the store in one batch with the
    /// cursor they advance; [`Session::complete`] answers once they are durable.
    ///
    /// The batch's signatures are checked on a task of its own, so the session reads
    /// and decodes the next frames meanwhile (checking signatures is most of the work of
    /// receiving signed deltas); batches are then admitted strictly in the order read.
    async fn submit(
        &mut self,
        pending: &mut Pending,
        est: &mut Established,
    ) -> Result<Option<InFlight>, SessionEnd> {
        if pending.is_empty() {
            return Ok(None);
        }
        let Pending {
            values,
            last_seq,
            resolves,
        } = std::mem::take(pending);
        if let Some(seq) = last_seq {
            est.fetch.saw(seq);
        }
        // The ids answer with (taken before the deltas go to the store).
        let mut answered = Vec::with_capacity(values.len());
        let checked: Vec<Result<Delta, crate::delta::InvalidDelta>> = values
            .into_iter()
            .map(|(wire, reply, in_sync)| {
                answered.push((wire.id().to_owned(), reply, in_sync));
                wire.into_checked()
            })
            .collect();
        let mut meta = Vec::new();
        let mut cursor_in_batch = false;
        if est.cursor_held {
            // Nothing moves the cursor past the frame that was not judged.
        } else if est.peer.extension {
            // While an announcement is unresolved the cursor waits (see `fetching`).
            if let (Some(seq), false) = (last_seq, est.fetch.holding()) {
                meta.push((est.keys.seq.clone(), cursor::encode(seq)));
                cursor_in_batch = true;
            }
        } else {
            let newest = checked
                .iter()
                .flatten()
                .map(|d| d.timestamp)
                .max()
                .unwrap_or(0);
            if newest > est.max_ts {
                est.max_ts = newest;
                if !est.awaiting_sync {
                    meta.push((est.keys.ts.clone(), cursor::encode(newest)));
                }
            }
        }
        let origin = Origin::Remote {
            system: est.peer.system.clone(),
        };
        let node = self.node.clone();
        let admission = est.admission.clone();
        let before = est.admitted.take();
        let (admitted, next) = tokio::sync::oneshot::channel();
        est.admitted = Some(next);
        let ingest = tokio::spawn(async move {
            let verified = node.verify(checked).await;
            if let Some(before) = before {
                // Dropped unsent when the batch before failed: nothing to wait for.
                let _ = before.await;
            }
            let ingest = match verified {
                Ok(v) => node.admit_verified(v, origin, Some(&admission), meta).await,
                Err(e) => Err(e),
            };
            let _ = admitted.send(());
            ingest
        });
        Ok(Some(InFlight {
            ingest,
            answered,
            last_seq,
            cursor_in_batch,
            resolves,
        }))
    }

    /// Waits for a submitted batch to be durable, counts and announces it, answers.
    async fn complete(&mut self, batch: InFlight, est: &mut Established) -> Result<(), SessionEnd> {
        let InFlight {
            ingest,
            answered,
            last_seq,
            cursor_in_batch,
            resolves,
        } = batch;
        let ingest = ingest
            .await
            .map_err(|e| {
                store_end(crate::store::StoreError::Corrupt(format!(
                    "ingest task failed: {e}"
                )))
            })?
            .map_err(store_end)?;
        let outcomes = ingest.finish().await.map_err(store_end)?;
        // Count and announce everything first, then answer: the answers may wait on a
        // slow peer, the node's own view of what happened should not.
        let stats = &self.link.stats;
        let observed = self.node.events_observed();
        let mut answers = Vec::new();
        for ((id, reply, in_sync), outcome) in answered.iter().zip(outcomes) {
            if *in_sync {
                est.sync_processed += 1;
            }
            let answer = match outcome {
                IngestOutcome::Stored(_) | IngestOutcome::Duplicate(_) => {
                    LinkStats::add(&stats.deltas_received, 1);
                    if observed {
                        self.node.emit(NodeEvent::DeltaReceived {
                            link_id: self.link.id.clone(),
                            delta_id: id.to_owned(),
                            duplicate: matches!(outcome, IngestOutcome::Duplicate(_)),
                        });
                    }
                    if *reply != Reply::AckEach {
                        continue;
                    }
                    Message::DeltaAck {
                        delta_id: id.to_owned(),
                    }
                }
                IngestOutcome::Invalid(e) => {
                    LinkStats::add(&stats.deltas_rejected, 1);
                    LinkStats::add(&stats.deltas_invalid, 1);
                    nack(id, e.to_string())
                }
                IngestOutcome::Rejected { policy, reason } => {
                    LinkStats::add(&stats.deltas_rejected, 1);
                    nack(id, format!("{policy}: {reason}"))
                }
                IngestOutcome::Filtered(reason) => {
                    LinkStats::add(&stats.deltas_filtered, 1);
                    nack(id, format!("not kept: {reason}"))
                }
            };
            answers.push(answer);
        }
        if let Some(seq) = last_seq {
            est.fetch.durable_through(seq);
            if cursor_in_batch {
                est.fetch.committed = est.fetch.committed.max(seq);
                answers.push(Message::CursorAck { last_seq: seq });
            }
        }
        for answer in &answers {
            self.send_paced(answer).await?;
        }
        for request_id in resolves {
            est.fetch.answered(request_id);
        }
        if !cursor_in_batch {
            self.commit_gate(est).await?;
        }
        if est.syncing {
            self.sync_progress(est);
        }
        Ok(())
    }

    /// Long syncs say how far along they are: in the stats (for `GET /links`,
    /// `rhizome status`) at once, in the log every few seconds.
    fn sync_progress(&self, est: &mut Established) {
        let done = est.sync_processed;
        self.link
            .stats
            .sync_done
            .store(done, std::sync::atomic::Ordering::Relaxed);
        if est.progress_logged.elapsed() < std::time::Duration::from_secs(3) {
            return;
        }
        est.progress_logged = std::time::Instant::now();
        let rate = done as f64 / est.sync_started.elapsed().as_secs_f64().max(0.001);
        let remaining = est.sync_total.saturating_sub(done);
        tracing::info!(
            link = %self.link.id,
            done,
            total = est.sync_total,
            rate = rate as u64,
            eta_seconds = (remaining as f64 / rate.max(1.0)) as u64,
            "initial sync in progress"
        );
    }

    async fn on_message(&mut self, msg: Message, est: &mut Established) -> Result<(), SessionEnd> {
        match msg {
            Message::Hello { .. } | Message::HelloAck { .. } | Message::Auth { .. } => self
                .send_error(
                    codes::MESSAGE_ERROR,
                    &format!(
                        "{} after the handshake: the link is already established",
                        type_name(&msg)
                    ),
                ),
            Message::SyncRequest {
                filter,
                from_timestamp,
                resume_from,
                from_head,
            } => self.serve_sync_request(
                est,
                SyncRequest {
                    filter,
                    from_timestamp,
                    resume_from,
                    from_head,
                },
            ),
            Message::SyncStart { total_deltas, .. } => {
                self.on_sync_start(total_deltas, est);
                Ok(())
            }
            Message::SyncComplete { last_seq, .. } => self.on_sync_complete(last_seq, est).await,
            Message::DeltaAck { delta_id } => {
                self.on_answer(&delta_id, est);
                Ok(())
            }
            Message::CursorAck { last_seq } => {
                self.link
                    .stats
                    .peer_acked
                    .fetch_max(last_seq, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Message::DeltaNack { delta_id, reason } => {
                LinkStats::add(&self.link.stats.deltas_nacked, 1);
                tracing::warn!(link = %self.link.id, %delta_id, %reason, "the peer refused a delta");
                self.on_answer(&delta_id, est);
                Ok(())
            }
            // Handled in the stream of positions (`process_carrying`).
            Message::DeltaAnnounce { .. } => Ok(()),
            Message::DeltaRequest { request_id, ids } => {
                self.on_request(request_id, ids.0, est).await
            }
            Message::Reconcile {
                conversation,
                puller,
                round,
            } => self.on_reconcile(conversation, puller, round, est).await,
            Message::ReconcileInvite { through } => self.on_invite(through, est).await,
            Message::Pause => self.queue(Outgoing::PeerPaused(true)),
            Message::Resume => self.queue(Outgoing::PeerPaused(false)),
            Message::Ping => self.send(&Message::Pong),
            Message::Pong => Ok(()),
            Message::Error {
                code,
                message,
                fatal,
            } => self.on_error_frame(&code, &message, fatal, est),
            // Delta-carrying messages are handled by `process`.
            Message::Delta { .. }
            | Message::SyncBatch { .. }
            | Message::DeltaBatch { .. }
            | Message::DeltaResponse { .. } => Ok(()),
        }
    }

    /// The peer starts our initial sync: progress is counted from here.
    fn on_sync_start(&mut self, total_deltas: u64, est: &mut Established) {
        est.syncing = true;
        est.sync_processed = 0;
        est.sync_total = total_deltas;
        est.sync_started = std::time::Instant::now();
        est.progress_logged = est.sync_started;
        self.link
            .stats
            .sync_total
            .store(total_deltas, std::sync::atomic::Ordering::Relaxed);
        self.link
            .stats
            .sync_done
            .store(0, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(link = %self.link.id, total = total_deltas, "initial sync started");
        if !*self.link.paused.borrow() {
            self.link.set_status(LinkStatus::Syncing);
        }
        self.node.emit(NodeEvent::SyncStarted {
            link_id: self.link.id.clone(),
            total_deltas,
        });
    }

    /// Our initial sync is complete: every batch before this frame is already durable
    /// (answered in order), so the resume point may move to what the sync delivered.
    async fn on_sync_complete(
        &mut self,
        last_seq: Option<u64>,
        est: &mut Established,
    ) -> Result<(), SessionEnd> {
        // Every batch before this frame is already durable (flushed in order), so
        // the resume point may now move to what the sync delivered.
        let store = self.node.store();
        if est.cursor_held {
            // The sync is over, but not everything in it was judged.
        } else if est.peer.extension {
            // Committed below, once a full sync's own hold (if any) is gone.
            if let Some(seq) = last_seq {
                est.fetch.saw(seq);
                est.fetch.durable_through(seq);
            }
        } else if est.max_ts > 0 {
            store
                .put_meta(&est.keys.ts, cursor::encode(est.max_ts))
                .await
                .map_err(store_end)?;
        }
        est.awaiting_sync = false;
        est.syncing = false;
        self.full_sync_done(est);
        self.commit_gate(est).await?;
        self.link
            .stats
            .sync_total
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.link
            .stats
            .sync_done
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.link
            .stats
            .last_sync_timestamp
            .store(now_millis(), std::sync::atomic::Ordering::Relaxed);
        if !*self.link.paused.borrow() {
            self.link.set_status(LinkStatus::Connected);
        }
        let secs = est.sync_started.elapsed().as_secs_f64();
        tracing::info!(
            link = %self.link.id,
            deltas = est.sync_processed,
            seconds = format!("{secs:.1}"),
            rate = (est.sync_processed as f64 / secs.max(0.001)) as u64,
            "initial sync complete"
        );
        self.node.emit(NodeEvent::SyncCompleted {
            link_id: self.link.id.clone(),
            deltas_processed: est.sync_processed,
        });
        Ok(())
    }

    /// An `error` frame: recorded; a sync the peer cannot serve is no longer awaited; a
    /// fatal one ends the session.
    fn on_error_frame(
        &mut self,
        code: &str,
        message: &str,
        fatal: bool,
        est: &mut Established,
    ) -> Result<(), SessionEnd> {
        self.peer_error(code, message);
        // The peer could not serve our sync request: stop waiting for it.
        if est.awaiting_sync && (code == codes::SYNC_ERROR || code == "SYNC_NOT_SUPPORTED") {
            tracing::warn!(link = %self.link.id, %message, "the peer did not serve our sync request");
            est.awaiting_sync = false;
            est.syncing = false;
            if !*self.link.paused.borrow() {
                self.link.set_status(LinkStatus::Connected);
            }
        }
        if fatal {
            let kind = if code == codes::PROTOCOL_MISMATCH {
                EndKind::Refused
            } else {
                EndKind::Lost
            };
            return Err(SessionEnd::new(
                kind,
                format!("the peer closed the link: {code}: {message}"),
            ));
        }
        Ok(())
    }

    pub(super) fn peer_error(&self, code: &str, message: &str) {
        tracing::warn!(link = %self.link.id, %code, %message, "error from the peer");
        self.link.set_error(&format!("{code}: {message}"));
        self.node.emit(NodeEvent::LinkError {
            link_id: self.link.id.clone(),
            error: format!("peer: {code}: {message}"),
        });
    }
}
