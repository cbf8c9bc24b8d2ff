//! `rhizome link ...` and `rhizome serve --connect` against real `rhizome serve` processes:
//! open a link, watch it come up, see deltas cross it, pause, resume and close it, and
//! get a clear message for a bad flag, a bad link id and a node that is not running.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rhizome"))
}

/// A `rhizome serve --memory` process, killed when the test ends (even by a panic).
struct Serving {
    child: Child,
    url: String,
    system_id: String,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(extra: &[&str]) -> Serving {
    let mut child = bin()
        .args(["serve", "--memory", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rhizome serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let v: Value = serde_json::from_str(&line).expect("listening line is JSON");
    Serving {
        child,
        url: v["listening"].as_str().expect("listening url").to_owned(),
        system_id: v["systemId"].as_str().expect("system id").to_owned(),
    }
}

/// Runs the CLI: (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let out = bin()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rhizome");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the CLI, asserts success and decodes each stdout line.
fn run_json(args: &[&str]) -> Vec<Value> {
    let (ok, out, err) = run(args);
    assert!(ok, "rhizome {args:?} failed: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn links(node: &Serving) -> Vec<Value> {
    run_json(&["link", "list", "--node", &node.url])
}

/// Polls until `check` gives a value, for at most 15 s.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    wait_for(what, || check().then_some(()));
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

fn has_delta(node: &Serving, id: &str) -> bool {
    run(&["get", "--node", &node.url, id]).0
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
    assert!(has_delta(&a, &before), "the initial sync missed a delta");
    let from_a = put(&a, "alice", "hello b");
    wait_until("a's delta on b", || has_delta(&b, &from_a));
    let from_b = put(&b, "bob", "hello a");
    wait_until("b's delta on a", || has_delta(&a, &from_b));
    let (ok, out, _) = run(&["query", "--node", &b.url, "--author", "alice"]);
    assert!(ok && out.contains("hello b"), "{out}");

    let paused = run_json(&["link", "pause", &id, "--node", &a.url]);
    assert_eq!(paused[0]["paused"], true, "{paused:?}");
    wait_until("the link to show paused", || {
        link_with_status(&a, "paused").is_some()
    });
    let held = put(&a, "alice", "while paused");
    // Absence cannot be awaited: give a live link ample time to have sent it.
    std::thread::sleep(Duration::from_millis(700));
    assert!(!has_delta(&b, &held), "a paused link sent a delta");

    let resumed = run_json(&["link", "resume", &id, "--node", &a.url]);
    assert_eq!(resumed[0]["paused"], false, "{resumed:?}");
    wait_until("the held delta after resume", || has_delta(&b, &held));

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
    assert!(!has_delta(&b, &after), "a closed link sent a delta");

    // The link is gone: the API's 404 reaches the user, with the id.
    let (ok, _, err) = run(&["link", "pause", &id, "--node", &a.url]);
    assert!(!ok);
    assert!(err.contains("NOT_FOUND") && err.contains(&id), "{err}");
}

#[test]
fn link_flags_and_api_errors_are_explained() {
    let a = serve(&[]);

    // A filter of the wrong shape: the flag and the field are named, nothing is sent.
    let (ok, _, err) = run(&[
        "link",
        "connect",
        "http://127.0.0.1:9",
        "--node",
        &a.url,
        "--pull-filter",
        r#"{"authors":"bob"}"#,
    ]);
    assert!(!ok);
    assert!(
        err.contains("--pull-filter") && err.contains("authors"),
        "{err}"
    );
    let (ok, _, err) = run(&[
        "link",
        "connect",
        "http://127.0.0.1:9",
        "--node",
        &a.url,
        "--push-filter",
        "{nope",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--push-filter") && err.contains("not valid JSON"),
        "{err}"
    );
    let (ok, _, err) = run(&[
        "link",
        "connect",
        "http://127.0.0.1:9",
        "--node",
        &a.url,
        "--initial-sync",
        "from-timestamp",
    ]);
    assert!(!ok);
    assert!(err.contains("--sync-from"), "{err}");
    assert!(links(&a).is_empty(), "a refused command opened a link");

    // The node refuses the URL: its error and the field it blames are printed.
    let (ok, _, err) = run(&["link", "connect", "ftp://nowhere", "--node", &a.url]);
    assert!(!ok);
    assert!(
        err.contains("INVALID_LINK") && err.contains("field: url"),
        "{err}"
    );

    let (ok, _, err) = run(&["link", "resume", "no-such-link", "--node", &a.url]);
    assert!(!ok);
    assert!(err.contains("no-such-link"), "{err}");

    let (ok, _, err) = run(&["link", "list", "--node", "http://127.0.0.1:9"]);
    assert!(!ok);
    assert!(
        err.contains("no rhizome node is answering at http://127.0.0.1:9"),
        "{err}"
    );
}

#[test]
fn serve_connect_links_to_another_node() {
    let b = serve(&[]);
    let before = put(&b, "bob", "before a started");
    let a = serve(&["--connect", &b.url]);
    let link = wait_synced(&a);
    assert!(has_delta(&a, &before), "the initial sync missed a delta");
    assert_eq!(link["remoteSystemId"], b.system_id.as_str());

    let from_b = put(&b, "bob", "to a");
    wait_until("b's delta on a", || has_delta(&a, &from_b));
    let from_a = put(&a, "alice", "to b");
    wait_until("a's delta on b", || has_delta(&b, &from_a));
}
