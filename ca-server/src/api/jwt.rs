//! JWT-SVIDs for workloads that hold an X.509-SVID.

use super::caller::Workload;
use super::extract::{Body, St};
use super::reply::{Reply, created};
use tessera_core::api::JwtSvidRequest;

/// `POST /v1/jwt-svids`: a JWT-SVID for the calling workload.
pub async fn issue(a: St, caller: Workload, Body(req): Body<JwtSvidRequest>) -> Reply {
    let svid = a.issue_jwt_svid(caller.spiffe_id(), caller.cert_not_after(), &req)?;
    Ok(created(svid))
}
