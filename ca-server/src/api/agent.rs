//! What node agents call with their node certificate: the entries they serve
//! and attested issuance for their workloads. The node is always who the
//! caller proved to be, never a field of the request.

use super::caller::Node;
use super::extract::{Body, St};
use super::reply::{Reply, Res, created, created_secret};
use axum::Json;
use tessera_core::api::{AgentFederatedBundles, AgentJwtSvidRequest, AgentSvidRequest, EntryList};

/// `GET /v1/agent/entries`: the entries the calling node may serve.
pub async fn entries(a: St, node: Node) -> Res<Json<EntryList>> {
    Ok(Json(EntryList {
        items: a.agent_entries(node.spiffe_id()).await?,
    }))
}

/// `GET /v1/agent/federated-bundles`: the foreign bundles the calling
/// node's workloads may receive (their entries' `federates_with`).
pub async fn federated_bundles(a: St, node: Node) -> Res<Json<AgentFederatedBundles>> {
    Ok(Json(a.agent_federated_bundles(node.spiffe_id()).await?))
}

/// `POST /v1/agent/svids`: X.509-SVIDs for a workload the node attested.
pub async fn svids(a: St, node: Node, Body(req): Body<AgentSvidRequest>) -> Reply {
    Ok(created(
        a.agent_svids(node.spiffe_id(), &req, node.principal())
            .await?,
    ))
}

/// `POST /v1/agent/jwt-svids`: JWT-SVIDs for a workload the node attested.
pub async fn jwt_svids(a: St, node: Node, Body(req): Body<AgentJwtSvidRequest>) -> Reply {
    let out = a
        .agent_jwt_svids(
            node.spiffe_id(),
            node.cert_not_after(),
            &req,
            node.principal(),
        )
        .await?;
    // Bearer tokens: never cached by anything in between.
    Ok(created_secret(out))
}
