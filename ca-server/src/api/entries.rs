//! Registration entries.

use super::caller::Operator;
use super::extract::{Body, Id, Query, St};
use super::reply::{Reply, Res, created, no_content, stored};
use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use serde::Deserialize;
use tessera_core::api::{Entry, EntryList, EntryRequest};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryQuery {
    spiffe_id: Option<String>,
}

/// `GET /v1/entries`: the entries, or those of one SPIFFE ID.
pub async fn list(a: St, _: Operator, Query(q): Query<EntryQuery>) -> Res<Json<EntryList>> {
    let items = stored(a.store.list_entries(q.spiffe_id.as_deref()).await)?;
    Ok(Json(EntryList { items }))
}

/// `POST /v1/entries`: a new entry.
pub async fn create(a: St, op: Operator, Body(req): Body<EntryRequest>) -> Reply {
    Ok(created(a.create_entry(&req, op.principal()).await?))
}

/// `GET /v1/entries/{id}`: one entry.
pub async fn show(a: St, _: Operator, Path(id): Id) -> Res<Json<Entry>> {
    Ok(Json(a.get_entry(&id).await?))
}

/// `PUT /v1/entries/{id}`: replaces an entry.
pub async fn update(
    a: St,
    op: Operator,
    Path(id): Id,
    Body(req): Body<EntryRequest>,
) -> Res<Json<Entry>> {
    Ok(Json(a.update_entry(&id, &req, op.principal()).await?))
}

/// `DELETE /v1/entries/{id}`: deletes an entry.
pub async fn delete(a: St, op: Operator, Path(id): Id) -> Res<StatusCode> {
    no_content(a.delete_entry(&id, op.principal())).await
}
