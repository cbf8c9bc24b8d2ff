//! `/links`: list, open, pause, resume and close federation links.
//!
//! - `GET /links` -> `{"links": [LinkInfo...]}`
//! - `POST /links` `{"url": "...", "config"?: LinkConfig}` -> 201 with the new link
//! - `GET /links/{id}`, `POST /links/{id}/pause`, `POST /links/{id}/resume`, `DELETE /links/{id}`

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{self, RequestBody};
use super::error::ApiError;
use crate::federation::{Federation, FederationLink, LinkConfig};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectBody {
    url: String,
    #[serde(default)]
    config: LinkConfig,
}

pub(super) async fn list(State(fed): State<Federation>) -> Json<Value> {
    Json(json!({ "links": fed.link_infos() }))
}

pub(super) async fn connect(
    State(fed): State<Federation>,
    RequestBody(body): RequestBody,
) -> Result<impl IntoResponse, ApiError> {
    let req: ConnectBody = body::entity(&body, "INVALID_LINK", "link request")?;
    let link = fed.connect_to_remote(&req.url, req.config).map_err(|e| {
        ApiError::bad_request("INVALID_LINK", e.to_string()).with_field(Some("url".into()))
    })?;
    Ok((StatusCode::CREATED, Json(json!(link.info()))))
}

fn find(fed: &Federation, id: &str) -> Result<FederationLink, ApiError> {
    fed.get_federation_link(id)
        .or_else(|| {
            // A link's name stands for it when exactly one link bears it.
            let mut named = fed
                .get_federation_links()
                .into_iter()
                .filter(|l| l.name() == id);
            named.next().filter(|_| named.next().is_none())
        })
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no link with id or name {id:?} (GET /links lists them)"
            ))
        })
}

pub(super) async fn get_one(
    State(fed): State<Federation>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(find(&fed, &id)?.info())))
}

pub(super) async fn pause(
    State(fed): State<Federation>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let link = find(&fed, &id)?;
    link.pause();
    Ok(Json(json!(link.info())))
}

pub(super) async fn resume(
    State(fed): State<Federation>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let link = find(&fed, &id)?;
    link.resume();
    Ok(Json(json!(link.info())))
}

/// How long `POST /links/{id}/reconcile` waits for the outcome before answering that it
/// goes on.
const RECONCILE_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs a reconciliation on the link and answers with what it found and fetched.
pub(super) async fn reconcile(
    State(fed): State<Federation>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let link = find(&fed, &id)?;
    match link.reconcile(RECONCILE_WAIT).await {
        Ok(report) => Ok(Json(json!({"id": link.id(), "reconciled": report}))),
        Err(why) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "RECONCILE_NOT_DONE",
            format!("link {}: {why}", link.id()),
        )),
    }
}

pub(super) async fn disconnect(
    State(fed): State<Federation>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    find(&fed, &id)?.disconnect();
    Ok(StatusCode::NO_CONTENT)
}
