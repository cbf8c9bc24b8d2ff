//! The accept loop: every socket gets a place under the cap, a place in the small
//! reserve above it, or is closed at once; accept errors never make it spin.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use super::connection::{self, Place, Shared};
use super::socket::Slot;

/// How long to wait after an accept error that says the process or system is out of
/// something (descriptors, memory) before trying again: the backlog waits in the kernel.
const EXHAUSTED_BACKOFF: Duration = Duration::from_millis(100);

/// At most one warning per kind of trouble in this interval; the rest are counted.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The places connections take.
pub(super) struct Places {
    under_cap: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
}

impl Places {
    pub(super) fn new(cap: usize, reserve: usize) -> Places {
        Places {
            under_cap: Arc::new(Semaphore::new(cap)),
            reserve: Arc::new(Semaphore::new(reserve)),
        }
    }
}

/// A warning logged at most once per [`LOG_INTERVAL`], with how many were held back.
struct Throttled {
    last: Option<Instant>,
    held_back: u64,
}

impl Throttled {
    fn new() -> Throttled {
        Throttled {
            last: None,
            held_back: 0,
        }
    }

    /// Whether to log now; if so, how many were held back since the last one.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < LOG_INTERVAL => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

/// Accepts until `stop` turns true. Each connection task holds a clone of `tasks`, so
/// the receiver learns when the last one has ended.
pub(super) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    places: Places,
    mut stop: watch::Receiver<bool>,
    tasks: mpsc::Sender<()>,
) {
    let mut accept_errors = Throttled::new();
    let mut at_cap = Throttled::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = async { let _ = stop.wait_for(|s| *s).await; } => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                shared.stats.accept_error();
                let exhausted = is_exhausted(&e);
                if let Some(held_back) = accept_errors.due() {
                    tracing::warn!(error = %e, held_back, "accept error");
                }
                if exhausted {
                    tokio::time::sleep(EXHAUSTED_BACKOFF).await;
                }
                continue;
            }
        };
        let place = match places.under_cap.clone().try_acquire_owned() {
            Ok(permit) => Some((permit, Place::UnderCap)),
            Err(_) => {
                if let Some(held_back) = at_cap.due() {
                    tracing::warn!(
                        cap = shared.cap,
                        held_back,
                        "at the connection cap: new connections may only ask for /status, /health or /metrics"
                    );
                }
                places
                    .reserve
                    .clone()
                    .try_acquire_owned()
                    .ok()
                    .map(|p| (p, Place::Reserve))
            }
        };
        let Some((permit, place)) = place else {
            // The reserve is full too: closing the socket is the only answer left.
            shared.stats.refused();
            drop(stream);
            continue;
        };
        let slot = Slot::new(permit, shared.stats.clone());
        let task = tasks.clone();
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            connection::serve(shared, stream, peer, slot, place, stop).await;
            drop(task);
        });
    }
}

/// Errors after which accepting again at once would fail the same way.
fn is_exhausted(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    if let Some(code) = e.raw_os_error() {
        return matches!(
            code,
            libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
        );
    }
    // Anything we cannot classify: a short pause costs little and cannot spin.
    !matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_is_logged_once_per_interval_and_counts_the_rest() {
        let mut t = Throttled::new();
        assert_eq!(t.due(), Some(0));
        assert_eq!(t.due(), None);
        assert_eq!(t.due(), None);
        t.last = Some(Instant::now() - LOG_INTERVAL);
        assert_eq!(t.due(), Some(2), "the two held back are reported");
        assert_eq!(t.due(), None);
    }

    #[cfg(unix)]
    #[test]
    fn running_out_of_descriptors_backs_off_a_reset_does_not() {
        assert!(is_exhausted(&std::io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(is_exhausted(&std::io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(!is_exhausted(&std::io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }
}
