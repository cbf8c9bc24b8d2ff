//! Retention by size under a load: appends TOTAL deltas in batches of 1000 to a durable
//! store and runs an archival pass with `maxBytes = BOUND` every EVERY deltas (what the
//! node's retention task does every `interval`), then prints the store's bytes on disk
//! before and after each pass, the archive's size and the throughput.
//!
//! `cargo run --release --example retention_bench [-- TOTAL BOUND_MIB EVERY]`
//! (defaults: 1000000 64 50000). Data goes to a temporary directory, removed at the end.

use std::time::Instant;

use rhizome::delta::{new_delta, Pointer, Target};
use rhizome::store::{ArchiveRule, Durability, NewEntry, SideWrites, Store};

fn entries(from: usize, n: usize) -> Vec<NewEntry> {
    (from..from + n)
        .map(|i| NewEntry {
            delta: new_delta(
                format!("author-{}", i % 16),
                "bench-system",
                vec![
                    Pointer::new(
                        "item",
                        Target::reference_in(format!("item-{}", i % 1000), "items"),
                    ),
                    Pointer::new("n", (i as i64).into()),
                    Pointer::new("text", "a realistic short text value".into()),
                ],
            ),
            origin: None,
        })
        .collect()
}

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let total = arg(1, 1_000_000) as usize;
    let bound = arg(2, 64) * 1024 * 1024;
    let every = arg(3, 50_000) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(dir.path(), Durability::Sync).expect("open store");
    let rule = ArchiveRule {
        max_bytes: Some(bound),
        ..ArchiveRule::default()
    };
    println!(
        "retention by size: {total} deltas, bound {:.0} MiB, a pass every {every} deltas",
        mib(bound)
    );
    println!("| appended | before pass (MiB) | after pass (MiB) | archived | pass (ms) |");
    println!("|---|---|---|---|---|");
    let start = Instant::now();
    let mut archive_ms = 0u64;
    let (mut peak_before, mut peak_after, mut passes) = (0u64, 0u64, 0u64);
    let mut appended = 0usize;
    while appended < total {
        let n = 1000.min(total - appended);
        store
            .append(entries(appended, n), SideWrites::default())
            .and_then(|pending| pending.durable_blocking())
            .expect("append");
        appended += n;
        if appended.is_multiple_of(every) || appended == total {
            let report = store.archive(&rule).expect("archive");
            passes += 1;
            archive_ms += report.took_ms;
            peak_before = peak_before.max(report.store_bytes_before);
            peak_after = peak_after.max(report.store_bytes_after);
            println!(
                "| {appended} | {:.1} | {:.1} | {} | {} |",
                mib(report.store_bytes_before),
                mib(report.store_bytes_after),
                report.archived,
                report.took_ms
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = store.archive_stats().expect("stats");
    println!();
    println!(
        "{passes} passes; store after every pass <= {:.1} MiB (bound {:.0} MiB), highest before a pass {:.1} MiB",
        mib(peak_after),
        mib(bound),
        mib(peak_before)
    );
    println!(
        "archived {} deltas into {:.1} MiB of archive files; {} live",
        stats.count,
        mib(store.archive_bytes()),
        store.head().0 - stats.count
    );
    println!(
        "{:.0} deltas/s overall ({:.1} s, of which archival {:.1} s)",
        total as f64 / secs,
        secs,
        archive_ms as f64 / 1000.0
    );
    assert!(peak_after <= bound, "the store stayed over its bound");
    store.close();
}
