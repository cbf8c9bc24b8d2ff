//! Retention and archival: old deltas leave the live store for archive files, queries
//! say so and can read them back, a peer cannot bring them back, and a size bound holds
//! during a load.

use std::io::BufRead;
use std::time::Duration;

use rhizome::{LinkConfig, LinkStatus, Node, NodeConfig, RetentionSettings, Storage};
use serde_json::{json, Value};

use crate::common::{self, wait_for, wait_status, RawPeer};

const T: Duration = Duration::from_secs(20);
/// 2020-09-13, months before anything a test authors now.
const OLD: u64 = 1_600_000_000_000;

async fn node_on_disk(dir: &std::path::Path, system_id: &str) -> rhizome::Server {
    common::start_node_with(NodeConfig {
        storage: Storage::Path(dir.to_owned()),
        system_id: Some(system_id.into()),
        durability: Some(rhizome::store::Durability::Buffered),
        ..NodeConfig::default()
    })
    .await
}

fn delta(id: &str, timestamp: u64, author: &str) -> Value {
    json!({"id": id, "timestamp": timestamp, "author": author, "system": "sys-a",
        "pointers": [{"role": "about", "target": {"id": "topic", "context": "notes"}},
                     {"role": "n", "target": id}]})
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn post(base: &str, path: &str, body: &Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

async fn get(base: &str, path: &str) -> Value {
    reqwest::get(format!("{base}{path}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn ids_of(answer: &Value) -> Vec<String> {
    answer["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

fn max_age(age: &str) -> RetentionSettings {
    RetentionSettings {
        max_age: Some(age.into()),
        ..RetentionSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_deltas_move_to_archive_files_and_include_archive_brings_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = node_on_disk(dir.path(), "keeper").await;
    let base = server.url();
    let old: Vec<Value> = (0..20)
        .map(|i| {
            delta(
                &format!("old-{i:02}"),
                OLD + i,
                if i % 2 == 0 { "alice" } else { "bob" },
            )
        })
        .collect();
    let new: Vec<Value> = (0..5)
        .map(|i| delta(&format!("new-{i}"), now_ms() + i, "alice"))
        .collect();
    post(&base, "/deltas", &json!(old)).await;
    post(&base, "/deltas", &json!(new)).await;

    server.node().set_retention(max_age("30d"));
    let ran = post(&base, "/archive", &json!({})).await;
    assert_eq!(ran["report"]["archived"], 20, "{ran}");
    assert_eq!(ran["report"]["parts"][0], "2020-09.000000000001.jsonl.gz");

    // The archive file holds each delta's stored JSON, one per line.
    let part = dir.path().join("archive/2020-09.000000000001.jsonl.gz");
    let lines: Vec<String> = std::io::BufReader::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&part).unwrap(),
    ))
    .lines()
    .map(Result::unwrap)
    .collect();
    assert_eq!(lines.len(), 20);
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first, old[0]);

    // Out of queries, and the answer says it may be incomplete.
    let live = get(&base, "/deltas").await;
    assert_eq!(ids_of(&live).len(), 5, "{live}");
    assert_eq!(live["mayBeIncomplete"], true);
    assert_eq!(live["archived"]["deltas"], 20);
    assert_eq!(live["archived"]["oldest"], OLD);
    // A range after the archive's is complete and says nothing.
    let recent = post(
        &base,
        "/query",
        &json!({"filter": {"timestampRange": {"start": OLD + 1_000}}}),
    )
    .await;
    assert_eq!(ids_of(&recent).len(), 5);
    assert!(recent.get("mayBeIncomplete").is_none(), "{recent}");

    // includeArchive reads them back, after the live ones, with the filter applied.
    let all = get(&base, "/deltas?include_archive=true").await;
    let ids = ids_of(&all);
    assert_eq!(ids.len(), 25);
    assert!(ids[..5].iter().all(|id| id.starts_with("new-")), "{ids:?}");
    assert_eq!(all["mayBeIncomplete"], false);
    assert_eq!(all["archived"]["returned"], 20);
    let bobs = post(
        &base,
        "/query",
        &json!({"filter": {"authors": ["bob"]}, "includeArchive": true}),
    )
    .await;
    assert_eq!(ids_of(&bobs).len(), 10, "{bobs}");
    let gone = get(&base, "/deltas/old-03").await;
    assert_eq!(gone["error"], "ARCHIVED", "{gone}");
    let by_id = post(
        &base,
        "/query",
        &json!({"filter": {"ids": ["old-03"]}, "includeArchive": true}),
    )
    .await;
    assert_eq!(ids_of(&by_id), vec!["old-03".to_owned()], "{by_id}");

    // The CLI passes it on, and says when an answer may be incomplete.
    let node_url = base.clone();
    let (live, all) = tokio::task::spawn_blocking(move || {
        let query = |extra: &[&str]| {
            common::cli::run(&[&["query", "--node", node_url.as_str()], extra].concat())
        };
        (query(&[]), query(&["--include-archive"]))
    })
    .await
    .unwrap();
    assert_eq!(live.json_lines().len(), 5);
    assert!(live.err.contains("--include-archive"), "{}", live.err);
    assert_eq!(all.json_lines().len(), 25);
    assert!(all.err.is_empty(), "{}", all.err);

    let status = get(&base, "/status").await;
    assert_eq!(status["archive"]["deltas"], 20);
    assert_eq!(status["store"]["deltas"], 5);
    assert!(status["archive"]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(status["archive"]["lastRun"]["report"]["archived"], 20);
    let metrics = common::metrics_text(&base).await;
    assert!(
        metrics.contains("\nrhizome_archived_deltas 20\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nrhizome_archival_last_run_deltas 20\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_resending_an_archived_delta_does_not_bring_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let keeper = node_on_disk(dir.path(), "keeper").await;
    let base = keeper.url();
    let old: Vec<Value> = (0..10)
        .map(|i| delta(&format!("old-{i}"), OLD + i, "alice"))
        .collect();
    post(&base, "/deltas", &json!(old)).await;
    post(
        &base,
        "/deltas",
        &json!([delta("fresh", now_ms(), "alice")]),
    )
    .await;
    keeper.node().set_retention(max_age("30d"));
    assert_eq!(
        post(&base, "/archive", &json!({})).await["report"]["archived"],
        10
    );

    // A full initial sync is told what is archived and not served.
    let mut raw = RawPeer::connect(&base).await;
    raw.hello("probe", json!({"mode": "pull", "initialSync": "full"}))
        .await;
    raw.send(json!({"type": "sync_request", "timestamp": 1}))
        .await;
    let start = raw.recv_type("sync_start").await;
    assert_eq!(start["archived"]["deltas"], 10, "{start}");
    assert_eq!(start["archived"]["oldest"], OLD);

    // A second node holds the same old deltas and sends them over a real link.
    let peer = common::start_node("peer").await;
    let link = peer
        .federation()
        .connect_to_remote(&base, LinkConfig::default())
        .expect("link config");
    assert!(wait_status(&link, LinkStatus::Connected, T).await);
    let dups_before = keeper.node().store().duplicates();
    post(&peer.url(), "/deltas", &json!(old)).await;
    assert!(
        wait_for(T, || keeper.node().store().duplicates() >= dups_before + 10).await,
        "the keeper never saw them again: {:?}",
        link.info()
    );
    let live = get(&base, "/deltas").await;
    assert_eq!(ids_of(&live), vec!["fresh".to_owned()], "{live}");
    assert_eq!(
        get(&base, "/status").await["archive"]["deltas"],
        10,
        "nothing was archived twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_size_keeps_the_store_under_its_bound_during_a_load() {
    const BOUND: u64 = 3 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let server = node_on_disk(dir.path(), "bounded").await;
    let base = server.url();
    server.node().set_retention(RetentionSettings {
        max_bytes: Some(BOUND),
        ..RetentionSettings::default()
    });
    let mut archived = 0;
    for batch in 0..20u64 {
        let deltas: Vec<Value> = (0..1000u64)
            .map(|i| {
                let n = batch * 1000 + i;
                delta(&format!("d-{n:06}-{}", "x".repeat(100)), OLD + n, "alice")
            })
            .collect();
        post(&base, "/deltas", &json!(deltas)).await;
        let ran = post(&base, "/archive", &json!({})).await;
        archived = ran["archive"]["count"].as_u64().unwrap();
        let after = ran["report"]["storeBytesAfter"].as_u64().unwrap();
        assert!(
            after <= BOUND,
            "batch {batch}: {after} bytes on disk > {BOUND}: {ran}"
        );
    }
    assert!(archived > 0, "the load never reached the bound");
    let status = get(&base, "/status").await;
    let live = status["store"]["deltas"].as_u64().unwrap();
    assert_eq!(live + archived, 20_000, "{status}");
    assert!(status["archive"]["storeTableBytes"].as_u64().unwrap() <= BOUND);
}

#[test]
fn rhizome_archive_archives_a_stopped_nodes_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let node = Node::open(NodeConfig {
            storage: Storage::Path(dir.path().to_owned()),
            ..NodeConfig::default()
        })
        .await
        .unwrap();
        for i in 0..5 {
            let d =
                rhizome::Delta::parse(&delta(&format!("o{i}"), OLD + i, "al").to_string()).unwrap();
            node.ingest(vec![d], rhizome::Origin::Local).await.unwrap();
        }
        node.store().close();
    });
    drop(rt);
    let data = dir.path().to_str().unwrap();
    let ran = common::cli::run(&["archive", "--data", data, "--max-age", "30d"]);
    assert!(ran.ok(), "{} {}", ran.out, ran.err);
    let report: Value = serde_json::from_str(&ran.out).unwrap();
    // The newest delta stays: it carries the log's head.
    assert_eq!(report["archived"], 4, "{report}");
    let again = common::cli::run(&["archive", "--data", data, "--max-age", "1x"]);
    again.assert_fails_saying(&["maxAge", "unit"]);

    // An export holds the live delta; with --include-archive, the archived four first.
    let live = common::cli::run(&["export", "--data", data]);
    assert!(live.ok(), "{}", live.err);
    assert_eq!(live.out.lines().count(), 1, "{}", live.out);
    let all = common::cli::run(&["export", "--data", data, "--include-archive"]);
    assert!(all.ok(), "{}", all.err);
    let ids: Vec<String> = all
        .out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["o0", "o1", "o2", "o3", "o4"]);
    // Read from the archive byte for byte, and imported whole into an empty node.
    let file = dir.path().join("all.jsonl");
    std::fs::write(&file, &all.out).unwrap();
    let other = tempfile::tempdir().unwrap();
    let into = other.path().join("data");
    let ran = common::cli::run(&[
        "import",
        file.to_str().unwrap(),
        "--data",
        into.to_str().unwrap(),
    ]);
    assert!(ran.ok(), "{}", ran.err);
    let copy = common::cli::run(&["export", "--data", into.to_str().unwrap()]);
    assert_eq!(copy.out, all.out);
    let refused = common::cli::run(&[
        "export",
        "--data",
        data,
        "--include-archive",
        "--since",
        "2",
    ]);
    assert!(!refused.ok(), "--since with --include-archive is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_files_rule_runs_every_interval_and_reloads_live() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rhizome.toml");
    let write = |rule: &str| {
        let text = format!("data = \"data\"\ndurability = \"buffered\"\n[retention]\n{rule}");
        // Written beside and renamed over, as the README advises.
        let tmp = dir.path().join("rhizome.toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &config).unwrap();
    };
    write("maxAge = \"30d\"\ninterval = \"1s\"\nfilter = { authors = [\"bob\"] }\n");
    let node = common::cli::Serving::start(&["--config", config.to_str().unwrap()]);
    let base = node.url.clone();
    let token = std::fs::read_to_string(node.admin_token_file.as_ref().unwrap()).unwrap();
    let client = reqwest::Client::new();
    let mut deltas: Vec<Value> = (0..6)
        .map(|i| {
            delta(
                &format!("o{i}"),
                OLD + i,
                if i < 3 { "alice" } else { "bob" },
            )
        })
        .collect();
    deltas.push(delta("fresh", now_ms(), "alice"));
    let resp = client
        .post(format!("{base}/deltas"))
        .bearer_auth(token.trim())
        .json(&deltas)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let archived = |want: u64| {
        let base = base.clone();
        async move {
            let deadline = std::time::Instant::now() + T;
            loop {
                let status = get(&base, "/status").await;
                if status["archive"]["deltas"] == want {
                    return status;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "never {want} archived: {}",
                    status["archive"]
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // Only bob's old deltas match the rule's filter.
    archived(3).await;
    // Reloaded without the filter: alice's old deltas go too (the newest stays).
    write("maxAge = \"30d\"\ninterval = \"1s\"\n");
    let status = archived(6).await;
    assert_eq!(status["archive"]["retention"]["maxAge"], "30d");
    assert!(status["archive"]["retention"].get("filter").is_none());
    assert_eq!(status["store"]["deltas"], 1);
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_archive_takes_the_admin_token_and_a_node_in_memory_says_why_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let options = rhizome::ServerOptions {
        admin_token: Some("admin-secret".into()),
        ..rhizome::ServerOptions::default()
    };
    let on_disk = common::start_node_with_options(
        NodeConfig {
            storage: Storage::Path(dir.path().to_owned()),
            ..NodeConfig::default()
        },
        options,
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/archive", on_disk.url());
    let refused = client.post(&url).send().await.unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
    let ran = client
        .post(&url)
        .bearer_auth("admin-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(ran.status(), reqwest::StatusCode::OK);
    let ran: Value = ran.json().await.unwrap();
    assert_eq!(
        ran["report"]["archived"], 0,
        "no rule, nothing moves: {ran}"
    );

    let in_memory = common::start_node("forgetful").await;
    let answer = client
        .post(format!("{}/archive", in_memory.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::CONFLICT);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "NO_ARCHIVE");
    assert!(
        body["message"].as_str().unwrap().contains("in memory"),
        "{body}"
    );
}
