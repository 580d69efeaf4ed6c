//! Registration entries.

use serde::{Deserialize, Serialize};

/// Create or replace a registration entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryRequest {
    /// The SPIFFE ID the entry grants; must be in the CA's trust domain.
    pub spiffe_id: String,
    /// Selectors that must all match, such as `container:label:app:web`; never empty.
    pub selectors: Vec<String>,
    /// Which node or token may claim it (a SPIFFE ID); absent means join tokens only.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// Certificate lifetime for this entry, seconds.
    #[serde(default, deserialize_with = "super::whole::opt")]
    pub ttl_seconds: Option<u64>,
    /// DNS SANs to put in certificates issued under this entry.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// A free-form note for operators.
    #[serde(default)]
    pub note: Option<String>,
    /// A short label the Workload API passes to the workload with this
    /// entry's SVIDs (`hint`), so a workload with several identities can
    /// pick one (`web`, `db-client`): 1 to 64 printable ASCII characters.
    #[serde(default)]
    pub hint: Option<String>,
    /// Foreign trust domains whose bundles the workload receives with this
    /// entry's SVIDs; each needs a federation relationship (at most 16).
    #[serde(default)]
    pub federates_with: Vec<String>,
}

/// A registration entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// The entry's ID.
    pub id: String,
    /// The SPIFFE ID it grants.
    pub spiffe_id: String,
    /// Selectors, sorted.
    pub selectors: Vec<String>,
    /// The parent (node or token) allowed to claim it.
    pub parent_id: Option<String>,
    /// Certificate lifetime, seconds.
    pub ttl_seconds: u64,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// Operator note.
    pub note: Option<String>,
    /// The Workload API hint for this entry's SVIDs.
    #[serde(default)]
    pub hint: Option<String>,
    /// Foreign trust domains whose bundles the workload receives, sorted.
    #[serde(default)]
    pub federates_with: Vec<String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Last change, RFC 3339.
    pub updated_at: String,
}

/// A list of entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryList {
    /// The entries.
    pub items: Vec<Entry>,
}
