//! The REST API: one route table ([`ROUTES`]) that names each route's access
//! rule, an access layer that enforces it before any handler runs, and thin
//! handlers over the [`Authority`].
//!
//! Architecture invariant: authorization is decided here, from the table, for
//! every route; a handler never runs for a caller the table does not admit.

mod error;
mod handlers;

pub use error::ApiError;

use crate::authority::{Authority, Principal};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use axum::Router;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use tessera_core::api::Role;

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

/// One route of the API.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    /// HTTP method.
    pub method: &'static str,
    /// Path pattern (axum syntax, `{param}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
}

const ALL_ROLES: &[Role] = &[Role::Admin, Role::Registrar, Role::Issuer, Role::Auditor];
const ADMIN: &[Role] = &[Role::Admin];
const ISSUE: &[Role] = &[Role::Admin, Role::Issuer];
const READ_CERTS: &[Role] = &[Role::Admin, Role::Issuer, Role::Auditor];
const REGISTER: &[Role] = &[Role::Admin, Role::Registrar];
const READ_ENTRIES: &[Role] = &[Role::Admin, Role::Registrar, Role::Auditor];
const AUDIT: &[Role] = &[Role::Admin, Role::Auditor];
const DENIALS: &[Role] = &[Role::Admin, Role::Auditor];
const EVENTS: &[Role] = &[Role::Admin, Role::Auditor];
const READ_NODES: &[Role] = &[Role::Admin, Role::Auditor];

macro_rules! r {
    ($m:literal, $p:literal, $a:expr) => {
        RouteSpec {
            method: $m,
            path: $p,
            access: $a,
        }
    };
}

/// Every route the server has, with its access rule. The OpenAPI document must
/// list exactly these (a test checks it).
pub const ROUTES: &[RouteSpec] = &[
    r!("GET", "/healthz", Access::Public),
    r!("GET", "/readyz", Access::Public),
    r!("GET", "/metrics", Access::Public),
    r!("GET", "/v1/openapi.json", Access::Public),
    r!("GET", "/v1/bundle", Access::Public),
    r!("GET", "/v1/crl", Access::Public),
    r!("GET", "/v1/ca", Access::Roles(ALL_ROLES)),
    r!("POST", "/v1/ca/prepare", Access::Roles(ADMIN)),
    r!("POST", "/v1/ca/rotate", Access::Roles(ADMIN)),
    r!("POST", "/v1/ca/{id}/activate", Access::Roles(ADMIN)),
    r!("POST", "/v1/ca/{id}/retire", Access::Roles(ADMIN)),
    r!("POST", "/v1/ca/{id}/revoke", Access::Roles(ADMIN)),
    r!("POST", "/v1/certs", Access::Roles(ISSUE)),
    r!("GET", "/v1/certs", Access::Roles(READ_CERTS)),
    r!("GET", "/v1/certs/{serial}", Access::Roles(READ_CERTS)),
    r!("POST", "/v1/certs/redeem", Access::Public),
    r!("POST", "/v1/certs/renew", Access::Renew),
    r!("POST", "/v1/revocations", Access::Roles(ISSUE)),
    r!("GET", "/v1/revocations", Access::Authenticated),
    r!("GET", "/v1/entries", Access::Roles(READ_ENTRIES)),
    r!("POST", "/v1/entries", Access::Roles(REGISTER)),
    r!("GET", "/v1/entries/{id}", Access::Roles(READ_ENTRIES)),
    r!("PUT", "/v1/entries/{id}", Access::Roles(REGISTER)),
    r!("DELETE", "/v1/entries/{id}", Access::Roles(REGISTER)),
    r!("GET", "/v1/tokens", Access::Roles(READ_ENTRIES)),
    r!("POST", "/v1/tokens", Access::Roles(REGISTER)),
    r!("DELETE", "/v1/tokens/{id}", Access::Roles(REGISTER)),
    r!("GET", "/v1/audit", Access::Roles(AUDIT)),
    r!("GET", "/v1/credentials", Access::Roles(ADMIN)),
    r!("POST", "/v1/credentials", Access::Roles(ADMIN)),
    r!("DELETE", "/v1/credentials/{id}", Access::Roles(ADMIN)),
    r!("POST", "/v1/denials", Access::Workload),
    r!("POST", "/v1/jwt-svids", Access::Workload),
    r!("GET", "/v1/denials", Access::Roles(DENIALS)),
    r!("GET", "/v1/events", Access::Roles(EVENTS)),
    r!("GET", "/v1/webhooks", Access::Roles(EVENTS)),
    r!("POST", "/v1/webhooks", Access::Roles(ADMIN)),
    r!("DELETE", "/v1/webhooks/{id}", Access::Roles(ADMIN)),
    r!("GET", "/v1/webhooks/{id}/deliveries", Access::Roles(EVENTS)),
    r!("GET", "/v1/nodes", Access::Roles(READ_NODES)),
    r!("GET", "/v1/nodes/{id}", Access::Roles(READ_NODES)),
    r!("POST", "/v1/nodes/{id}/ban", Access::Roles(ADMIN)),
    r!("POST", "/v1/nodes/{id}/unban", Access::Roles(ADMIN)),
    r!("GET", "/v1/agent/entries", Access::Node),
    r!("POST", "/v1/agent/svids", Access::Node),
    r!("POST", "/v1/agent/jwt-svids", Access::Node),
    // Platform-token (JWT) attestation: the token is the credential.
    r!("POST", "/v1/nodes/attest", Access::Public),
    r!("POST", "/v1/svids/platform", Access::Public),
];

/// The verified client certificate of the connection, if any (set by the server).
#[derive(Debug, Clone, Default)]
pub struct PeerCert(pub Option<Arc<CertificateDer<'static>>>);

/// The access rule of a route, by method and matched path.
pub fn access_of(method: &Method, path: &str) -> Option<Access> {
    ROUTES
        .iter()
        .find(|r| r.path == path && r.method == method.as_str())
        .map(|r| r.access)
}

/// Builds the API router.
pub fn router(auth: Arc<Authority>) -> Router {
    let mut router: Router<Arc<Authority>> = Router::new();
    for spec in ROUTES {
        router = router.route(spec.path, handlers::method_router(spec, &auth.cfg.limits));
    }
    let limit = auth.cfg.limits.max_body_bytes;
    router
        .route_layer(middleware::from_fn_with_state(auth.clone(), access_layer))
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(auth)
}

/// What the access layer reads from a request to identify the caller.
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
                axum::http::StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "API token is unknown, expired or disabled",
            )),
        };
    }
    match creds.peer {
        Some(der) => match auth.principal_from_cert(&der).await? {
            Some(p) => Ok(p),
            None => Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "client certificate is unknown, revoked or disabled",
            )),
        },
        None => Ok(Principal::Anonymous),
    }
}

async fn access_layer(
    State(auth): State<Arc<Authority>>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let creds = Credentials {
        authorization: req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|h| h.to_str().unwrap_or("").to_owned()),
        peer: req.extensions().get::<PeerCert>().and_then(|p| p.0.clone()),
    };
    let resp = match check(&auth, &method, &path, creds).await {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    };
    auth.metrics
        .requests
        .inc(&[&path, method.as_str(), resp.status().as_str()]);
    auth.metrics
        .request_latency
        .observe(&[&path, method.as_str()], started.elapsed().as_secs_f64());
    resp
}

async fn check(
    auth: &Authority,
    method: &Method,
    path: &str,
    creds: Credentials,
) -> Result<Principal, ApiError> {
    let access = access_of(method, path).ok_or_else(ApiError::no_route)?;
    if access == Access::Public {
        return Ok(Principal::Anonymous);
    }
    let p = resolve(auth, creds).await?;
    match (access, &p) {
        (_, Principal::Anonymous) => Err(ApiError::unauthenticated()),
        (Access::Roles(roles), Principal::Credential { role, .. }) if roles.contains(role) => Ok(p),
        (Access::Roles(roles), _) => Err(ApiError::forbidden(format!(
            "this route needs one of the roles: {}",
            roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        (Access::Workload | Access::Renew, Principal::Workload { .. }) => Ok(p),
        (Access::Renew | Access::Node, Principal::Node { .. }) => Ok(p),
        (Access::Renew, Principal::Reissue { .. }) => Ok(p),
        (_, Principal::Reissue { .. }) => Err(ApiError::forbidden(
            "this certificate was revoked with its CA: it may only re-issue (POST /v1/certs/renew)",
        )),
        (Access::Renew, _) => Err(ApiError::forbidden(
            "this route needs a workload certificate",
        )),
        (Access::Workload, _) => Err(ApiError::forbidden(
            "this route needs a workload certificate",
        )),
        (Access::Node, _) => Err(ApiError::forbidden(
            "this route needs a node agent's certificate",
        )),
        (Access::Authenticated, _) | (Access::Public, _) => Ok(p),
    }
}

/// JSON body extractor whose rejections are problem documents.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(v))
    }
}

/// Query extractor whose rejections are problem documents.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(v) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(v))
    }
}
