//! Connections sidecars refused, as they report them and as the CA lists them.

use serde::{Deserialize, Serialize};

/// Why a sidecar refused a connection (the container firewall's reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenialReason {
    /// The peer presented no client certificate.
    NoCertificate,
    /// The peer's chain does not lead to the trust bundle.
    UntrustedChain,
    /// The peer's certificate has expired (or is not yet valid).
    Expired,
    /// The peer's certificate is revoked.
    Revoked,
    /// The peer's SPIFFE ID is not allowed by the listener's policy.
    NotAllowed,
    /// The peer's certificate is not a valid X.509-SVID.
    InvalidSvid,
    /// The TLS handshake did not finish in time.
    HandshakeTimeout,
    /// Any other TLS protocol failure.
    TlsError,
}

impl DenialReason {
    /// Every reason, in a fixed order.
    pub const ALL: [DenialReason; 8] = [
        Self::NoCertificate,
        Self::UntrustedChain,
        Self::Expired,
        Self::Revoked,
        Self::NotAllowed,
        Self::InvalidSvid,
        Self::HandshakeTimeout,
        Self::TlsError,
    ];

    /// The snake_case name used in JSON, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::UntrustedChain => "untrusted_chain",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::NotAllowed => "not_allowed",
            Self::InvalidSvid => "invalid_svid",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::TlsError => "tls_error",
        }
    }
}

/// One refused connection, as a sidecar reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Denial {
    /// When, unix seconds.
    #[serde(deserialize_with = "super::whole::int")]
    pub at: i64,
    /// The listener's name (inbound) or upstream's name (outbound).
    pub listener: String,
    /// The peer's address, `ip:port`.
    pub peer_addr: String,
    /// The peer's SPIFFE ID, if its certificate got far enough to show one.
    #[serde(default)]
    pub peer_spiffe_id: Option<String>,
    /// Why.
    pub reason: DenialReason,
}

/// A batch of denials from one sidecar (`POST /v1/denials`, its own mTLS identity).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenialReport {
    /// At most 1000 per report.
    pub denials: Vec<Denial>,
}

/// A stored denial, with the reporting sidecar's identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DenialRecord {
    /// Record ID.
    pub id: i64,
    /// When, unix seconds.
    pub at: i64,
    /// The reporting sidecar's SPIFFE ID (the destination that refused).
    pub reporter: String,
    /// Listener or upstream name.
    pub listener: String,
    /// The peer's address.
    pub peer_addr: String,
    /// The peer's SPIFFE ID, if known.
    pub peer_spiffe_id: Option<String>,
    /// Why.
    pub reason: DenialReason,
}

/// A page of denials, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DenialList {
    /// The denials.
    pub items: Vec<DenialRecord>,
}
