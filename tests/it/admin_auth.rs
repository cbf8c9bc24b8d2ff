//! The protected API (issue 17): admin routes take the admin token, write and read routes
//! their own when configured, probes and the federation endpoint stay open; a refusal is
//! a 401 a client can read, counted in `/metrics`. Then the binary: the token file it
//! makes, the CLI that finds it, and `--admin-listen`.

use crate::common;

use std::time::Duration;

use common::cli::{self, run, run_in, Serving};
use reqwest::{Method, StatusCode};
use rhizome::{Node, ServerOptions};
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret";

/// Sends `method path` with `body` (JSON) and `token` (bearer); the status, the
/// `WWW-Authenticate` header and the body.
async fn call(
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let challenge = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = res.text().await.unwrap();
    (
        status,
        challenge,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

async fn protected(options: ServerOptions) -> rhizome::Server {
    let node = Node::in_memory("guarded").await.expect("node");
    common::serve_at(node, options, "127.0.0.1:0").await
}

fn admin_only() -> ServerOptions {
    ServerOptions {
        admin_token: Some(ADMIN.into()),
        ..ServerOptions::default()
    }
}

/// The `rhizome_http_unauthorized_total` sample of `class`.
async fn refusals(base: &str, class: &str, token: Option<&str>) -> u64 {
    let mut req = reqwest::Client::new().get(format!("{base}/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let text = req.send().await.unwrap().text().await.unwrap();
    let prefix = format!("rhizome_http_unauthorized_total{{class=\"{class}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_route_refuses_a_missing_or_wrong_token_and_takes_the_right_one() {
    let server = protected(admin_only()).await;
    let base = server.url();
    let (status, _, link) = call(
        &base,
        Method::POST,
        "/links",
        Some(json!({"url": "http://127.0.0.1:9", "config": {"reconnect": {"enabled": false}}})),
        Some(ADMIN),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let id = link["id"].as_str().unwrap().to_owned();
    let (status, _, delta) = call(
        &base,
        Method::POST,
        "/deltas",
        Some(json!({"author": "alice", "pointers": [{"role": "text", "target": "hi"}]})),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "writes are open: no write token"
    );
    let delta = delta["id"].as_str().unwrap().to_owned();

    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/links".into(), None),
        (Method::GET, format!("/links/{id}"), None),
        (Method::POST, format!("/links/{id}/pause"), Some(json!({}))),
        (Method::POST, format!("/links/{id}/resume"), Some(json!({}))),
        (Method::GET, "/policies".into(), None),
        (Method::POST, "/policies/reload".into(), Some(json!({}))),
        (Method::GET, "/quarantine".into(), None),
        (Method::POST, "/quarantine/replay".into(), Some(json!({}))),
        (
            Method::POST,
            format!("/deltas/{delta}/negate"),
            Some(json!({})),
        ),
        (Method::DELETE, format!("/links/{id}"), None),
        (
            Method::POST,
            "/links".into(),
            Some(json!({"url": "http://127.0.0.1:9"})),
        ),
    ];
    for (method, path, body) in &routes {
        let what = format!("{method} {path}");
        let (status, challenge, answer) =
            call(&base, method.clone(), path, body.clone(), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what} without a token");
        assert!(
            challenge
                .as_deref()
                .is_some_and(|c| c.starts_with("Bearer")),
            "{what}: {challenge:?}"
        );
        assert_eq!(answer["error"], "UNAUTHORIZED", "{what}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains("admin token"),
            "{answer}"
        );
        let (status, challenge, _) =
            call(&base, method.clone(), path, body.clone(), Some("guess")).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{what} with a wrong token"
        );
        assert!(challenge.unwrap().contains("invalid_token"));
    }
    assert!(server.node().get(&delta).unwrap().is_some());
    assert_eq!(server.federation().get_federation_links().len(), 1);

    for (method, path, body) in &routes {
        let (status, _, answer) =
            call(&base, method.clone(), path, body.clone(), Some(ADMIN)).await;
        assert!(status.is_success(), "{method} {path}: {status} {answer}");
    }
    assert_eq!(
        refusals(&base, "admin", None).await,
        2 * routes.len() as u64,
        "each refusal is counted"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_and_read_tokens_guard_their_routes_and_probes_and_links_stay_open() {
    let server = protected(ServerOptions {
        write_token: Some("writer".into()),
        read_token: Some("reader".into()),
        ..admin_only()
    })
    .await;
    let base = server.url();
    let delta = |id: &str| Some(common::delta_json(id, "alice", "s"));

    for (token, expect) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("reader"), StatusCode::UNAUTHORIZED),
        (Some("writer"), StatusCode::CREATED),
    ] {
        let (status, _, _) = call(&base, Method::POST, "/deltas", delta("w-1"), token).await;
        assert_eq!(status, expect, "POST /deltas with {token:?}");
    }
    let (status, _, _) = call(&base, Method::POST, "/deltas", delta("w-2"), Some(ADMIN)).await;
    assert_eq!(status, StatusCode::CREATED, "the admin token writes too");

    let reads: [(Method, &str, Option<Value>); 5] = [
        (Method::GET, "/deltas", None),
        (Method::GET, "/deltas/w-1", None),
        (Method::POST, "/query", Some(json!({"filter": {}}))),
        (Method::GET, "/status", None),
        (Method::GET, "/metrics", None),
    ];
    for (method, path, body) in &reads {
        for (token, expect) in [
            (None, StatusCode::UNAUTHORIZED),
            (Some("writer"), StatusCode::UNAUTHORIZED),
            (Some("reader"), StatusCode::OK),
            (Some(ADMIN), StatusCode::OK),
        ] {
            let (status, _, _) = call(&base, method.clone(), path, body.clone(), token).await;
            assert_eq!(status, expect, "{method} {path} with {token:?}");
        }
    }
    for path in ["/health", "/health/live", "/health/ready"] {
        let (status, _, _) = call(&base, Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path} is open to probes");
    }
    assert_eq!(refusals(&base, "write", Some("reader")).await, 2);
    assert_eq!(refusals(&base, "read", Some("reader")).await, 10);

    // A peer without any token links up: the federation endpoint is not the API's to guard.
    let peer = Node::in_memory("peer").await.unwrap();
    let links = common::links_of(&peer);
    links
        .connect_to_remote(&base, rhizome::LinkConfig::default())
        .unwrap();
    assert!(
        common::wait_for(Duration::from_secs(10), || common::ids(&peer).len() == 2).await,
        "the peer synced over an unguarded federation endpoint"
    );
    links.disconnect_all().await;
    server.shutdown().await.unwrap();
}

/// The refusals that existed before tokens still come first on the new routes: a foreign
/// page is refused even with the token, and a body that is not JSON is never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_and_non_json_bodies_are_refused_on_admin_routes_too() {
    let server = protected(admin_only()).await;
    let base = server.url();
    let client = reqwest::Client::new();
    let foreign = client
        .post(format!("{base}/links"))
        .header("origin", "http://evil.example")
        .bearer_auth(ADMIN)
        .json(&json!({"url": "http://127.0.0.1:9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let plain = |token: Option<&str>| {
        let mut req = client
            .post(format!("{base}/links"))
            .header("content-type", "text/plain")
            .body(r#"{"url": "http://127.0.0.1:9"}"#);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(
        plain(None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        plain(Some(ADMIN)).await.unwrap().status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert!(server.federation().get_federation_links().is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_admin_address_admin_routes_are_served_there_only() {
    let server = protected(ServerOptions {
        admin_listen: Some("127.0.0.1:0".into()),
        ..admin_only()
    })
    .await;
    let main = server.url();
    let admin = format!("http://{}", server.admin_addr().expect("an admin address"));
    assert_ne!(main, admin);

    let (status, _, answer) = call(&main, Method::GET, "/links", None, Some(ADMIN)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["error"], "ADMIN_ELSEWHERE");
    let (status, _, _) = call(&admin, Method::GET, "/links", None, None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the token still applies there"
    );
    let (status, _, _) = call(&admin, Method::GET, "/links", None, Some(ADMIN)).await;
    assert_eq!(status, StatusCode::OK);

    let d = Some(common::delta_json("x-1", "alice", "s"));
    let (status, _, _) = call(&main, Method::POST, "/deltas", d, None).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the main address serves the rest"
    );
    let (status, _, _) = call(&admin, Method::GET, "/deltas/x-1", None, None).await;
    assert_eq!(status, StatusCode::OK, "and so does the admin address");
    server.shutdown().await.unwrap();
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn serve_makes_a_private_token_once_and_the_cli_finds_it_beside_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = Serving::start(&["--data".as_ref(), data.as_os_str()]);
    let file = data.join("admin.token");
    assert_eq!(node.admin_token_file.as_deref(), Some(file.as_path()));
    assert_eq!(mode(&file), 0o600);
    let token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert_eq!(token.len(), 64, "32 random bytes in hex");

    // Beside the data directory (its parent, as the README's tour runs), as written.
    run_in(dir.path(), &["link", "list", "--node", &node.url]).json_lines();
    // Elsewhere: the node says what it wants, the CLI says how to give it.
    let elsewhere = tempfile::tempdir().unwrap();
    run_in(elsewhere.path(), &["link", "list", "--node", &node.url]).assert_fails_saying(&[
        "the node requires a token",
        "--token",
        "RHIZOME_TOKEN",
        "--data DIR",
    ]);
    let data_arg = data.to_str().unwrap();
    run(&["link", "list", "--node", &node.url, "--data", data_arg]).json_lines();
    run(&["link", "list", "--node", &node.url, "--token", &token]).json_lines();
    let by_env = cli::bin()
        .args(["link", "list", "--node", &node.url])
        .env("RHIZOME_TOKEN", &token)
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert!(by_env.status.success(), "{by_env:?}");
    run(&["link", "list", "--node", &node.url, "--token", "nope"])
        .assert_fails_saying(&["the node requires a token", "was not accepted"]);
    // Reads and writes stay open without write and read tokens.
    let status = run_in(elsewhere.path(), &["status", "--node", &node.url]);
    assert!(status.ok(), "{}", status.err);
    node.stop();

    let again = Serving::start(&["--data".as_ref(), data.as_os_str()]);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim(),
        token,
        "never overwritten"
    );
    again.stop();
}

#[test]
fn a_memory_node_keeps_its_token_by_port_while_it_runs() {
    let node = cli::serve(&[]);
    let file = node.admin_token_file.clone().expect("a token file");
    assert!(file
        .to_string_lossy()
        .ends_with(&format!("{}.token", node.url.rsplit(':').next().unwrap())));
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()) & 0o077, 0);
    let elsewhere = tempfile::tempdir().unwrap();
    for command in [["quarantine", "list"], ["link", "list"]] {
        let ran = run_in(
            elsewhere.path(),
            &[&command[..], &["--node", &node.url]].concat(),
        );
        assert!(ran.ok(), "{command:?}: {}", ran.err);
    }
    let unauthenticated = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(reqwest::get(format!("{}/links", node.url)))
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    node.stop();
    assert!(!file.exists(), "removed on a clean stop");
}

#[test]
fn configured_tokens_and_an_admin_address_in_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rhizome.toml");
    std::fs::write(
        &config,
        "storage = \"memory\"\n[server]\nadminToken = \"from-config\"\nwriteToken = \"w\"\nadminListen = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let node = Serving::start(&["--config".as_ref(), config.as_os_str()]);
    assert_eq!(
        node.admin_token_file, None,
        "a configured token is not copied"
    );
    let admin = node.admin_url.clone().expect("an admin address");
    let config_arg = config.to_str().unwrap();
    run(&["link", "list", "--node", &admin, "--config", config_arg]).json_lines();
    run(&["link", "list", "--node", &node.url, "--config", config_arg])
        .assert_fails_saying(&["ADMIN_ELSEWHERE"]);
    run(&["put", "--node", &node.url, "--author", "a", "-p", "t=x"])
        .assert_fails_saying(&["the node requires a token"]);
    run(&[
        "put", "--node", &node.url, "--token", "w", "--author", "a", "-p", "t=x",
    ])
    .json_lines();
    node.stop();
}
