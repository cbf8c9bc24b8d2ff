//! The node's HTTP JSON API.
//!
//! - `POST /deltas`: one delta, an array, or the authoring shorthand (`author` +
//!   `pointers`; the node fills `id`, `timestamp`, `system`).
//! - `GET /deltas?author=&system=&targetId=&context=&since=&until=&after=&limit=&includeNegated=&includeArchive=`
//! - `POST /query`: `{"filter": DeltaFilter, "after"?: seq, "limit"?: n, "includeArchive"?: bool}`; both answers are
//!   streamed and paged by bytes as well as by `limit` (see [`stream`])
//! - `GET /deltas/{id}`, `POST /deltas/{id}/negate` (`{"author"?, "reason"?}`)
//! - `GET /`: the node's info document (see [`info`]), or the console for a browser
//! - `GET /ui/`, `/ui/{asset}`: the operator console (see [`console`])
//! - `GET /events`: the node's events as Server-Sent Events (see [`events`])
//! - `GET /changes`: the log as a change feed, to follow and resume (see [`changes`])
//! - `GET /status`
//! - `GET /health`, `/health/live`, `/health/ready` (see [`health`])
//! - `GET /metrics` (Prometheus text format, see [`metrics`])
//! - `/policies`, `/quarantine` (see [`policies`])
//! - `/links` (see [`links`]) and the federation WebSocket endpoint (`/federation` by default)
//! - `/peers` (see [`peers`]): the peers known by key or token
//! - `/authors` (see [`authors`]): authors bound to keys, and the signature settings
//! - `POST /import`, `POST /backup`, `POST /compact` (see [`lifecycle`]): the node's data
//! - `POST /archive` (see [`archive`]): one archival pass now
//!
//! Which token each route takes is said in one place, [`auth::access`]; a new route is an
//! admin route until it is named there.

mod archive;
pub mod auth;
mod authors;
mod body;
mod changes;
mod connections;
mod console;
mod error;
mod events;
mod health;
mod info;
mod lifecycle;
mod links;
pub mod metrics;
mod origin;
mod peers;
mod policies;
pub mod server;
mod stream;
mod upgrade;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use auth::{AdminRoutes, Refusals};
use body::RequestBody;
pub use connections::{ConnectionStats, ConnectionStatsSnapshot};
pub use error::ApiError;

use crate::delta::json::Batch;
use crate::delta::Delta;
use crate::federation::Federation;
use crate::filter::{DeltaFilter, TimestampRange};
use crate::node::{IngestOutcome, Node, Origin};
use crate::store::{self, Seq};

/// Results per `GET /deltas` page unless `limit` says otherwise, and the most a page may hold.
const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 100_000;

/// The API routes over a node and its links, behind the tokens of `fed`'s options
/// (see [`auth`]); `refusals` counts the requests refused for want of one.
pub fn router(fed: Federation, admin_routes: AdminRoutes, refusals: Arc<Refusals>) -> Router {
    let body_limit = fed.node().limits().max_request_bytes();
    let gate = Arc::new(auth::Gate::new(
        fed.options(),
        admin_routes,
        refusals.clone(),
    ));
    Router::new()
        .route("/deltas", post(post_deltas).get(get_deltas))
        .route("/query", post(post_query))
        .route("/deltas/{id}", get(get_delta))
        .route("/deltas/{id}/negate", post(negate_delta))
        .route("/", get(console::root))
        .route("/ui", get(console::redirect))
        .route("/ui/", get(console::index))
        .route("/ui/{asset}", get(console::asset))
        .route("/status", get(status))
        .route("/events", get(events::stream))
        .route("/changes", get(changes::feed))
        .route("/health", get(health::summary))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/links", get(links::list).post(links::connect))
        .route("/links/{id}", get(links::get_one).delete(links::disconnect))
        .route("/links/{id}/pause", post(links::pause))
        .route("/links/{id}/resume", post(links::resume))
        .route("/links/{id}/reconcile", post(links::reconcile))
        .route("/peers", get(peers::list).post(peers::add))
        .route("/peers/{name}", axum::routing::delete(peers::remove))
        .route("/authors", get(authors::list).post(authors::add))
        .route("/authors/{name}", axum::routing::delete(authors::remove))
        .route("/metrics", get(metrics::metrics))
        .route("/archive", post(archive::run))
        .route("/policies", get(policies::get))
        .route("/policies/reload", post(policies::reload))
        .route("/quarantine", get(policies::quarantine))
        .route("/quarantine/replay", post(policies::replay))
        .route("/import", post(lifecycle::import))
        .route("/backup", post(lifecycle::backup))
        .route("/compact", post(lifecycle::compact))
        .route(&fed.options().path.clone(), any(upgrade::upgrade))
        // IMPORTANT: after every route: a route layer covers the routes added before it.
        .route_layer(axum::middleware::from_fn_with_state(
            gate,
            auth::require_token,
        ))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::Extension(refusals))
        .layer(axum::middleware::from_fn(origin::same_origin_only))
        .with_state(fed)
}

/// Handlers that need only the node take it from the router's federation.
impl axum::extract::FromRef<Federation> for Node {
    fn from_ref(fed: &Federation) -> Node {
        fed.node().clone()
    }
}

fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "INVALID_JSON",
            "the request body is empty; expected JSON",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("INVALID_JSON", format!("the body is not valid JSON: {e}"))
    })
}

/// How `POST /deltas` answers for one delta. Typed rather than a `json!` map: an array
/// of 1000 deltas is answered with 1000 of these.
#[derive(Serialize)]
struct OutcomeBody<'a> {
    id: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<Seq>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    /// The delta itself, echoed when a single delta (not an array) was posted.
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<Delta>,
}

impl<'a> OutcomeBody<'a> {
    fn new(id: &'a str, outcome: &'a IngestOutcome) -> OutcomeBody<'a> {
        let body = |status| OutcomeBody {
            id,
            status,
            seq: None,
            policy: None,
            message: None,
            delta: None,
        };
        match outcome {
            IngestOutcome::Stored(seq) => OutcomeBody {
                seq: Some(*seq),
                ..body("stored")
            },
            IngestOutcome::Duplicate(seq) => OutcomeBody {
                seq: Some(*seq),
                ..body("duplicate")
            },
            IngestOutcome::Invalid(e) => OutcomeBody {
                message: Some(e.to_string()),
                ..body("invalid")
            },
            IngestOutcome::Filtered(reason) => OutcomeBody {
                message: Some(reason.clone()),
                ..body("filtered")
            },
            IngestOutcome::Rejected { policy, reason } => OutcomeBody {
                policy: Some(policy),
                message: Some(reason.clone()),
                ..body("rejected")
            },
        }
    }
}

#[derive(Serialize)]
struct OutcomesBody<'a> {
    results: Vec<OutcomeBody<'a>>,
}

async fn post_deltas(
    State(node): State<Node>,
    RequestBody(body): RequestBody,
) -> Result<impl IntoResponse, ApiError> {
    let Batch {
        deltas, is_array, ..
    } = body::read_deltas(&node, &body)?;
    // The ingestion path enforces the limits too; checked here first so that a body
    // stays all or nothing and a delta over a limit is a 400 naming it.
    for (i, d) in deltas.iter().enumerate() {
        if let Err(e) = node.limits().check(d) {
            node.report_invalid(Some(d.id.clone()), &e, &Origin::Local);
            return Err(ApiError::invalid_delta(&e, is_array.then_some(i)));
        }
    }
    // Only ids are needed to answer an array; a single delta is echoed back whole.
    let ids: Vec<String> = deltas.iter().map(|d| d.id.clone()).collect();
    let single = (!is_array).then(|| deltas.first().cloned()).flatten();
    let outcomes = node.ingest(deltas, Origin::Local).await?;
    let mut results: Vec<OutcomeBody> = ids
        .iter()
        .zip(&outcomes)
        .map(|(id, o)| OutcomeBody::new(id, o))
        .collect();
    if is_array {
        return Ok((StatusCode::OK, Json(OutcomesBody { results })).into_response());
    }
    let status = match outcomes.first() {
        Some(IngestOutcome::Stored(_)) => StatusCode::CREATED,
        // The signature rules refused it: the answer says which rule and why.
        Some(IngestOutcome::Rejected { .. }) => StatusCode::FORBIDDEN,
        _ => StatusCode::OK,
    };
    let Some(mut result) = results.pop() else {
        return Ok((status, Json(Value::Null)).into_response());
    };
    result.delta = single;
    Ok((status, Json(result)).into_response())
}

/// The criteria a query string names, one value each: `GET /deltas` and `GET /changes`
/// read them alike (flattened into their parameters).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Criteria {
    author: Option<String>,
    system: Option<String>,
    target_id: Option<String>,
    context: Option<String>,
    id: Option<String>,
}

impl Criteria {
    /// The filter these criteria make, with the rest of its fields unset.
    fn into_filter(self) -> DeltaFilter {
        let one = |v: Option<String>| v.map(|v| vec![v]);
        DeltaFilter {
            ids: one(self.id),
            target_ids: one(self.target_id),
            target_contexts: one(self.context),
            authors: one(self.author),
            systems: one(self.system),
            ..DeltaFilter::default()
        }
    }

    fn is_empty(&self) -> bool {
        [
            &self.author,
            &self.system,
            &self.target_id,
            &self.context,
            &self.id,
        ]
        .iter()
        .all(|v| v.is_none())
    }
}

/// Query-string form of a filter; each criterion takes one value.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeltaParams {
    #[serde(flatten)]
    criteria: Criteria,
    /// Deltas with a timestamp at or after this (ms).
    since: Option<u64>,
    /// Deltas with a timestamp at or before this (ms).
    until: Option<u64>,
    /// Paging: deltas stored after this log position.
    after: Option<u64>,
    limit: Option<usize>,
    include_negated: Option<bool>,
    /// Also read the archive files (see [`stream`]).
    #[serde(alias = "include_archive")]
    include_archive: Option<bool>,
}

async fn get_deltas(
    State(node): State<Node>,
    params: Result<Query<DeltaParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))?;
    let filter = DeltaFilter {
        timestamp_range: (p.since.is_some() || p.until.is_some()).then_some(TimestampRange {
            start: p.since,
            end: p.until,
        }),
        include_negated: p.include_negated,
        ..p.criteria.into_filter()
    };
    run_query(&node, filter, p.after, p.limit, p.include_archive).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    #[serde(default)]
    filter: Option<Value>,
    after: Option<u64>,
    limit: Option<usize>,
    #[serde(rename = "includeArchive", alias = "include_archive")]
    include_archive: Option<bool>,
}

async fn post_query(
    State(node): State<Node>,
    RequestBody(body): RequestBody,
) -> Result<Response, ApiError> {
    let body = parse_json(&body)?;
    let q: QueryBody = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request("INVALID_QUERY", e.to_string()))?;
    let filter = match q.filter {
        Some(v) => DeltaFilter::from_value(&v)
            .map_err(|e| ApiError::bad_request("INVALID_FILTER", e.to_string()))?,
        None => DeltaFilter::default(),
    };
    run_query(&node, filter, q.after, q.limit, q.include_archive).await
}

/// A page of deltas matching `filter`, streamed (see [`stream`]): `limit` deltas at most,
/// fewer when the page reaches [`stream::PAGE_BYTES`] of deltas; `next` says where the
/// following page starts.
async fn run_query(
    node: &Node,
    filter: DeltaFilter,
    after: Option<u64>,
    limit: Option<usize>,
    include_archive: Option<bool>,
) -> Result<Response, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            format!("limit must be between 1 and {MAX_LIMIT}, got {limit}"),
        ));
    }
    let query = store::Query {
        filter,
        after: Seq(after.unwrap_or(0)),
        limit: Some(limit),
    };
    stream::answer(node, query, include_archive.unwrap_or(false)).await
}

async fn get_delta(
    State(node): State<Node>,
    Path(id): Path<String>,
) -> Result<Json<Delta>, ApiError> {
    match node.get(&id)? {
        Some(d) => Ok(Json(d.delta)),
        // Its id stays known after archival (see `store::Store::archive`).
        None if node.store().seq_of(&id)?.is_some() => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ARCHIVED",
            format!(
                "delta {id:?} was archived: POST /query with {{\"filter\": {{\"ids\": [{id:?}]}}, \"includeArchive\": true}} reads it"
            ),
        )),
        None => Err(ApiError::not_found(format!("no delta with id {id:?}"))),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NegateBody {
    author: Option<String>,
    reason: Option<String>,
}

async fn negate_delta(
    State(node): State<Node>,
    Path(id): Path<String>,
    RequestBody(body): RequestBody,
) -> Result<impl IntoResponse, ApiError> {
    let body: NegateBody = if body.is_empty() {
        NegateBody::default()
    } else {
        serde_json::from_value(parse_json(&body)?)
            .map_err(|e| ApiError::bad_request("INVALID_REQUEST", e.to_string()))?
    };
    if node.get(&id)?.is_none() {
        return Err(ApiError::not_found(format!(
            "no delta with id {id:?} to negate"
        )));
    }
    let author = body.author.unwrap_or_else(|| node.system_id().to_owned());
    let stored = node
        .negate(&id, &author, body.reason.as_deref())
        .await
        .map_err(|e| match e {
            crate::node::CreateError::Invalid(e) => ApiError::invalid_delta(&e, None),
            e @ crate::node::CreateError::Refused { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "REFUSED", e.to_string())
            }
            crate::node::CreateError::Store(e) => e.into(),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"id": stored.delta.id, "status": "stored", "seq": stored.seq, "delta": stored.delta}),
        ),
    ))
}

async fn status(State(fed): State<Federation>) -> Json<Value> {
    let node = fed.node();
    let store = node.store();
    let (verified, refused) = node.signature_counts();
    Json(json!({
        "systemId": node.system_id(),
        "publicKey": node.public_key(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeSeconds": node.uptime().as_secs(),
        "federationPath": fed.options().path,
        "peers": {
            "configured": node.peers().entries().len(),
            "allowAnonymous": fed.allows_anonymous(),
            "refusedAnonymous": fed.auth_refusals().anonymous.load(std::sync::atomic::Ordering::Relaxed),
            "failedAuthentication": fed.auth_refusals().failed.load(std::sync::atomic::Ordering::Relaxed),
        },
        "signatures": {
            "boundAuthors": node.authors().entries().len(),
            "require": node.signature_policy().settings().require,
            "signingKey": node.signing_key().map(crate::identity::NodeKey::public_base64),
            "verified": verified,
            "refused": refused,
        },
        "store": {
            "path": store.path(),
            "temporary": store.is_temporary(),
            "deltas": store.head().0.saturating_sub(store.archive_stats().unwrap_or_default().count),
            "head": store.head().0,
            "duplicatesSinceStart": store.duplicates(),
            "diskBytes": store.disk_space(),
            "storage": store.health(),
        },
        "links": fed.link_infos(),
        "policies": policies::policies_json(node),
        "quarantine": {"deltas": node.store().quarantine_len()},
        "archive": archive::status(node),
    }))
}
