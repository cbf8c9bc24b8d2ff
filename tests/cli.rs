//! The real `rhizome` binary: serve on port 0, put and query with the CLI, stop with
//! SIGTERM, restart on the same data directory, and find everything still there.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rhizome"))
}

struct Serving {
    child: Child,
    url: String,
}

fn serve(data: &std::path::Path) -> Serving {
    let mut child = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rhizome serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let v: serde_json::Value = serde_json::from_str(&line).expect("listening line is JSON");
    let url = v["listening"].as_str().expect("listening url").to_owned();
    Serving { child, url }
}

fn stop(mut s: Serving) {
    let pid = s.child.id().to_string();
    let ok = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(ok.success());
    let status = s.child.wait().expect("wait");
    assert!(status.success(), "serve exits cleanly on SIGTERM: {status}");
}

fn run(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rhizome");
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn put_query_restart_still_there() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path());
    let (ok, out, err) = run(
        &[
            "put",
            "--node",
            &s.url,
            "--author",
            "alice",
            "-p",
            "on=@prod_1#comments",
            "-p",
            "text=hello",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(out.contains("\"status\":\"stored\""), "{out}");
    let lines = "{\"id\":\"j1\",\"timestamp\":5,\"author\":\"bob\",\"system\":\"s\",\"pointers\":[]}\n\
                 {\"id\":\"j2\",\"timestamp\":6,\"author\":\"bob\",\"system\":\"s\",\"pointers\":[]}\n";
    let (ok, out, err) = run(&["put", "--node", &s.url], Some(lines));
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2);
    let (ok, _, err) = run(
        &["put", "--node", &s.url],
        Some("{\"id\":\"bad\",\"timestamp\":0,\"author\":\"b\",\"system\":\"s\",\"pointers\":[]}"),
    );
    assert!(!ok);
    assert!(err.contains("timestamp must be positive"), "{err}");
    stop(s);

    let s = serve(dir.path());
    let (ok, out, _) = run(&["query", "--node", &s.url], None);
    assert!(ok);
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
    let (ok, out, _) = run(&["query", "--node", &s.url, "--context", "comments"], None);
    assert!(ok && out.contains("hello"), "{out}");
    stop(s);
}

#[test]
fn client_commands_explain_when_no_node_runs() {
    // Port 9 (discard) on loopback: nothing listens there in the test environment.
    let (ok, _, err) = run(&["query", "--node", "http://127.0.0.1:9"], None);
    assert!(!ok);
    assert!(
        err.contains("no rhizome node is answering at http://127.0.0.1:9"),
        "{err}"
    );
    assert!(err.contains("rhizome serve"), "{err}");
}
