//! `/health`: what a supervisor or load balancer probes.
//!
//! - `GET /health/live`: 200 while the process serves requests (restart it if not).
//! - `GET /health/ready`: 200 when the node can take writes, else 503 with the reason
//!   (send no writes; the store retries by itself and turns ready again).
//! - `GET /health`: the readiness answer, with both checks spelled out.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::node::Node;

pub(super) async fn live() -> impl IntoResponse {
    Json(json!({"status": "live"}))
}

pub(super) async fn ready(State(node): State<Node>) -> impl IntoResponse {
    let storage = node.store().health();
    if storage.writable {
        return (StatusCode::OK, Json(json!({"status": "ready"})));
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "status": "unready",
            "reason": format!(
                "the store cannot write: {}",
                storage.last_error.as_deref().unwrap_or("an earlier write failed")
            ),
            "storage": storage,
        })),
    )
}

pub(super) async fn summary(State(node): State<Node>) -> impl IntoResponse {
    let storage = node.store().health();
    let status = if storage.writable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if storage.writable { "ready" } else { "unready" },
        "live": true,
        "ready": storage.writable,
        "storage": storage,
    });
    (status, Json(body))
}
