//! A node's data in and out: export and import (byte for byte, resumable, refusals
//! counted by reason), backups that restore to a node whose links resume from the
//! backup's cursors, and compaction with an honest size on disk.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::cli::{run, Serving};
use common::{author, ids, wait_holds};
use rhizome::federation::{LinkConfig, SyncMode};
use rhizome::store::ReadLimit;
use rhizome::{Seq, Store};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// Every delta of a stopped node's store: id -> the JSON as stored.
fn stored(dir: &Path) -> BTreeMap<String, String> {
    let store = Store::open(dir).expect("open the store");
    let log = store.read_log(Seq(0), ReadLimit::All, None).expect("read");
    let out = log
        .records
        .iter()
        .map(|r| (r.delta().expect("parse").delta.id, r.json().to_owned()))
        .collect();
    store.close();
    out
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `n` deltas by `author` as JSON lines, with ids `<author>-<i>`.
fn lines(author: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            common::delta_json(&format!("{author}-{i}"), author, "elsewhere").to_string() + "\n"
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_into_an_empty_node_gives_the_same_deltas_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let node = common::durable(&a, "a").await;
    let alice = author(&node, "alice", 300).await;
    author(&node, "bob", 200).await;
    node.negate(&alice[0], "alice", Some("wrong"))
        .await
        .unwrap();
    node.store().close();
    drop(node);
    let original = stored(&a);
    assert_eq!(original.len(), 501);

    // In two parts, the second continuing where the first said it stopped.
    let part1 = tmp.path().join("part1.jsonl.gz");
    let ran = run(&[
        "export",
        "--data",
        a.to_str().unwrap(),
        "--out",
        part1.to_str().unwrap(),
        "--author",
        "alice",
    ]);
    assert!(ran.ok(), "{}", ran.err);
    assert!(ran.err.contains("continue with --since 501"), "{}", ran.err);
    let all = tmp.path().join("all.jsonl");
    let ran = run(&[
        "export",
        "--data",
        a.to_str().unwrap(),
        "--out",
        all.to_str().unwrap(),
    ]);
    assert!(ran.ok(), "{}", ran.err);
    let text = std::fs::read_to_string(&all).unwrap();
    let exported: Vec<&str> = text.lines().collect();
    assert_eq!(exported.len(), 501);
    for line in &exported {
        let id = json_of(line)["id"].as_str().unwrap().to_owned();
        assert_eq!(original[&id], *line, "exported exactly as stored");
    }
    let tail = run(&["export", "--data", a.to_str().unwrap(), "--since", "400"]);
    assert!(tail.ok(), "{}", tail.err);
    assert_eq!(tail.out.lines().collect::<Vec<_>>(), exported[400..]);

    // A running node over its change feed, in pages of 1000 positions: the same lines.
    let serving = Serving::start(&["--data", a.to_str().unwrap()]);
    let online = run(&["export", "--url", &serving.url]);
    assert!(online.ok(), "{}", online.err);
    assert_eq!(online.out.lines().collect::<Vec<_>>(), exported);
    assert!(
        online.err.contains("continue with --since 501"),
        "{}",
        online.err
    );
    let bob = run(&[
        "export",
        "--url",
        &serving.url,
        "--author",
        "bob",
        "--since",
        "250",
    ]);
    assert!(bob.ok(), "{}", bob.err);
    let only_bob: Vec<&str> = exported[250..]
        .iter()
        .copied()
        .filter(|l| json_of(l)["author"] == "bob")
        .collect();
    assert_eq!(bob.out.lines().collect::<Vec<_>>(), only_bob);
    serving.stop();

    // The gzip part (alice only) first, then everything: the overlap is duplicates.
    std::fs::create_dir_all(&b).unwrap();
    let empty = common::durable(&b, "b").await;
    empty.store().close();
    drop(empty);
    let ran = run(&[
        "import",
        part1.to_str().unwrap(),
        all.to_str().unwrap(),
        "--data",
        b.to_str().unwrap(),
    ]);
    assert!(ran.ok(), "{}", ran.err);
    let summary = json_of(&ran.out);
    // alice's 300 and her negation, then bob's 200 new from the whole file.
    assert_eq!(summary["stored"], 501, "{summary}");
    assert_eq!(summary["duplicates"], 301, "{summary}");
    assert_eq!(summary["refused"], 0, "{summary}");
    assert_eq!(stored(&b), original, "the same ids, the same bytes");
}

#[test]
fn an_interrupted_import_resumes_without_duplicates_or_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let file = tmp.path().join("deltas.jsonl");
    std::fs::write(&file, lines("carol", 2500)).unwrap();
    let node = Serving::start(&["--data", data.to_str().unwrap()]);
    let token = node.admin_token_file.clone().expect("a token file");
    let import = |extra: &[&str]| {
        let mut args = vec![
            "import",
            file.to_str().unwrap(),
            "--url",
            &node.url,
            "--batch",
            "400",
        ];
        args.extend(["--token-file", token.to_str().unwrap()]);
        args.extend(extra);
        run(&args)
    };
    // A running node's data directory is its own.
    for offline in [
        vec!["export", "--data", data.to_str().unwrap()],
        vec![
            "import",
            file.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ],
    ] {
        run(&offline).assert_fails_saying(&["in use by a running node", "--url"]);
    }
    let ran = import(&["--stop-after-batches", "3"]);
    ran.assert_fails_saying(&["stopped after 3 batches"]);
    let state = tmp.path().join("deltas.jsonl.import-state");
    assert!(state.exists(), "the progress is kept beside the file");
    let status = |node: &Serving| {
        let ran = run(&["status", "--node", &node.url, "--json"]);
        json_of(&ran.out)
    };
    assert_eq!(status(&node)["store"]["deltas"], 1200);

    let ran = import(&[]);
    assert!(ran.ok(), "{}", ran.err);
    assert!(ran.err.contains("resuming"), "{}", ran.err);
    let summary = json_of(&ran.out);
    assert_eq!(summary["stored"], 2500, "{summary}");
    assert_eq!(summary["duplicates"], 0, "nothing sent twice: {summary}");
    let s = status(&node);
    assert_eq!(s["store"]["deltas"], 2500);
    assert_eq!(s["store"]["duplicatesSinceStart"], 0);
    assert!(
        !state.exists(),
        "the progress goes once the file is imported"
    );

    // Sending it all again is harmless: every delta is a duplicate.
    let ran = import(&[]);
    assert_eq!(json_of(&ran.out)["duplicates"], 2500);
    assert_eq!(status(&node)["store"]["deltas"], 2500);
}

#[test]
fn import_refusals_are_counted_by_reason_and_trust_is_for_stopped_nodes_only() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, policies) = (tmp.path().join("data"), tmp.path().join("policies"));
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("no-mallory.rhai"),
        r#"if delta.author == "mallory" { reject("mallory is not believed") } true"#,
    )
    .unwrap();
    let config = tmp.path().join("rhizome.toml");
    std::fs::write(
        &config,
        format!(
            "data = {:?}\npolicies = {:?}\n",
            data.to_str().unwrap(),
            policies.to_str().unwrap()
        ),
    )
    .unwrap();
    let file = tmp.path().join("mixed.jsonl");
    let text = format!(
        "{}{}not json\n{{\"id\": \"x\"}}\n",
        lines("alice", 10),
        lines("mallory", 5)
    );
    std::fs::write(&file, text).unwrap();

    let node = Serving::start(&["--config", config.to_str().unwrap()]);
    let ran = run(&[
        "import",
        file.to_str().unwrap(),
        "--url",
        &node.url,
        "--trust",
    ]);
    ran.assert_fails_saying(&["--trust is refused over HTTP", "--data"]);
    let token = node.admin_token_file.clone().expect("a token file");
    let ran = run(&[
        "import",
        file.to_str().unwrap(),
        "--url",
        &node.url,
        "--token-file",
        token.to_str().unwrap(),
    ]);
    assert!(ran.ok(), "{}", ran.err);
    let summary = json_of(&ran.out);
    assert_eq!(
        (summary["stored"].as_u64(), summary["refused"].as_u64()),
        (Some(10), Some(7)),
        "{summary}"
    );
    let reasons = summary["reasons"].as_object().unwrap();
    let count = |word: &str| -> u64 {
        reasons
            .iter()
            .filter(|(r, _)| r.contains(word))
            .map(|(_, n)| n.as_u64().unwrap())
            .sum()
    };
    assert_eq!(count("mallory is not believed"), 5, "{summary}");
    assert_eq!(count("invalid"), 2, "{summary}");
    assert!(ran.err.contains("mallory is not believed"), "{}", ran.err);
    node.stop();

    // Offline, with the node's config: the same policy applies, unless vouched for.
    let again = run(&[
        "import",
        file.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    let summary = json_of(&again.out);
    assert_eq!(
        (summary["duplicates"].as_u64(), summary["refused"].as_u64()),
        (Some(10), Some(7)),
        "{summary}"
    );
    let trusted = run(&[
        "import",
        file.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--trust",
    ]);
    let summary = json_of(&trusted.out);
    assert_eq!(
        (summary["stored"].as_u64(), summary["refused"].as_u64()),
        (Some(5), Some(2)),
        "{summary}"
    );
    assert_eq!(
        stored(&data)
            .keys()
            .filter(|id| id.starts_with("mallory"))
            .count(),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_a_live_link_restores_to_a_node_that_resumes_the_link() {
    let tmp = tempfile::tempdir().unwrap();
    let (b_dir, copy) = (tmp.path().join("b"), tmp.path().join("copy"));
    let a = common::start_node("a").await;
    let written = author(a.node(), "alice", 3000).await;
    let link = || LinkConfig {
        mode: SyncMode::Pull,
        name: Some("from-a".into()),
        ..Default::default()
    };
    let b = common::serve(common::durable(&b_dir, "b").await).await;
    b.federation().connect_to_remote(&a.url(), link()).unwrap();
    assert!(
        common::wait_for(T, || b.node().store().head().0 >= 500).await,
        "the link is syncing"
    );
    let http = reqwest::Client::new();
    let answer: Value = http
        .post(format!("{}/backup", b.url()))
        .json(&json!({"dir": copy}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let head = answer["head"].as_u64().expect("the backup's last position");
    assert!(head >= 500, "{answer}");
    // A backup never goes over other files.
    let refused = http
        .post(format!("{}/backup", b.url()))
        .json(&json!({"dir": copy}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("not empty"));
    b.shutdown().await.unwrap();

    let later = author(a.node(), "alice-later", 200).await;
    let restored = common::serve(common::durable(&copy, "b").await).await;
    assert_eq!(restored.node().store().head().0, head, "opened as it was");
    restored
        .federation()
        .connect_to_remote(&a.url(), link())
        .unwrap();
    let want = written.into_iter().chain(later).collect();
    assert!(wait_holds(restored.node(), &want, T).await, "nothing lost");
    assert_eq!(
        restored.node().store().duplicates(),
        0,
        "the link resumed from the backup's cursor: nothing it held came again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_every_delta_and_the_size_on_disk_is_honest() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = common::serve(common::durable(&data, "c").await).await;
    let http = reqwest::Client::new();
    let status = || async {
        let s: Value = http
            .get(format!("{}/status", server.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        s["store"]["diskBytes"].as_u64().unwrap()
    };
    // A fresh store preallocates a 64 MiB journal; it is not data.
    assert!(status().await < 1024 * 1024, "{}", status().await);
    author(server.node(), "dave", 2000).await;
    let before = ids(server.node());
    let answer: Value = http
        .post(format!("{}/compact", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (was, is) = (
        answer["bytesBefore"].as_u64().unwrap(),
        answer["bytesAfter"].as_u64().unwrap(),
    );
    assert!(was > 100_000 && is > 100_000, "{answer}");
    assert!(is < 64 * 1024 * 1024, "{answer}");
    assert_eq!(ids(server.node()), before, "every delta kept");
    // POST /import answers line by line, within a bound of lines per request.
    let post_lines = |body: String| {
        http.post(format!("{}/import", server.url()))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
    };
    let one = common::delta_json("imported-1", "erin", "elsewhere").to_string();
    let answer: Value = post_lines(format!("{one}\nnot json\n"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let statuses: Vec<&str> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["stored", "invalid"], "{answer}");
    let too_many = post_lines("{}\n".repeat(10_001)).await.unwrap();
    assert_eq!(too_many.status(), 413);
    let metrics = http
        .get(format!("{}/metrics", server.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("rhizome_store_disk_bytes "), "{metrics}");
    server.shutdown().await.unwrap();

    let ran = run(&["compact", "--data", data.to_str().unwrap()]);
    assert!(ran.ok(), "{}", ran.err);
    let offline = json_of(&ran.out);
    assert!(
        offline["bytesAfter"].as_u64().unwrap() > 100_000,
        "{offline}"
    );
    assert_eq!(stored(&data).len(), 2001);
}
