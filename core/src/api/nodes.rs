//! Node agents as the CA records them.

use serde::{Deserialize, Serialize};

/// A node: a host whose agent attested with a join token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node name (last segment of its SPIFFE ID).
    pub id: String,
    /// `spiffe://<td>/tessera/agent/<name>`.
    pub spiffe_id: String,
    /// How it attested (`join_token` or `platform_token`).
    pub attestation_type: String,
    /// Banned nodes are refused on every route and get no certificates.
    pub banned: bool,
    /// When it was banned, RFC 3339.
    pub banned_at: Option<String>,
    /// First attestation, RFC 3339.
    pub created_at: String,
    /// Last renewal or attested issuance, RFC 3339.
    pub last_seen: String,
    /// The selectors of its last platform-token attestation (empty for
    /// join-token nodes).
    #[serde(default)]
    pub selectors: Vec<String>,
}

/// A list of nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeList {
    /// The nodes, by name.
    pub items: Vec<NodeInfo>,
}

/// The outcome of banning or unbanning a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeBanResponse {
    /// The node after the change.
    pub node: NodeInfo,
    /// Serials revoked by the ban (every live certificate issued through the node).
    pub revoked: Vec<String>,
    /// The revocation-feed version after the change.
    pub version: i64,
}
