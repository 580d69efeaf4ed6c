//! Platform-token (JWT) attestation: the token is the credential, so both
//! routes are public.

use super::extract::{Body, St};
use super::reply::{Reply, created};
use tessera_core::api::PlatformAttestRequest;

/// `POST /v1/nodes/attest`: a node certificate for a platform token.
pub async fn attest_node(a: St, Body(req): Body<PlatformAttestRequest>) -> Reply {
    Ok(created(a.attest_node_platform(&req).await?))
}

/// `POST /v1/svids/platform`: a workload certificate for a platform token.
pub async fn svid(a: St, Body(req): Body<PlatformAttestRequest>) -> Reply {
    Ok(created(a.platform_svid(&req).await?))
}
