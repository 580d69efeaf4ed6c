//! Access rules and the gate that enforces a route's rule before its handler.

use super::ApiError;
use super::route::Route;
use crate::authority::{Authority, Principal};
use crate::config::LimitsConfig;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rustls::pki_types::CertificateDer;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tessera_core::api::Role;
use tessera_core::limit::Buckets;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without credentials.
    Public,
    /// Operator credentials holding one of these roles.
    Roles(&'static [Role]),
    /// A workload presenting a live certificate issued by this CA.
    Workload,
    /// Any workload or any operator credential.
    Authenticated,
    /// A workload or a node, or one whose certificate fell with its revoked
    /// CA (re-issue).
    Renew,
    /// A node agent's certificate (node recorded and not banned), only.
    Node,
}

/// The verified client certificate of the connection, if any (set by the server).
#[derive(Debug, Clone, Default)]
pub struct PeerCert(pub Option<Arc<CertificateDer<'static>>>);

/// The connection's source address and whether any of its requests has
/// authenticated yet (set by the server, which gives a connection that never
/// authenticated a shorter idle deadline; the gate marks it).
#[derive(Debug, Clone)]
pub struct PeerConn {
    /// The source address of the TCP connection.
    pub addr: std::net::SocketAddr,
    /// Set once a request of the connection resolved to a principal.
    pub authenticated: Arc<AtomicBool>,
}

/// The per-source and per-node request rates, shared by every route's gate.
pub(super) struct Fairness {
    public: Buckets<IpAddr>,
    agent: Buckets<String>,
}

/// Most sources and nodes whose rates are tracked at once (bounded memory).
const MAX_TRACKED: usize = 65_536;

impl Fairness {
    pub(super) fn new(l: &LimitsConfig) -> Self {
        Self {
            public: Buckets::new(
                f64::from(l.public_requests_per_second_per_source),
                l.public_burst_per_source,
                MAX_TRACKED,
            ),
            agent: Buckets::new(
                f64::from(l.agent_requests_per_second_per_node),
                l.agent_burst_per_node,
                MAX_TRACKED,
            ),
        }
    }
}

/// `429 rate_limited`, with the seconds until the next request is admitted.
fn rate_limited(auth: &Authority, scope: &'static str, wait: Duration, who: &str) -> Response {
    auth.metrics.rate_limited.inc(&[scope]);
    ApiError::rate_limited(who, wait).into_response()
}

/// The state of one route's gate: the route it guards.
#[derive(Clone)]
pub(super) struct Gate {
    pub(super) auth: Arc<Authority>,
    pub(super) route: &'static Route,
    pub(super) fairness: Arc<Fairness>,
}

/// Middleware in front of one route's handler: identifies the caller, admits
/// it by the route's rule (the principal is handed to the handler's caller
/// extractor) or answers the refusal, and counts the request.
pub(super) async fn gate(State(gate): State<Gate>, mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = gate.route.path;
    let creds = Credentials {
        authorization: req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|h| h.to_str().unwrap_or("").to_owned()),
        peer: req.extensions().get::<PeerCert>().and_then(|p| p.0.clone()),
    };
    let conn = req.extensions().get::<PeerConn>().cloned();
    let resp = match check(&gate.auth, gate.route, &method, creds).await {
        Ok(principal) => match limit(&gate, conn.as_ref(), &principal) {
            Err(resp) => resp,
            Ok(()) => {
                if let Some(c) = &conn
                    && !matches!(principal, Principal::Anonymous)
                {
                    c.authenticated.store(true, Ordering::Release);
                }
                req.extensions_mut().insert(principal);
                next.run(req).await
            }
        },
        Err(e) => e.into_response(),
    };
    let auth = &gate.auth;
    auth.metrics
        .requests
        .inc(&[path, method.as_str(), resp.status().as_str()]);
    auth.metrics
        .request_latency
        .observe(&[path, method.as_str()], started.elapsed().as_secs_f64());
    resp
}

/// Admits a public request by its source's rate and a node's request by the
/// node's, or answers `429`. Authenticated callers other than nodes are
/// bounded by their connection slots and the request deadline instead.
fn limit(gate: &Gate, conn: Option<&PeerConn>, p: &Principal) -> Result<(), Response> {
    let f = &gate.fairness;
    match (gate.route.access, p) {
        (Access::Public, _) => match conn {
            Some(c) => f
                .public
                .take(&c.addr.ip())
                .map_err(|wait| rate_limited(&gate.auth, "public", wait, "address")),
            None => Ok(()),
        },
        (Access::Node, Principal::Node { spiffe_id, .. }) => f
            .agent
            .take(&spiffe_id.as_str().to_owned())
            .map_err(|wait| rate_limited(&gate.auth, "agent", wait, "node")),
        _ => Ok(()),
    }
}

/// What the gate reads from a request to identify the caller.
struct Credentials {
    authorization: Option<String>,
    peer: Option<Arc<CertificateDer<'static>>>,
}

async fn resolve(auth: &Authority, creds: Credentials) -> Result<Principal, ApiError> {
    if let Some(text) = creds.authorization {
        let token = text.strip_prefix("Bearer ").unwrap_or("");
        return match auth.principal_from_token(token).await? {
            Some(p) => Ok(p),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "API token is unknown, expired or disabled",
            )),
        };
    }
    match creds.peer {
        Some(der) => match auth.principal_from_cert(&der).await? {
            Some(p) => Ok(p),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "client certificate is unknown, revoked or disabled",
            )),
        },
        None => Ok(Principal::Anonymous),
    }
}

async fn check(
    auth: &Authority,
    route: &Route,
    method: &Method,
    creds: Credentials,
) -> Result<Principal, ApiError> {
    // A GET route also answers HEAD; the table names GET only, so HEAD is no route.
    if method.as_str() != route.method {
        return Err(ApiError::no_route());
    }
    if route.access == Access::Public {
        return Ok(Principal::Anonymous);
    }
    let p = resolve(auth, creds).await?;
    admit(route.access, &p)?;
    Ok(p)
}

/// Whether `access` admits the caller `p`, or the refusal. Public routes
/// admit anyone (the gate hands their handlers [`Principal::Anonymous`]).
pub(super) fn admit(access: Access, p: &Principal) -> Result<(), ApiError> {
    match (access, p) {
        (Access::Public, _) => Ok(()),
        (_, Principal::Anonymous) => Err(ApiError::unauthenticated()),
        (Access::Roles(roles), Principal::Credential { role, .. }) if roles.contains(role) => {
            Ok(())
        }
        (Access::Roles(roles), _) => {
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            let needs = names.join(", ");
            Err(ApiError::forbidden(format!(
                "this route needs one of the roles: {needs}"
            )))
        }
        (Access::Workload | Access::Renew, Principal::Workload { .. }) => Ok(()),
        (Access::Renew | Access::Node, Principal::Node { .. }) => Ok(()),
        (Access::Renew, Principal::Reissue { .. }) => Ok(()),
        (_, Principal::Reissue { .. }) => Err(ApiError::forbidden(
            "this certificate was revoked with its CA: it may only re-issue (POST /v1/certs/renew)",
        )),
        (Access::Renew | Access::Workload, _) => Err(ApiError::forbidden(
            "this route needs a workload certificate",
        )),
        (Access::Node, _) => Err(ApiError::forbidden(
            "this route needs a node agent's certificate",
        )),
        (Access::Authenticated, _) => Ok(()),
    }
}
