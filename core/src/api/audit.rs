//! The audit log as the API returns it.

use serde::{Deserialize, Serialize};

/// One audit-log record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Sequence number, from 1.
    pub seq: i64,
    /// Time, unix seconds.
    pub at: i64,
    /// Who acted.
    pub actor: String,
    /// What kind of action, such as `cert.issue`.
    pub action: String,
    /// What it acted on.
    pub target: String,
    /// Details, canonical JSON text.
    pub details: String,
    /// Hash of the previous record, hex (all zeros for the first).
    pub prev_hash: String,
    /// This record's hash, hex.
    pub hash: String,
}

/// A page of audit records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditList {
    /// The records, in sequence order.
    pub items: Vec<AuditRecord>,
}
