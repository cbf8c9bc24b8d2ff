//! The operator console in a real headless Chromium, against live nodes on port 0: what
//! the page shows is read from its DOM, and what its buttons do is checked through the
//! API. Each test saves screenshots under the target dir (`console/`).

mod browser;

use std::path::Path;
use std::time::{Duration, Instant};

use browser::Console;
use rhizome::federation::{InitialSync, LinkConfig, SyncMode};
use rhizome::policy::PolicyDirs;
use rhizome::{LinkStatus, Node, NodeConfig, Server, ServerOptions};
use serde_json::Value;

use crate::common::{self, author, wait_for, wait_status};

const ADMIN: &str = "console-admin-token";
const T: Duration = Duration::from_secs(15);

fn admin_only() -> ServerOptions {
    ServerOptions {
        admin_token: Some(ADMIN.into()),
        ..ServerOptions::default()
    }
}

/// A node behind an admin token, with scripts read from `root`'s folders when given.
async fn node(id: &str, scripts: Option<&Path>) -> Server {
    let policies = match scripts {
        Some(root) => {
            std::fs::create_dir_all(root.join("policies")).unwrap();
            PolicyDirs {
                policies: Some(root.join("policies")),
                filters: None,
            }
        }
        None => PolicyDirs::default(),
    };
    let node = Node::open(NodeConfig {
        system_id: Some(id.into()),
        policies,
        ..Default::default()
    })
    .await
    .unwrap();
    common::serve_at(node, admin_only(), "127.0.0.1:0").await
}

/// `GET path` on `server` with the admin token, as JSON.
async fn api(server: &Server, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", server.url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `a` dials `b` and pushes to it over a link named `to-b`.
async fn linked_pair(test: &str) -> (Server, Server) {
    let a = node(&format!("{test}-a"), None).await;
    let b = common::start_node(&format!("{test}-b")).await;
    let link = a
        .federation()
        .connect_to_remote(
            &b.url(),
            LinkConfig {
                name: Some("to-b".into()),
                mode: SyncMode::Push,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(wait_status(&link, LinkStatus::Connected, T).await);
    (a, b)
}

fn link_part(part: &str) -> String {
    format!("[data-link-id=\"to-b\"] {part}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_connected_link_and_its_counters_move() {
    let (a, b) = linked_pair("moving").await;
    let Some(console) = Console::open(&format!("{}/", a.url()), "link").await else {
        return;
    };
    console
        .wait_until(
            "the link shown connected",
            &format!(
                "document.querySelector('{}')?.textContent === 'connected'",
                link_part(".link-status")
            ),
        )
        .await;
    assert_eq!(console.text("#node-name").await, "moving-a");

    author(a.node(), "alice", 5).await;
    let first = console
        .wait_count("5 deltas sent", &link_part(".count-out"), 5)
        .await;
    author(a.node(), "alice", 20).await;
    let later = console
        .wait_count("25 deltas sent", &link_part(".count-out"), 25)
        .await;
    assert!(later > first, "{first} then {later}");
    assert_eq!(b.node().store().head().0, 25);
    // The rate is drawn once two samples have been taken.
    console
        .wait_until(
            "the chart drawn",
            &format!(
                "document.querySelector('{}') !== null",
                link_part("svg.chart polyline.out")
            ),
        )
        .await;
    console
        .wait_until(
            "the stored deltas in the event stream",
            "[...document.querySelectorAll('#events-list li')].some(li => li.dataset.type === 'delta:stored')",
        )
        .await;
    console.screenshot("desktop").await;

    // Readable on a phone, in the dark: nothing wider than the screen.
    console.as_phone().await;
    console.prefer_dark().await;
    let background: String = console
        .eval("getComputedStyle(document.body).backgroundColor")
        .await;
    assert_eq!(background, "rgb(18, 22, 20)", "the dark palette is in use");
    let (page, screen): (f64, f64) = (
        console.eval("document.documentElement.scrollWidth").await,
        console.eval("window.innerWidth").await,
    );
    assert!(
        page <= screen,
        "the page is {page}px wide on a {screen}px screen"
    );
    console.screenshot("phone-dark").await;
    console.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_link_from_the_page_pauses_it() {
    let (a, _b) = linked_pair("pausing").await;
    let Some(console) = Console::open(&format!("{}/ui/", a.url()), "pause").await else {
        return;
    };
    let pause = link_part("button.pause");
    console
        .wait_until(
            "the pause button",
            &format!("document.querySelector('{pause}')?.textContent === 'Pause'"),
        )
        .await;

    // Without the token, the page says what is missing.
    console.click(&pause).await;
    console
        .wait_until(
            "the refusal explained",
            "document.querySelector('#links-note').textContent.includes('needs a token')",
        )
        .await;
    assert_eq!(api(&a, "/links/to-b").await.1["paused"], false);

    console.use_token(ADMIN).await;
    // The event stream reconnects with the token, without an alarm.
    console
        .wait_until(
            "the event stream live again",
            "document.querySelector('#events-state').textContent === 'live'",
        )
        .await;
    console.click(&pause).await;
    assert!(
        wait_for(T, || a
            .federation()
            .get_federation_link("to-b")
            .is_some_and(|l| l.info().paused))
        .await
    );
    let (status, link) = api(&a, "/links/to-b").await;
    assert_eq!((status, &link["paused"]), (200, &Value::Bool(true)));
    console
        .wait_until(
            "the link shown paused",
            &format!("document.querySelector('{pause}')?.textContent === 'Resume'"),
        )
        .await;
    let token_in_storage: String = console
        .eval("sessionStorage.getItem('rhizome.token')")
        .await;
    assert_eq!(token_in_storage, ADMIN);
    let url: String = console.eval("location.href").await;
    assert!(!url.contains(ADMIN), "the token is never in a URL: {url}");
    console.screenshot("paused").await;
    console.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_script_saved_on_disk_shows_its_error_and_line_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let server = node("scripts", Some(tmp.path())).await;
    let policies = tmp.path().join("policies");
    std::fs::write(policies.join("good.rhai"), "true").unwrap();
    let Some(console) = Console::open(&format!("{}/", server.url()), "script").await else {
        return;
    };
    console
        .wait_until(
            "the good script listed",
            "document.querySelector('#policies-table tbody tr[data-file$=\"good.rhai\"]') !== null",
        )
        .await;

    let saved = Instant::now();
    std::fs::write(
        policies.join("broken.rhai"),
        "let trusted = [\"alice\"];\nlet who = delta.author;\nlet x = ;\ntrusted.contains(who)\n",
    )
    .unwrap();
    console
        .wait_until(
            "the compile error with its line",
            "[...document.querySelectorAll('#policies-table tr.script-error')].some(r => r.textContent.includes('broken.rhai:3:') && r.textContent.includes('line 3'))",
        )
        .await;
    let shown_after = saved.elapsed();
    eprintln!("the error was on the page {shown_after:?} after the file was saved");
    // About a second: the watcher's debounce, its event, one API call; the rest is
    // room for a machine busy with the rest of the suite.
    assert!(
        shown_after < Duration::from_secs(3),
        "shown after {shown_after:?}"
    );
    let state = console
        .text("#policies-table tr[data-file$=\"broken.rhai\"] .badge")
        .await;
    assert_eq!(state, "failed");
    console.screenshot("error").await;

    // A node that stops: the page says so in words, and keeps what it last showed.
    server.shutdown().await.unwrap();
    console
        .wait_until(
            "the node reported unreachable",
            "document.querySelector('#banner').textContent.includes('is not answering')",
        )
        .await;
    assert!(console
        .text("#policies-table")
        .await
        .contains("broken.rhai"));
    console.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_delta_is_quarantined_and_replay_from_the_page_admits_it() {
    let tmp = tempfile::tempdir().unwrap();
    let receiver = node("quarantine", Some(tmp.path())).await;
    let policy = tmp.path().join("policies/no-eve.rhai");
    std::fs::write(
        &policy,
        r#"if delta.author == "eve" { reject("eve is not trusted here") } else { true }"#,
    )
    .unwrap();
    receiver.node().policies().reload();
    let source = common::start_node("quarantine-source").await;
    let eve = author(source.node(), "eve", 1).await.remove(0);
    receiver
        .federation()
        .connect_to_remote(
            &source.url(),
            LinkConfig {
                name: Some("from-source".into()),
                mode: SyncMode::Pull,
                initial_sync: InitialSync::Full,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(wait_for(T, || receiver.node().store().quarantine_len() == 1).await);

    let Some(console) = Console::open(&format!("{}/", receiver.url()), "quarantine").await else {
        return;
    };
    // The quarantine is for the admin: without the token the page says so.
    console
        .wait_until(
            "the quarantine asking for a token",
            "document.querySelector('#quarantine-note').textContent.includes('needs a token')",
        )
        .await;
    console.use_token(ADMIN).await;
    let row = format!("#quarantine-table tr[data-delta-id=\"{eve}\"]");
    console
        .wait_until(
            "the refused delta listed",
            &format!(
                "document.querySelector('{row}')?.textContent.includes('eve is not trusted here')"
            ),
        )
        .await;
    let shown = console.text(&row).await;
    assert!(
        shown.contains("from-source") && shown.contains("no-eve.rhai"),
        "{shown}"
    );
    console.screenshot("refused").await;

    std::fs::write(&policy, "true").unwrap();
    console.click("#quarantine-replay").await;
    console
        .wait_until(
            "the replay's report",
            "document.querySelector('#quarantine-result').textContent.includes('1 admitted')",
        )
        .await;
    let (status, delta) = api(&receiver, &format!("/deltas/{eve}")).await;
    assert_eq!((status, delta["author"].as_str()), (200, Some("eve")));
    assert_eq!(api(&receiver, "/quarantine").await.1["total"], 0);
    console
        .wait_until(
            "the quarantine emptied",
            &format!("document.querySelector('{row}') === null"),
        )
        .await;

    // The delta browser finds it by author and opens it whole.
    console
        .type_into("#deltas-query input[name=author]", "eve")
        .await;
    console.click("#deltas-query button[type=submit]").await;
    let found = format!("#deltas-table tr[data-delta-id=\"{eve}\"]");
    console
        .wait_until(
            "the delta found",
            &format!("document.querySelector('{found}') !== null"),
        )
        .await;
    console.click(&found).await;
    console
        .wait_until(
            "the delta shown whole",
            &format!(
                "document.querySelector('#delta-json').textContent.includes('\"id\": \"{eve}\"')"
            ),
        )
        .await;
    console.screenshot("replayed").await;
    console.close().await;
}

/// The console's files are open, carry their security headers, and `/` still answers
/// the info document to programs, behind the read token when there is one.
#[tokio::test]
async fn the_console_is_served_open_and_the_info_document_stays_behind_its_token() {
    let server = common::serve_at(
        Node::in_memory("served").await.unwrap(),
        ServerOptions {
            admin_token: Some(ADMIN.into()),
            read_token: Some("reader".into()),
            ..ServerOptions::default()
        },
        "127.0.0.1:0",
    )
    .await;
    let client = reqwest::Client::new();
    let get = |path: &str, accept: Option<&str>| {
        let mut req = client.get(format!("{}{path}", server.url()));
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        req.send()
    };
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    for path in ["/", "/ui/"] {
        let page = get(path, Some(browser)).await.unwrap();
        assert_eq!(page.status(), 200, "{path}");
        let h = page.headers();
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(page.text().await.unwrap().contains("/ui/console.js"));
    }
    let script = get("/ui/console.js", None).await.unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(get("/ui/nothing.js", None).await.unwrap().status(), 404);

    // Programs get the info document, with `Vary` so caches keep the two apart.
    let refused = get("/", None).await.unwrap();
    assert_eq!(refused.status(), 401);
    let info = client
        .get(format!("{}/", server.url()))
        .bearer_auth("reader")
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 200);
    assert_eq!(info.headers()["vary"], "Accept");
    let info: Value = info.json().await.unwrap();
    assert_eq!(info["systemId"], "served");
}

/// Each script's evaluations and rejections, as the console shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_count_evaluations_and_rejections_per_script() {
    let tmp = tempfile::tempdir().unwrap();
    let receiver = node("counting", Some(tmp.path())).await;
    std::fs::write(
        tmp.path().join("policies/no-eve.rhai"),
        r#"delta.author != "eve""#,
    )
    .unwrap();
    receiver.node().policies().reload();
    let source = common::start_node("counting-source").await;
    author(source.node(), "alice", 3).await;
    author(source.node(), "eve", 2).await;
    receiver
        .federation()
        .connect_to_remote(
            &source.url(),
            LinkConfig {
                mode: SyncMode::Pull,
                initial_sync: InitialSync::Full,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(wait_for(T, || receiver.node().store().quarantine_len() == 2).await);
    let (status, policies) = api(&receiver, "/policies").await;
    assert_eq!(status, 200);
    let script = &policies["scripts"][0];
    assert!(script["file"].as_str().unwrap().ends_with("no-eve.rhai"));
    assert_eq!(
        (&script["evaluations"], &script["rejections"]),
        (&5.into(), &2.into())
    );
}
