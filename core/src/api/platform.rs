//! Platform-token (JWT) attestation requests.

use serde::{Deserialize, Serialize};

/// A platform token (Kubernetes projected service-account token or OIDC ID
/// token) and a CSR: `POST /v1/nodes/attest` (a node agent's identity) and
/// `POST /v1/svids/platform` (a sidecar in direct mode).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformAttestRequest {
    /// The token, compact JWS.
    pub token: String,
    /// The PKCS#10 CSR, PEM.
    pub csr: String,
    /// `POST /v1/svids/platform` only: the SPIFFE ID wanted, when several
    /// entries match the token.
    #[serde(default)]
    pub spiffe_id: Option<String>,
}

impl std::fmt::Debug for PlatformAttestRequest {
    // The token is a bearer credential: never in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformAttestRequest")
            .field("spiffe_id", &self.spiffe_id)
            .finish_non_exhaustive()
    }
}
