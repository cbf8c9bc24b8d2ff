//! The TOML config: links applied and hot-reloaded on a running node, the running
//! config kept when an edit is broken, `rhizome init`, `serve --config`, and `/metrics`.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{author, start_node, wait_for, wait_holds, wait_status};
use rhizome::config::live::ConfigLinks;
use rhizome::config::NodeFile;
use rhizome::events::NodeEvent;
use rhizome::LinkStatus;

const T: Duration = Duration::from_secs(15);

fn link_table(name: &str, url: &str, mode: &str) -> String {
    format!("[[link]]\nname = \"{name}\"\nurl = \"{url}\"\nmode = \"{mode}\"\nreconnect = {{ initialDelay = 50, maxDelay = 200 }}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_links_are_added_changed_and_removed_while_the_node_runs() {
    let a = start_node("a").await;
    let b = start_node("b").await;
    let me = start_node("me").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rhizome.toml");
    std::fs::write(&path, link_table("to-a", &a.url(), "pull")).unwrap();
    let mut events = me.node().events();
    let live = ConfigLinks::start(
        me.federation().clone(),
        &path,
        NodeFile::load(&path).unwrap(),
    )
    .unwrap();
    assert_eq!(live.links().len(), 1);
    let first = live.links()[0].clone();
    assert!(wait_status(&first, LinkStatus::Connected, T).await);

    // Add a link: the first one is left alone.
    std::fs::write(
        &path,
        format!(
            "{}{}",
            link_table("to-a", &a.url(), "pull"),
            link_table("to-b", &b.url(), "pull")
        ),
    )
    .unwrap();
    assert!(wait_for(T, || live.links().len() == 2).await);
    assert!(
        live.links()
            .iter()
            .any(|l| l.id() == first.id() && l.stats().connected_at == first.stats().connected_at),
        "an unchanged link was reopened"
    );
    let from_b = author(b.node(), "bob", 3).await.into_iter().collect();
    assert!(wait_holds(me.node(), &from_b, T).await);

    // A broken edit is refused: the running links stay.
    std::fs::write(&path, "[[link]]\nname = \"to-a\"\nmode = \"sideways\"\n").unwrap();
    let refused = tokio::time::timeout(T, async {
        loop {
            if let Ok(NodeEvent::ConfigError { message }) = events.recv().await {
                return message;
            }
        }
    })
    .await
    .expect("a config:error event");
    assert!(refused.contains("link[0]"), "{refused}");
    assert_eq!(live.links().len(), 2);

    // Change one link's mode (reopened with the new config), remove the other.
    std::fs::write(&path, link_table("to-a", &a.url(), "bidirectional")).unwrap();
    assert!(
        wait_for(T, || {
            let links = live.links();
            // Reopened under the same name (the id names the link, not the connection).
            links.len() == 1
                && links[0].info().config.mode == rhizome::federation::SyncMode::Bidirectional
        })
        .await
    );
    assert!(
        wait_for(T, || me
            .federation()
            .get_federation_links()
            .iter()
            .all(|l| l.info().name != "to-b"))
        .await
    );
    let reopened = live.links()[0].clone();
    assert_eq!(
        reopened.info().config.mode,
        rhizome::federation::SyncMode::Bidirectional
    );
    assert!(wait_status(&reopened, LinkStatus::Connected, T).await);
    let mine = author(me.node(), "me", 2).await.into_iter().collect();
    assert!(
        wait_holds(a.node(), &mine, T).await,
        "the reopened link pushes now"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_store_link_and_policy_figures() {
    let server = start_node("server").await;
    let client = start_node("client").await;
    author(server.node(), "alice", 5).await;
    let link = client
        .federation()
        .connect_to_remote(
            &server.url(),
            rhizome::LinkConfig {
                name: Some("up".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(wait_holds(client.node(), &common::ids(server.node()), T).await);
    assert!(wait_status(&link, LinkStatus::Connected, T).await);
    // The client acknowledged what it committed: the server's side of the link knows
    // the peer is caught up (sync lag 0).
    let served = server.federation().get_federation_links().pop().unwrap();
    assert!(
        wait_for(T, || served.stats().peer_acked == Some(5)).await,
        "{:?}",
        served.stats()
    );
    let server_metrics = common::metrics_text(&server.url()).await;
    assert!(
        server_metrics
            .lines()
            .any(|l| l.starts_with("rhizome_link_sync_lag{") && l.ends_with(" 0")),
        "{server_metrics}"
    );
    let res = reqwest::get(format!("{}/metrics", client.url()))
        .await
        .unwrap();
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = res.text().await.unwrap();
    for needle in [
        "# TYPE rhizome_deltas_stored gauge",
        "rhizome_deltas_stored 5",
        "rhizome_link_deltas_received_total{link=\"",
        "name=\"up\",peer=\"server\",direction=\"outbound\"} 5",
        "rhizome_link_state{",
        "state=\"connected\"} 1",
        "rhizome_link_sync_lag{",
        "rhizome_policy_evaluations_total 0",
        "rhizome_policy_reloads_total",
    ] {
        assert!(text.contains(needle), "no {needle:?} in\n{text}");
    }
}

#[test]
fn init_writes_a_starter_that_serve_and_policy_test_accept() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_rhizome");
    let out = Command::new(bin)
        .args(["init"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.path().join("rhizome.toml");
    let file = NodeFile::load(&config).expect("the starter config loads");
    assert_eq!(
        file.policies.as_deref(),
        Some(dir.path().join("./policies").as_path())
    );
    // Twice: refused without --force.
    let again = Command::new(bin)
        .args(["init"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    // serve --config, with flags overriding the file's listen address and storage.
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&config)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--memory",
            "--system-id",
            "from-flags",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).expect("listening line");
    assert_eq!(v["systemId"], "from-flags");
    let url = v["listening"].as_str().unwrap().to_owned();
    let status = Command::new(bin)
        .args(["status", "--node", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("node        from-flags"), "{text}");
    assert!(
        text.contains("policies    1 script,"),
        "the starter policy is loaded: {text}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !dir.path().join("data").exists(),
        "--memory overrides the file's data dir"
    );
}

/// The next `config:error` message, skipping other events.
async fn next_config_error(events: &mut tokio::sync::broadcast::Receiver<NodeEvent>) -> String {
    tokio::time::timeout(T, async {
        loop {
            if let Ok(NodeEvent::ConfigError { message }) = events.recv().await {
                return message;
            }
        }
    })
    .await
    .expect("a config:error event")
}

/// Link names and ids, to tell an untouched link from a reopened one.
fn link_ids(live: &ConfigLinks) -> std::collections::BTreeMap<String, String> {
    live.links()
        .iter()
        .map(|l| (l.info().name.clone(), l.id().to_owned()))
        .collect()
}

/// Issue 14, finding 7: an empty `rhizome.toml` (an editor's save in progress) was
/// accepted and closed every link. Now an empty or comment-only file is refused with
/// `config:error` and the links stay; the next complete file is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_config_file_is_refused_and_closes_no_link_issue_14() {
    let a = start_node("a").await;
    let b = start_node("b").await;
    let me = start_node("me").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rhizome.toml");
    let full = format!(
        "scriptTimeoutMs = 30\n{}{}",
        link_table("to-a", &a.url(), "pull"),
        link_table("to-b", &b.url(), "pull")
    );
    std::fs::write(&path, &full).unwrap();
    let mut events = me.node().events();
    let live = ConfigLinks::start(
        me.federation().clone(),
        &path,
        NodeFile::load(&path).unwrap(),
    )
    .unwrap();
    let before = link_ids(&live);
    assert_eq!(before.len(), 2);
    assert_eq!(
        me.node().policies().current().time_budget(),
        Duration::from_millis(30)
    );
    for link in live.links() {
        assert!(wait_status(&link, LinkStatus::Connected, T).await);
    }

    for half_saved in ["", "  \n\n", "# rhizome.toml, being edited\n\n"] {
        std::fs::write(&path, half_saved).unwrap();
        let refused = next_config_error(&mut events).await;
        assert!(refused.contains("no settings"), "{refused}");
        assert_eq!(link_ids(&live), before, "a link was closed or reopened");
    }
    assert!(live
        .links()
        .iter()
        .all(|l| l.status() == LinkStatus::Connected));
    assert_eq!(
        me.federation().get_federation_links().len(),
        2,
        "the node's links were closed"
    );

    // The save completes: applied, the links untouched, the new budget in force.
    std::fs::write(&path, full.replace("= 30", "= 40")).unwrap();
    assert!(
        wait_for(T, || me.node().policies().current().time_budget()
            == Duration::from_millis(40))
        .await
    );
    assert_eq!(link_ids(&live), before);
}

/// Issue 14, finding 7: a file cut at a table boundary silently dropped the later links.
/// A writer that pauses midway (longer than the watcher's debounce, shorter than the
/// settle time) no longer gets its first half applied: the reload waits until the file
/// is stable, so the second half's links are opened and none is closed in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_written_in_two_halves_is_applied_whole_issue_14() {
    let peers = [
        start_node("a").await,
        start_node("b").await,
        start_node("c").await,
        start_node("d").await,
    ];
    let me = start_node("me").await;
    let table = |i: usize| link_table(&format!("to-{i}"), &peers[i].url(), "pull");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rhizome.toml");
    std::fs::write(&path, format!("{}{}{}", table(0), table(1), table(2))).unwrap();
    let live = ConfigLinks::start(
        me.federation().clone(),
        &path,
        NodeFile::load(&path).unwrap(),
    )
    .unwrap();
    let before = link_ids(&live);
    assert_eq!(before.len(), 3);
    let mut events = me.node().events();

    // A writer that truncates, writes up to a table boundary, pauses, then appends the
    // rest (the links to-2 and the new to-3).
    let pause = rhizome::config::live::RELOAD_DEBOUNCE + Duration::from_millis(100);
    assert!(pause < rhizome::config::live::RELOAD_SETTLE);
    std::fs::write(&path, format!("{}{}", table(0), table(1))).unwrap();
    tokio::time::sleep(pause).await;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, format!("{}{}", table(2), table(3)).as_bytes()).unwrap();
    drop(file);

    assert!(
        wait_for(T, || live.links().len() == 4).await,
        "{:?}",
        link_ids(&live)
    );
    let after = link_ids(&live);
    for (name, id) in &before {
        assert_eq!(after.get(name), Some(id), "{name} was closed or reopened");
    }
    // Every reload since the write applied the whole file: nothing removed or changed.
    while let Ok(event) = events.try_recv() {
        match event {
            NodeEvent::ConfigReloaded {
                removed, changed, ..
            } => assert_eq!((removed, changed), (0, 0), "half a file was applied"),
            NodeEvent::ConfigError { message } => panic!("half a file was read: {message}"),
            _ => {}
        }
    }
}

/// `[[peer]]` tables are hot-reloaded: a peer added to the file is known at once, one
/// removed has the links it opened closed (it is judged afresh when it reconnects), and
/// a peer added over the API survives the reload; an edit that clashes with it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_peers_are_reloaded_and_a_removed_peer_loses_its_links() {
    let hub = start_node("hub").await;
    let spoke = start_node("spoke").await;
    let api_key = rhizome::identity::NodeKey::generate().unwrap().public_hex();
    hub.node()
        .update_peers(|t| {
            t.with(rhizome::PeerEntry {
                name: "from-api".into(),
                key: Some(api_key.clone()),
                ..Default::default()
            })
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rhizome.toml");
    std::fs::write(&path, "link = []\n").unwrap();
    let mut events = hub.node().events();
    let _live = ConfigLinks::start(
        hub.federation().clone(),
        &path,
        NodeFile::load(&path).unwrap(),
    )
    .unwrap();
    let spoke_key = spoke.node().public_key();
    std::fs::write(
        &path,
        format!("[[peer]]\nname = \"spoke\"\nkey = \"{spoke_key}\"\n"),
    )
    .unwrap();
    assert!(wait_for(T, || hub.node().peers().get("spoke").is_some()).await);
    assert!(hub.node().peers().get("from-api").is_some());
    let link = spoke
        .federation()
        .connect_to_remote(&hub.url(), rhizome::LinkConfig::default())
        .unwrap();
    let as_spoke = || {
        hub.federation().link_infos().iter().any(|l| {
            l.peer
                .as_ref()
                .is_some_and(|p| p.name == "spoke" && p.authenticated)
        })
    };
    assert!(wait_for(T, as_spoke).await);

    // A clash with the API's peer: refused whole, nothing changes.
    std::fs::write(
        &path,
        format!("[[peer]]\nname = \"from-api\"\nkey = \"{spoke_key}\"\n"),
    )
    .unwrap();
    let refused = next_config_error(&mut events).await;
    assert!(refused.contains("from-api"), "{refused}");
    assert!(hub.node().peers().get("spoke").is_some());

    // Removed from the file: its link is closed and it comes back anonymous.
    std::fs::write(&path, "link = []\n").unwrap();
    assert!(wait_for(T, || hub.node().peers().get("spoke").is_none()).await);
    assert!(
        wait_for(T, || !as_spoke()
            && hub.federation().link_infos().iter().any(|l| l
                .peer
                .as_ref()
                .is_some_and(|p| p.name == "anonymous")))
        .await
    );
    assert!(wait_status(&link, LinkStatus::Connected, T).await);
    assert!(hub.node().peers().get("from-api").is_some());
}

/// `[[author]]`, `[signatures]` and `[[link]] requireSignatures` are read from the file
/// and hot-reloaded: an author bound in the file is enforced at once, unbound when removed,
/// and an author bound over the API survives the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_authors_and_signature_settings_are_reloaded() {
    use rhizome::admission::{AuthorEntry, Require};
    use rhizome::identity::NodeKey;

    let parsed = NodeFile::parse(
        r#"
[signatures]
require = "remote"
requireFrom = ["anonymous"]
negations = "any"
[[author]]
name = "alice"
keys = ["19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1"]
[[link]]
name = "upstream"
url = "http://127.0.0.1:9"
requireSignatures = true
"#,
    )
    .unwrap();
    assert_eq!(parsed.signatures.require, Require::Remote);
    assert_eq!(
        parsed.signatures.require_from,
        vec!["anonymous".to_owned(), "upstream".to_owned()]
    );
    assert_eq!(parsed.authors[0].name, "alice");
    let e = NodeFile::parse("[[author]]\nname = \"alice\"\nkeys = [\"nope\"]\n").unwrap_err();
    assert!(e.contains("author") && e.contains("nope"), "{e}");
    let e = NodeFile::parse("[signatures]\nrequire = \"sometimes\"\n").unwrap_err();
    assert!(e.contains("sometimes"), "{e}");

    let hub = start_node("hub").await;
    let alice = NodeKey::generate().unwrap();
    let bob = NodeKey::generate().unwrap();
    hub.node()
        .update_authors(|t| {
            t.with(AuthorEntry {
                name: "bob".into(),
                keys: vec![bob.public_base64()],
            })
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rhizome.toml");
    std::fs::write(&path, "link = []\n").unwrap();
    let _live = ConfigLinks::start(
        hub.federation().clone(),
        &path,
        NodeFile::load(&path).unwrap(),
    )
    .unwrap();
    let unsigned_alice = || {
        rhizome::delta::new_delta(
            "alice",
            "hub",
            vec![rhizome::Pointer::new("says", "hi".into())],
        )
    };
    let outcome = hub
        .node()
        .ingest(vec![unsigned_alice()], rhizome::Origin::Local)
        .await
        .unwrap();
    assert!(matches!(outcome[0], rhizome::IngestOutcome::Stored(_)));
    std::fs::write(
        &path,
        format!(
            "[signatures]\nrequire = \"all\"\n[[author]]\nname = \"alice\"\nkeys = [\"{}\"]\n",
            alice.public_base64()
        ),
    )
    .unwrap();
    assert!(wait_for(T, || hub.node().authors().keys_of("alice").is_some()).await);
    assert!(
        wait_for(T, || hub.node().signature_policy().settings().require
            == Require::All)
        .await
    );
    assert!(hub.node().authors().keys_of("bob").is_some());
    let outcome = hub
        .node()
        .ingest(vec![unsigned_alice()], rhizome::Origin::Local)
        .await
        .unwrap();
    match &outcome[0] {
        rhizome::IngestOutcome::Rejected { policy, reason } => {
            assert_eq!(policy, "signature rules");
            assert!(reason.contains("bound to key"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(&path, "link = []\n").unwrap();
    assert!(wait_for(T, || hub.node().authors().keys_of("alice").is_none()).await);
    assert!(
        wait_for(T, || hub.node().signature_policy().settings().require
            == Require::None)
        .await
    );
    assert!(hub.node().authors().keys_of("bob").is_some());
}
