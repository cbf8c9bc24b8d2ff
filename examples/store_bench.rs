//! Store append throughput, durable (fsync per group commit) and buffered, at batch sizes
//! 1 / 100 / 1000, plus concurrent single-delta writers to show group commit at work.
//!
//! `cargo run --release --example store_bench [-- TOTAL]`
//!
//! Prints deltas per second for each configuration and each figure as a ratio to the
//! durable batch-1000 run measured in the same process.

use std::time::Instant;

use rhizome::delta::{new_delta, Pointer, Target};
use rhizome::store::{Durability, NewEntry, SideWrites, Store};

fn entries(n: usize, tag: &str) -> Vec<NewEntry> {
    (0..n)
        .map(|i| NewEntry {
            delta: new_delta(
                format!("author-{}", i % 16),
                "bench-system",
                vec![
                    Pointer::new(
                        "item",
                        Target::reference_in(format!("{tag}-item-{}", i % 1000), "items"),
                    ),
                    Pointer::new("n", (i as i64).into()),
                    Pointer::new("text", "a realistic short text value".into()),
                ],
            ),
            origin: None,
        })
        .collect()
}

fn run(durability: Durability, batch: usize, total: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(dir.path(), durability).expect("open store");
    let data = entries(total, &format!("{durability:?}{batch}"));
    let start = Instant::now();
    for chunk in data.chunks(batch) {
        store
            .append(chunk.to_vec(), SideWrites::default())
            .and_then(|pending| pending.durable_blocking())
            .expect("append");
    }
    let secs = start.elapsed().as_secs_f64();
    store.close();
    total as f64 / secs
}

/// `writers` threads each appending one delta at a time: the writer groups them.
fn run_concurrent(writers: usize, total: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(dir.path(), Durability::Sync).expect("open store");
    let per = total / writers;
    let start = Instant::now();
    std::thread::scope(|s| {
        for w in 0..writers {
            let store = store.clone();
            s.spawn(move || {
                for e in entries(per, &format!("w{w}")) {
                    store
                        .append(vec![e], SideWrites::default())
                        .and_then(|pending| pending.durable_blocking())
                        .expect("append");
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    store.close();
    (per * writers) as f64 / secs
}

fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    println!(
        "store append throughput, {total} deltas per run (batch 1: {} deltas)",
        total / 20
    );
    println!("{:<34} {:>14} {:>10}", "configuration", "deltas/s", "ratio");
    let mut rows = Vec::new();
    for durability in [Durability::Sync, Durability::Buffered] {
        for batch in [1usize, 100, 1000] {
            // One fsync per delta is slow by design; a smaller run gives the same rate.
            let n = if batch == 1 { total / 20 } else { total };
            rows.push((
                format!("{durability:?}, batch {batch}"),
                run(durability, batch, n),
            ));
        }
    }
    rows.push((
        "Sync, 32 writers x batch 1".to_owned(),
        run_concurrent(32, total / 10),
    ));
    let reference = rows
        .iter()
        .find(|(name, _)| name == "Sync, batch 1000")
        .map(|r| r.1)
        .unwrap_or(1.0);
    for (name, rate) in &rows {
        println!("{name:<34} {rate:>14.0} {:>9.2}x", rate / reference);
    }
    println!("(ratio: to the durable batch-1000 run above)");
}
