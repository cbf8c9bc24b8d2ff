//! Bearer tokens on the HTTP API: which token each route takes, checked before any
//! handler runs.
//!
//! Every route is in one class, named in one place ([`access`]):
//! - open: `/health*` (probes), the federation endpoint, where peers prove who they
//!   are in their own handshake, and the console's files (`/ui/...`, and `/` when a
//!   browser asks for the page rather than the info document): they hold no data, the
//!   page asks the operator for a token and sends it on the API calls it makes;
//! - read: `GET /deltas`, `GET /deltas/{id}`, `POST /query`, `GET /status`, `/metrics`;
//! - write: `POST /deltas`;
//! - admin: everything else: links, policies, the quarantine (it holds the deltas the
//!   node refused, which a reader of the log is not meant to see), negation, archival
//!   (`POST /archive`), and any
//!   route added later until it is classed otherwise, so a new route is never open by
//!   mistake.
//!
//! Admin routes take the admin token; read and write routes take their own token, or the
//! admin token, when one is configured, and are open when not. With no admin token the
//! admin routes are open: the library's default, for nodes built in-process; the
//! `rhizome` binary always sets one. A refusal is an answer with a reason: 401 with
//! `WWW-Authenticate: Bearer` and the API's JSON error, counted by class ([`Refusals`],
//! in `/metrics`) and logged at INFO with the peer's address. Tokens are compared in
//! constant time. An empty configured token matches nothing: a node misconfigured that
//! way is closed, never open.
//!
//! With `adminListen`, the listener that is not the admin one answers admin routes 403
//! before any token is looked at: those routes are not served there at all.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::federation::ServerOptions;

/// Which token a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Open,
    Read,
    Write,
    Admin,
}

impl Access {
    /// The class's name, as `/metrics` labels it and messages say it.
    pub fn name(self) -> &'static str {
        match self {
            Access::Open => "open",
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }
}

/// The class of a route, by method and the route's pattern (`/links/{id}`). Admin is
/// the default: a route is opened to readers or writers here, by name, or not at all.
/// The federation endpoint's path is configurable and is classed by the caller.
pub fn access(method: &Method, route: &str) -> Access {
    let read = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    match route {
        "/health" | "/health/live" | "/health/ready" => Access::Open,
        "/ui" | "/ui/" | "/ui/{asset}" if read => Access::Open,
        "/deltas" if post => Access::Write,
        "/" | "/deltas" | "/deltas/{id}" | "/status" | "/metrics" | "/events" | "/changes"
            if read =>
        {
            Access::Read
        }
        "/query" if post => Access::Read,
        // The node's whole data, in and out, and its disk.
        "/import" | "/backup" | "/compact" if post => Access::Admin,
        // Named so that nobody makes it a read route by accident: a pass moves data.
        "/archive" => Access::Admin,
        _ => Access::Admin,
    }
}

/// Requests refused for want of the right token, by class, since start.
#[derive(Debug, Default)]
pub struct Refusals {
    read: AtomicU64,
    write: AtomicU64,
    admin: AtomicU64,
}

impl Refusals {
    /// Refusals of routes of `class` (open routes are never refused).
    pub fn get(&self, class: Access) -> u64 {
        self.counter(class).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn count(&self, class: Access) {
        if let Some(c) = self.counter(class) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counter(&self, class: Access) -> Option<&AtomicU64> {
        match class {
            Access::Open => None,
            Access::Read => Some(&self.read),
            Access::Write => Some(&self.write),
            Access::Admin => Some(&self.admin),
        }
    }
}

/// Whether a listener serves the admin routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRoutes {
    Here,
    /// On the `adminListen` address, not this one.
    Elsewhere,
}

/// What one listener checks requests against.
pub(super) struct Gate {
    admin: Option<String>,
    write: Option<String>,
    read: Option<String>,
    federation_path: String,
    admin_routes: AdminRoutes,
    refusals: Arc<Refusals>,
}

impl Gate {
    pub(super) fn new(
        options: &ServerOptions,
        admin_routes: AdminRoutes,
        refusals: Arc<Refusals>,
    ) -> Gate {
        Gate {
            admin: options.admin_token.clone(),
            write: options.write_token.clone(),
            read: options.read_token.clone(),
            federation_path: options.path.clone(),
            admin_routes,
            refusals,
        }
    }

    /// The tokens a route of `class` accepts; `None` when it is open.
    fn accepted(&self, class: Access) -> Option<[Option<&str>; 2]> {
        let own = match class {
            Access::Open => return None,
            Access::Admin => return self.admin.as_deref().map(|a| [Some(a), None]),
            Access::Write => self.write.as_deref(),
            Access::Read => self.read.as_deref(),
        };
        own.map(|t| [Some(t), self.admin.as_deref()])
    }

    fn check(&self, class: Access, headers: &HeaderMap) -> Result<(), Refused> {
        let Some(accepted) = self.accepted(class) else {
            return Ok(());
        };
        let Some(sent) = bearer(headers) else {
            return Err(Refused::Missing);
        };
        // Every accepted token is compared, whichever matches: the time taken says
        // nothing about which one, or how much of it, the request got right.
        let matched = accepted
            .iter()
            .flatten()
            .filter(|t| !t.is_empty())
            .fold(subtle::Choice::from(0), |m, t| {
                m | t.as_bytes().ct_eq(sent.as_bytes())
            });
        if bool::from(matched) {
            Ok(())
        } else {
            Err(Refused::Wrong)
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Missing,
    Wrong,
}

impl Refused {
    fn name(self) -> &'static str {
        match self {
            Refused::Missing => "no token",
            Refused::Wrong => "wrong token",
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme in any case); `None`
/// without one, or with an empty token.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Runs before every routed handler: passes the request on, or answers it.
pub(super) async fn require_token(
    State(gate): State<Arc<Gate>>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let class = if route == gate.federation_path
        || (route == "/" && super::console::wants_html(req.headers()))
    {
        Access::Open
    } else {
        access(req.method(), &route)
    };
    if class == Access::Admin && gate.admin_routes == AdminRoutes::Elsewhere {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "ADMIN_ELSEWHERE",
            "this node serves its admin routes on its admin address only ([server] adminListen)",
        )
        .into_response();
    }
    let refused = match gate.check(class, req.headers()) {
        Ok(()) => return next.run(req).await,
        Err(refused) => refused,
    };
    gate.refusals.count(class);
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.to_string())
        .unwrap_or_default();
    tracing::info!(%peer, method = %req.method(), %route, class = class.name(), reason = refused.name(), "request refused: no valid token");
    unauthorized(class, refused, gate.admin.is_some())
}

fn unauthorized(class: Access, refused: Refused, admin_token: bool) -> Response {
    let takes = match class {
        Access::Admin => "the admin token".to_owned(),
        _ if admin_token => format!("the {} token or the admin token", class.name()),
        _ => format!("the {} token", class.name()),
    };
    let (message, challenge) = match refused {
        Refused::Missing => (
            format!(
                "this route needs {takes}, sent as `Authorization: Bearer TOKEN`; the \
                 rhizome CLI sends the node's admin token itself when it runs beside the \
                 node's data directory"
            ),
            HeaderValue::from_static("Bearer realm=\"rhizome\""),
        ),
        Refused::Wrong => (
            format!("the token sent is not accepted here: this route needs {takes}"),
            HeaderValue::from_static("Bearer realm=\"rhizome\", error=\"invalid_token\""),
        ),
    };
    let mut response = ApiError::unauthorized(message).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(admin: Option<&str>, write: Option<&str>, read: Option<&str>) -> Gate {
        let options = ServerOptions {
            admin_token: admin.map(str::to_owned),
            write_token: write.map(str::to_owned),
            read_token: read.map(str::to_owned),
            ..ServerOptions::default()
        };
        Gate::new(&options, AdminRoutes::Here, Arc::default())
    }

    fn with(token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(t).unwrap());
        }
        h
    }

    #[test]
    fn routes_are_admin_unless_named_open_read_or_write() {
        assert_eq!(access(&Method::GET, "/health/ready"), Access::Open);
        assert_eq!(access(&Method::POST, "/deltas"), Access::Write);
        assert_eq!(access(&Method::GET, "/deltas"), Access::Read);
        assert_eq!(access(&Method::HEAD, "/status"), Access::Read);
        assert_eq!(access(&Method::GET, "/"), Access::Read);
        assert_eq!(access(&Method::GET, "/ui/{asset}"), Access::Open);
        assert_eq!(access(&Method::POST, "/ui/{asset}"), Access::Admin);
        assert_eq!(access(&Method::POST, "/query"), Access::Read);
        assert_eq!(access(&Method::GET, "/changes"), Access::Read);
        assert_eq!(access(&Method::POST, "/deltas/{id}/negate"), Access::Admin);
        assert_eq!(access(&Method::GET, "/quarantine"), Access::Admin);
        assert_eq!(access(&Method::DELETE, "/deltas"), Access::Admin);
        assert_eq!(access(&Method::POST, "/a-route-added-later"), Access::Admin);
    }

    #[test]
    fn each_class_takes_its_token_or_the_admin_token() {
        let g = gate(Some("adm"), Some("wr"), None);
        assert_eq!(g.check(Access::Admin, &with(None)), Err(Refused::Missing));
        assert_eq!(
            g.check(Access::Admin, &with(Some("Bearer wr"))),
            Err(Refused::Wrong)
        );
        assert_eq!(g.check(Access::Admin, &with(Some("bearer adm"))), Ok(()));
        assert_eq!(g.check(Access::Write, &with(Some("Bearer wr"))), Ok(()));
        assert_eq!(g.check(Access::Write, &with(Some("Bearer adm"))), Ok(()));
        assert_eq!(
            g.check(Access::Write, &with(Some("Basic wr"))),
            Err(Refused::Missing)
        );
        assert_eq!(g.check(Access::Read, &with(None)), Ok(()), "no read token");
        assert_eq!(g.check(Access::Open, &with(Some("Bearer x"))), Ok(()));
    }

    #[test]
    fn no_admin_token_leaves_admin_open_and_an_empty_one_closes_it() {
        assert_eq!(
            gate(None, None, None).check(Access::Admin, &with(None)),
            Ok(())
        );
        let empty = gate(Some(""), None, None);
        assert_eq!(
            empty.check(Access::Admin, &with(Some("Bearer "))),
            Err(Refused::Missing)
        );
        assert_eq!(
            empty.check(Access::Admin, &with(Some("Bearer x"))),
            Err(Refused::Wrong)
        );
    }
}
