//! The REST API: one route table ([`ROUTES`]) whose entries carry each route's
//! method, path, access rule and handler; a gate, built from each entry, that
//! enforces the rule before the handler runs; typed caller extractors
//! ([`Operator`], [`Workload`], [`Node`], [`Renewer`], [`Caller`]) so a
//! handler's signature states what its rule guarantees; and thin handlers over
//! the [`Authority`], one module per resource.
//!
//! Architecture invariant: authorization is decided once, by the gate, from the
//! table, for every route; a handler never runs for a caller the table does not
//! admit, and never re-checks the caller's kind (its extractor is checked
//! against the rule by a test).

mod access;
mod caller;
mod error;
mod extract;
mod reply;
mod route;

mod agent;
mod ca;
mod certs;
mod credentials;
mod denials;
mod entries;
mod events;
mod federation;
mod health;
mod jwt;
mod nodes;
mod platform;
mod revocations;
mod tokens;
mod webhooks;

pub use access::{Access, PeerCert, PeerConn};
pub use caller::{Caller, Node, Operator, Renewer, Workload};
pub use error::ApiError;
pub use route::Route;

use crate::authority::Authority;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use route::route;
use std::sync::Arc;
use tessera_core::api::Role;

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
const READ_FEDERATION: &[Role] = &[Role::Admin, Role::Auditor];

/// Every route the server has: method, path, access rule and handler. The
/// OpenAPI document must list exactly these (a test checks it).
pub const ROUTES: &[Route] = &[
    route!(GET "/healthz", Access::Public, health::healthz),
    route!(GET "/readyz", Access::Public, health::readyz),
    route!(GET "/metrics", Access::Public, health::metrics),
    route!(GET "/v1/openapi.json", Access::Public, health::openapi),
    route!(GET "/v1/bundle", Access::Public, ca::bundle),
    route!(GET "/v1/crl", Access::Public, ca::crl),
    route!(GET "/v1/ca", Access::Roles(ALL_ROLES), ca::status),
    route!(POST "/v1/ca/prepare", Access::Roles(ADMIN), ca::prepare),
    route!(POST "/v1/ca/rotate", Access::Roles(ADMIN), ca::rotate),
    route!(POST "/v1/ca/{id}/activate", Access::Roles(ADMIN), ca::activate),
    route!(POST "/v1/ca/{id}/retire", Access::Roles(ADMIN), ca::retire),
    route!(POST "/v1/ca/{id}/revoke", Access::Roles(ADMIN), ca::revoke),
    route!(POST "/v1/certs", Access::Roles(ISSUE), certs::issue),
    route!(GET "/v1/certs", Access::Roles(READ_CERTS), certs::list),
    route!(GET "/v1/certs/{serial}", Access::Roles(READ_CERTS), certs::show),
    route!(POST "/v1/certs/redeem", Access::Public, certs::redeem),
    route!(POST "/v1/certs/renew", Access::Renew, certs::renew),
    route!(POST "/v1/revocations", Access::Roles(ISSUE), revocations::revoke),
    route!(GET "/v1/revocations", Access::Authenticated, revocations::feed),
    route!(GET "/v1/entries", Access::Roles(READ_ENTRIES), entries::list),
    route!(POST "/v1/entries", Access::Roles(REGISTER), entries::create),
    route!(GET "/v1/entries/{id}", Access::Roles(READ_ENTRIES), entries::show),
    route!(PUT "/v1/entries/{id}", Access::Roles(REGISTER), entries::update),
    route!(DELETE "/v1/entries/{id}", Access::Roles(REGISTER), entries::delete),
    route!(GET "/v1/tokens", Access::Roles(READ_ENTRIES), tokens::list),
    route!(POST "/v1/tokens", Access::Roles(REGISTER), tokens::create),
    route!(DELETE "/v1/tokens/{id}", Access::Roles(REGISTER), tokens::delete),
    route!(GET "/v1/audit", Access::Roles(AUDIT), events::audit),
    route!(GET "/v1/credentials", Access::Roles(ADMIN), credentials::list),
    route!(POST "/v1/credentials", Access::Roles(ADMIN), credentials::create),
    route!(DELETE "/v1/credentials/{id}", Access::Roles(ADMIN), credentials::delete),
    // A full report (1000 denials) is larger than other bodies; only a
    // workload that passed the gate gets to send one.
    route!(POST "/v1/denials", Access::Workload, denials::report)
        .body_limit(|l| l.max_denial_report_bytes.max(l.max_body_bytes)),
    route!(POST "/v1/jwt-svids", Access::Workload, jwt::issue),
    route!(GET "/v1/denials", Access::Roles(DENIALS), denials::list),
    route!(GET "/v1/events", Access::Roles(EVENTS), events::events),
    route!(GET "/v1/webhooks", Access::Roles(EVENTS), webhooks::list),
    route!(POST "/v1/webhooks", Access::Roles(ADMIN), webhooks::create),
    route!(DELETE "/v1/webhooks/{id}", Access::Roles(ADMIN), webhooks::delete),
    route!(GET "/v1/webhooks/{id}/deliveries", Access::Roles(EVENTS), webhooks::deliveries),
    route!(GET "/v1/nodes", Access::Roles(READ_NODES), nodes::list),
    route!(GET "/v1/nodes/{id}", Access::Roles(READ_NODES), nodes::show),
    route!(POST "/v1/nodes/{id}/ban", Access::Roles(ADMIN), nodes::ban),
    route!(POST "/v1/nodes/{id}/unban", Access::Roles(ADMIN), nodes::unban),
    route!(GET "/v1/federation", Access::Roles(READ_FEDERATION), federation::list),
    route!(POST "/v1/federation", Access::Roles(ADMIN), federation::create),
    route!(GET "/v1/federation/{trust_domain}", Access::Roles(READ_FEDERATION), federation::show),
    route!(PUT "/v1/federation/{trust_domain}", Access::Roles(ADMIN), federation::update),
    route!(DELETE "/v1/federation/{trust_domain}", Access::Roles(ADMIN), federation::delete),
    route!(POST "/v1/federation/{trust_domain}/refresh", Access::Roles(ADMIN), federation::refresh),
    route!(GET "/v1/agent/entries", Access::Node, agent::entries),
    route!(GET "/v1/agent/federated-bundles", Access::Node, agent::federated_bundles),
    route!(POST "/v1/agent/svids", Access::Node, agent::svids),
    route!(POST "/v1/agent/jwt-svids", Access::Node, agent::jwt_svids),
    // Platform-token (JWT) attestation: the token is the credential.
    route!(POST "/v1/nodes/attest", Access::Public, platform::attest_node),
    route!(POST "/v1/svids/platform", Access::Public, platform::svid),
];

/// Builds the API router: every route of [`ROUTES`] behind its gate.
pub fn router(auth: Arc<Authority>) -> Router {
    let mut router: Router<Arc<Authority>> = Router::new();
    let fairness = Arc::new(access::Fairness::new(&auth.cfg.limits));
    for route in ROUTES {
        router = router.route(route.path, route.method_router(&auth, &fairness));
    }
    let limit = auth.cfg.limits.max_body_bytes;
    router
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async {
            ApiError::method_not_allowed("method not allowed on this route")
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(auth)
}
