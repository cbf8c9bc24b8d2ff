//! The config file's links on a running node, and the file's hot reload.
//!
//! Links are matched by name: a link whose table is unchanged is left alone (its
//! connection is not touched), a removed one is disconnected, a new one is opened, a
//! changed one is reopened with the new settings. Its name keys its resume cursor, so a
//! reopened or restarted link continues where it was. `[trust]`, `[[peer]]`,
//! `[retention]` and `scriptTimeoutMs` apply live too; other settings wait for a restart.
//!
//! A reload acts only on a complete file: it waits until the file has stopped changing
//! (`file_watch::read_settled`) and applies exactly the text it checked, and it
//! refuses a file with no settings at all (empty, or only comments), which is what an
//! editor's save in progress looks like, rather than close every link.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::RecursiveMode;

use super::{LinkEntry, NodeFile};
use crate::admission::{AuthorEntry, AuthorTable, PeerEntry, PeerTable, SignaturePolicy};
use crate::events::NodeEvent;
use crate::federation::{Federation, FederationLink};
use crate::node::Node;
use crate::policy::engine::DEFAULT_TIME_BUDGET;

/// How long a burst of edits to the file is gathered before one reload.
pub const RELOAD_DEBOUNCE: std::time::Duration = crate::file_watch::DEBOUNCE;
/// How long the file must stay unchanged (and non-empty) before its text is applied.
pub const RELOAD_SETTLE: std::time::Duration = crate::file_watch::SETTLE;

pub struct ConfigLinks {
    fed: Federation,
    path: PathBuf,
    state: Mutex<State>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

struct State {
    /// The file the node started with has been applied.
    started: bool,
    file: NodeFile,
    links: BTreeMap<String, (LinkEntry, FederationLink)>,
}

impl ConfigLinks {
    fn node(&self) -> &Node {
        self.fed.node()
    }

    /// Opens the file's links and watches `path` for changes.
    ///
    /// # Errors
    /// When the file's directory cannot be watched.
    pub fn start(fed: Federation, path: &Path, file: NodeFile) -> notify::Result<Arc<ConfigLinks>> {
        let this = Arc::new(ConfigLinks {
            fed,
            path: path.to_owned(),
            state: Mutex::new(State {
                started: false,
                file: NodeFile::default(),
                links: BTreeMap::new(),
            }),
            watcher: Mutex::new(None),
        });
        this.apply(file);
        this.watch()?;
        Ok(this)
    }

    /// The links the file opened, by name.
    pub fn links(&self) -> Vec<FederationLink> {
        self.state
            .lock()
            .map(|s| s.links.values().map(|(_, l)| l.clone()).collect())
            .unwrap_or_default()
    }

    /// Reads the file again once it is stable; a broken or empty file is refused (a
    /// `config:error` event and a log line) and the running config stays.
    pub fn reload(&self) {
        let text = match crate::file_watch::read_settled(&self.path) {
            Ok(text) => text,
            Err(e) => return self.refuse(&format!("{}: cannot read: {e}", self.path.display())),
        };
        if has_no_settings(&text) {
            return self.refuse(&format!(
                "{}: the file has no settings (empty, or only comments): a save in progress? \
                 To close every link on purpose, keep a setting such as `link = []`",
                self.path.display()
            ));
        }
        match NodeFile::from_text(&self.path, &text) {
            Ok(file) => self.apply(file),
            Err(e) => self.refuse(&e.to_string()),
        }
    }

    fn refuse(&self, message: &str) {
        tracing::error!(error = %message, "config reload refused; the running config stays");
        self.node().emit(NodeEvent::ConfigError {
            message: message.to_owned(),
        });
    }

    fn apply(&self, file: NodeFile) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let old = &state.file;
        let restart_only = [
            ("systemId", old.system_id != file.system_id),
            ("listen", old.listen != file.listen),
            ("data", old.data != file.data),
            ("storage", old.storage != file.storage),
            ("durability", old.durability != file.durability),
            ("policies", old.policies != file.policies),
            ("filters", old.filters != file.filters),
            ("server", old.server != file.server),
            ("signingKey", old.signing_key != file.signing_key),
        ];
        let first = !state.started;
        if !first {
            for (key, changed) in restart_only {
                if changed {
                    tracing::warn!(
                        key,
                        "config changed; this setting takes effect at the next restart"
                    );
                }
            }
        }
        // The node started with the file's peers and authors; later edits replace them,
        // keeping those added over the API. A clash (a name, key or token taken by one of
        // those) refuses the whole file, before anything of it applies.
        let peers_changed = !first && old.peers != file.peers;
        let authors_changed = !first && old.authors != file.authors;
        let checked = refile(&*self.node().peers(), &old.peers, &file.peers)
            .map_err(|e| format!("peer: {e}"))
            .and_then(|_| {
                refile(&*self.node().authors(), &old.authors, &file.authors)
                    .map_err(|e| format!("author: {e}"))
            });
        if let (Err(e), true) = (checked, peers_changed || authors_changed) {
            drop(state);
            self.refuse(&e);
            return;
        }
        if peers_changed {
            let swapped = self
                .node()
                .update_peers(|table| refile(table, &old.peers, &file.peers));
            if let Err(e) = swapped {
                tracing::error!(error = %e, "config peers not reloaded");
            }
            // A peer removed or changed is judged afresh: the links it opened are closed.
            let mut closed = 0;
            for gone in old.peers.iter().filter(|p| !file.peers.contains(p)) {
                closed += self.fed.close_links_of_peer(&gone.name);
            }
            tracing::info!(
                peers = file.peers.len(),
                links_closed = closed,
                "config peers reloaded"
            );
        }
        if authors_changed {
            let swapped = self
                .node()
                .update_authors(|table| refile(table, &old.authors, &file.authors));
            match swapped {
                Ok(()) => tracing::info!(authors = file.authors.len(), "config authors reloaded"),
                Err(e) => tracing::error!(error = %e, "config authors not reloaded"),
            }
        }
        if old.trust != file.trust {
            self.node().set_trust_policy(file.trust.clone());
        }
        if !first && old.signatures != file.signatures {
            match SignaturePolicy::new(file.signatures.clone()) {
                Ok(policy) => self.node().set_signature_policy(policy),
                Err(e) => {
                    drop(state);
                    self.refuse(&e);
                    return;
                }
            }
        }
        if first || old.retention != file.retention {
            self.node().set_retention(file.retention.clone());
        }
        if first || old.script_timeout_ms != file.script_timeout_ms {
            self.node().policies().set_time_budget(
                file.script_timeout_ms
                    .map_or(DEFAULT_TIME_BUDGET, std::time::Duration::from_millis),
            );
        }
        let wanted: BTreeMap<String, LinkEntry> = file
            .links
            .iter()
            .map(|l| (l.name.clone(), l.clone()))
            .collect();
        let (mut added, mut removed) = (0, 0);
        // Links closed because their table changed: reopened below, counted as changed.
        let mut reopened = std::collections::BTreeSet::new();
        let current: Vec<String> = state.links.keys().cloned().collect();
        for name in current {
            let keep = wanted
                .get(&name)
                .is_some_and(|w| state.links.get(&name).is_some_and(|(e, _)| e == w));
            if !keep {
                if let Some((_, link)) = state.links.remove(&name) {
                    link.disconnect();
                    if wanted.contains_key(&name) {
                        reopened.insert(name);
                    } else {
                        removed += 1;
                    }
                }
            }
        }
        for (name, entry) in wanted {
            if state.links.contains_key(&name) {
                continue;
            }
            match self.fed.connect_to_remote(&entry.url, entry.config.clone()) {
                Ok(link) => {
                    tracing::info!(link = %name, url = %entry.url, "config link opened");
                    if !reopened.contains(&name) {
                        added += 1;
                    }
                    state.links.insert(name, (entry, link));
                }
                Err(e) => tracing::error!(link = %name, error = %e, "config link not opened"),
            }
        }
        let changed = reopened.len();
        state.file = file;
        state.started = true;
        if !first {
            tracing::info!(added, removed, changed, "config reloaded");
        }
        self.node().emit(NodeEvent::ConfigReloaded {
            links: state.links.len(),
            added,
            removed,
            changed,
        });
    }

    fn watch(self: &Arc<Self>) -> notify::Result<()> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = self.path.file_name().map(|n| n.to_owned());
        // Editors replace files (write a temp, rename): watch the folder, keep events
        // about our file.
        let this = Arc::downgrade(self);
        let watcher = crate::file_watch::debounced(
            &[(dir, RecursiveMode::NonRecursive)],
            move |event| event.paths.iter().any(|p| p.file_name() == name.as_deref()),
            move || match this.upgrade() {
                Some(this) => {
                    this.reload();
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

/// Whether `text` holds no TOML setting at all: only blank lines and comments.
fn has_no_settings(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#')
    })
}

/// A table of entries that come from the file and from the API (peers, authors).
trait Entries: Sized {
    type Entry: Clone + PartialEq;
    fn name(entry: &Self::Entry) -> &str;
    fn without(&self, name: &str) -> Option<Self>;
    fn with(&self, entry: Self::Entry) -> Result<Self, String>;
}

impl Entries for PeerTable {
    type Entry = PeerEntry;
    fn name(entry: &PeerEntry) -> &str {
        &entry.name
    }
    fn without(&self, name: &str) -> Option<Self> {
        PeerTable::without(self, name)
    }
    fn with(&self, entry: PeerEntry) -> Result<Self, String> {
        PeerTable::with(self, entry)
    }
}

impl Entries for AuthorTable {
    type Entry = AuthorEntry;
    fn name(entry: &AuthorEntry) -> &str {
        &entry.name
    }
    fn without(&self, name: &str) -> Option<Self> {
        AuthorTable::without(self, name)
    }
    fn with(&self, entry: AuthorEntry) -> Result<Self, String> {
        AuthorTable::with(self, entry)
    }
}

/// `table` with the file's `old` entries replaced by its `new` ones; the others (added
/// over the API) stay.
fn refile<T: Entries + Clone>(table: &T, old: &[T::Entry], new: &[T::Entry]) -> Result<T, String> {
    let mut next = table.clone();
    for gone in old {
        next = next.without(T::name(gone)).unwrap_or(next);
    }
    for entry in new {
        next = next.with(entry.clone())?;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::has_no_settings;

    #[test]
    fn a_file_of_blanks_and_comments_has_no_settings() {
        assert!(has_no_settings(""));
        assert!(has_no_settings(" \n\t\r\n"));
        assert!(has_no_settings("# links\n  # none yet\n"));
        assert!(!has_no_settings("link = []"));
        assert!(!has_no_settings("# c\n[[link]]\n"));
    }
}
