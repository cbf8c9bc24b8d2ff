//! Issue 14, finding 6: a node whose disk fills up refuses writes without acknowledging
//! any, says so (`/health/ready`, `/status`, `/metrics`), and takes writes again by
//! itself once space is back, without a restart and without losing an acknowledged delta.
//!
//! Two ways to fill the disk: a write fault injected in the store (always runs), and a
//! real full filesystem on a small tmpfs (runs where this process may mount one).

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use rhizome::Server;
use rhizome::{NodeConfig, Storage};

async fn start_on(dir: &Path) -> Server {
    common::start_node_with(NodeConfig {
        storage: Storage::Path(dir.to_path_buf()),
        system_id: Some("faulty".into()),
        ..Default::default()
    })
    .await
}

fn delta(id: &str) -> Value {
    common::delta_json(id, "alice", "faulty")
}

async fn post_delta(base: &str, id: &str) -> (StatusCode, Value) {
    let res = reqwest::Client::new()
        .post(format!("{base}/deltas"))
        .json(&delta(id))
        .send()
        .await
        .expect("request");
    let status = res.status();
    (status, res.json().await.expect("a JSON body"))
}

async fn get(url: &str) -> (StatusCode, String) {
    let res = reqwest::get(url).await.expect("request");
    let status = res.status();
    (status, res.text().await.expect("body"))
}

async fn ready(base: &str) -> StatusCode {
    get(&format!("{base}/health/ready")).await.0
}

/// Waits for `/health/ready` to answer `want`, with no write sent meanwhile.
async fn wait_ready(base: &str, want: StatusCode, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if ready(base).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// What every scenario checks while the disk is full: the failed write was not
/// acknowledged, and every way of asking says the store cannot write.
async fn assert_reports_unwritable(base: &str, failed: (StatusCode, Value)) {
    let (status, body) = failed;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"], "STORAGE_ERROR", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("safe to retry"),
        "{body}"
    );

    assert!(
        wait_ready(
            base,
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(5)
        )
        .await
    );
    let (_, text) = get(&format!("{base}/health/ready")).await;
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["status"], "unready", "{answer}");
    assert!(
        answer["reason"].as_str().unwrap().contains("cannot write"),
        "{answer}"
    );
    assert_eq!(get(&format!("{base}/health/live")).await.0, StatusCode::OK);
    let (status, text) = get(&format!("{base}/health")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");

    let (_, text) = get(&format!("{base}/status")).await;
    let status: Value = serde_json::from_str(&text).unwrap();
    let storage = &status["store"]["storage"];
    assert_eq!(storage["writable"], false, "{storage}");
    assert!(storage["lastError"].is_string(), "{storage}");
    assert!(storage["unwritableSinceMs"].is_u64(), "{storage}");

    let (_, metrics) = get(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains("\nrhizome_storage_writable 0\n"),
        "{metrics}"
    );

    // Later writes are refused at once, with the reason, and acknowledge nothing.
    let (status, body) = post_delta(base, "refused-meanwhile").await;
    assert!(status.is_server_error(), "{status} {body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("STORAGE_"),
        "{body}"
    );
}

/// After the cause is gone: ready again by itself, the refused writes (`resend`) go in
/// when sent again, and everything acknowledged is there, also after a restart.
async fn assert_recovers(
    server: Server,
    dir: &Path,
    mut acknowledged: BTreeSet<String>,
    resend: &[&str],
) {
    let base = server.url();
    assert!(
        wait_ready(&base, StatusCode::OK, Duration::from_secs(15)).await,
        "the node did not become ready by itself"
    );
    let (_, metrics) = get(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains("\nrhizome_storage_writable 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nrhizome_storage_recoveries_total 1\n"),
        "{metrics}"
    );
    let (_, text) = get(&format!("{base}/status")).await;
    let status: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status["store"]["storage"]["writable"], true, "{status}");

    // The refused writes, sent again: stored (or found stored, had a failed group been
    // recovered from the journal), never lost and never twice.
    for id in resend.iter().chain(&["refused-meanwhile"]) {
        let (status, body) = post_delta(&base, id).await;
        assert!(
            matches!(body["status"].as_str(), Some("stored" | "duplicate")),
            "{status} {body}"
        );
        acknowledged.insert((*id).to_owned());
    }
    let (status, body) = post_delta(&base, "after-recovery").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    acknowledged.insert("after-recovery".to_owned());

    let held = common::ids(server.node());
    for id in acknowledged.iter() {
        assert!(held.contains(id), "{id} is missing");
    }
    assert_eq!(server.node().store().head().0 as usize, held.len());
    server.shutdown().await.unwrap();

    let again = start_on(dir).await;
    let held = common::ids(again.node());
    for id in acknowledged.iter() {
        assert!(held.contains(id), "{id} is missing after a restart");
    }
    assert_eq!(held.len(), acknowledged.len(), "{held:?}");
    again.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_write_fault_is_reported_and_the_node_recovers_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_on(dir.path()).await;
    let base = server.url();
    let mut acknowledged = BTreeSet::new();
    for i in 0..20 {
        let id = format!("before-{i}");
        assert_eq!(post_delta(&base, &id).await.0, StatusCode::CREATED);
        acknowledged.insert(id);
    }
    assert_eq!(ready(&base).await, StatusCode::OK);

    server.node().store().inject_write_faults(true);
    let failed = post_delta(&base, "failed-write").await;
    assert_reports_unwritable(&base, failed).await;
    // Reads go on while writes cannot.
    assert_eq!(
        get(&format!("{base}/deltas/before-3")).await.0,
        StatusCode::OK
    );
    // Still unwritable while the cause lasts, through several recovery attempts.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(ready(&base).await, StatusCode::SERVICE_UNAVAILABLE);

    server.node().store().inject_write_faults(false);
    assert_recovers(server, dir.path(), acknowledged, &["failed-write"]).await;
}

/// A tmpfs of a few MiB mounted for the test, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` where this process may not mount (no root, no `mount`, a container).
    fn mount(mib: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the filesystem holding `dir` with one file, until it is full.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![1u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.write_all(&[1u8; 1024]);
    while f.write_all(&[1u8]).is_ok() {}
    path
}

#[tokio::test]
async fn a_full_filesystem_is_reported_and_the_node_recovers_when_space_is_back() {
    let Some(disk) = SmallDisk::mount(16) else {
        eprintln!("skipped: cannot mount a tmpfs here (the fault-injection test still runs)");
        return;
    };
    let data = disk.path().join("data");
    let server = start_on(&data).await;
    let base = server.url();
    let mut acknowledged = BTreeSet::new();
    for i in 0..20 {
        let id = format!("before-{i}");
        assert_eq!(post_delta(&base, &id).await.0, StatusCode::CREATED);
        acknowledged.insert(id);
    }

    let filler = fill(&disk.path());
    // The journal may have a little room of its own: write until the disk says no.
    let mut failed = None;
    for i in 0..5000 {
        let id = format!("filling-{i}");
        let (status, body) = post_delta(&base, &id).await;
        if status.is_server_error() {
            failed = Some((status, body, id));
            break;
        }
        acknowledged.insert(id);
    }
    let (status, body, failed_id) = failed.expect("a write failed on the full disk");
    assert_reports_unwritable(&base, (status, body)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ready(&base).await, StatusCode::SERVICE_UNAVAILABLE);

    std::fs::remove_file(filler).unwrap();
    assert_recovers(server, &data, acknowledged, &[failed_id.as_str()]).await;
}
