//! The federation endpoint on the node's HTTP port: the WebSocket upgrade.
//!
//! A peer token on the upgrade (`Authorization: Bearer` or `?token=`) names the
//! configured peer before the handshake; an unknown one is refused here with 401.
//!
//! The upgrade is done by hand on hyper's connection (axum's own WebSocket support
//! would bring a second tungstenite); the socket then belongs to [`Federation::accept`].

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_tungstenite::WebSocketStream;

use super::ApiError;
use crate::federation::wire::codes;
use crate::federation::Federation;

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// A peer token, from `Authorization: Bearer` or the url's `token` parameter (a
/// reference client can only choose its url). Empty means none.
fn presented_token(req: &Request) -> Option<String> {
    let bearer = super::auth::bearer(req.headers()).map(str::to_owned);
    let query = || {
        axum::extract::Query::<TokenQuery>::try_from_uri(req.uri())
            .ok()
            .and_then(|q| q.0.token)
    };
    bearer.or_else(query).filter(|t| !t.is_empty())
}

/// Upgrades a request on the federation path and runs the link.
pub(super) async fn upgrade(State(fed): State<Federation>, mut req: Request) -> Response {
    let headers = req.headers();
    if !header_has(headers, header::UPGRADE, "websocket")
        || !header_has(headers, header::CONNECTION, "upgrade")
    {
        return ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "UPGRADE_REQUIRED",
            "this is the federation endpoint: it speaks WebSocket (RhizomeDB federation protocol v1); connect with `rhizome link connect` or a federation client",
        )
        .into_response();
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        return ApiError::bad_request("BAD_WEBSOCKET_VERSION", "Sec-WebSocket-Version must be 13")
            .into_response();
    }
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        return ApiError::bad_request("BAD_WEBSOCKET_KEY", "Sec-WebSocket-Key is missing")
            .into_response();
    };
    let peer_addr = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.to_string());
    let by_token = match presented_token(&req) {
        None => None,
        Some(token) => match fed.node().peers().identify_token(&token) {
            Some(peer) => Some(peer),
            None => {
                fed.auth_refusals().count(codes::AUTH_FAILED);
                tracing::warn!(addr = ?peer_addr, "refused a federation upgrade: unknown peer token");
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    codes::AUTH_FAILED,
                    "this peer token is not configured on this node ([[peer]] token, or POST /peers)",
                )
                .into_response();
            }
        },
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "federation upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            WsRole::Server,
            Some(fed.websocket_config()),
        )
        .await;
        fed.accept(ws, peer_addr, by_token).await;
    });
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    res
}
