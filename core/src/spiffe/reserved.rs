//! The SPIFFE ID paths Tessera reserves for its own infrastructure (nodes,
//! node sets, platform-token issuers): identities no agent can give a
//! workload, and parents that are never issued.

/// The path prefix of node SPIFFE IDs: `spiffe://<td>/tessera/agent/<node-name>`.
/// An entry granting such an ID is a node entry: redeeming a join token for it
/// attests a node, and no agent can obtain it for a workload.
pub const NODE_PATH_PREFIX: &str = "/tessera/agent/";

/// The node name of a node SPIFFE ID path (`/tessera/agent/<name>`, one
/// segment), or None if the path is not a node's.
pub fn node_name(path: &str) -> Option<&str> {
    path.strip_prefix(NODE_PATH_PREFIX)
        .filter(|n| !n.is_empty() && !n.contains('/'))
}

/// The path prefix of node-set SPIFFE IDs: `spiffe://<td>/tessera/node-set/<name>`.
/// An entry granting such an ID is a node set: its selectors are matched
/// against a node's selectors (its node entry's, and those it attested with),
/// and workload entries parented to it are available to every node in the
/// set. A node set is never issued a certificate.
pub const NODE_SET_PATH_PREFIX: &str = "/tessera/node-set/";

/// The node-set name of a node-set SPIFFE ID path, if it is one.
pub fn node_set_name(path: &str) -> Option<&str> {
    path.strip_prefix(NODE_SET_PATH_PREFIX)
        .filter(|n| !n.is_empty() && !n.contains('/'))
}

/// Whether a SPIFFE ID path names a node, a node set or a platform-token
/// issuer: identities no agent can give a workload (nodes attest for their
/// own; sets and issuers are parents, never issued through an agent).
pub fn is_infrastructure_path(path: &str) -> bool {
    node_name(path).is_some()
        || path.starts_with(NODE_SET_PATH_PREFIX)
        || path.starts_with(ISSUER_PATH_PREFIX)
}

/// The path prefix of the parent IDs of entries that sidecars in direct mode
/// claim with a platform token: `spiffe://<td>/tessera/issuer/<issuer-name>`.
pub const ISSUER_PATH_PREFIX: &str = "/tessera/issuer/";
