//! Request bodies: read up to the node's limit, refused in the API's JSON error shape;
//! and `POST /deltas` bodies read into deltas, the one way the API reads deltas.
//!
//! axum's own `Bytes` extractor answers a body over `DefaultBodyLimit` with a plain-text
//! 413, which a client parsing `{"error", "message"}` cannot read. Every handler that
//! reads a body takes a [`RequestBody`] instead, so every refusal names the limit the
//! same way. The limit itself is set once, on the router, from
//! [`Limits::max_request_bytes`](crate::delta::Limits::max_request_bytes).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::StatusCode;

use super::ApiError;
use crate::delta::json::{Batch, BatchError};
use crate::node::{Node, Origin};

/// The whole request body, at most the node's `max_request_bytes()`.
pub(super) struct RequestBody(pub Bytes);

impl<S> FromRequest<S> for RequestBody
where
    S: Send + Sync,
    Node: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<RequestBody, ApiError> {
        let json = is_json(req.headers());
        match Bytes::from_request(req, state).await {
            // A body a web page could send without asking (`text/plain`, a form, no type
            // at all) is refused: only JSON, which a browser sends cross-origin only
            // after a preflight this API never grants.
            Ok(bytes) if !bytes.is_empty() && !json => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "the request body must be JSON, sent with `Content-Type: application/json`",
            )),
            Ok(bytes) => Ok(RequestBody(bytes)),
            Err(rejection) => Err(refusal(&rejection, &Node::from_ref(state))),
        }
    }
}

/// `Content-Type: application/json`, or `application/x-ndjson` (JSON lines, what
/// `POST /import` reads; as safe, for a browser preflights it too), parameters such as
/// `charset` allowed.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            let t = t.trim();
            t.eq_ignore_ascii_case("application/json")
                || t.eq_ignore_ascii_case("application/x-ndjson")
        })
}

/// Why a body could not be read, as the API says it.
fn refusal(rejection: &BytesRejection, node: &Node) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let limits = node.limits();
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!(
                "the request body is over the node's limit of {} bytes (twice limits.maxDeltaBytes = {}, at least 2 MiB); send fewer deltas per request",
                limits.max_request_bytes(),
                limits.max_delta_bytes
            ),
        );
    }
    ApiError::new(
        rejection.status(),
        "INVALID_REQUEST",
        format!("could not read the request body: {}", rejection.body_text()),
    )
}

/// The deltas of a `POST /deltas` body (one delta or an array, full or in the authoring
/// shorthand, all valid), or the error that answers the request. An invalid delta is
/// reported to the node as refused, with its index in an array.
pub(super) fn read_deltas(node: &Node, body: &Bytes) -> Result<Batch, ApiError> {
    Batch::parse(body, node.system_id(), node.signing_key()).map_err(|e| match e {
        BatchError::Empty => {
            ApiError::bad_request("INVALID_JSON", "the request body is empty; expected JSON")
        }
        BatchError::NotJson(e) => {
            ApiError::bad_request("INVALID_JSON", format!("the body is not valid JSON: {e}"))
        }
        BatchError::NotDeltas => ApiError::bad_request(
            "INVALID_DELTA",
            "expected a delta object or an array of deltas",
        ),
        BatchError::Invalid { index, id, error } => {
            node.report_invalid(id, &error, &Origin::Local);
            ApiError::invalid_delta(&error, index)
        }
    })
}

/// A JSON request body read into `T`, or a 400 with `code` naming the field at fault.
pub(super) fn entity<T: serde::de::DeserializeOwned>(
    body: &[u8],
    code: &'static str,
    what: &str,
) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad_request(code, format!("invalid {what}: {}", e.inner()))
            .with_field((path != ".").then_some(path))
    })
}
