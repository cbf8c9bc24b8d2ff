//! `GET /changes`, the change feed, and `rhizome watch` that follows it: paging by
//! `last_seq` with `pending`, filters that still move `last_seq` past what they pass
//! over, resuming after a restart with no gap and no duplicate, longpoll, the continuous
//! feed as JSON lines and as Server-Sent Events with heartbeats, and refusals by name.

use crate::common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::cli::{self, Serving};
use reqwest::StatusCode;
use rhizome::{Node, Pointer, Target};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(15);

async fn get(url: String) -> (StatusCode, Value) {
    let res = reqwest::get(url).await.expect("GET /changes");
    let status = res.status();
    (status, res.json().await.expect("JSON answer"))
}

async fn changes(base: &str, query: &str) -> Value {
    let (status, body) = get(format!("{base}/changes?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body
}

fn seqs(answer: &Value) -> Vec<u64> {
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|c| c["seq"].as_u64().expect("seq"))
        .collect()
}

fn last_and_pending(answer: &Value) -> (u64, u64) {
    (
        answer["last_seq"].as_u64().expect("last_seq"),
        answer["pending"].as_u64().expect("pending"),
    )
}

/// Stores one delta by `author` about `topic`; its id.
/// Adds a page's (seq, delta id) pairs to `seen`; returns its `last_seq`, where the
/// next page starts.
fn read_page(page: &Value, seen: &mut Vec<(u64, String)>) -> u64 {
    for c in page["results"].as_array().unwrap() {
        seen.push((
            c["seq"].as_u64().unwrap(),
            c["delta"]["id"].as_str().unwrap().into(),
        ));
    }
    page["last_seq"].as_u64().unwrap()
}

async fn put(node: &Node, author: &str, topic: &str) -> String {
    node.create_delta(
        author,
        vec![Pointer::new("about", Target::reference(topic))],
    )
    .await
    .expect("create delta")
    .delta
    .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_feed_pages_by_last_seq_and_counts_what_is_pending() {
    let server = common::start_node("feed").await;
    let base = server.url();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(put(server.node(), "alice", &format!("t{i}")).await);
    }
    let page = changes(&base, "limit=2").await;
    assert_eq!(seqs(&page), [1, 2]);
    assert_eq!(last_and_pending(&page), (2, 3));
    // Each change is the stored delta, with its sequence number.
    assert_eq!(page["results"][0]["delta"]["id"], json!(ids[0]));
    assert_eq!(page["results"][1]["delta"]["author"], json!("alice"));

    let page = changes(&base, "since=2&limit=2").await;
    assert_eq!((seqs(&page), last_and_pending(&page)), (vec![3, 4], (4, 1)));
    let page = changes(&base, "since=4").await;
    assert_eq!((seqs(&page), last_and_pending(&page)), (vec![5], (5, 0)));
    let page = changes(&base, "since=5").await;
    assert_eq!((seqs(&page), last_and_pending(&page)), (vec![], (5, 0)));
    let page = changes(&base, "since=now").await;
    assert_eq!((seqs(&page), last_and_pending(&page)), (vec![], (5, 0)));

    // A negation is a change like any other: the feed is the log.
    let negation = server
        .node()
        .negate(&ids[0], "alice", Some("wrong"))
        .await
        .expect("negate");
    let page = changes(&base, "since=5").await;
    assert_eq!(seqs(&page), [6]);
    assert_eq!(page["results"][0]["delta"]["id"], json!(negation.delta.id));
    assert_eq!(seqs(&changes(&base, "").await), [1, 2, 3, 4, 5, 6]);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_select_changes_and_last_seq_still_passes_what_they_skip() {
    let server = common::start_node("feed").await;
    let base = server.url();
    for (author, topic) in [
        ("alice", "apples"),
        ("bob", "pears"),
        ("alice", "pears"),
        ("bob", "apples"),
        ("bob", "plums"),
    ] {
        put(server.node(), author, topic).await;
    }
    let page = changes(&base, "author=alice").await;
    assert_eq!((seqs(&page), last_and_pending(&page)), (vec![1, 3], (5, 0)));
    // Stopped by its limit after alice's first change: 2 is examined later, not skipped.
    let page = changes(&base, "author=alice&limit=1").await;
    assert_eq!((seqs(&page), last_and_pending(&page)), (vec![1], (1, 4)));
    let page = changes(&base, "author=alice&since=1").await;
    assert_eq!((seqs(&page), last_and_pending(&page)), (vec![3], (5, 0)));

    let page = changes(&base, "targetId=apples").await;
    assert_eq!(seqs(&page), [1, 4]);
    let filter = r#"{"authors":["bob"],"targetIds":["pears","plums"]}"#;
    let page = changes(&base, &format!("filter={}", urlencode(filter))).await;
    assert_eq!((seqs(&page), last_and_pending(&page)), (vec![2, 5], (5, 0)));

    // Nothing matches: still examined to the head, so resuming does not scan it again.
    let page = changes(&base, "author=nobody").await;
    assert_eq!((seqs(&page), last_and_pending(&page)), (vec![], (5, 0)));
    server.shutdown().await.unwrap();
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_after_a_restart_with_no_gap_and_no_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::serve(common::durable(dir.path(), "feed").await).await;
    let mut written = Vec::new();
    for i in 0..7 {
        written.push(put(server.node(), "alice", &format!("t{i}")).await);
    }
    let mut seen: Vec<(u64, String)> = Vec::new();
    let mut since = 0;
    // Read some, in pages, then the node restarts on the same data directory.
    for _ in 0..2 {
        let page = changes(&server.url(), &format!("since={since}&limit=3")).await;
        since = read_page(&page, &mut seen);
    }
    assert_eq!(since, 6);
    server.shutdown().await.unwrap();

    let server = common::serve(common::durable(dir.path(), "feed").await).await;
    for i in 7..10 {
        written.push(put(server.node(), "alice", &format!("t{i}")).await);
    }
    loop {
        let page = changes(&server.url(), &format!("since={since}&limit=3")).await;
        since = read_page(&page, &mut seen);
        if page["pending"] == json!(0) {
            break;
        }
    }
    let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=10).collect::<Vec<_>>(),
        "every position once, in order"
    );
    let ids: Vec<String> = seen.into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids, written);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longpoll_waits_for_the_first_matching_change_or_times_out_empty() {
    let server = common::start_node("feed").await;
    let base = server.url();
    put(server.node(), "alice", "t0").await;

    let started = Instant::now();
    let page = changes(&base, "feed=longpoll&since=1&timeout=300").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!((seqs(&page), last_and_pending(&page)), (vec![], (1, 0)));

    // Something already there is answered at once, as by the normal feed.
    let page = changes(&base, "feed=longpoll&since=0&timeout=10000").await;
    assert_eq!(seqs(&page), [1]);

    // Waiting for carol: bob's change is examined but does not end the wait.
    let poll = tokio::spawn({
        let base = base.clone();
        async move { changes(&base, "feed=longpoll&since=now&author=carol&timeout=10000").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    put(server.node(), "bob", "t1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "bob's change does not answer carol's longpoll"
    );
    let started = Instant::now();
    let id = put(server.node(), "carol", "t2").await;
    let page = tokio::time::timeout(T, poll).await.expect("woken").unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!((seqs(&page), last_and_pending(&page)), (vec![3], (3, 0)));
    assert_eq!(page["results"][0]["delta"]["id"], json!(id));

    // A longpoll that waits long writes newlines as heartbeats; the body stays JSON.
    let poll = tokio::spawn({
        let base = base.clone();
        async move {
            let res = reqwest::get(format!(
                "{base}/changes?feed=longpoll&since=3&timeout=700&heartbeat=100"
            ))
            .await
            .unwrap();
            res.text().await.unwrap()
        }
    });
    let text = tokio::time::timeout(T, poll).await.unwrap().unwrap();
    assert!(text.contains("\n\n"), "heartbeats while waiting: {text:?}");
    let body: Value = serde_json::from_str(&text).expect("still one JSON document");
    assert_eq!(last_and_pending(&body), (3, 0));
    server.shutdown().await.unwrap();
}

/// Reads a streamed body a chunk at a time, handing out whole lines.
struct Lines {
    res: reqwest::Response,
    buf: String,
}

impl Lines {
    async fn open(url: String, accept: Option<&str>, last_event_id: Option<&str>) -> Lines {
        let mut req = reqwest::Client::new().get(url);
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let res = tokio::time::timeout(T, req.send())
            .await
            .expect("the feed answers at once")
            .expect("GET");
        assert_eq!(res.status(), StatusCode::OK);
        Lines {
            res,
            buf: String::new(),
        }
    }

    fn content_type(&self) -> String {
        self.res.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// The next line, `None` when the stream ended.
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.find('\n') {
                let line = self.buf[..end].to_owned();
                self.buf.drain(..=end);
                return Some(line);
            }
            let chunk = tokio::time::timeout(T, self.res.chunk())
                .await
                .expect("a line in time")
                .expect("the stream is whole")?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next line that is not empty (a JSON lines heartbeat).
    async fn next_change(&mut self) -> Value {
        loop {
            let line = self.next().await.expect("more lines");
            if !line.is_empty() {
                return serde_json::from_str(&line).expect("a JSON line");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuous_feed_streams_json_lines_with_heartbeats() {
    let server = common::start_node("feed").await;
    let base = server.url();
    put(server.node(), "alice", "t0").await;
    put(server.node(), "bob", "t1").await;

    let mut feed = Lines::open(
        format!("{base}/changes?feed=continuous&heartbeat=100"),
        None,
        None,
    )
    .await;
    assert_eq!(feed.content_type(), "application/x-ndjson");
    assert_eq!(feed.next_change().await["seq"], json!(1));
    let second = feed.next_change().await;
    assert_eq!(
        (second["seq"].clone(), second["delta"]["author"].clone()),
        (json!(2), json!("bob"))
    );
    // Caught up and quiet: a heartbeat (an empty line) comes within a few intervals.
    assert_eq!(feed.next().await.as_deref(), Some(""));
    let id = put(server.node(), "carol", "t2").await;
    let third = feed.next_change().await;
    assert_eq!(
        (third["seq"].clone(), third["delta"]["id"].clone()),
        (json!(3), json!(id))
    );

    // A filtered feed, ended by its limit; another ended by its timeout.
    let mut bobs = Lines::open(
        format!("{base}/changes?feed=continuous&author=bob&limit=1"),
        None,
        None,
    )
    .await;
    assert_eq!(bobs.next_change().await["seq"], json!(2));
    assert_eq!(bobs.next().await, None, "the feed ends at its limit");
    let started = Instant::now();
    let mut quiet = Lines::open(
        format!("{base}/changes?feed=continuous&since=now&timeout=300"),
        None,
        None,
    )
    .await;
    assert_eq!(quiet.next().await, None, "the feed ends at its timeout");
    assert!(started.elapsed() >= Duration::from_millis(300));
    drop(feed);
    server.shutdown().await.unwrap();
}

/// The next Server-Sent Event: its fields, or `None` for a comment.
async fn next_event(feed: &mut Lines) -> Option<Vec<(String, String)>> {
    let mut fields = Vec::new();
    let mut comment = false;
    loop {
        let line = feed.next().await.expect("more events");
        if line.is_empty() {
            return (!comment || !fields.is_empty()).then_some(fields);
        }
        match line.split_once(": ") {
            Some(("", _)) => comment = true,
            Some((k, v)) => fields.push((k.to_owned(), v.to_owned())),
            None if line.starts_with(':') => comment = true,
            None => panic!("not an event line: {line:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuous_feed_speaks_server_sent_events_and_resumes_from_last_event_id() {
    let server = common::start_node("feed").await;
    let base = server.url();
    let ids = [
        put(server.node(), "alice", "t0").await,
        put(server.node(), "alice", "t1").await,
        put(server.node(), "alice", "t2").await,
    ];
    let url = format!("{base}/changes?feed=continuous&since=0&heartbeat=100");
    let mut feed = Lines::open(url.clone(), Some("text/event-stream"), None).await;
    assert_eq!(feed.content_type(), "text/event-stream");
    let event = next_event(&mut feed).await.expect("an event");
    assert_eq!(event[0], ("id".into(), "1".into()));
    assert_eq!(event[1], ("event".into(), "change".into()));
    let data: Value = serde_json::from_str(&event[2].1).unwrap();
    assert_eq!(
        (data["seq"].clone(), data["delta"]["id"].clone()),
        (json!(1), json!(ids[0]))
    );
    drop(feed);

    // An EventSource reconnecting sends the same URL and the last id it saw.
    let mut feed = Lines::open(url, Some("text/event-stream"), Some("2")).await;
    let event = next_event(&mut feed).await.expect("an event");
    assert_eq!(event[0], ("id".into(), "3".into()));
    // Then, caught up, a heartbeat comment.
    assert_eq!(next_event(&mut feed).await, None, "a heartbeat comment");
    drop(feed);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_refused_naming_them() {
    let server = common::start_node("feed").await;
    let base = server.url();
    put(server.node(), "alice", "t0").await;
    for (query, field) in [
        ("since=yesterday", "since"),
        ("since=9", "since"),
        ("feed=sometimes", "feed"),
        ("limit=0", "limit"),
        ("limit=1000001", "limit"),
        ("timeout=100", "timeout"),
        ("feed=longpoll&timeout=soon", "timeout"),
        ("feed=continuous&heartbeat=5", "heartbeat"),
        ("filter=%7Bnot%20json", "filter"),
        ("filter=%7B%22authors%22%3A%22bob%22%7D", "filter"),
    ] {
        let (status, body) = get(format!("{base}/changes?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"], json!("INVALID_QUERY"), "{query}: {body}");
        assert_eq!(body["field"], json!(field), "{query}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(field),
            "{query}: {body}"
        );
    }
    let (status, body) = get(format!("{base}/changes?colour=red")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().contains("colour"),
        "{body}"
    );
    let res = reqwest::Client::new()
        .get(format!("{base}/changes?feed=continuous"))
        .header("last-event-id", "x1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["field"], json!("Last-Event-ID"));
    server.shutdown().await.unwrap();
}

// ---- rhizome watch ---------------------------------------------------------------

/// A `rhizome watch` process whose stdout and stderr lines are read as they come.
struct Watch {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
}

impl Watch {
    fn start(args: &[&str]) -> Watch {
        let mut child = cli::bin()
            .arg("watch")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rhizome watch");
        let lines = |r: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let out = lines(Box::new(child.stdout.take().unwrap()));
        let err = lines(Box::new(child.stderr.take().unwrap()));
        Watch { child, out, err }
    }

    fn next_line(&self) -> String {
        self.out
            .recv_timeout(T)
            .expect("rhizome watch prints a line in time")
    }

    /// Waits for a stderr line saying `what`.
    fn told(&self, what: &str) {
        let deadline = Instant::now() + T;
        let mut told = Vec::new();
        while let Ok(line) = self
            .err
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.contains(what) {
                return;
            }
            told.push(line);
        }
        panic!("rhizome watch never said {what:?}; it said {told:?}");
    }

    /// Interrupts it as Ctrl-C does; its exit status.
    fn interrupt(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        self.child.wait().unwrap()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_on(data: &Path, port: u16) -> Serving {
    let args = ["--data".as_ref(), data.as_os_str()];
    for _ in 0..100 {
        if let Some(s) = Serving::spawn(&format!("127.0.0.1:{port}"), &args) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("rhizome serve never started on port {port}");
}

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

fn post(url: &str, author: &str) -> String {
    let ran = cli::run(&[
        "put",
        "--node",
        url,
        "--author",
        author,
        "-p",
        "about=@topic",
    ]);
    assert!(ran.ok(), "{}", ran.err);
    let v: Value = serde_json::from_str(ran.out.trim()).expect("put answers JSON");
    v["id"].as_str().expect("id").to_owned()
}

#[test]
fn rhizome_watch_prints_new_changes_and_resumes_after_the_node_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let node = serve_on(dir.path(), port);
    let before = post(&node.url, "alice");

    let json = Watch::start(&["--node", &node.url, "--since", "now", "--json"]);
    let human = Watch::start(&["--node", &node.url, "--author", "bob"]);
    // `--since now` is fixed when it starts: wait until it is following.
    json.told("following the node's changes after seq 1");
    human.told("following the node's changes after seq 0");
    let first = post(&node.url, "bob");
    let line: Value =
        serde_json::from_str(&json.next_line()).expect("--json prints the feed's line");
    assert_eq!(
        (line["seq"].clone(), line["delta"]["id"].clone()),
        (json!(2), json!(first))
    );
    let readable = human.next_line();
    assert!(
        readable.starts_with("2  ") && readable.contains("  bob  ") && readable.contains(&first),
        "{readable}"
    );
    assert!(readable.contains("about=@topic"), "{readable}");

    node.stop();
    let node = serve_on(dir.path(), port);
    let after: Vec<String> = (0..3).map(|_| post(&node.url, "bob")).collect();
    let mut got = Vec::new();
    for _ in 0..3 {
        let line: Value = serde_json::from_str(&json.next_line()).unwrap();
        got.push((
            line["seq"].as_u64().unwrap(),
            line["delta"]["id"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(
        got,
        vec![
            (3, after[0].clone()),
            (4, after[1].clone()),
            (5, after[2].clone())
        ],
        "no gap and no duplicate across the restart"
    );
    for id in &after {
        assert!(human.next_line().contains(id.as_str()));
    }
    assert!(
        json.out.recv_timeout(Duration::from_millis(300)).is_err(),
        "nothing more"
    );
    json.told("reconnecting after seq 2");
    json.told("following the node's changes after seq 2");
    assert!(!before.is_empty());

    let status = json.interrupt();
    assert!(status.success(), "Ctrl-C ends it with 0: {status}");
    let seen: BTreeSet<_> = got.into_iter().map(|(s, _)| s).collect();
    assert_eq!(seen.len(), 3);
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_back_only_itself() {
    let server = common::start_node("feed").await;
    let base = server.url();
    let mut stalled = Lines::open(format!("{base}/changes?feed=continuous"), None, None).await;
    // Far more than the socket buffers hold: the stalled feed stops reading the log.
    let text = "x".repeat(20_000);
    for i in 0..300 {
        server
            .node()
            .create_delta(
                "alice",
                vec![
                    Pointer::new("about", Target::reference(format!("t{i}"))),
                    Pointer::new("text", Target::String(text.clone())),
                ],
            )
            .await
            .expect("writes go on while a feed is not read");
    }
    let mut since = 0;
    let mut seen = 0;
    loop {
        let page = changes(&base, &format!("since={since}&limit=100")).await;
        seen += seqs(&page).len();
        since = page["last_seq"].as_u64().unwrap();
        if page["pending"] == json!(0) {
            break;
        }
    }
    assert_eq!(
        (seen, since),
        (300, 300),
        "another client reads everything meanwhile"
    );
    // The stalled client then reads on where it was: everything, in order.
    for seq in 1..=300 {
        assert_eq!(stalled.next_change().await["seq"], json!(seq));
    }
    server.shutdown().await.unwrap();
}
