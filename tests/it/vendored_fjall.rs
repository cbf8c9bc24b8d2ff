//! The vendored fjall's fix is in the build (vendor/README.md, vendor/fjall.patch).
//!
//! Upstream fjall 3.1.13's worker 0 busy-loops while another worker compacts: it takes
//! the pending compaction request, puts it back on the queue it reads, and takes it again
//! at once. This test holds one compaction open inside a compaction filter that waits,
//! and measures the CPU time fjall's worker threads spend meanwhile. With the fix both
//! workers wait (worker 0 blocked on its queue, worker 1 in the filter) and spend next to
//! nothing; with upstream's loop worker 0 spends whatever share of a core the scheduler
//! gives it, which on a loaded machine is still several times the bound.
//!
//! The measurement runs in a child process of this test binary, so the only fjall
//! workers it sees are its own database's, not those of the tests running beside it.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjall::compaction::filter::{
    CompactionFilter, CompactionFilterResult, Context, Factory, ItemAccessor, Verdict,
};
use fjall::KeyspaceCreateOptions;

/// Set in the child process: run the measurement instead of spawning it.
const CHILD: &str = "RHIZOME_VENDORED_FJALL_CHILD";
/// This test's name as the test harness filters it.
const NAME: &str = "vendored_fjall::worker_0_waits_while_another_worker_compacts";
/// How long the compaction is held open while the workers' CPU time is measured.
const WINDOW: Duration = Duration::from_millis(1500);
/// Flushed tables written over the same keys: overlapping tables cannot be moved down a
/// level, only merged, so a compaction that runs the filter starts well before the last.
const ROUNDS: u32 = 8;
const KEYS: u32 = 100;

#[test]
#[cfg(target_os = "linux")]
fn worker_0_waits_while_another_worker_compacts() {
    if std::env::var_os(CHILD).is_some() {
        measure();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args([NAME, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .expect("run the test binary as a child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the child measuring fjall's workers failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

/// Opens a database with two workers, holds a compaction open, and checks the workers
/// stay idle meanwhile.
fn measure() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let gate = Arc::new(Gate::default());
    let factory: Arc<dyn Factory> = Arc::new(HoldingFactory(gate.clone()));
    let db = fjall::Database::builder(dir.path())
        .worker_threads(2)
        .with_compaction_filter_factories(Arc::new(move |_| Some(factory.clone())))
        .open()
        .expect("open the database");
    let ks = db
        .keyspace("held", KeyspaceCreateOptions::default)
        .expect("open the keyspace");
    for round in 0..ROUNDS {
        for key in 0..KEYS {
            ks.insert(key.to_be_bytes(), round.to_be_bytes())
                .expect("insert");
        }
        ks.rotate_memtable_and_wait().expect("flush");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !gate.entered.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "no compaction reached the filter after {ROUNDS} overlapping flushes"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let before = worker_cpu();
    let start = Instant::now();
    std::thread::sleep(WINDOW);
    let spent = worker_cpu().saturating_sub(before);
    let wall = start.elapsed();
    gate.open.store(true, Ordering::SeqCst);

    assert!(
        spent < wall / 10,
        "fjall's workers spent {spent:?} of CPU in {wall:?} while one compaction waited: \
         worker 0 busy-loops on the compaction request, so vendor/fjall's fix is not in \
         the build (is `[patch.crates-io]` still in Cargo.toml?)"
    );
    drop(ks);
    drop(db);
}

/// Total CPU time (user and system) of this process's threads named `fjall:worker`.
fn worker_cpu() -> Duration {
    // SAFETY: sysconf reads a constant of the system.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks_per_sec = u64::try_from(ticks_per_sec).expect("a positive clock tick rate");
    let mut ticks = 0;
    let mut workers = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("list /proc/self/task") {
        let path = task.expect("a /proc/self/task entry").path();
        // A thread that ended since the listing has no files left: skip it.
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue;
        };
        if comm.trim_end() != "fjall:worker" {
            continue;
        }
        // After the parenthesised name: state is field 3 of stat(5), utime 14, stime 15.
        let fields: Vec<&str> = stat[stat.rfind(')').expect("stat has a name") + 1..]
            .split_whitespace()
            .collect();
        let field = |n: usize| -> u64 { fields[n - 3].parse().expect("a tick count") };
        ticks += field(14) + field(15);
        workers += 1;
    }
    assert_eq!(workers, 2, "expected the database's two fjall workers");
    Duration::from_millis(ticks * 1000 / ticks_per_sec)
}

/// Shared between the test and the filter: whether a compaction reached the filter, and
/// whether the test lets it go on.
#[derive(Default)]
struct Gate {
    entered: AtomicBool,
    open: AtomicBool,
}

/// Makes filters that hold their compaction at its first item until the gate opens.
struct HoldingFactory(Arc<Gate>);

impl Factory for HoldingFactory {
    fn name(&self) -> &str {
        "holding"
    }

    fn make_filter(&self, _: &Context) -> Box<dyn CompactionFilter> {
        Box::new(HoldingFilter(self.0.clone()))
    }
}

struct HoldingFilter(Arc<Gate>);

impl CompactionFilter for HoldingFilter {
    fn filter_item(&mut self, _: ItemAccessor<'_>, _: &Context) -> CompactionFilterResult {
        self.0.entered.store(true, Ordering::SeqCst);
        // Sleeping, not spinning: the worker holding the compaction must cost no CPU.
        while !self.0.open.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Verdict::Keep)
    }
}
