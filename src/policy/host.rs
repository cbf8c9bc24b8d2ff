//! The node's current policy set and its hot reload.
//!
//! Readers take the current set (`Arc`) once per batch, so a batch is judged by one
//! consistent set even while a reload swaps in the next. The watcher debounces editor
//! bursts (write, rename, chmod) into one reload.
//!
//! An edit is never overtaken by what follows it: the watcher counts file events as they
//! happen, and ingestion ([`PolicyHost::settled`]) waits for the reload of the edits
//! already seen before judging, while a replay of the quarantine or `POST
//! /policies/reload` reads the folders itself ([`PolicyHost::refresh`],
//! [`PolicyHost::reload`]) rather than waiting for the debounce. So a script saved, then a
//! delta sent, is judged by the saved script.
//!
//! The watcher's events come from its own thread, which a loaded machine can run late:
//! so ingestion also compares the folders' modification times with those read at the
//! last load (a few `stat`s per batch). A file created, removed or renamed into place, as
//! editors save, changes its folder's time and is read before the batch is judged even
//! when the watcher has not spoken yet; a file rewritten in place is left to the watcher.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use notify::RecursiveMode;

use super::set::{PolicyDirs, PolicySet};
use crate::events::{EventBus, NodeEvent};

pub struct PolicyHost {
    dirs: PolicyDirs,
    current: RwLock<Arc<PolicySet>>,
    events: EventBus,
    reloads: AtomicU64,
    /// File events the watcher has seen in the folders.
    edits_seen: Arc<AtomicU64>,
    /// `edits_seen` as it was when the set in force was read from the folders.
    edits_applied: AtomicU64,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    /// Every folder under `dirs` and its modification time, as of the last load.
    folders: Mutex<Vec<(std::path::PathBuf, Option<std::time::SystemTime>)>>,
}

/// How long ingestion waits for the reload of an edit in progress before judging with
/// the set in force: past the watcher's debounce, with room for a slow compile. An
/// editor that keeps writing longer than this does not hold deltas back.
const SETTLE_WAIT: Duration = Duration::from_secs(1);

impl PolicyHost {
    /// Loads the scripts under `dirs` (reporting compile errors as events and logs).
    ///
    /// # Errors
    /// When a folder that is named does not exist or cannot be read.
    pub fn new(dirs: PolicyDirs, events: EventBus) -> std::io::Result<PolicyHost> {
        for dir in [&dirs.policies, &dirs.filters].into_iter().flatten() {
            if !dir.is_dir() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} is not a directory", dir.display()),
                ));
            }
        }
        let folders = folder_times(&dirs);
        let set = PolicySet::load(&dirs, None)?;
        let host = PolicyHost {
            dirs,
            current: RwLock::new(Arc::new(PolicySet::empty())),
            events,
            reloads: Default::default(),
            edits_seen: Arc::default(),
            edits_applied: AtomicU64::new(0),
            watcher: Mutex::new(None),
            folders: Mutex::new(folders),
        };
        host.install(set);
        Ok(host)
    }

    /// No scripts at all.
    pub fn empty(events: EventBus) -> PolicyHost {
        PolicyHost {
            dirs: PolicyDirs::default(),
            current: RwLock::new(Arc::new(PolicySet::empty())),
            events,
            reloads: Default::default(),
            edits_seen: Arc::default(),
            edits_applied: AtomicU64::new(0),
            watcher: Mutex::new(None),
            folders: Mutex::new(Vec::new()),
        }
    }

    pub fn dirs(&self) -> &PolicyDirs {
        &self.dirs
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<PolicySet> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Sets the wall time each evaluation may take, for the set in force and every set
    /// reloaded after it (config `scriptTimeoutMs`; applied live, no reload needed).
    pub fn set_time_budget(&self, budget: std::time::Duration) {
        let set = self.current();
        if set.time_budget() != budget {
            set.set_time_budget(budget);
            tracing::info!(
                budget_ms = set.time_budget().as_millis() as u64,
                "script time budget set"
            );
        }
    }

    pub fn reload_count(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Whether the watcher has seen file events that no reload has read yet.
    fn edits_pending(&self) -> bool {
        self.edits_seen.load(Ordering::Acquire) > self.edits_applied.load(Ordering::Acquire)
    }

    /// The set to judge with now: once the edits the watcher has already seen are loaded
    /// (waiting up to [`SETTLE_WAIT`] for them), so a delta that arrives right after a
    /// script was saved is judged by that script.
    pub async fn settled(self: &Arc<Self>) -> Arc<PolicySet> {
        if self.folders_changed() {
            let host = self.clone();
            if let Ok(set) = tokio::task::spawn_blocking(move || host.refresh()).await {
                return set;
            }
        }
        let deadline = Instant::now() + SETTLE_WAIT;
        while self.edits_pending() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.current()
    }

    /// Reads the folders now, without waiting for the watcher, and swaps the set in if
    /// its content changed (no `policy:reloaded` when nothing did). What a replay of the
    /// quarantine runs first, so it judges by the files on disk. Blocks on file reads
    /// and compiles.
    pub fn refresh(&self) -> Arc<PolicySet> {
        self.load(false)
    }

    /// Reads the folders again and swaps the new set in.
    pub fn reload(&self) -> Arc<PolicySet> {
        self.load(true)
    }

    /// Reads the folders; installs the set when `always` or when its content changed.
    fn load(&self, always: bool) -> Arc<PolicySet> {
        let seen = self.edits_seen.load(Ordering::Acquire);
        // Taken before the files are read: an edit during the read shows as a change
        // next time, never as one already read.
        let folders = folder_times(&self.dirs);
        if let Ok(mut f) = self.folders.lock() {
            *f = folders;
        }
        let previous = self.current();
        let set = match PolicySet::load(&self.dirs, Some(&previous)) {
            Ok(set) if !always && set.hash() == previous.hash() => previous,
            Ok(set) => {
                self.reloads.fetch_add(1, Ordering::Relaxed);
                self.install(set)
            }
            Err(e) => {
                tracing::error!(error = %e, "policy reload failed; the current set stays");
                self.events.emit(NodeEvent::PolicyError {
                    file: None,
                    line: None,
                    column: None,
                    message: e.to_string(),
                });
                previous
            }
        };
        // Read (or refused): nothing to wait for until the watcher sees the next edit.
        self.edits_applied.fetch_max(seen, Ordering::AcqRel);
        set
    }

    fn install(&self, set: PolicySet) -> Arc<PolicySet> {
        let set = Arc::new(set);
        for e in set.errors() {
            tracing::error!(file = %e.file, line = ?e.line, column = ?e.column, "policy error: {}", e.message);
            self.events.emit(NodeEvent::PolicyError {
                file: Some(e.file.clone()),
                line: e.line,
                column: e.column,
                message: e.message.clone(),
            });
        }
        let scripts = set.scripts().len();
        tracing::info!(
            hash = set.hash(),
            scripts,
            errors = set.errors().len(),
            "policy set loaded"
        );
        self.events.emit(NodeEvent::PolicyReloaded {
            hash: set.hash().to_owned(),
            scripts,
            errors: set.errors().len(),
        });
        match self.current.write() {
            Ok(mut c) => *c = set.clone(),
            Err(poisoned) => *poisoned.into_inner() = set.clone(),
        }
        set
    }

    /// Starts watching the folders; changes are reloaded after a short quiet time.
    /// Needs a tokio runtime.
    ///
    /// # Errors
    /// When the OS watcher cannot be set up.
    pub fn watch(self: &Arc<Self>) -> notify::Result<()> {
        if self.dirs.is_empty() {
            return Ok(());
        }
        let dirs: Vec<&std::path::Path> = [&self.dirs.policies, &self.dirs.filters]
            .into_iter()
            .flatten()
            .map(|d| d.as_path())
            .collect();
        let targets: Vec<_> = dirs
            .iter()
            .map(|d| (*d, RecursiveMode::Recursive))
            .collect();
        let host = Arc::downgrade(self);
        let seen = self.edits_seen.clone();
        let watcher = crate::file_watch::debounced(
            &targets,
            move |_| {
                seen.fetch_add(1, Ordering::AcqRel);
                true
            },
            move || match host.upgrade() {
                Some(host) => {
                    host.reload();
                    true
                }
                None => false,
            },
        )?;
        if let Ok(mut w) = self.watcher.lock() {
            *w = Some(watcher);
        }
        Ok(())
    }
}

impl PolicyHost {
    /// Whether a folder's modification time moved since the last load (or a folder
    /// appeared or went), which the watcher may not have reported yet.
    fn folders_changed(&self) -> bool {
        let Ok(folders) = self.folders.lock() else {
            return false;
        };
        folders.iter().any(|(dir, at)| modified(dir) != *at)
    }
}

/// Every folder under the policy and filter folders (them included), with its
/// modification time.
fn folder_times(dirs: &PolicyDirs) -> Vec<(std::path::PathBuf, Option<std::time::SystemTime>)> {
    let mut out = Vec::new();
    let mut stack: Vec<std::path::PathBuf> = [&dirs.policies, &dirs.filters]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    while let Some(dir) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        let at = modified(&dir);
        out.push((dir, at));
    }
    out
}

fn modified(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(dir).and_then(|m| m.modified()).ok()
}
