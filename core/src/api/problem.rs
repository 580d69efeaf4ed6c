//! RFC 9457 problem details.

use serde::{Deserialize, Serialize};

/// RFC 9457 problem details, with Tessera's stable `code`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// Human explanation of this occurrence, naming the field at fault where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Stable machine-readable code, such as `csr_invalid`.
    pub code: String,
}
