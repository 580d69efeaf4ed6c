//! Join tokens.

use super::caller::Operator;
use super::extract::{Body, Id, St};
use super::reply::{Reply, Res, created_secret, no_content, stored};
use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use tessera_core::api::{TokenCreateRequest, TokenList};

/// `GET /v1/tokens`: the join tokens.
pub async fn list(a: St, _: Operator) -> Res<Json<TokenList>> {
    let items = stored(a.store.list_tokens().await)?;
    Ok(Json(TokenList { items }))
}

/// `POST /v1/tokens`: a new join token (its secret, shown once).
pub async fn create(a: St, op: Operator, Body(req): Body<TokenCreateRequest>) -> Reply {
    Ok(created_secret(a.create_token(&req, op.principal()).await?))
}

/// `DELETE /v1/tokens/{id}`: deletes a join token.
pub async fn delete(a: St, op: Operator, Path(id): Id) -> Res<StatusCode> {
    no_content(a.delete_token(&id, op.principal())).await
}
