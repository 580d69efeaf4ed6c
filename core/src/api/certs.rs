//! Certificates: issuing, redeeming, renewing, revoking, the ledger's records and the revocation feed.

use serde::{Deserialize, Serialize};

/// Issue a certificate from a CSR for a SPIFFE ID that has a registration entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// The SPIFFE ID to issue for.
    pub spiffe_id: String,
    /// The PKCS#10 CSR, PEM.
    pub csr: String,
    /// Requested lifetime in seconds (bounded by the entry and the server).
    #[serde(default, deserialize_with = "super::whole::opt")]
    pub ttl_seconds: Option<u64>,
}

/// Redeem a join token with a CSR.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    /// The join token, as returned once at creation.
    pub token: String,
    /// The PKCS#10 CSR, PEM.
    pub csr: String,
}

// The join token is a bearer credential: never in a log line.
crate::debug_without_secrets!(RedeemRequest: );

impl Drop for RedeemRequest {
    // The join token is not left in freed memory.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.token);
    }
}

/// Renew over mTLS with the caller's current certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The PKCS#10 CSR for the new key, PEM.
    pub csr: String,
}

/// A freshly issued certificate with what a workload needs to use it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedCertificate {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// The SPIFFE ID the certificate carries.
    pub spiffe_id: String,
    /// notBefore, RFC 3339.
    pub not_before: String,
    /// notAfter, RFC 3339.
    pub not_after: String,
    /// The leaf certificate, PEM.
    pub certificate: String,
    /// Intermediate certificates between the leaf and the trust anchor, PEM (may be empty).
    pub chain: String,
    /// The trust bundle (all CA certificates to trust), PEM.
    pub bundle: String,
    /// SHA-256 of the attestation record (hex), also in the certificate's binding extension.
    pub attestation_hash: String,
    /// The entry's Workload API hint (answers to node agents only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// RFC 5280 CRL reason codes that may be given on revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    /// No reason given (code 0).
    #[default]
    Unspecified,
    /// The subject's key was compromised (1).
    KeyCompromise,
    /// The CA's key was compromised (2).
    CaCompromise,
    /// The subject's affiliation changed (3).
    AffiliationChanged,
    /// The certificate was replaced (4).
    Superseded,
    /// The workload stopped operating (5).
    CessationOfOperation,
    /// Privileges were withdrawn (9).
    PrivilegeWithdrawn,
}

impl RevocationReason {
    /// The RFC 5280 numeric code.
    pub fn code(self) -> i64 {
        match self {
            Self::Unspecified => 0,
            Self::KeyCompromise => 1,
            Self::CaCompromise => 2,
            Self::AffiliationChanged => 3,
            Self::Superseded => 4,
            Self::CessationOfOperation => 5,
            Self::PrivilegeWithdrawn => 9,
        }
    }

    /// The reason for a numeric code, if it is one we accept.
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Unspecified,
            1 => Self::KeyCompromise,
            2 => Self::CaCompromise,
            3 => Self::AffiliationChanged,
            4 => Self::Superseded,
            5 => Self::CessationOfOperation,
            9 => Self::PrivilegeWithdrawn,
            _ => return None,
        })
    }

    /// The snake_case name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "key_compromise",
            Self::CaCompromise => "ca_compromise",
            Self::AffiliationChanged => "affiliation_changed",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessation_of_operation",
            Self::PrivilegeWithdrawn => "privilege_withdrawn",
        }
    }
}

/// Revoke by serial, by SPIFFE ID (all its live certificates) or by entry; exactly one.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// A serial number, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// A SPIFFE ID: every live certificate for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// A registration entry ID: every live certificate issued under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_id: Option<String>,
    /// The RFC 5280 reason.
    #[serde(default)]
    pub reason: RevocationReason,
}

/// The outcome of a revocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeResponse {
    /// Serials revoked by this call (already revoked ones are not repeated).
    pub revoked: Vec<String>,
    /// The revocation-feed version after this call.
    pub version: i64,
}

/// A certificate as recorded in the ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateRecord {
    /// Serial number, hex.
    pub serial: String,
    /// The SPIFFE ID.
    pub spiffe_id: String,
    /// The registration entry it was issued under.
    pub entry_id: String,
    /// The issuing CA's ID.
    pub ca_id: String,
    /// notBefore, RFC 3339.
    pub not_before: String,
    /// notAfter, RFC 3339.
    pub not_after: String,
    /// When it was revoked, RFC 3339, if it was.
    pub revoked_at: Option<String>,
    /// The revocation reason, if revoked.
    pub revocation_reason: Option<RevocationReason>,
    /// SHA-256 of the attestation record, hex.
    pub attestation_hash: String,
    /// The canonical attestation record that justified the issuance.
    pub attestation: serde_json::Value,
    /// Who asked for it (credential name or attested identity).
    pub requested_by: String,
    /// The node whose agent attested the workload, for certificates issued
    /// through an agent (`POST /v1/agent/svids`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The certificate itself, PEM (only on the single-certificate route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// A page of certificates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateList {
    /// The certificates, newest first.
    pub items: Vec<CertificateRecord>,
}

/// One revocation in the feed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevocationEvent {
    /// Feed version of this revocation (strictly increasing).
    pub version: i64,
    /// The revoked serial, hex.
    pub serial: String,
    /// The SPIFFE ID it carried.
    pub spiffe_id: String,
    /// The issuing CA's ID.
    pub ca_id: String,
    /// The reason.
    pub reason: RevocationReason,
    /// Revocation time, unix seconds.
    pub revoked_at: i64,
    /// The certificate's notAfter, unix seconds (followers may forget it after then).
    pub not_after: i64,
}

/// The revocation feed's answer: changes after `since`, and the version to ask from next.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevocationFeed {
    /// The highest version included (or `since` if nothing changed).
    pub version: i64,
    /// Revocations with a version greater than `since`, oldest first.
    pub revocations: Vec<RevocationEvent>,
    /// True when more changes are waiting (ask again from `version`).
    pub more: bool,
    /// The trust bundle's current sequence (the `/v1/bundle` ETag without
    /// quotes). The long-poll also answers when it differs from the `bundle`
    /// query parameter, so followers learn of a new CA within seconds.
    #[serde(default)]
    pub bundle_sequence: i64,
}
