//! How long the node's allocator (mimalloc, the `rhizome` binary's global allocator)
//! keeps freed pages before returning them to the OS, chosen by where the node keeps
//! its deltas. An operator's `MIMALLOC_PURGE_DELAY` always wins.
//!
//! A durable node's memory is a working set (memtables, flush and compaction buffers)
//! that comes and goes: with mimalloc v3's default of 1000 ms every such buffer stays
//! resident through a long sync, so a durable node returns freed pages after 10 ms
//! (mimalloc v2's default), paying a little CPU for a lower peak. A node in memory
//! holds every delta it stores anyway: returning freed pages early only makes it fault
//! them in again, so it keeps mimalloc's 1000 ms. The figures behind both choices are in
//! BENCHMARKS.md ("Build and allocator settings").

use rhizome::Storage;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (libmimalloc-sys does not export
/// it; its position in the enum of `c_src/mimalloc/v3/include/mimalloc.h`). The test below
/// fails if an upgrade moves it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Milliseconds a freed page stays committed on a node with a data directory.
const DURABLE_PURGE_DELAY_MS: std::ffi::c_long = 10;
/// ...and on a node in memory: mimalloc v3's own default.
const MEMORY_PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// Sets the purge delay for a node with this storage, unless the operator chose one
/// (`MIMALLOC_PURGE_DELAY`, which mimalloc itself reads at start-up). Call it before
/// the node opens its store. It sets an option of the linked mimalloc, which does
/// nothing when the program's global allocator is another one.
pub fn tune_for(storage: &Storage) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    set_purge_delay(purge_delay_ms(storage));
}

fn purge_delay_ms(storage: &Storage) -> std::ffi::c_long {
    match storage {
        Storage::Memory => MEMORY_PURGE_DELAY_MS,
        Storage::Path(_) => DURABLE_PURGE_DELAY_MS,
    }
}

fn set_purge_delay(ms: std::ffi::c_long) {
    // SAFETY: sets one integer option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge_delay() -> std::ffi::c_long {
        // SAFETY: reads one integer option.
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    // One test, so nothing else in this binary changes the option while it reads it.
    #[test]
    fn purge_delay_is_the_option_we_set_and_follows_the_storage() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // mimalloc v3's purge_delay defaults to 1000 ms, and no other option has that
        // default: reading 1000 at this index proves the index names purge_delay.
        assert_eq!(
            purge_delay(),
            1000,
            "MI_OPTION_PURGE_DELAY no longer names purge_delay"
        );
        tune_for(&Storage::Path("data".into()));
        assert_eq!(purge_delay(), DURABLE_PURGE_DELAY_MS);
        tune_for(&Storage::Memory);
        assert_eq!(purge_delay(), MEMORY_PURGE_DELAY_MS);
    }
}
