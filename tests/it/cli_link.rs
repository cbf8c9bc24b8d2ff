//! `rhizome link ...` and `rhizome serve --connect` against real `rhizome serve` processes:
//! open a link, watch it come up, see deltas cross it, pause, resume and close it, and
//! get a clear message for a bad flag, a bad link id and a node that is not running.

use crate::common;

use std::time::Duration;

use common::cli::{run, serve, wait_for, wait_until, Serving};
use serde_json::Value;

/// Runs the CLI, asserts success and decodes each stdout line.
fn run_json(args: &[&str]) -> Vec<Value> {
    run(args).json_lines()
}

fn links(node: &Serving) -> Vec<Value> {
    run_json(&["link", "list", "--node", &node.url])
}

/// The node's outbound link once it is connected and its initial sync has completed
/// (a link passes through `connected` and `syncing` before that).
fn wait_synced(node: &Serving) -> Value {
    wait_for("the link to come up and finish its initial sync", || {
        links(node).into_iter().find(|l| {
            l["direction"] == "outbound"
                && l["status"] == "connected"
                && l["stats"]["lastSyncTimestamp"].is_u64()
        })
    })
}

fn put(node: &Serving, author: &str, text: &str) -> String {
    let lines = run_json(&[
        "put",
        "--node",
        &node.url,
        "--author",
        author,
        "-p",
        &format!("text={text}"),
    ]);
    assert_eq!(lines[0]["status"], "stored", "{lines:?}");
    lines[0]["id"].as_str().expect("delta id").to_owned()
}

fn link_with_status(node: &Serving, status: &str) -> Option<Value> {
    links(node).into_iter().find(|l| l["status"] == status)
}

#[test]
fn link_connect_list_pause_resume_disconnect() {
    let a = serve(&[]);
    let b = serve(&[]);
    let before = put(&b, "bob", "before the link");

    let created = run_json(&[
        "link",
        "connect",
        &b.url,
        "--node",
        &a.url,
        "--name",
        "a-to-b",
        "--max-attempts",
        "3",
    ]);
    assert_eq!(created.len(), 1, "{created:?}");
    let link = &created[0];
    let id = link["id"].as_str().expect("link id").to_owned();
    assert_eq!(link["name"], "a-to-b");
    assert_eq!(link["direction"], "outbound");
    assert_eq!(link["config"]["reconnect"]["maxAttempts"], 3);

    let up = wait_synced(&a);
    assert_eq!(up["id"], id.as_str());
    assert_eq!(up["remoteSystemId"], b.system_id.as_str());
    assert_eq!(
        up["remoteUrl"],
        format!("{}/federation", b.url.replacen("http", "ws", 1))
    );
    assert_eq!(links(&a).len(), 1);
    wait_until("b to see the inbound link", || {
        links(&b).iter().any(|l| l["direction"] == "inbound")
    });

    // Full initial sync brought b's older delta; new deltas flow both ways.
    assert!(a.has_delta(&before), "the initial sync missed a delta");
    let from_a = put(&a, "alice", "hello b");
    wait_until("a's delta on b", || b.has_delta(&from_a));
    let from_b = put(&b, "bob", "hello a");
    wait_until("b's delta on a", || a.has_delta(&from_b));
    let ran = run(&["query", "--node", &b.url, "--author", "alice"]);
    assert!(ran.ok() && ran.out.contains("hello b"), "{}", ran.out);

    let paused = run_json(&["link", "pause", &id, "--node", &a.url]);
    assert_eq!(paused[0]["paused"], true, "{paused:?}");
    wait_until("the link to show paused", || {
        link_with_status(&a, "paused").is_some()
    });
    let held = put(&a, "alice", "while paused");
    // Absence cannot be awaited: give a live link ample time to have sent it.
    std::thread::sleep(Duration::from_millis(700));
    assert!(!b.has_delta(&held), "a paused link sent a delta");

    let resumed = run_json(&["link", "resume", &id, "--node", &a.url]);
    assert_eq!(resumed[0]["paused"], false, "{resumed:?}");
    wait_until("the held delta after resume", || b.has_delta(&held));

    let gone = run_json(&["link", "disconnect", &id, "--node", &a.url]);
    assert_eq!(gone[0]["disconnected"], true, "{gone:?}");
    wait_until("a to drop the link", || links(&a).is_empty());
    wait_until("b to drop the inbound link", || {
        links(&b)
            .iter()
            .all(|l| l["status"] == "disconnected" || l["status"] == "error")
    });
    let after = put(&a, "alice", "after disconnect");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!b.has_delta(&after), "a closed link sent a delta");

    // The link is gone: the API's 404 reaches the user, with the id.
    run(&["link", "pause", &id, "--node", &a.url]).assert_fails_saying(&["NOT_FOUND", &id]);
}

#[test]
fn link_flags_and_api_errors_are_explained() {
    let a = serve(&[]);

    // A filter of the wrong shape: the flag and the field are named, nothing is sent.
    let connect = |flag: &str, value: &str| {
        run(&[
            "link",
            "connect",
            "http://127.0.0.1:9",
            "--node",
            &a.url,
            flag,
            value,
        ])
    };
    connect("--pull-filter", r#"{"authors":"bob"}"#)
        .assert_fails_saying(&["--pull-filter", "authors"]);
    connect("--push-filter", "{nope").assert_fails_saying(&["--push-filter", "not valid JSON"]);
    connect("--initial-sync", "from-timestamp").assert_fails_saying(&["--sync-from"]);
    assert!(links(&a).is_empty(), "a refused command opened a link");

    // The node refuses the URL: its error and the field it blames are printed.
    run(&["link", "connect", "ftp://nowhere", "--node", &a.url])
        .assert_fails_saying(&["INVALID_LINK", "field: url"]);

    run(&["link", "resume", "no-such-link", "--node", &a.url])
        .assert_fails_saying(&["no-such-link"]);

    run(&["link", "list", "--node", "http://127.0.0.1:9"])
        .assert_fails_saying(&["no rhizome node is answering at http://127.0.0.1:9"]);
}

#[test]
fn serve_connect_links_to_another_node() {
    let b = serve(&[]);
    let before = put(&b, "bob", "before a started");
    let a = serve(&["--connect", &b.url]);
    let link = wait_synced(&a);
    assert!(a.has_delta(&before), "the initial sync missed a delta");
    assert_eq!(link["remoteSystemId"], b.system_id.as_str());

    let from_b = put(&b, "bob", "to a");
    wait_until("b's delta on a", || a.has_delta(&from_b));
    let from_a = put(&a, "alice", "to b");
    wait_until("a's delta on b", || b.has_delta(&from_a));
}

/// `--pointer-form` reaches the links: `serve --connect` and `link connect` set the
/// link's, `serve --inbound-pointer-form` the accepted links'.
#[test]
fn pointer_form_flags_reach_the_links() {
    let a = serve(&["--inbound-pointer-form", "legacy"]);
    let b = serve(&["--connect", &a.url, "--pointer-form", "legacy"]);
    let dialed = wait_for("b's link to a", || {
        links(&b).into_iter().find(|l| l["direction"] == "outbound")
    });
    assert_eq!(dialed["config"]["pointerForm"], "legacy", "{dialed}");
    let created = run_json(&[
        "link",
        "connect",
        &a.url,
        "--node",
        &b.url,
        "--pointer-form",
        "current",
    ]);
    assert_eq!(
        created[0]["config"]["pointerForm"], "current",
        "{created:?}"
    );
    let accepted = wait_for("a's inbound link", || {
        links(&a).into_iter().find(|l| l["direction"] == "inbound")
    });
    assert_eq!(accepted["config"]["pointerForm"], "legacy", "{accepted}");
}
