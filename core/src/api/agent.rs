//! What node agents send and receive: attested workloads and their SVIDs.

use super::{IssuedCertificate, JwtSvid};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a node agent attested about a workload (the evidence the CA records).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct WorkloadAttestation {
    /// Every selector the agent derived, sorted (`unix:uid:0`,
    /// `container:label:app:web`, `posture:privileged:false`, ...).
    pub selectors: Vec<String>,
    /// The container whose identity the workload gets (64 hex), if any.
    #[serde(default)]
    pub container_id: Option<String>,
    /// The container the calling process runs in, when it differs (a
    /// sidecar joined to the app's network namespace).
    #[serde(default)]
    pub caller_container_id: Option<String>,
    /// The container's image name.
    #[serde(default)]
    pub image: Option<String>,
    /// The image ID or digest (`sha256:...`).
    #[serde(default)]
    pub image_digest: Option<String>,
    /// The pod name, if any.
    #[serde(default)]
    pub pod: Option<String>,
}

/// An agent asks for a workload's X.509-SVIDs (`POST /v1/agent/svids`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSvidRequest {
    /// PKCS#10 CSR for a key the agent generated in memory for this workload, PEM.
    pub csr: String,
    /// Only this SPIFFE ID; absent means every entry that matches.
    #[serde(default)]
    pub spiffe_id: Option<String>,
    /// Fresh evidence about the workload.
    pub attestation: WorkloadAttestation,
}

/// The SVIDs the CA issued for an attested workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentSvidResponse {
    /// One certificate per matching entry, by SPIFFE ID.
    pub svids: Vec<IssuedCertificate>,
}

/// An agent asks for a workload's JWT-SVIDs (`POST /v1/agent/jwt-svids`),
/// for the Workload API's `FetchJWTSVID`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentJwtSvidRequest {
    /// Audiences (`aud`), 1 to 16, each 1 to 256 printable characters.
    pub audience: Vec<String>,
    /// Only this SPIFFE ID; absent means every entry that matches.
    #[serde(default)]
    pub spiffe_id: Option<String>,
    /// Lifetime, seconds (60 to 3600; default 300).
    #[serde(default, deserialize_with = "super::whole::opt")]
    pub ttl_seconds: Option<u64>,
    /// Fresh evidence about the workload.
    pub attestation: WorkloadAttestation,
}

/// The JWT-SVIDs the CA signed for an attested workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentJwtSvidResponse {
    /// One token per matching entry.
    pub svids: Vec<JwtSvid>,
}

/// The foreign bundles the calling node's workloads may receive
/// (`GET /v1/agent/federated-bundles`): those of every trust domain an entry
/// the node serves federates with, as held by the CA.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentFederatedBundles {
    /// Trust domain to its SPIFFE bundle document.
    pub bundles: BTreeMap<String, String>,
}
