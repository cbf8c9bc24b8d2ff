//! The operator's routes for a node's data (all admin):
//! - `POST /import`: JSON lines, one delta per line, as `rhizome export` writes them;
//!   judged as deltas from a peer named `import` (the pull filters, the signature
//!   rules, the trust policies: see [`crate::node::ImportTrust`]). Answered line by line, as
//!   `POST /deltas` answers an array: `{"results": [{"id", "status", ...}]}`, a line
//!   that is not a valid delta answered `invalid` with the reason, without refusing
//!   the others. There is no way to skip the trust policies over HTTP: that is for the
//!   operator's own files, imported into a stopped node's data directory.
//! - `POST /backup` `{"dir": "..."}`: a consistent copy of the store in `dir`, a path
//!   on the node's machine (new or empty), that `rhizome serve --data DIR` opens.
//! - `POST /compact`: a major compaction of every keyspace, with the store's size on
//!   disk before and after.
//!
//! Backup and compaction block on the disk for as long as they take; they run on a
//! blocking thread, and the node keeps serving meanwhile.

use std::path::PathBuf;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::RequestBody;
use super::{ApiError, OutcomeBody, OutcomesBody};
use crate::delta::Delta;
use crate::node::{ImportTrust, Node};
use crate::store::StoreError;

/// The most lines one `POST /import` takes: each gets an answer, and a body of tiny
/// invalid lines would otherwise make hundreds of thousands of them.
const MAX_LINES: usize = 10_000;

pub(super) async fn import(
    State(node): State<Node>,
    RequestBody(body): RequestBody,
) -> Result<Json<Value>, ApiError> {
    let text = std::str::from_utf8(&body).map_err(|e| {
        ApiError::bad_request("INVALID_JSON", format!("the body is not UTF-8: {e}"))
    })?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() > MAX_LINES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!(
                "{} lines in one request, over {MAX_LINES}: send fewer per request",
                lines.len()
            ),
        ));
    }
    let deltas: Vec<_> = lines.into_iter().map(Delta::parse).collect();
    let ids: Vec<String> = deltas
        .iter()
        .map(|d| d.as_ref().map(|d| d.id.clone()).unwrap_or_default())
        .collect();
    let outcomes = node.import(deltas, ImportTrust::Policies).await?;
    let results = ids
        .iter()
        .zip(&outcomes)
        .map(|(id, o)| OutcomeBody::new(id, o))
        .collect();
    Ok(Json(json!(OutcomesBody { results })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupBody {
    dir: PathBuf,
}

pub(super) async fn backup(
    State(node): State<Node>,
    RequestBody(body): RequestBody,
) -> Result<Json<Value>, ApiError> {
    let BackupBody { dir } = super::body::entity(&body, "INVALID_REQUEST", "backup request")?;
    let copy = node.backup(dir.clone()).await.map_err(|e| match e {
        crate::node::NodeError::Store(StoreError::Backup(why)) => {
            ApiError::bad_request("INVALID_BACKUP", why)
        }
        crate::node::NodeError::Store(e) => e.into(),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "BACKUP_FAILED",
            other.to_string(),
        ),
    })?;
    let mut answer = json!(copy);
    answer["dir"] = json!(dir);
    Ok(Json(answer))
}

pub(super) async fn compact(State(node): State<Node>) -> Result<Json<Value>, ApiError> {
    let store = node.store().clone();
    let done = tokio::task::spawn_blocking(move || store.compact())
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "COMPACTION_FAILED",
                format!("compaction task failed: {e}"),
            )
        })??;
    Ok(Json(json!(done)))
}
