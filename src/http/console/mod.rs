//! The operator console: a page and its scripts, compiled into the binary and served by
//! the node itself, so it needs no network, CDN or build step at run time.
//!
//! - `GET /` answers the page to a client that prefers `text/html` (a browser), and the
//!   info document ([`super::info`]) to every other one; `Vary: Accept` says so to caches.
//! - `GET /ui/` is the page, `GET /ui/{asset}` its scripts and style.
//!
//! The assets hold no data: they are open (see [`super::auth`]). The page reads the JSON
//! API with relative URLs, from the same origin ([`super::origin`] refuses others), and
//! sends the token the operator types into it as `Authorization: Bearer`, never in a URL.
//! Every answer here carries a Content-Security-Policy that allows only the node's own
//! scripts and styles (no inline code), and is never framed by another site.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::{info, ApiError};
use crate::federation::Federation;

/// One file of the console.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The asset `file` of this folder, of type `kind`.
macro_rules! asset {
    ($file:literal, $kind:expr) => {
        Asset {
            name: $file,
            content_type: $kind,
            body: include_bytes!($file),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

const INDEX: &str = "index.html";

/// Every file the console is made of; nothing else is served under `/ui/`. The page
/// comes first.
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("console.css", CSS),
    asset!("console.js", JS),
    asset!("api.js", JS),
    asset!("links.js", JS),
    asset!("events.js", JS),
    asset!("chart.js", JS),
    asset!("dom.js", JS),
    asset!("icon.svg", SVG),
];

/// Only the node's own files run or style the page; it talks to its own origin only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the page for a browser, the info document for anything else.
pub(super) async fn root(State(fed): State<Federation>, headers: HeaderMap) -> Response {
    let mut response = if wants_html(&headers) {
        serve(INDEX)
    } else {
        info::document(State(fed)).await.into_response()
    };
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    response
}

/// `GET /ui`: the page lives at `/ui/`, where its relative links resolve.
pub(super) async fn redirect() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `GET /ui/`.
pub(super) async fn index() -> Response {
    serve(INDEX)
}

/// `GET /ui/{asset}`.
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    serve(&name)
}

fn serve(name: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        return ApiError::not_found(format!(
            "the console has no file {name:?} (it has {})",
            names.join(", ")
        ))
        .into_response();
    };
    let headers = [
        (header::CONTENT_TYPE, asset.content_type),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // The files change with the binary: a browser asks again rather than run a
        // console older than the node it talks to.
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (StatusCode::OK, headers, asset.body).into_response()
}

/// Whether the client ranks `text/html` above JSON in its `Accept` (browsers do). A
/// client that sends no `Accept`, `*/*`, or JSON at least as high gets JSON, as before
/// the console existed.
pub(super) fn wants_html(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let (mut html, mut json) = (0.0_f32, 0.0_f32);
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/html" => html = html.max(q),
            "application/json" => json = json.max(q),
            _ => {}
        }
    }
    html > 0.0 && html > json
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn browsers_get_the_page_and_programs_get_json() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8";
        assert!(wants_html(&accept(browser)));
        assert!(!wants_html(&HeaderMap::new()));
        assert!(!wants_html(&accept("*/*")));
        assert!(!wants_html(&accept("application/json")));
        assert!(!wants_html(&accept("application/json, text/html")));
        assert!(!wants_html(&accept("text/html;q=0.5, application/json")));
        assert!(!wants_html(&accept("text/html;q=0")));
        assert!(wants_html(&accept("application/json;q=0.2, TEXT/HTML")));
    }

    #[test]
    fn every_asset_is_served_with_its_type_and_the_policy() {
        for asset in ASSETS {
            let r = serve(asset.name);
            assert_eq!(r.status(), StatusCode::OK, "{}", asset.name);
            assert_eq!(r.headers()[header::CONTENT_TYPE], asset.content_type);
            assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
        assert_eq!(serve("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert!(!CSP.contains("unsafe"));
    }

    /// The page loads only files that are served, and holds no inline script or style
    /// that the policy would block.
    #[test]
    fn the_page_names_only_served_files_and_has_no_inline_code() {
        let page = std::str::from_utf8(ASSETS[0].body).unwrap();
        for needle in ["<style", " style=", " onclick=", " onload=", "javascript:"] {
            assert!(!page.contains(needle), "the page holds {needle:?}");
        }
        for script in page.split("<script").skip(1) {
            assert!(
                script.trim_start().starts_with("type=\"module\" src="),
                "{script}"
            );
        }
        for js in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(js.body).unwrap();
            for import in text.lines().filter(|l| l.starts_with("import ")) {
                let file = import
                    .rsplit("\"./")
                    .next()
                    .and_then(|f| f.split('"').next())
                    .unwrap_or_default();
                assert!(
                    ASSETS.iter().any(|a| a.name == file),
                    "{} imports {file:?}, which is not served",
                    js.name
                );
            }
        }
    }
}
