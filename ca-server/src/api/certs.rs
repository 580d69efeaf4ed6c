//! Certificates: direct issuance, join-token redemption, renewal, and the ledger.

use super::ApiError;
use super::caller::{Operator, Renewer};
use super::extract::{Body, Id, Query, St, bad_query, page_limit};
use super::reply::{Reply, Res, created};
use crate::authority::AuthorityError;
use crate::store::{CertFilter, StoreError};
use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use serde::Deserialize;
use tessera_core::api::{
    CertificateList, CertificateRecord, IssueRequest, RedeemRequest, RenewRequest,
};

/// `POST /v1/certs`: a certificate for a CSR, issued directly by an operator.
pub async fn issue(a: St, op: Operator, Body(req): Body<IssueRequest>) -> Reply {
    Ok(created(a.issue_direct(&req, op.principal()).await?))
}

/// `POST /v1/certs/redeem`: a join token and a CSR for a certificate.
pub async fn redeem(a: St, Body(req): Body<RedeemRequest>) -> Reply {
    Ok(created(a.redeem(&req).await?))
}

/// `POST /v1/certs/renew`: a new certificate for the one presented.
pub async fn renew(a: St, caller: Renewer, Body(req): Body<RenewRequest>) -> Reply {
    Ok(created(a.renew(caller.cert(), &req).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertQuery {
    spiffe_id: Option<String>,
    expiring_within: Option<i64>,
    revoked: Option<bool>,
    attestation_hash: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/certs`: the ledger, filtered.
pub async fn list(a: St, _: Operator, Query(q): Query<CertQuery>) -> Res<Json<CertificateList>> {
    let limit = page_limit(q.limit)?;
    if q.expiring_within.is_some_and(|w| w < 0) {
        return Err(bad_query("expiring_within: seconds, not negative"));
    }
    let f = CertFilter {
        spiffe_id: q.spiffe_id,
        expiring_within: q.expiring_within,
        revoked: q.revoked,
        attestation_hash: q.attestation_hash.map(|h| h.to_ascii_lowercase()),
        limit,
    };
    Ok(Json(CertificateList {
        items: a.list_certs(&f).await?,
    }))
}

/// `GET /v1/certs/{serial}`: one ledger record.
pub async fn show(a: St, _: Operator, Path(serial): Id) -> Res<Json<CertificateRecord>> {
    match a.store.get_cert(&serial.to_ascii_lowercase()).await {
        Ok(r) => Ok(Json(r.to_api(true))),
        Err(StoreError::NotFound) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "certificate not found",
        )),
        Err(e) => Err(AuthorityError::from(e).into()),
    }
}
