//! The real `rhizome` binary: serve on port 0, put and query with the CLI, stop with
//! SIGTERM, restart on the same data directory, and find everything still there.

use crate::common;

use common::cli::{run, run_with_stdin, Serving};

/// `rhizome serve` on the durable store in `data`.
fn serve(data: &std::path::Path) -> Serving {
    Serving::start(&[std::ffi::OsStr::new("--data"), data.as_os_str()])
}

#[test]
fn put_query_restart_still_there() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path());
    let ran = run(&[
        "put",
        "--node",
        &s.url,
        "--author",
        "alice",
        "-p",
        "on=@prod_1#comments",
        "-p",
        "text=hello",
    ]);
    assert!(ran.ok(), "{}", ran.err);
    assert!(ran.out.contains("\"status\":\"stored\""), "{}", ran.out);
    let lines = "{\"id\":\"j1\",\"timestamp\":5,\"author\":\"bob\",\"system\":\"s\",\"pointers\":[]}\n\
                 {\"id\":\"j2\",\"timestamp\":6,\"author\":\"bob\",\"system\":\"s\",\"pointers\":[]}\n";
    let ran = run_with_stdin(&["put", "--node", &s.url], lines);
    assert!(ran.ok(), "{}", ran.err);
    assert_eq!(ran.out.lines().count(), 2);
    run_with_stdin(
        &["put", "--node", &s.url],
        "{\"id\":\"bad\",\"timestamp\":0,\"author\":\"b\",\"system\":\"s\",\"pointers\":[]}",
    )
    .assert_fails_saying(&["timestamp must be positive"]);
    s.stop();

    let s = serve(dir.path());
    let ran = run(&["query", "--node", &s.url]);
    assert!(ran.ok());
    let out = ran.out;
    let ids: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 3, "{out}");
    assert_eq!(&ids[1..], ["j1", "j2"]);
    let ran = run(&["query", "--node", &s.url, "--context", "comments"]);
    assert!(ran.ok() && ran.out.contains("hello"), "{}", ran.out);
    s.stop();
}

#[test]
fn client_commands_explain_when_no_node_runs() {
    // Port 9 (discard) on loopback: nothing listens there in the test environment.
    run(&["query", "--node", "http://127.0.0.1:9"]).assert_fails_saying(&[
        "no rhizome node is answering at http://127.0.0.1:9",
        "rhizome serve",
    ]);
}

/// Milliseconds since the epoch, to check that a printed time is now.
fn now_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

#[test]
fn first_hour_mistakes_get_errors_that_say_what_to_do_issue_16() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let ran = run(&[
        std::ffi::OsStr::new("serve"),
        "--data".as_ref(),
        file.as_os_str(),
    ]);
    ran.assert_fails_saying(&["is a file, not a directory"]);
    assert_eq!(ran.err.lines().count(), 1, "one clear line: {}", ran.err);
    assert!(
        !ran.err.contains("Os {"),
        "not debug-formatted: {}",
        ran.err
    );

    // A busy port is refused before a store exists.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let data = dir.path().join("fresh");
    let ran = run(&[
        std::ffi::OsStr::new("serve"),
        "--listen".as_ref(),
        addr.as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
    ]);
    ran.assert_fails_saying(&[&addr, "in use", "--listen"]);
    assert!(
        !data.exists(),
        "no store was created for a node that cannot listen"
    );

    run(&["serve", "--port", "8080"])
        .assert_fails_saying(&["no --port", "--listen 127.0.0.1:8080"]);
    run(&["query", "--since", "5", "--until", "1"])
        .assert_fails_saying(&["--since 5 is after --until 1"]);
    run(&["query", "--author", ""]).assert_fails_saying(&["--author", "empty"]);
    run(&["status", "--node", "ws://127.0.0.1:9"]).assert_fails_saying(&["use http://127.0.0.1:9"]);

    // `host:port`, as `--listen` takes it, reaches the node.
    let s = common::cli::serve(&[]);
    let host_port = s.url.trim_start_matches("http://");
    let ran = run(&["status", "--node", host_port]);
    assert!(ran.ok(), "{}", ran.err);
    assert!(
        ran.out.contains(&format!("api         {}", s.url)),
        "{}",
        ran.out
    );
}

#[test]
fn the_log_shows_our_events_not_the_storage_engines_issue_16() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let data = dir.path().join("data");
    for start in ["fresh", "restart"] {
        let stderr = std::fs::File::create(&log).unwrap();
        let s = Serving::spawn_with(
            "127.0.0.1:0",
            &[std::ffi::OsStr::new("--data"), data.as_os_str()],
            |cmd| {
                cmd.env_remove("RUST_LOG").stderr(stderr);
            },
        )
        .expect("serve starts");
        s.stop();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("serving"), "{start}: {text}");
        assert!(
            !text.contains("lsm_tree") && !text.contains("fjall"),
            "{start}: the storage engine logs only warnings by default:\n{text}"
        );
        assert!(!text.contains('\u{1b}'), "no colours in a file: {text}");
    }
}

#[test]
fn events_carry_their_time_and_a_rejection_its_author_and_replay_issue_16() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("no-mallory.rhai"),
        "delta.author != \"mallory\"",
    )
    .unwrap();
    let b = common::cli::serve(&["--events", "--policies", policies.to_str().unwrap()]);
    let a = common::cli::serve(&["--connect", &b.url]);
    let before = now_ms();
    let ran = run(&[
        "put",
        "--node",
        &a.url,
        "--author",
        "mallory",
        "-p",
        "text=spam",
    ]);
    assert!(ran.ok(), "{}", ran.err);
    let rejected = b.next_json("delta:rejected", |e| e["type"] == "delta:rejected");
    assert_eq!(rejected["author"], "mallory", "{rejected}");
    assert_eq!(rejected["replay"], false, "{rejected}");
    let time = rejected["time"].as_u64().expect("a time in ms");
    assert!(before <= time && time <= now_ms(), "{rejected}");

    let ran = run(&["quarantine", "replay", "--node", &b.url]);
    assert!(ran.ok(), "{}", ran.err);
    let again = b.next_json("a replayed delta:rejected", |e| {
        e["type"] == "delta:rejected"
    });
    assert_eq!(again["replay"], true, "{again}");
    assert_eq!(again["deltaId"], rejected["deltaId"], "{again}");
}

#[test]
fn quarantine_list_is_a_table_unless_asked_for_json_issue_16() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("no-mallory.rhai"),
        "delta.author != \"mallory\"",
    )
    .unwrap();
    let b = common::cli::serve(&["--policies", policies.to_str().unwrap()]);
    let a = common::cli::serve(&["--connect", &b.url]);
    let ran = run(&[
        "put",
        "--node",
        &a.url,
        "--author",
        "mallory",
        "-p",
        "text=spam",
    ]);
    assert!(ran.ok(), "{}", ran.err);
    let raw = common::cli::wait_for("mallory's delta in the quarantine", || {
        let ran = run(&["quarantine", "list", "--json", "--node", &b.url]);
        ran.json_lines().into_iter().next()
    });
    let ran = run(&["quarantine", "list", "--node", &b.url]);
    assert!(ran.ok(), "{}", ran.err);
    let lines: Vec<&str> = ran.out.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one row: {}", ran.out);
    assert!(lines[0].starts_with("QID  REFUSED"), "{}", ran.out);
    let id = raw["delta"]["id"].as_str().unwrap();
    for cell in [id, "mallory", "no-mallory.rhai", "s ago"] {
        assert!(lines[1].contains(cell), "no {cell:?} in {}", lines[1]);
    }
    assert!(
        !lines[1].contains('{'),
        "no JSON in the table: {}",
        lines[1]
    );
}

#[test]
fn serve_help_is_grouped_with_named_values_and_examples_issue_16() {
    let ran = run(&["serve", "--help"]);
    assert!(ran.ok(), "{}", ran.err);
    for want in [
        "Node:",
        "Storage:",
        "Links:",
        "Trust:",
        "Scripts:",
        "Server:",
        "--listen <ADDR>",
        "--data <DIR>",
        "--heartbeat <SECONDS>",
        "Examples:",
        "RHIZOME_NODE",
    ] {
        assert!(
            ran.out.contains(want),
            "no {want:?} in serve --help:\n{}",
            ran.out
        );
    }
    assert!(!ran.out.contains("--port"), "a hidden flag stays hidden");
    let ran = run(&["status", "--help"]);
    assert!(ran.out.contains("RHIZOME_NODE"), "{}", ran.out);
}

#[test]
fn init_makes_every_folder_its_config_names_and_tests_now_issue_16() {
    let dir = tempfile::tempdir().unwrap();
    let ran = run(&[std::ffi::OsStr::new("init"), dir.path().as_os_str()]);
    assert!(ran.ok(), "{}", ran.err);
    for folder in [
        "policies",
        "policies/tests",
        "filters",
        "filters/push",
        "filters/pull",
    ] {
        assert!(dir.path().join(folder).is_dir(), "{folder} missing");
    }
    let cases = std::fs::read_to_string(
        dir.path()
            .join("policies/tests/reject-future-timestamps.jsonl"),
    )
    .unwrap();
    let now_case: serde_json::Value = serde_json::from_str(cases.lines().next().unwrap()).unwrap();
    let stamped = now_case["delta"]["timestamp"].as_u64().unwrap();
    assert!(now_ms() - stamped < 60_000, "{now_case}");
    let policies = dir.path().join("policies");
    let ran = run(&[
        std::ffi::OsStr::new("policy"),
        "test".as_ref(),
        "--policies".as_ref(),
        policies.as_os_str(),
    ]);
    assert!(ran.ok(), "{}{}", ran.out, ran.err);
}

#[test]
fn the_readmes_sample_delta_evaluates_issue_16() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let sample = "examples/deltas/unverified-review.json";
    assert!(readme.contains(sample), "the README names the sample delta");
    let ran = common::cli::run_in(
        repo,
        &["policy", "eval", "--delta", sample, "--link", "public"],
    );
    assert!(ran.ok(), "{}", ran.err);
    assert!(
        ran.out
            .contains("decided by policies/public/require-verified.rhai"),
        "{}",
        ran.out
    );
    let ignored = std::fs::read_to_string(repo.join(".gitignore")).unwrap();
    for dir in ["/a", "/b", "/b-policies", "/data"] {
        assert!(ignored.lines().any(|l| l == dir), "{dir} not ignored");
    }
}

/// The node's identity: `rhizome id` prints the key the node keeps in its data directory
/// (made once, mode 0600, the same after a restart); `serve --key` uses a given one.
#[test]
fn a_node_keeps_one_key_and_rhizome_id_prints_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_arg = data.to_str().unwrap();
    let printed = run(&["id", "--data", data_arg]);
    assert!(printed.ok(), "{}", printed.err);
    let public = printed.out.trim().to_owned();
    assert_eq!(public.len(), 64, "{public}");
    assert!(public.bytes().all(|b| b.is_ascii_hexdigit()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("node.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let node = serve(&data);
    let status: serde_json::Value =
        serde_json::from_str(&run(&["status", "--node", &node.url, "--json"]).out).unwrap();
    assert_eq!(status["publicKey"], public.as_str(), "{status}");
    node.stop();
    assert_eq!(run(&["id", "--data", data_arg]).out.trim(), public);

    let other = Serving::start(&["--memory", "--key", data.join("node.key").to_str().unwrap()]);
    let status: serde_json::Value =
        serde_json::from_str(&run(&["status", "--node", &other.url, "--json"]).out).unwrap();
    assert_eq!(status["publicKey"], public.as_str());
    other.stop();
}
