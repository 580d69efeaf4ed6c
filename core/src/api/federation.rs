//! Federation relationships with foreign trust domains (`/v1/federation`).

use serde::{Deserialize, Serialize};

/// Create a relationship (`POST /v1/federation`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationCreateRequest {
    /// The foreign trust domain (not this CA's).
    pub trust_domain: String,
    /// Its bundle endpoint, `https://host[:port][/path]`.
    pub bundle_endpoint_url: String,
    /// `https_spiffe` or `https_web`.
    pub profile: String,
    /// `https_spiffe`: the endpoint's SPIFFE ID (in the foreign trust domain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_spiffe_id: Option<String>,
    /// The foreign bundle for first contact, PEM or SPIFFE bundle JSON
    /// (required for `https_spiffe`: it authenticates the first poll).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_bundle: Option<String>,
}

/// Change a relationship (`PUT /v1/federation/{trust_domain}`); absent
/// fields keep their value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationUpdateRequest {
    /// New bundle endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_endpoint_url: Option<String>,
    /// New profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// New endpoint SPIFFE ID (`https_spiffe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_spiffe_id: Option<String>,
    /// A bundle replacing the stored one (PEM or SPIFFE bundle JSON), e.g.
    /// to re-bootstrap after the foreign domain lost its keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_bundle: Option<String>,
}

/// A relationship and its health.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Federation {
    /// The foreign trust domain.
    pub trust_domain: String,
    /// Its bundle endpoint.
    pub bundle_endpoint_url: String,
    /// `https_spiffe` or `https_web`.
    pub profile: String,
    /// `https_spiffe`: the endpoint's SPIFFE ID.
    pub endpoint_spiffe_id: Option<String>,
    /// `spiffe_sequence` of the bundle held, if it had one.
    pub sequence: Option<u64>,
    /// `spiffe_refresh_hint` of the bundle held, seconds.
    pub refresh_hint_seconds: Option<u64>,
    /// X.509 authorities in the bundle held.
    pub x509_authorities: usize,
    /// JWT authorities in the bundle held.
    pub jwt_authorities: usize,
    /// The bundle held (SPIFFE bundle JSON); None before first contact.
    pub bundle: Option<String>,
    /// When the bundle held was stored, RFC 3339.
    pub bundle_updated_at: Option<String>,
    /// Age of the bundle held, seconds.
    pub bundle_age_seconds: Option<i64>,
    /// Last poll, RFC 3339.
    pub last_attempt_at: Option<String>,
    /// Last successful poll, RFC 3339.
    pub last_success_at: Option<String>,
    /// Why the last poll failed (None after a success).
    pub last_error: Option<String>,
    /// Consecutive failed polls.
    pub failures: i64,
    /// Last poll succeeded and the last success is recent
    /// (`federation.stale_after_seconds`).
    pub healthy: bool,
    /// No successful poll for `federation.stale_after_seconds`.
    pub stale: bool,
    /// Next scheduled poll, RFC 3339.
    pub next_poll_at: String,
    /// Who created it.
    pub created_by: String,
    /// When, RFC 3339.
    pub created_at: String,
}

/// Every relationship.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FederationList {
    /// The relationships, by trust domain.
    pub items: Vec<Federation>,
}
