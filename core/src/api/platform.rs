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

// The token is a bearer credential: never in a log line.
crate::debug_without_secrets!(PlatformAttestRequest: spiffe_id);
