//! Federation relationships with foreign trust domains.

use super::caller::Operator;
use super::extract::{Body, Id, St};
use super::reply::{Reply, Res, created, no_content};
use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use tessera_core::api::{
    Federation, FederationCreateRequest, FederationList, FederationUpdateRequest,
};

/// `GET /v1/federation`: every relationship with its health.
pub async fn list(a: St, _: Operator) -> Res<Json<FederationList>> {
    Ok(Json(FederationList {
        items: a.list_federations().await?,
    }))
}

/// `POST /v1/federation`: a new relationship (first poll at once).
pub async fn create(a: St, op: Operator, Body(req): Body<FederationCreateRequest>) -> Reply {
    Ok(created(a.create_federation(&req, op.principal()).await?))
}

/// `GET /v1/federation/{trust_domain}`: one relationship and the bundle held.
pub async fn show(a: St, _: Operator, Path(td): Id) -> Res<Json<Federation>> {
    Ok(Json(a.show_federation(&td).await?))
}

/// `PUT /v1/federation/{trust_domain}`: changes a relationship.
pub async fn update(
    a: St,
    op: Operator,
    Path(td): Id,
    Body(req): Body<FederationUpdateRequest>,
) -> Res<Json<Federation>> {
    Ok(Json(a.update_federation(&td, &req, op.principal()).await?))
}

/// `DELETE /v1/federation/{trust_domain}`: removes a relationship and its bundle.
pub async fn delete(a: St, op: Operator, Path(td): Id) -> Res<StatusCode> {
    no_content(a.delete_federation(&td, op.principal())).await
}

/// `POST /v1/federation/{trust_domain}/refresh`: polls now; answers what is
/// held afterwards, or why the poll failed (the last good bundle is kept).
pub async fn refresh(a: St, _: Operator, Path(td): Id) -> Res<Json<Federation>> {
    Ok(Json(a.refresh_federation(&td).await?))
}
