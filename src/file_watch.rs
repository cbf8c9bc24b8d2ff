//! Watching files for changes, debounced: what the hot reload of scripts and of the
//! config file share.
//!
//! Editors write in bursts (a temp file, a rename, a chmod); events are gathered until
//! the watched paths have been quiet for [`DEBOUNCE`], then the reload runs once, on a
//! blocking thread (it reads and compiles files).
//!
//! A quiet watcher does not mean a complete file: a writer that pauses between two
//! chunks longer than [`DEBOUNCE`] leaves half a file behind for a while. A reload that
//! acts on what it reads uses [`read_settled`]: the file must stay the same for
//! [`SETTLE`] before it is believed.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::{RecursiveMode, Watcher};

/// Quiet time after the last file event before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// How long a file must stay unchanged (length, modification time and bytes) before a
/// reload believes it is complete. Longer than [`DEBOUNCE`], so that a writer pausing
/// between two events is still caught here; short enough for a reload to feel prompt.
pub const SETTLE: Duration = Duration::from_millis(500);

/// How long [`read_settled`] waits for a file that keeps changing before giving up.
pub const SETTLE_GIVE_UP: Duration = Duration::from_secs(10);

/// What a file looked like at one moment; a read error is a state too (an editor that
/// deletes and recreates leaves the file missing for a moment).
#[derive(PartialEq)]
enum Snapshot {
    Read {
        len: u64,
        modified: Option<SystemTime>,
        bytes: Vec<u8>,
    },
    Failed(std::io::ErrorKind),
}

impl Snapshot {
    fn take(path: &Path) -> Snapshot {
        let read = || -> std::io::Result<Snapshot> {
            let meta = std::fs::metadata(path)?;
            let bytes = std::fs::read(path)?;
            Ok(Snapshot::Read {
                len: meta.len(),
                modified: meta.modified().ok(),
                bytes,
            })
        };
        read().unwrap_or_else(|e| Snapshot::Failed(e.kind()))
    }
}

/// Reads `path` once it has stopped changing: two reads [`SETTLE`] apart that agree on
/// length, modification time and content. Blocks (call it on a blocking thread).
///
/// It catches a write in progress (a file written in parts, truncated then rewritten);
/// it cannot catch a writer that stops for longer than [`SETTLE`] midway, since the
/// cut file is then stable. Writing a temporary file and renaming it over the old one
/// (what most editors and deployment tools do) never shows a partial file at all.
///
/// # Errors
/// The file cannot be read (missing, unreadable, not UTF-8) once stable, or it was
/// still changing after [`SETTLE_GIVE_UP`].
pub fn read_settled(path: &Path) -> std::io::Result<String> {
    let started = Instant::now();
    let mut before = Snapshot::take(path);
    loop {
        std::thread::sleep(SETTLE);
        let now = Snapshot::take(path);
        if now == before {
            return match now {
                Snapshot::Read { bytes, .. } => String::from_utf8(bytes).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8: {e}"))
                }),
                Snapshot::Failed(kind) => Err(std::io::Error::from(kind)),
            };
        }
        if started.elapsed() > SETTLE_GIVE_UP {
            return Err(std::io::Error::other(format!(
                "still changing after {} s; not read",
                SETTLE_GIVE_UP.as_secs()
            )));
        }
        before = now;
    }
}

/// Watches `targets`; events `relevant` accepts trigger `reload` once things are quiet.
/// `reload` returns `false` when its owner is gone, which ends the watch. Keep the
/// returned watcher alive for as long as the watch should last. Needs a tokio runtime.
///
/// # Errors
/// When the OS watcher cannot be set up or a target cannot be watched.
pub fn debounced(
    targets: &[(&Path, RecursiveMode)],
    relevant: impl Fn(&notify::Event) -> bool + Send + 'static,
    reload: impl Fn() -> bool + Send + Sync + 'static,
) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(event) if !event.kind.is_access() && relevant(&event) => {
                let _ = tx.send(());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "file watcher error"),
        })?;
    for (path, mode) in targets {
        watcher.watch(path, *mode)?;
    }
    let reload = Arc::new(reload);
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            let reload = reload.clone();
            match tokio::task::spawn_blocking(move || reload()).await {
                Ok(true) => {}
                Ok(false) | Err(_) => break,
            }
        }
    });
    Ok(watcher)
}
