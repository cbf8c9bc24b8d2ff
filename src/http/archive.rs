//! `POST /archive`: one archival pass now, with the retention rule in force (see
//! [`crate::node::retention`]), answered with what moved; and the archive's part of
//! `/status`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::ApiError;
use crate::node::Node;
use crate::store::ArchiveError;

pub(super) async fn run(State(node): State<Node>) -> Result<Json<Value>, ApiError> {
    let report = node.archive_now().await.map_err(|e| match e {
        ArchiveError::NoDirectory => {
            ApiError::new(StatusCode::CONFLICT, "NO_ARCHIVE", e.to_string())
        }
        ArchiveError::Store(e) => e.into(),
        e => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ARCHIVE_ERROR",
            e.to_string(),
        ),
    })?;
    Ok(Json(json!({
        "report": report,
        "retention": node.retention_settings(),
        "archive": node.store().archive_stats()?,
    })))
}

/// The archive as `/status` shows it: what it holds, the rule, the last pass.
pub(super) fn status(node: &Node) -> Value {
    let store = node.store();
    let stats = store.archive_stats().unwrap_or_default();
    json!({
        "deltas": stats.count,
        "oldest": stats.oldest,
        "newest": stats.newest,
        "bytes": store.archive_bytes(),
        "storeTableBytes": store.table_bytes(),
        "dir": store.archive_dir(),
        "retention": node.retention_settings(),
        "lastRun": node.last_archival(),
    })
}
