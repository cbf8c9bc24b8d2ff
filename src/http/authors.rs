//! `/authors`: authors bound to keys, and the signature settings in force.
//!
//! - `GET /authors` -> `{"authors": [AuthorEntry...], "signatures": SignatureSettings}`
//!   (keys in base64url, as signed deltas carry them)
//! - `POST /authors` `AuthorEntry` -> 201; replaces the keys of an author already bound
//! - `DELETE /authors/{name}` -> 200
//!
//! Authors bound here last until the node stops; `[[author]]` in the config file keeps
//! them. A quarantine replay judges refused deltas again under the authors bound now.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::body::{self, RequestBody};
use super::error::ApiError;
use crate::admission::{AuthorEntry, AuthorTable};
use crate::federation::Federation;

pub(super) async fn list(State(fed): State<Federation>) -> Json<Value> {
    let node = fed.node();
    Json(json!({
        "authors": node.authors().entries(),
        "signatures": node.signature_policy().settings(),
    }))
}

pub(super) async fn add(
    State(fed): State<Federation>,
    RequestBody(body): RequestBody,
) -> Result<impl IntoResponse, ApiError> {
    let entry: AuthorEntry = body::entity(&body, "INVALID_AUTHOR", "author")?;
    let name = entry.name.clone();
    let mut shown = None;
    fed.node()
        .update_authors(|table| {
            let next = table.with(entry)?;
            shown = next.entries().iter().find(|e| e.name == name).cloned();
            Ok(next)
        })
        .map_err(|e| ApiError::bad_request("INVALID_AUTHOR", e))?;
    tracing::info!(author = %name, "author bound to keys");
    Ok((StatusCode::CREATED, Json(json!(shown))))
}

pub(super) async fn remove(
    State(fed): State<Federation>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    fed.node()
        .update_authors(|table: &AuthorTable| {
            table.without(&name).ok_or_else(|| {
                format!("no author named {name:?} is bound (GET /authors lists them)")
            })
        })
        .map_err(ApiError::not_found)?;
    tracing::info!(author = %name, "author unbound");
    Ok(Json(json!({ "removed": name })))
}
