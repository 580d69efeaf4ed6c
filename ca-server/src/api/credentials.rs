//! API credentials (operator tokens).

use super::caller::Operator;
use super::extract::{Body, Id, St};
use super::reply::{Reply, Res, created_secret, no_content, stored};
use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use tessera_core::api::{ApiCredential, ApiCredentialList, ApiTokenCreateRequest};
use tessera_core::time::rfc3339;

/// `GET /v1/credentials`: the API credentials.
pub async fn list(a: St, _: Operator) -> Res<Json<ApiCredentialList>> {
    let items = stored(a.store.list_credentials().await)?
        .into_iter()
        .map(|c| ApiCredential {
            id: c.id,
            kind: c.kind,
            name: c.name,
            role: c.role,
            expires_at: rfc3339(c.expires_at.min(253402300799)),
            disabled: c.disabled,
        })
        .collect();
    Ok(Json(ApiCredentialList { items }))
}

/// `POST /v1/credentials`: a new API token (its secret, shown once).
pub async fn create(a: St, op: Operator, Body(req): Body<ApiTokenCreateRequest>) -> Reply {
    Ok(created_secret(
        a.create_api_token(&req, op.principal()).await?,
    ))
}

/// `DELETE /v1/credentials/{id}`: disables an API credential.
pub async fn delete(a: St, op: Operator, Path(id): Id) -> Res<StatusCode> {
    no_content(a.disable_credential(&id, op.principal())).await
}
