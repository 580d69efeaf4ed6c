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

/// The CA server's own SPIFFE ID path, `spiffe://<td>/tessera/ca-server`:
/// the identity every CA client requires on the server certificate. Only the
/// server's own in-memory certificate carries it; no entry may grant it.
pub const CA_SERVER_PATH: &str = "/tessera/ca-server";

/// The path prefix of operators' client certificates,
/// `spiffe://<td>/tessera/operator/<name>` (`tessera-ca init`, `operator-cert`).
pub const OPERATOR_PATH_PREFIX: &str = "/tessera/operator/";

/// The prefix of every path Tessera keeps for itself.
const TESSERA_PATH_PREFIX: &str = "/tessera/";

/// Whether a registration entry may grant this path. Everything under
/// `/tessera/` belongs to Tessera (the CA server, operators, platform-token
/// issuers, and names kept for later), except node entries
/// (`/tessera/agent/<name>`) and node sets (`/tessera/node-set/<name>`), which
/// operators register themselves.
pub fn entry_may_grant(path: &str) -> bool {
    let tessera =
        path == TESSERA_PATH_PREFIX.trim_end_matches('/') || path.starts_with(TESSERA_PATH_PREFIX);
    !tessera || node_name(path).is_some() || node_set_name(path).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_may_grant_nodes_and_sets_only_under_tessera() {
        for ok in [
            "/web",
            "/tesseract",
            "/ns/tessera/ca-server",
            "/tessera/agent/n1",
            "/tessera/node-set/gpu",
        ] {
            assert!(entry_may_grant(ok), "{ok}");
        }
        for reserved in [
            "/tessera",
            "/tessera/ca-server",
            "/tessera/ca-server/x",
            "/tessera/operator/admin",
            "/tessera/issuer/k8s",
            "/tessera/agent/n1/x",
            "/tessera/anything",
        ] {
            assert!(!entry_may_grant(reserved), "{reserved}");
        }
    }
}
