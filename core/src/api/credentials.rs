//! API roles and operator credentials (client certificates, API tokens).

use serde::{Deserialize, Serialize};

/// An API role. Each route names the roles that may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including CA administration and API credentials.
    Admin,
    /// Registration entries and join tokens.
    Registrar,
    /// Issuing and revoking certificates.
    Issuer,
    /// Read-only access to entries, certificates, CA status and the audit log.
    Auditor,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Registrar, Role::Issuer, Role::Auditor];

    /// The role's name as used in the API and CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Registrar => "registrar",
            Role::Issuer => "issuer",
            Role::Auditor => "auditor",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Create a scoped API token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenCreateRequest {
    /// A name for audit records.
    pub name: String,
    /// The role it carries.
    pub role: Role,
    /// Lifetime in seconds (default 30 days).
    #[serde(default, deserialize_with = "super::whole::opt")]
    pub ttl_seconds: Option<u64>,
}

/// A new API token; `token` is shown only here, once.
#[derive(Clone, Serialize, Deserialize)]
pub struct ApiTokenCreated {
    /// The credential's ID.
    pub id: String,
    /// The bearer token.
    pub token: String,
    /// Its role.
    pub role: Role,
    /// Expiry, RFC 3339.
    pub expires_at: String,
}

// The API token is a bearer credential: never in a log line.
crate::debug_without_secrets!(ApiTokenCreated: id, role, expires_at);

/// An API credential (client certificate or token), never its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiCredential {
    /// The credential's ID.
    pub id: String,
    /// `certificate` or `token`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Expiry, RFC 3339.
    pub expires_at: String,
    /// Whether it was disabled.
    pub disabled: bool,
}

/// A list of API credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiCredentialList {
    /// The credentials.
    pub items: Vec<ApiCredential>,
}
