//! Thin handlers: parse, call the authority, shape the answer.

use super::{ApiError, ApiJson, ApiQuery, RouteSpec};
use crate::authority::{Authority, Principal};
use crate::config::LimitsConfig;
use crate::store::{CertFilter, DenialFilter};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Extension, Json};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tessera_core::api;
use tessera_core::time::rfc3339;

type St = State<Arc<Authority>>;
type Res<T> = Result<T, ApiError>;

/// The handler for a route of the table.
pub(super) fn method_router(
    spec: &RouteSpec,
    limits: &LimitsConfig,
) -> MethodRouter<Arc<Authority>> {
    match (spec.method, spec.path) {
        ("GET", "/healthz") => get(|| async { "ok\n" }),
        ("GET", "/readyz") => get(readyz),
        ("GET", "/metrics") => get(metrics),
        ("GET", "/v1/openapi.json") => get(openapi),
        ("GET", "/v1/bundle") => get(bundle),
        ("GET", "/v1/crl") => get(crl),
        ("GET", "/v1/ca") => get(ca_status),
        ("POST", "/v1/ca/prepare") => post(ca_prepare),
        ("POST", "/v1/ca/rotate") => post(ca_rotate),
        ("POST", "/v1/ca/{id}/activate") => post(ca_activate),
        ("POST", "/v1/ca/{id}/retire") => post(ca_retire),
        ("POST", "/v1/ca/{id}/revoke") => post(ca_revoke),
        ("POST", "/v1/certs") => post(issue),
        ("GET", "/v1/certs") => get(list_certs),
        ("GET", "/v1/certs/{serial}") => get(show_cert),
        ("POST", "/v1/certs/redeem") => post(redeem),
        ("POST", "/v1/certs/renew") => post(renew),
        ("POST", "/v1/revocations") => post(revoke),
        ("GET", "/v1/revocations") => get(feed),
        ("GET", "/v1/entries") => get(list_entries),
        ("POST", "/v1/entries") => post(create_entry),
        ("GET", "/v1/entries/{id}") => get(show_entry),
        ("PUT", "/v1/entries/{id}") => put(update_entry),
        ("DELETE", "/v1/entries/{id}") => delete(delete_entry),
        ("GET", "/v1/tokens") => get(list_tokens),
        ("POST", "/v1/tokens") => post(create_token),
        ("DELETE", "/v1/tokens/{id}") => delete(delete_token),
        ("GET", "/v1/audit") => get(audit),
        ("GET", "/v1/credentials") => get(list_credentials),
        ("POST", "/v1/credentials") => post(create_credential),
        ("DELETE", "/v1/credentials/{id}") => delete(delete_credential),
        // A full report (1000 denials) is larger than other bodies; only a
        // workload that passed the access layer gets to send one.
        ("POST", "/v1/denials") => post(report_denials).layer(DefaultBodyLimit::max(
            limits.max_denial_report_bytes.max(limits.max_body_bytes),
        )),
        ("GET", "/v1/denials") => get(list_denials),
        ("POST", "/v1/jwt-svids") => post(jwt_svid),
        ("GET", "/v1/events") => get(events),
        ("GET", "/v1/webhooks") => get(list_webhooks),
        ("POST", "/v1/webhooks") => post(create_webhook),
        ("DELETE", "/v1/webhooks/{id}") => delete(delete_webhook),
        ("GET", "/v1/webhooks/{id}/deliveries") => get(webhook_deliveries),
        ("GET", "/v1/nodes") => get(list_nodes),
        ("GET", "/v1/nodes/{id}") => get(show_node),
        ("POST", "/v1/nodes/{id}/ban") => post(ban_node),
        ("POST", "/v1/nodes/{id}/unban") => post(unban_node),
        ("GET", "/v1/agent/entries") => get(agent_entries),
        ("POST", "/v1/agent/svids") => post(agent_svids),
        ("POST", "/v1/agent/jwt-svids") => post(agent_jwt_svids),
        // Platform-token (JWT) attestation.
        ("POST", "/v1/nodes/attest") => post(attest_node_platform),
        ("POST", "/v1/svids/platform") => post(platform_svid),
        (m, p) => panic!("route table names {m} {p} but no handler exists"),
    }
}

/// The OpenAPI document, as checked in.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

async fn readyz(State(a): St) -> Response {
    match a.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: database");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "database unreachable",
            )
            .into_response()
        }
    }
}

async fn metrics(State(a): St) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        a.metrics.registry.render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FormatQuery {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    ca_id: Option<String>,
}

async fn bundle(
    State(a): St,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<FormatQuery>,
) -> Res<Response> {
    let b = a.bundle();
    let etag = format!("\"{}\"", b.sequence);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let (ctype, body) = match q.format.as_deref() {
        None | Some("pem") => ("application/x-pem-file", b.pem.clone()),
        Some("jwks") | Some("spiffe") => ("application/json", b.jwks.clone()),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("format: {other:?} is not pem or jwks"),
            ));
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_owned()),
            (header::ETAG, etag),
        ],
        body,
    )
        .into_response())
}

async fn crl(State(a): St, ApiQuery(q): ApiQuery<FormatQuery>) -> Res<Response> {
    let crl = a
        .crl(q.ca_id.as_deref())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no CRL for that CA"))?;
    Ok(match q.format.as_deref() {
        None | Some("der") => (
            [(header::CONTENT_TYPE, "application/pkix-crl")],
            crl.der.clone(),
        )
            .into_response(),
        Some("pem") => (
            [(header::CONTENT_TYPE, "application/x-pem-file")],
            crl.pem.clone(),
        )
            .into_response(),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("format: {other:?} is not der or pem"),
            ));
        }
    })
}

async fn ca_status(State(a): St) -> Res<Json<api::CaStatus>> {
    Ok(Json(a.ca_status().await?))
}

async fn ca_prepare(State(a): St, Extension(p): Extension<Principal>) -> Res<Response> {
    a.ca_prepare(&p).await?;
    Ok((StatusCode::CREATED, Json(a.ca_status().await?)).into_response())
}

async fn ca_rotate(State(a): St, Extension(p): Extension<Principal>) -> Res<Json<api::CaStatus>> {
    a.ca_rotate(&p).await?;
    Ok(Json(a.ca_status().await?))
}

async fn ca_activate(
    State(a): St,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Res<Json<api::CaStatus>> {
    a.ca_activate(&id, &p).await?;
    Ok(Json(a.ca_status().await?))
}

async fn ca_retire(
    State(a): St,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Res<Json<api::CaStatus>> {
    a.ca_retire(&id, &p, "ca.retire").await?;
    Ok(Json(a.ca_status().await?))
}

async fn ca_revoke(
    State(a): St,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Res<Json<api::CaRevokeResponse>> {
    Ok(Json(a.ca_revoke(&id, &p).await?))
}

async fn issue(
    State(a): St,
    Extension(p): Extension<Principal>,
    ApiJson(req): ApiJson<api::IssueRequest>,
) -> Res<Response> {
    let out = a.issue_direct(&req, &p).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn redeem(State(a): St, ApiJson(req): ApiJson<api::RedeemRequest>) -> Res<Response> {
    let out = a.redeem(&req).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn attest_node_platform(
    State(a): St,
    ApiJson(req): ApiJson<api::PlatformAttestRequest>,
) -> Res<Response> {
    let out = a.attest_node_platform(&req).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn platform_svid(
    State(a): St,
    ApiJson(req): ApiJson<api::PlatformAttestRequest>,
) -> Res<Response> {
    let out = a.platform_svid(&req).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn renew(
    State(a): St,
    Extension(peer): Extension<super::PeerCert>,
    ApiJson(req): ApiJson<api::RenewRequest>,
) -> Res<Response> {
    let der = peer.0.ok_or_else(ApiError::unauthenticated)?;
    let out = a.renew(&der, &req).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertQuery {
    #[serde(default)]
    spiffe_id: Option<String>,
    #[serde(default)]
    expiring_within: Option<i64>,
    #[serde(default)]
    revoked: Option<bool>,
    #[serde(default)]
    attestation_hash: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

async fn list_certs(
    State(a): St,
    ApiQuery(q): ApiQuery<CertQuery>,
) -> Res<Json<api::CertificateList>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "limit: 1 to 1000",
        ));
    }
    if q.expiring_within.is_some_and(|w| w < 0) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "expiring_within: seconds, not negative",
        ));
    }
    let f = CertFilter {
        spiffe_id: q.spiffe_id,
        expiring_within: q.expiring_within,
        revoked: q.revoked,
        attestation_hash: q.attestation_hash.map(|h| h.to_ascii_lowercase()),
        limit,
    };
    Ok(Json(api::CertificateList {
        items: a.list_certs(&f).await?,
    }))
}

async fn show_cert(State(a): St, Path(serial): Path<String>) -> Res<Json<api::CertificateRecord>> {
    match a.store.get_cert(&serial.to_ascii_lowercase()).await {
        Ok(r) => Ok(Json(r.to_api(true))),
        Err(crate::store::StoreError::NotFound) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "certificate not found",
        )),
        Err(e) => Err(crate::authority::AuthorityError::from(e).into()),
    }
}

async fn revoke(
    State(a): St,
    Extension(p): Extension<Principal>,
    ApiJson(req): ApiJson<api::RevokeRequest>,
) -> Res<Json<api::RevokeResponse>> {
    Ok(Json(a.revoke(&req, &p).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    #[serde(default)]
    since: i64,
    #[serde(default)]
    wait: u64,
    /// The bundle sequence the follower holds; a different current one answers at once.
    #[serde(default)]
    bundle: Option<i64>,
}

/// Long-poll: answer at once if anything is newer than `since` (or the bundle
/// differs from the follower's `bundle`), else wait up to `wait` seconds for a
/// revocation or a CA change (local, or seen by the cross-replica poller).
async fn feed(State(a): St, ApiQuery(q): ApiQuery<FeedQuery>) -> Res<Json<api::RevocationFeed>> {
    const PAGE: i64 = 1000;
    let wait = Duration::from_secs(q.wait.min(a.cfg.limits.max_wait_seconds));
    let mut rx = a.revocation_watch();
    let mut cas = a.ca_watch();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let current = *rx.borrow_and_update();
        cas.borrow_and_update();
        let bundle_moved = q.bundle.is_some_and(|b| b != a.bundle().sequence);
        if current > q.since || bundle_moved || tokio::time::Instant::now() >= deadline {
            break;
        }
        let woke = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                r = rx.changed() => r,
                r = cas.changed() => r,
            }
        })
        .await;
        if !matches!(woke, Ok(Ok(()))) {
            break;
        }
    }
    let revocations = a
        .store
        .revocations_since(q.since, PAGE + 1)
        .await
        .map_err(crate::authority::AuthorityError::from)?;
    let more = revocations.len() as i64 > PAGE;
    let revocations: Vec<_> = revocations.into_iter().take(PAGE as usize).collect();
    let version = revocations.last().map(|r| r.version).unwrap_or(q.since);
    Ok(Json(api::RevocationFeed {
        version,
        revocations,
        more,
        bundle_sequence: a.bundle().sequence,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryQuery {
    #[serde(default)]
    spiffe_id: Option<String>,
}

async fn list_entries(
    State(a): St,
    ApiQuery(q): ApiQuery<EntryQuery>,
) -> Res<Json<api::EntryList>> {
    let items = a
        .store
        .list_entries(q.spiffe_id.as_deref())
        .await
        .map_err(crate::authority::AuthorityError::from)?;
    Ok(Json(api::EntryList { items }))
}

async fn create_entry(
    State(a): St,
    Extension(p): Extension<Principal>,
    ApiJson(req): ApiJson<api::EntryRequest>,
) -> Res<Response> {
    let e = a.create_entry(&req, &p).await?;
    Ok((StatusCode::CREATED, Json(e)).into_response())
}

async fn show_entry(State(a): St, Path(id): Path<String>) -> Res<Json<api::Entry>> {
    Ok(Json(a.get_entry(&id).await?))
}

async fn update_entry(
    State(a): St,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<api::EntryRequest>,
) -> Res<Json<api::Entry>> {
    Ok(Json(a.update_entry(&id, &req, &p).await?))
}

async fn delete_entry(
    State(a): St,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Res<StatusCode> {
    a.delete_entry(&id, &p).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_tokens(State(a): St) -> Res<Json<api::TokenList>> {
    let items = a
        .store
        .list_tokens()
        .await
        .map_err(crate::authority::AuthorityError::from)?;
    Ok(Json(api::TokenList { items }))
}

async fn create_token(
    State(a): St,
    Extension(p): Extension<Principal>,
    ApiJson(req): ApiJson<api::TokenCreateRequest>,
) -> Res<Response> {
    let t = a.create_token(&req, &p).await?;
    Ok(created_secret(t))
}

async fn delete_token(
    State(a): St,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Res<StatusCode> {
    a.delete_token(&id, &p).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    after: i64,
    #[serde(default)]
    limit: Option<i64>,
}

async fn audit(State(a): St, ApiQuery(q): ApiQuery<AuditQuery>) -> Res<Json<api::AuditList>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "limit: 1 to 1000",
        ));
    }
    let items = a
        .store
        .audit_list(q.after, limit)
        .await
        .map_err(crate::authority::AuthorityError::from)?;
    Ok(Json(api::AuditList { items }))
}

async fn list_credentials(State(a): St) -> Res<Json<api::ApiCredentialList>> {
    let items = a
        .store
        .list_credentials()
        .await
        .map_err(crate::authority::AuthorityError::from)?
        .into_iter()
        .map(|c| api::ApiCredential {
            id: c.id,
            kind: c.kind,
            name: c.name,
            role: c.role,
            expires_at: rfc3339(c.expires_at.min(253402300799)),
            disabled: c.disabled,
        })
        .collect();
    Ok(Json(api::ApiCredentialList { items }))
}

async fn create_credential(
    State(a): St,
    Extension(p): Extension<Principal>,
    ApiJson(req): ApiJson<api::ApiTokenCreateRequest>,
) -> Res<Response> {
    let t = a.create_api_token(&req, &p).await?;
    Ok(created_secret(t))
}

async fn delete_credential(
    State(a): St,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Res<StatusCode> {
    a.disable_credential(&id, &p).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn report_denials(
    State(a): St,
    Extension(p): Extension<Principal>,
    ApiJson(report): ApiJson<api::DenialReport>,
) -> Res<Response> {
    // The reporter is who the caller proved to be, never a field of the report.
    let Principal::Workload { spiffe_id, .. } = &p else {
        return Err(ApiError::forbidden(
            "this route needs a workload certificate",
        ));
    };
    let accepted = a.report_denials(spiffe_id, &report.denials).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "accepted": accepted })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DenialQuery {
    #[serde(default)]
    since: Option<i64>,
    #[serde(default)]
    destination: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    listener: Option<String>,
    #[serde(default)]
    reason: Option<api::DenialReason>,
    #[serde(default)]
    limit: Option<i64>,
}

async fn list_denials(
    State(a): St,
    ApiQuery(q): ApiQuery<DenialQuery>,
) -> Res<Json<api::DenialList>> {
    let bad = |detail: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", detail);
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(bad("limit: 1 to 1000".into()));
    }
    for (name, id) in [("destination", &q.destination), ("source", &q.source)] {
        if let Some(id) = id {
            tessera_core::SpiffeId::new(id)
                .map_err(|e| bad(format!("{name}: invalid SPIFFE ID: {e}")))?;
        }
    }
    if q.listener
        .as_ref()
        .is_some_and(|l| l.len() > crate::authority::MAX_DENIAL_LISTENER_BYTES)
    {
        return Err(bad(format!(
            "listener: at most {} bytes",
            crate::authority::MAX_DENIAL_LISTENER_BYTES
        )));
    }
    let f = DenialFilter {
        since: q.since,
        reporter: q.destination,
        peer_spiffe_id: q.source,
        listener: q.listener,
        reason: q.reason,
        limit,
    };
    Ok(Json(api::DenialList {
        items: a.list_denials(&f).await?,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventQuery {
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    kinds: Option<String>,
    #[serde(default)]
    follow: Option<bool>,
}

/// Server-sent events from the audit log; resumes after `Last-Event-ID` (or
/// `?after=`), filtered by `?kinds=a,b`; `?follow=false` ends once caught up.
async fn events(
    State(a): St,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Res<Response> {
    let bad = |detail: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", detail);
    let kinds = api::EventKind::parse_list(q.kinds.as_deref().unwrap_or(""))
        .map_err(|e| bad(format!("kinds: {e}")))?;
    let last = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| bad("Last-Event-ID: an event ID (a non-negative integer)".into()))?,
        ),
    };
    if q.after.is_some_and(|n| n < 0) {
        return Err(bad("after: an event ID (a non-negative integer)".into()));
    }
    let req = crate::events::StreamRequest {
        after: last.or(q.after),
        kinds,
        follow: q.follow.unwrap_or(true),
    };
    let stream = a.event_stream(req).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            e.to_string(),
        )
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

async fn list_webhooks(State(a): St) -> Res<Json<api::WebhookList>> {
    Ok(Json(api::WebhookList {
        items: a.list_webhooks().await?,
    }))
}

async fn create_webhook(
    State(a): St,
    Extension(p): Extension<Principal>,
    ApiJson(req): ApiJson<api::WebhookCreateRequest>,
) -> Res<Response> {
    let w = a.create_webhook(&req, &p).await?;
    Ok(created_secret(w))
}

async fn delete_webhook(
    State(a): St,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Res<StatusCode> {
    a.delete_webhook(&id, &p).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    #[serde(default)]
    limit: Option<i64>,
}

async fn webhook_deliveries(
    State(a): St,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Res<Json<api::WebhookDeliveryList>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "limit: 1 to 1000",
        ));
    }
    Ok(Json(api::WebhookDeliveryList {
        items: a.webhook_deliveries(&id, limit).await?,
    }))
}

async fn jwt_svid(
    State(a): St,
    Extension(p): Extension<Principal>,
    ApiJson(req): ApiJson<api::JwtSvidRequest>,
) -> Res<Response> {
    Ok((StatusCode::CREATED, Json(a.issue_jwt_svid(&p, &req)?)).into_response())
}

async fn list_nodes(State(a): St) -> Res<Json<api::NodeList>> {
    Ok(Json(api::NodeList {
        items: a.list_nodes().await?,
    }))
}

async fn show_node(State(a): St, Path(id): Path<String>) -> Res<Json<api::NodeInfo>> {
    Ok(Json(a.get_node(&id).await?))
}

async fn ban_node(
    State(a): St,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Res<Json<api::NodeBanResponse>> {
    Ok(Json(a.set_node_banned(&id, true, &p).await?))
}

async fn unban_node(
    State(a): St,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Res<Json<api::NodeBanResponse>> {
    Ok(Json(a.set_node_banned(&id, false, &p).await?))
}

async fn agent_svids(
    State(a): St,
    Extension(p): Extension<Principal>,
    ApiJson(req): ApiJson<api::AgentSvidRequest>,
) -> Res<Response> {
    // The node is who the caller proved to be, never a field of the request.
    let Principal::Node { spiffe_id, .. } = &p else {
        return Err(ApiError::forbidden(
            "this route needs a node agent's certificate",
        ));
    };
    let out = a.agent_svids(spiffe_id, &req, &p).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn agent_jwt_svids(
    State(a): St,
    Extension(p): Extension<Principal>,
    ApiJson(req): ApiJson<api::AgentJwtSvidRequest>,
) -> Res<Response> {
    let Principal::Node { spiffe_id, .. } = &p else {
        return Err(ApiError::forbidden(
            "this route needs a node agent's certificate",
        ));
    };
    let out = a.agent_jwt_svids(spiffe_id, &req, &p).await?;
    // Bearer tokens: never cached by anything in between.
    Ok(created_secret(out))
}

async fn agent_entries(
    State(a): St,
    Extension(p): Extension<Principal>,
) -> Res<Json<api::EntryList>> {
    let Principal::Node { spiffe_id, .. } = &p else {
        return Err(ApiError::forbidden(
            "this route needs a node agent's certificate",
        ));
    };
    Ok(Json(api::EntryList {
        items: a.agent_entries(spiffe_id).await?,
    }))
}

/// A 201 whose body carries a secret shown only once: never cached.
fn created_secret<T: serde::Serialize>(body: T) -> Response {
    (
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(body),
    )
        .into_response()
}
