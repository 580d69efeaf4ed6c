//! JWT-SVIDs for a workload's own SPIFFE ID.

use serde::{Deserialize, Serialize};

/// Asks for a JWT-SVID for the caller's own SPIFFE ID (`POST /v1/jwt-svids`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSvidRequest {
    /// Audiences (`aud`), 1 to 16, each 1 to 256 printable characters.
    pub audience: Vec<String>,
    /// Lifetime, seconds (60 to 3600; default 300).
    #[serde(default, deserialize_with = "super::whole::opt")]
    pub ttl_seconds: Option<u64>,
}

/// A JWT-SVID.
#[derive(Clone, Serialize, Deserialize)]
pub struct JwtSvid {
    /// The token (compact JWS, ES256).
    pub token: String,
    /// Its `sub`.
    pub spiffe_id: String,
    /// Its `exp`, RFC 3339.
    pub expires_at: String,
    /// The entry's Workload API hint (answers to node agents only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

// The token is a bearer credential: never in a log line.
crate::debug_without_secrets!(JwtSvid: spiffe_id, expires_at, hint);
