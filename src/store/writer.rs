//! The single writer: every append goes through one thread that assigns sequence
//! numbers, deduplicates by id, writes the log, indexes and metadata in one fjall
//! batch, persists it, and only then acknowledges and moves the published head.
//!
//! Group commit: while one batch is being persisted, new requests queue in the
//! channel; the next loop drains them all into one batch and one fsync.
//!
//! A failed group commit (a full disk, an I/O error) acknowledges nothing of the group
//! and makes the store unwritable; the writer then recovers by itself (see `recovery`)
//! and refuses writes, saying why, until it has.

mod recovery;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use fjall::PersistMode;
use tokio::sync::{oneshot, watch};

use super::append::{AppendOutcome, NewEntry, Outcomes, SideWrites};
use super::backend::{Batch, Slice};
use super::error::StoreError;
use super::faults::FaultSwitch;
use super::handles::{Handles, Slot};
use super::health::HealthState;
use super::keys;
use super::postings::Postings;
use super::seq::Seq;
use super::tail::RecentLog;

struct Request {
    entries: Vec<NewEntry>,
    side: SideWrites,
    /// Answered once the request's group is durable, or has failed.
    reply: oneshot::Sender<Outcomes>,
}

/// Caps one group commit so a flood of requests still gets acknowledged in steady steps.
const MAX_ENTRIES_PER_COMMIT: usize = 20_000;

pub(crate) struct WriterHandle {
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl WriterHandle {
    pub(crate) fn submit(
        &self,
        entries: Vec<NewEntry>,
        side: SideWrites,
    ) -> Result<oneshot::Receiver<Outcomes>, StoreError> {
        let (reply, rx) = oneshot::channel();
        let guard = self.tx.lock().map_err(|_| StoreError::Closed)?;
        let tx = guard.as_ref().ok_or(StoreError::Closed)?;
        tx.send(Request {
            entries,
            side,
            reply,
        })
        .map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    pub(crate) fn shutdown(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(handle) = handle {
            // IMPORTANT: joining makes "closed" mean "every acknowledged write is done".
            let _ = handle.join();
        }
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Where the writer makes durable groups visible to readers.
pub(crate) struct Publish {
    /// The log's durable head.
    pub head: watch::Sender<Seq>,
    /// The newest records, for tailers.
    pub recent: Arc<RecentLog>,
}

/// What the writer starts with.
pub(crate) struct Setup {
    pub handles: Arc<Handles>,
    /// Where readers find the handles; the writer refills it after a reopen.
    pub slot: Arc<Slot>,
    /// The directory of a durable fjall store, reopened after a write error.
    pub reopen: Option<PathBuf>,
    /// The directory recovery probes for space before writing (fjall stores).
    pub probe_dir: Option<PathBuf>,
    pub head: Seq,
    pub publish: Publish,
    pub persist: Option<PersistMode>,
    pub duplicates: Arc<AtomicU64>,
    pub quarantine: super::quarantine::QuarantineState,
    pub health: Arc<HealthState>,
    pub faults: FaultSwitch,
}

pub(crate) fn spawn(setup: Setup) -> WriterHandle {
    let (tx, rx) = mpsc::channel::<Request>();
    let mut writer = Writer {
        handles: Some(setup.handles),
        slot: setup.slot,
        reopen: setup.reopen,
        probe_dir: setup.probe_dir,
        next: Seq(setup.head.0 + 1),
        publish: setup.publish,
        persist: setup.persist,
        duplicates: setup.duplicates,
        quarantine: setup.quarantine,
        health: setup.health,
        faults: setup.faults,
        last_attempt: Instant::now(),
        record_buf: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name("rhizome-store-writer".into())
        .spawn(move || writer.run(rx))
        .ok();
    if thread.is_none() {
        tracing::error!("could not start the store writer thread; writes will fail");
    }
    WriterHandle {
        tx: Mutex::new(thread.as_ref().map(|_| tx)),
        thread: Mutex::new(thread),
    }
}

struct Writer {
    /// `None` only while recovery reopens the database.
    handles: Option<Arc<Handles>>,
    slot: Arc<Slot>,
    reopen: Option<PathBuf>,
    probe_dir: Option<PathBuf>,
    next: Seq,
    publish: Publish,
    persist: Option<PersistMode>,
    duplicates: Arc<AtomicU64>,
    quarantine: super::quarantine::QuarantineState,
    health: Arc<HealthState>,
    faults: FaultSwitch,
    /// When recovery was last tried; it is tried at most every `recovery::RETRY_EVERY`.
    last_attempt: Instant,
    /// Where each delta's log record is written before it is copied into the batch.
    record_buf: Vec<u8>,
}

/// What a group commit produced: each request's outcomes, and the log records it wrote.
type Committed = (Vec<Vec<AppendOutcome>>, Vec<(Seq, Slice)>);

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Request>) {
        while let Some(first) = self.next_request(&rx) {
            let mut group = vec![first];
            let mut count = group[0].entries.len();
            while count < MAX_ENTRIES_PER_COMMIT {
                match rx.try_recv() {
                    Ok(req) => {
                        count += req.entries.len();
                        group.push(req);
                    }
                    Err(_) => break,
                }
            }
            if !self.health.is_writable() {
                self.recover_if_due();
            }
            if !self.health.is_writable() {
                // Refused at once, saying why: waiting would only hold the caller.
                let reason = self.health.reason();
                for req in group {
                    let _ = req.reply.send(Err(StoreError::Unwritable(reason.clone())));
                }
                continue;
            }
            let start_next = self.next;
            let start_quarantine = self.quarantine.mark();
            // A bug in a dependency must not take the writer (and so the node) down: a
            // panicking commit fails its group like an I/O error would.
            let committed =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.commit(&group)))
                    .unwrap_or_else(|_| {
                        Err(StoreError::Corrupt("the store write panicked".into()))
                    });
            match committed {
                Ok((outcomes, records)) => {
                    // IMPORTANT: the records reach `recent` before the head moves past them.
                    self.publish.recent.extend(records);
                    self.publish.head.send_replace(Seq(self.next.0 - 1));
                    for (req, out) in group.into_iter().zip(outcomes) {
                        let _ = req.reply.send(Ok(out));
                    }
                }
                Err(e) => {
                    // Nothing of this group is acknowledged. fjall poisons itself on I/O
                    // failure; recovery reopens it before anything is written again.
                    self.next = start_next;
                    self.quarantine.rewind(start_quarantine);
                    let msg = e.to_string();
                    tracing::error!(error = %msg, "store write failed; writes are refused until the store recovers");
                    self.health.write_failed(&msg);
                    self.last_attempt = Instant::now();
                    for req in group {
                        let _ = req.reply.send(Err(StoreError::WriteFailed(msg.clone())));
                    }
                }
            }
        }
    }

    /// The next request; while the store is unwritable, tries to recover between
    /// requests, so it becomes writable (and says so) without waiting for a write.
    /// `None` once every sender is gone.
    fn next_request(&mut self, rx: &mpsc::Receiver<Request>) -> Option<Request> {
        loop {
            if self.health.is_writable() {
                return rx.recv().ok();
            }
            match rx.recv_timeout(recovery::RETRY_EVERY) {
                Ok(req) => return Some(req),
                Err(mpsc::RecvTimeoutError::Timeout) => self.recover_if_due(),
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Commits `batch` and makes it durable, unless a write fault is injected.
    fn write(&self, handles: &Handles, batch: Batch) -> Result<(), StoreError> {
        self.faults.check()?;
        batch.commit()?;
        if let Some(mode) = self.persist {
            handles.db.persist(mode)?;
        }
        Ok(())
    }

    fn commit(&mut self, group: &[Request]) -> Result<Committed, StoreError> {
        let handles = self.handles.clone().ok_or(StoreError::Reopening)?;
        let ks = &handles.ks;
        let entries: usize = group.iter().map(|req| req.entries.len()).sum();
        // Per delta: its log record, its id and about one index posting; then the rest
        // of the group's postings and side writes.
        let mut batch = handles.db.batch(entries * 3 + 64);
        // Ids written earlier in this same batch are not yet visible to `ids.get`.
        let mut in_batch: foldhash::HashMap<&str, Seq> =
            foldhash::HashMap::with_capacity_and_hasher(entries, Default::default());
        let mut all = Vec::with_capacity(group.len());
        let mut records = Vec::with_capacity(entries);
        let mut dups = 0u64;
        let mut by_author = Postings::new();
        let mut by_system = Postings::new();
        let mut by_time = Postings::new();
        let mut by_target = Postings::new();
        let mut by_context = Postings::new();
        let mut negations = Postings::new();
        for req in group {
            let mut outcomes = Vec::with_capacity(req.entries.len());
            for entry in &req.entries {
                let d = &entry.delta;
                if let Some(seq) = in_batch.get(d.id.as_str()) {
                    outcomes.push(AppendOutcome::Duplicate(*seq));
                    dups += 1;
                    continue;
                }
                if let Some(existing) = ks.ids.get(d.id.as_bytes())? {
                    outcomes.push(AppendOutcome::Duplicate(keys::decode_seq(&existing)?));
                    dups += 1;
                    continue;
                }
                let seq = self.next;
                self.next = Seq(seq.0 + 1);
                in_batch.insert(&d.id, seq);
                keys::write_record(&mut self.record_buf, entry.origin.as_deref(), d);
                let record = Slice::from(&self.record_buf);
                batch.insert(&ks.log, keys::seq_key(seq), record.clone());
                records.push((seq, record));
                batch.insert(&ks.ids, d.id.as_bytes(), keys::seq_key(seq));
                by_author.add(d.author.as_str(), seq);
                by_system.add(d.system.as_str(), seq);
                by_time.add(d.timestamp, seq);
                for r in d.references() {
                    by_target.add(r.id.as_str(), seq);
                    if let Some(c) = &r.context {
                        by_context.add(c.as_str(), seq);
                    }
                }
                for negated in d.negated_ids() {
                    negations.add(negated, seq);
                }
                outcomes.push(AppendOutcome::Stored(seq));
            }
            for (k, v) in &req.side.meta {
                batch.insert(&ks.meta, k.as_bytes(), v.as_slice());
            }
            for record in &req.side.quarantine {
                self.quarantine.add(&mut batch, &ks.quarantine, record)?;
            }
            all.push(outcomes);
        }
        let term_key = |term: &&str, seq| keys::term_key(term, seq);
        by_author.write(&mut batch, &ks.by_author, term_key);
        by_system.write(&mut batch, &ks.by_system, term_key);
        by_target.write(&mut batch, &ks.by_target, term_key);
        by_context.write(&mut batch, &ks.by_context, term_key);
        negations.write(&mut batch, &ks.negations, term_key);
        by_time.write(&mut batch, &ks.by_time, |ts: &u64, seq| {
            keys::time_key(*ts, seq)
        });
        self.write(&handles, batch)?;
        self.duplicates.fetch_add(dups, Ordering::Relaxed);
        Ok((all, records))
    }
}
