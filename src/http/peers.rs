//! `/peers`: the peers this node knows by key or token.
//!
//! - `GET /peers` -> `{"peers": [PeerEntry...], "allowAnonymous": bool}` (tokens never shown)
//! - `POST /peers` `PeerEntry` -> 201; a name, key or token already known is a 409
//! - `DELETE /peers/{name}` -> 200; the links that peer opened to this node are closed, so
//!   they are judged again when it reconnects
//!
//! Peers added here last until the node stops; `[[peer]]` in the config file keeps them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::body::{self, RequestBody};
use super::error::ApiError;
use crate::admission::PeerEntry;
use crate::federation::Federation;

pub(super) async fn list(State(fed): State<Federation>) -> Json<Value> {
    let peers: Vec<PeerEntry> = fed
        .node()
        .peers()
        .entries()
        .iter()
        .map(PeerEntry::redacted)
        .collect();
    Json(json!({ "peers": peers, "allowAnonymous": fed.allows_anonymous() }))
}

pub(super) async fn add(
    State(fed): State<Federation>,
    RequestBody(body): RequestBody,
) -> Result<impl IntoResponse, ApiError> {
    let entry: PeerEntry = body::entity(&body, "INVALID_PEER", "peer")?;
    let shown = entry.redacted();
    fed.node()
        .update_peers(|table| table.with(entry))
        .map_err(|e| {
            let status = if e.contains("already") || e.contains(" has the ") {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            ApiError::new(status, "INVALID_PEER", e)
        })?;
    tracing::info!(peer = %shown.name, key = ?shown.key, token = shown.token.is_some(), "peer added");
    Ok((StatusCode::CREATED, Json(json!(shown))))
}

pub(super) async fn remove(
    State(fed): State<Federation>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    fed.node()
        .update_peers(|table| {
            table
                .without(&name)
                .ok_or_else(|| format!("no peer named {name:?} (GET /peers lists them)"))
        })
        .map_err(ApiError::not_found)?;
    let closed = fed.close_links_of_peer(&name);
    tracing::info!(peer = %name, links_closed = closed, "peer removed");
    Ok(Json(json!({ "removed": name, "linksClosed": closed })))
}
