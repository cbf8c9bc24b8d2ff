//! The file-descriptor limit, and the connection cap kept below it.
//!
//! A socket is a descriptor. When sockets take the last descriptors, `accept` fails with
//! EMFILE, and so do the store's file opens and the links this node dials: the node stops
//! answering anything. So the soft `RLIMIT_NOFILE` is raised to the hard limit at start,
//! and the sockets the port may hold are capped below it with room for everything else.

/// Descriptors kept out of the cap for the store's files, links this node dials, config
/// and script reloads, logs: at least this many, or a tenth of the limit if more.
const MIN_HEADROOM: u64 = 256;

/// The derived cap never exceeds this: each held connection costs memory (buffers, a
/// task), and a node with a million descriptors should not hold a million idle sockets.
/// `maxSockets` cannot go above the derived cap either (it can only lower it).
pub const DERIVED_CEILING: usize = 16_384;

/// Connections over the cap that may still be accepted, each to answer one `/status`,
/// `/health` or `/metrics` (anything else gets a 503) within a short timeout.
pub const RESERVE: usize = 32;

/// Raises the soft descriptor limit to the hard one; the soft limit then in force.
///
/// # Errors
/// When the limit cannot be read. Failing to raise it is not an error: the current
/// limit is returned, and the cap is derived from it.
#[cfg(unix)]
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        } else {
            // macOS refuses an unlimited hard limit above its per-process maximum.
            tracing::debug!(
                soft = lim.rlim_cur,
                hard = lim.rlim_max,
                error = %std::io::Error::last_os_error(),
                "cannot raise the descriptor limit"
            );
        }
    }
    #[allow(clippy::unnecessary_cast)] // `rlim_t` is not `u64` on every target
    Ok(lim.rlim_cur as u64)
}

/// Without rlimits, assume a conventional limit.
#[cfg(not(unix))]
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    Ok(8192)
}

/// Sockets the port may hold with `fd_limit` descriptors, lowered to `configured` if set.
pub fn connection_cap(fd_limit: u64, configured: Option<usize>) -> usize {
    let headroom = MIN_HEADROOM.max(fd_limit / 10) + RESERVE as u64;
    let derived = usize::try_from(fd_limit.saturating_sub(headroom))
        .unwrap_or(usize::MAX)
        .clamp(1, DERIVED_CEILING);
    match configured {
        Some(n) if n > derived => {
            tracing::warn!(
                configured = n,
                cap = derived,
                fd_limit,
                "maxSockets is above what the descriptor limit allows; using the lower cap"
            );
            derived
        }
        Some(n) => n.max(1),
        None => derived,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_headroom_below_the_descriptor_limit() {
        assert_eq!(connection_cap(1024, None), 1024 - 256 - 32);
        assert_eq!(connection_cap(20_000, None), 16_384);
        assert_eq!(connection_cap(5_000, None), 5_000 - 500 - 32);
        assert_eq!(connection_cap(1 << 20, None), DERIVED_CEILING);
        assert_eq!(connection_cap(100, None), 1);
    }

    #[test]
    fn a_configured_cap_can_only_lower_it() {
        assert_eq!(connection_cap(20_000, Some(40)), 40);
        assert_eq!(connection_cap(1024, Some(5000)), 1024 - 256 - 32);
        assert_eq!(connection_cap(1024, Some(0)), 1);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let soft = raise_nofile_limit().unwrap();
        #[cfg(unix)]
        {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
            #[allow(clippy::unnecessary_cast)]
            let current = lim.rlim_cur as u64;
            assert_eq!(soft, current);
            #[cfg(target_os = "linux")]
            assert_eq!(lim.rlim_cur, lim.rlim_max, "the soft limit is the hard one");
        }
        assert!(soft > 0);
    }
}
