//! Join tokens.

use serde::{Deserialize, Serialize};

/// Create a join token for an entry (by ID) or for the entry of a SPIFFE ID.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TokenCreateRequest {
    /// The entry the token redeems for.
    #[serde(default)]
    pub entry_id: Option<String>,
    /// Or the SPIFFE ID whose (single) entry the token redeems for.
    #[serde(default)]
    pub spiffe_id: Option<String>,
    /// Lifetime in seconds (default 600).
    #[serde(default, deserialize_with = "super::whole::opt")]
    pub ttl_seconds: Option<u64>,
}

/// A newly created join token; `token` is shown only here, once.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenCreated {
    /// The token's public ID.
    pub id: String,
    /// The secret token to hand to the workload.
    pub token: String,
    /// The entry it redeems for.
    pub entry_id: String,
    /// Expiry, RFC 3339.
    pub expires_at: String,
}

// The join token is a bearer credential: never in a log line.
crate::debug_without_secrets!(TokenCreated: id, entry_id, expires_at);

/// A join token's public information (never the secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The token's public ID.
    pub id: String,
    /// The entry it redeems for.
    pub entry_id: String,
    /// The entry's SPIFFE ID.
    pub spiffe_id: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Expiry, RFC 3339.
    pub expires_at: String,
    /// When it was redeemed, if it was.
    pub used_at: Option<String>,
}

/// A list of join tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenList {
    /// The tokens.
    pub items: Vec<TokenInfo>,
}
