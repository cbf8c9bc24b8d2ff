//! Watching files for changes, debounced: what the hot reload of scripts and of the
//! config file share.
//!
//! Editors write in bursts (a temp file, a rename, a chmod); events are gathered until
//! the watched paths have been quiet for [`DEBOUNCE`], then the reload runs once, on a
//! blocking thread (it reads and compiles files).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

/// Quiet time after the last file event before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

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
