//! `/policies` and `/quarantine`.
//!
//! - `GET /policies`: the set in force (hash, scripts with their state, errors, counters)
//! - `POST /policies/reload`: read the folders now (the watcher normally does this)
//! - `GET /quarantine?after=&limit=`: refused deltas with link, policy and reason
//! - `POST /quarantine/replay`: judge them again under the current policies

use std::sync::atomic::Ordering;

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::node::Node;

/// The policy set as `GET /policies` and `GET /status` show it.
pub(crate) fn policies_json(node: &Node) -> Value {
    let host = node.policies();
    let set = host.current();
    let c = set.counters();
    json!({
        "hash": set.hash(),
        "policiesDir": host.dirs().policies,
        "filtersDir": host.dirs().filters,
        "reloads": host.reload_count(),
        "scripts": set.scripts(),
        "errors": set.errors(),
        "evaluations": c.evaluations.load(Ordering::Relaxed),
        "rejections": c.rejections.load(Ordering::Relaxed),
        "runtimeErrors": c.runtime_errors.load(Ordering::Relaxed),
        "timeouts": c.timeouts.load(Ordering::Relaxed),
        "evalMicros": c.eval_nanos.load(Ordering::Relaxed) / 1000,
    })
}

pub(super) async fn get(State(node): State<Node>) -> Json<Value> {
    Json(policies_json(&node))
}

pub(super) async fn reload(State(node): State<Node>) -> Result<Json<Value>, ApiError> {
    let host = node.policies().clone();
    tokio::task::spawn_blocking(move || host.reload())
        .await
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "RELOAD_FAILED",
                e.to_string(),
            )
        })?;
    Ok(Json(policies_json(&node)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Page {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

pub(super) async fn quarantine(
    State(node): State<Node>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let limit = page.limit.clamp(1, 10_000);
    let entries = node.quarantine_list(page.after, limit)?;
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.qid))
        .flatten();
    Ok(Json(json!({
        "entries": entries,
        "total": node.store().quarantine_len(),
        "next": next,
    })))
}

pub(super) async fn replay(State(node): State<Node>) -> Result<Json<Value>, ApiError> {
    let report = node.replay_quarantine().await?;
    Ok(Json(json!(report)))
}
