//! API errors: `{"error": CODE, "message": ..., "field"?: ...}` with a fitting status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::delta::InvalidDelta;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A request without the token its route takes (see `auth`); the caller adds the
    /// `WWW-Authenticate` challenge.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    pub fn with_field(mut self, field: Option<String>) -> ApiError {
        self.field = field;
        self
    }

    /// An invalid delta, `index` set when it was one of an array.
    pub fn invalid_delta(e: &InvalidDelta, index: Option<usize>) -> ApiError {
        let prefix = index.map(|i| format!("[{i}]")).unwrap_or_default();
        let field = match (prefix.is_empty(), e.field.is_empty()) {
            (true, _) => e.field.clone(),
            (false, true) => prefix,
            (false, false) => format!("{prefix}.{}", e.field),
        };
        let message = match index {
            Some(i) => format!("delta {i} of the array: {e}; nothing was stored"),
            None => e.to_string(),
        };
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_DELTA",
            message,
            field: Some(field),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            // Known and reported (`/health/ready`, `/status`): the store recovers by
            // itself, and the request is safe to send again.
            StoreError::Unwritable(_) | StoreError::Reopening => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "STORAGE_UNAVAILABLE",
                e.to_string(),
            ),
            e => {
                tracing::error!(error = %e, "store error while serving a request");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "STORAGE_ERROR",
                    e.to_string(),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code, "message": self.message});
        if let Some(field) = self.field {
            body["field"] = json!(field);
        }
        (self.status, Json(body)).into_response()
    }
}
