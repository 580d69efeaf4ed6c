//! Webhooks: registration and their delivery log.

use super::caller::Operator;
use super::extract::{Body, Id, Query, St, page_limit};
use super::reply::{Reply, Res, created_secret, no_content};
use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use serde::Deserialize;
use tessera_core::api::{WebhookCreateRequest, WebhookDeliveryList, WebhookList};

/// `GET /v1/webhooks`: the webhooks.
pub async fn list(a: St, _: Operator) -> Res<Json<WebhookList>> {
    Ok(Json(WebhookList {
        items: a.list_webhooks().await?,
    }))
}

/// `POST /v1/webhooks`: a new webhook (its secret, shown once).
pub async fn create(a: St, op: Operator, Body(req): Body<WebhookCreateRequest>) -> Reply {
    Ok(created_secret(
        a.create_webhook(&req, op.principal()).await?,
    ))
}

/// `DELETE /v1/webhooks/{id}`: deletes a webhook.
pub async fn delete(a: St, op: Operator, Path(id): Id) -> Res<StatusCode> {
    no_content(a.delete_webhook(&id, op.principal())).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    limit: Option<i64>,
}

/// `GET /v1/webhooks/{id}/deliveries`: a webhook's delivery log.
pub async fn deliveries(
    a: St,
    _: Operator,
    Path(id): Id,
    Query(q): Query<LimitQuery>,
) -> Res<Json<WebhookDeliveryList>> {
    let limit = page_limit(q.limit)?;
    Ok(Json(WebhookDeliveryList {
        items: a.webhook_deliveries(&id, limit).await?,
    }))
}
