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
