//! The node's current policy set and its hot reload.
//!
//! Readers take the current set (`Arc`) once per batch, so a batch is judged by one
//! consistent set even while a reload swaps in the next. The watcher debounces editor
//! bursts (write, rename, chmod) into one reload.

use std::sync::{Arc, Mutex, RwLock};

use notify::RecursiveMode;

use super::set::{PolicyDirs, PolicySet};
use crate::events::{EventBus, NodeEvent};

pub struct PolicyHost {
    dirs: PolicyDirs,
    current: RwLock<Arc<PolicySet>>,
    events: EventBus,
    reloads: std::sync::atomic::AtomicU64,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

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
        let set = PolicySet::load(&dirs, None)?;
        let host = PolicyHost {
            dirs,
            current: RwLock::new(Arc::new(PolicySet::empty())),
            events,
            reloads: Default::default(),
            watcher: Mutex::new(None),
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
            watcher: Mutex::new(None),
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
        self.reloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads the folders again and swaps the new set in.
    pub fn reload(&self) -> Arc<PolicySet> {
        let previous = self.current();
        match PolicySet::load(&self.dirs, Some(&previous)) {
            Ok(set) => {
                self.reloads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
        }
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
        let watcher = crate::file_watch::debounced(
            &targets,
            |_| true,
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
