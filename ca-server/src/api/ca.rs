//! The CA: what it publishes to anyone (trust bundle, CRLs), its status and
//! its generations' lifecycle.

use super::ApiError;
use super::caller::Operator;
use super::extract::{Id, Query, St, bad_query};
use super::reply::{Reply, Res, created};
use crate::authority::{Authority, AuthorityError};
use axum::Json;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use tessera_core::api::{CaRevokeResponse, CaStatus};

/// `GET /v1/bundle`'s query: only the format (the bundle is every CA's, so
/// a `ca_id` is refused as an unknown parameter rather than ignored).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleQuery {
    format: Option<String>,
}

/// `GET /v1/crl`'s query: the format and which CA's CRL.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlQuery {
    format: Option<String>,
    ca_id: Option<String>,
}

/// A `?format=` that is none of `known`.
fn bad_format(other: &str, known: &str) -> ApiError {
    bad_query(format!("format: {other:?} is not {known}"))
}

/// `GET /v1/bundle`: the trust bundle (PEM or SPIFFE JWKS), with an ETag.
pub async fn bundle(a: St, headers: HeaderMap, Query(q): Query<BundleQuery>) -> Reply {
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
        Some(other) => return Err(bad_format(other, "pem or jwks")),
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

/// `GET /v1/crl`: a CA's CRL (DER or PEM).
pub async fn crl(a: St, Query(q): Query<CrlQuery>) -> Reply {
    let crl = a
        .crl(q.ca_id.as_deref())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no CRL for that CA"))?;
    let (ctype, body) = match q.format.as_deref() {
        None | Some("der") => ("application/pkix-crl", crl.der.clone()),
        Some("pem") => ("application/x-pem-file", crl.pem.clone().into_bytes()),
        Some(other) => return Err(bad_format(other, "der or pem")),
    };
    Ok(([(header::CONTENT_TYPE, ctype)], body).into_response())
}

/// `GET /v1/ca`: every CA generation and the schedule.
pub async fn status(a: St, _: Operator) -> Res<Json<CaStatus>> {
    Ok(Json(a.ca_status().await?))
}

/// The CA's status once `done` succeeded.
async fn status_after(
    a: &Authority,
    done: impl Future<Output = Result<(), AuthorityError>>,
) -> Res<Json<CaStatus>> {
    done.await?;
    Ok(Json(a.ca_status().await?))
}

/// `POST /v1/ca/prepare`: a new, prepared generation.
pub async fn prepare(a: St, op: Operator) -> Reply {
    let Json(status) = status_after(&a, a.ca_prepare(op.principal())).await?;
    Ok(created(status))
}

/// `POST /v1/ca/rotate`: the next generation signs.
pub async fn rotate(a: St, op: Operator) -> Res<Json<CaStatus>> {
    status_after(&a, a.ca_rotate(op.principal())).await
}

/// `POST /v1/ca/{id}/activate`: this generation signs.
pub async fn activate(a: St, op: Operator, Path(id): Id) -> Res<Json<CaStatus>> {
    status_after(&a, a.ca_activate(&id, op.principal())).await
}

/// `POST /v1/ca/{id}/retire`: this generation stops signing.
pub async fn retire(a: St, op: Operator, Path(id): Id) -> Res<Json<CaStatus>> {
    status_after(&a, a.ca_retire(&id, op.principal(), "ca.retire")).await
}

/// `POST /v1/ca/{id}/revoke`: emergency revocation of a generation and its live leaves.
pub async fn revoke(a: St, op: Operator, Path(id): Id) -> Res<Json<CaRevokeResponse>> {
    Ok(Json(a.ca_revoke(&id, op.principal()).await?))
}
