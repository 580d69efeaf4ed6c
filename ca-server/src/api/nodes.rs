//! Nodes, as operators see them: list, show, ban and unban.

use super::caller::Operator;
use super::extract::{Id, St};
use super::reply::Res;
use axum::Json;
use axum::extract::Path;
use tessera_core::api::{NodeBanResponse, NodeInfo, NodeList};

/// `GET /v1/nodes`: the nodes.
pub async fn list(a: St, _: Operator) -> Res<Json<NodeList>> {
    Ok(Json(NodeList {
        items: a.list_nodes().await?,
    }))
}

/// `GET /v1/nodes/{id}`: one node.
pub async fn show(a: St, _: Operator, Path(id): Id) -> Res<Json<NodeInfo>> {
    Ok(Json(a.get_node(&id).await?))
}

/// `POST /v1/nodes/{id}/ban`: bans a node (and revokes what was issued through it).
pub async fn ban(a: St, op: Operator, Path(id): Id) -> Res<Json<NodeBanResponse>> {
    Ok(Json(a.set_node_banned(&id, true, op.principal()).await?))
}

/// `POST /v1/nodes/{id}/unban`: lifts a node's ban.
pub async fn unban(a: St, op: Operator, Path(id): Id) -> Res<Json<NodeBanResponse>> {
    Ok(Json(a.set_node_banned(&id, false, op.principal()).await?))
}
