//! Requests from web pages of other origins are refused, on every route and on the
//! federation upgrade.
//!
//! A page on any site can make a browser send simple requests (a form POST, a `fetch`
//! without preflight, a WebSocket) to a node it can reach, `localhost` included; the
//! browser says where the page came from in `Origin`. A request whose `Origin` is not
//! this node's own address (the `Host` it was sent to) is answered 403 before any handler
//! runs. Clients that are not browsers (the CLI, peers, curl) send no `Origin` and are not
//! affected; a page served by the node itself is same-origin.

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

pub(super) async fn same_origin_only(req: Request, next: Next) -> Response {
    match foreign_origin(req.headers()) {
        Some(origin) => ApiError::new(
            StatusCode::FORBIDDEN,
            "FOREIGN_ORIGIN",
            format!(
                "requests from web pages of other origins are refused (Origin: {origin}); \
                 call the API from a program or from the node's own pages"
            ),
        )
        .into_response(),
        None => next.run(req).await,
    }
}

/// The request's `Origin`, when it is there and names another host than `Host`.
fn foreign_origin(headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("(not text)");
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    // `Origin: scheme://host[:port]`; `null` (sandboxed pages, files) is never ours.
    let authority = origin
        .split_once("://")
        .map(|(_, a)| a.trim_end_matches('/'));
    match (authority, host) {
        (Some(a), Some(h)) if a.eq_ignore_ascii_case(h) => None,
        _ => Some(origin.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn only_a_foreign_origin_is_refused() {
        assert_eq!(foreign_origin(&headers(None, "127.0.0.1:8080")), None);
        assert_eq!(
            foreign_origin(&headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080")),
            None
        );
        assert!(foreign_origin(&headers(Some("http://evil.example"), "127.0.0.1:8080")).is_some());
        assert!(
            foreign_origin(&headers(Some("http://127.0.0.1:9999"), "127.0.0.1:8080")).is_some()
        );
        assert!(foreign_origin(&headers(Some("null"), "127.0.0.1:8080")).is_some());
    }
}
