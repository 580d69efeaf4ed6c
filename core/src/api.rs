//! REST API types shared by the CA server and the CLI (JSON, `/v1`).
//!
//! Request types refuse unknown fields, so a typo in a field name is an error
//! rather than a silently ignored option.

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

/// Issue a certificate from a CSR for a SPIFFE ID that has a registration entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// The SPIFFE ID to issue for.
    pub spiffe_id: String,
    /// The PKCS#10 CSR, PEM.
    pub csr: String,
    /// Requested lifetime in seconds (bounded by the entry and the server).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// Redeem a join token with a CSR.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    /// The join token, as returned once at creation.
    pub token: String,
    /// The PKCS#10 CSR, PEM.
    pub csr: String,
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
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// DNS SANs to put in certificates issued under this entry.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// A free-form note for operators.
    #[serde(default)]
    pub note: Option<String>,
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

/// Create a join token for an entry (by ID) or for the entry of a SPIFFE ID.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TokenCreateRequest {
    /// The entry the token redeems for.
    #[serde(default)]
    pub entry_id: Option<String>,
    /// Or the SPIFFE ID whose (single) entry the token redeems for.
    #[serde(default)]
    pub spiffe_id: Option<String>,
    /// Lifetime in seconds (default 600).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// A newly created join token; `token` is shown only here, once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenCreated {
    /// The token's public ID.
    pub id: String,
    /// The secret token to hand to the workload.
    pub token: String,
    /// The entry it redeems for.
    pub entry_id: String,
    /// Expiry, RFC 3339.
    pub expires_at: String,
}

/// A join token's public information (never the secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The token's public ID.
    pub id: String,
    /// The entry it redeems for.
    pub entry_id: String,
    /// The entry's SPIFFE ID.
    pub spiffe_id: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Expiry, RFC 3339.
    pub expires_at: String,
    /// When it was redeemed, if it was.
    pub used_at: Option<String>,
}

/// A list of join tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenList {
    /// The tokens.
    pub items: Vec<TokenInfo>,
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
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// A new API token; `token` is shown only here, once.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// One CA generation's status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaInfo {
    /// The CA's ID.
    pub id: String,
    /// `active` for the one signing now.
    pub state: String,
    /// Key algorithm.
    pub key_algorithm: String,
    /// Subject DN.
    pub subject: String,
    /// notBefore, RFC 3339.
    pub not_before: String,
    /// notAfter, RFC 3339.
    pub not_after: String,
    /// Whether it is a self-signed root or an intermediate under an upstream.
    pub kind: String,
    /// When it was prepared (published in the bundle), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepared_at: Option<String>,
    /// When it became active, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<String>,
    /// When it stopped signing, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<String>,
    /// When it left the bundle (removed or revoked), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Unexpired, unrevoked leaves it signed.
    #[serde(default)]
    pub dependents: i64,
    /// Whether it is in the trust bundle now.
    #[serde(default)]
    pub published: bool,
    /// Whether its certificate carries a NameConstraints extension (absent
    /// while it has no certificate, e.g. a pending intermediate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_constrained: Option<bool>,
}

/// The rotation schedule's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScheduleInfo {
    /// Whether the schedule is enabled in config.
    pub enabled: bool,
    /// The next transition the schedule will make, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<NextTransition>,
    /// When some replica last ran the schedule, RFC 3339 (from this replica's view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// Why the schedule cannot proceed on its own, if it cannot (for example an
    /// intermediate waiting for the operator's upstream to sign).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled: Option<String>,
}

/// A scheduled CA transition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NextTransition {
    /// `prepare`, `activate` or `remove`.
    pub action: String,
    /// The generation it applies to (absent for `prepare`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_id: Option<String>,
    /// When, RFC 3339.
    pub at: String,
}

/// The answer to an emergency CA revocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaRevokeResponse {
    /// The revoked generation.
    pub revoked_ca: String,
    /// Leaves revoked with it (reason cACompromise).
    pub revoked_certificates: usize,
    /// The fresh generation made active, if the revoked one was active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// The revocation-feed version after the change.
    pub version: i64,
    /// Set when followers cannot learn the new bundle through the CA (no
    /// prepared generation existed, so the fresh one is trusted by no one yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// The CA server's status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaStatus {
    /// The trust domain served.
    pub trust_domain: String,
    /// CA generations.
    pub cas: Vec<CaInfo>,
    /// Current revocation-feed version.
    pub revocation_version: i64,
    /// Database backend (`sqlite` or `postgres`).
    pub storage: String,
    /// The rotation schedule.
    #[serde(default)]
    pub schedule: ScheduleInfo,
    /// The current trust bundle's sequence.
    #[serde(default)]
    pub bundle_sequence: i64,
}

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

/// The audit-record hash: SHA-256 over the previous hash and every field, each
/// length-prefixed so no two records can encode alike.
pub fn audit_hash(
    prev_hash: &[u8; 32],
    seq: i64,
    at: i64,
    actor: &str,
    action: &str,
    target: &str,
    details: &str,
) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"tessera-audit-v1");
    ctx.update(prev_hash);
    ctx.update(&seq.to_be_bytes());
    ctx.update(&at.to_be_bytes());
    for field in [actor, action, target, details] {
        ctx.update(&(field.len() as u64).to_be_bytes());
        ctx.update(field.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Checks a run of audit records: each hash recomputes and each links to the one
/// before. `prev` is the hash before the first record (zeros for seq 1).
/// Returns the sequence number of the first bad record.
pub fn verify_audit_chain(prev: [u8; 32], records: &[AuditRecord]) -> Result<[u8; 32], i64> {
    let mut prev = prev;
    for r in records {
        let want_prev = hex::encode(prev);
        let h = audit_hash(
            &prev, r.seq, r.at, &r.actor, &r.action, &r.target, &r.details,
        );
        if r.prev_hash != want_prev || r.hash != hex::encode(h) {
            return Err(r.seq);
        }
        prev = h;
    }
    Ok(prev)
}

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

/// Formats unix seconds as RFC 3339 (UTC).
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Parses RFC 3339 into unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

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

/// The kinds of events the event stream and webhooks carry. Each is derived
/// from audit actions (see [`EventKind::of_action`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A certificate was issued (`cert.issue`, `cert.redeem`, `cert.issue_operator`,
    /// `cert.platform_issue`, `cert.agent_issue`: every rotation through an
    /// agent is an issuance).
    #[serde(rename = "certificate.issued")]
    CertificateIssued,
    /// A certificate was renewed (`cert.renew`).
    #[serde(rename = "certificate.renewed")]
    CertificateRenewed,
    /// A certificate was revoked (`cert.revoke`).
    #[serde(rename = "certificate.revoked")]
    CertificateRevoked,
    /// A certificate nears its notAfter and no newer one was issued for its
    /// SPIFFE ID (`cert.expiring`).
    #[serde(rename = "certificate.expiring")]
    CertificateExpiring,
    /// A CA generation changed state (any `ca.*` action).
    #[serde(rename = "ca.state_changed")]
    CaStateChanged,
    /// A node was banned (`node.ban`).
    #[serde(rename = "node.banned")]
    NodeBanned,
}

impl EventKind {
    /// Every kind, in a fixed order.
    pub const ALL: [EventKind; 6] = [
        EventKind::CertificateIssued,
        EventKind::CertificateRenewed,
        EventKind::CertificateRevoked,
        EventKind::CertificateExpiring,
        EventKind::CaStateChanged,
        EventKind::NodeBanned,
    ];

    /// The kind's name, as in the API (`certificate.issued`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::CertificateIssued => "certificate.issued",
            EventKind::CertificateRenewed => "certificate.renewed",
            EventKind::CertificateRevoked => "certificate.revoked",
            EventKind::CertificateExpiring => "certificate.expiring",
            EventKind::CaStateChanged => "ca.state_changed",
            EventKind::NodeBanned => "node.banned",
        }
    }

    /// Parses a kind's name.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The audit actions that produce this kind exactly; `ca.state_changed`
    /// is every action starting with `ca.` instead (see [`EventKind::CA_PREFIX`]).
    pub fn actions(self) -> &'static [&'static str] {
        match self {
            EventKind::CertificateIssued => &[
                "cert.issue",
                "cert.redeem",
                "cert.issue_operator",
                "cert.platform_issue",
                "cert.agent_issue",
            ],
            EventKind::CertificateRenewed => &["cert.renew"],
            EventKind::CertificateRevoked => &["cert.revoke"],
            EventKind::CertificateExpiring => &["cert.expiring"],
            EventKind::CaStateChanged => &[],
            EventKind::NodeBanned => &["node.ban"],
        }
    }

    /// The action prefix that makes an audit record a `ca.state_changed` event.
    pub const CA_PREFIX: &'static str = "ca.";

    /// The event kind an audit action produces, if any.
    pub fn of_action(action: &str) -> Option<EventKind> {
        if action.starts_with(Self::CA_PREFIX) {
            return Some(EventKind::CaStateChanged);
        }
        EventKind::ALL
            .into_iter()
            .find(|k| k.actions().contains(&action))
    }

    /// Parses a comma-separated list of kinds (empty items ignored, duplicates
    /// removed); the error names the first unknown kind.
    pub fn parse_list(s: &str) -> Result<Vec<EventKind>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let k = EventKind::parse(part).ok_or_else(|| {
                format!(
                    "{part:?} is not an event kind (known: {})",
                    EventKind::ALL.map(|k| k.as_str()).join(", ")
                )
            })?;
            if !out.contains(&k) {
                out.push(k);
            }
        }
        Ok(out)
    }
}

/// One event: an audit record of an action that is an event kind. The ID is the
/// audit record's sequence number, so events are durable, ordered and the same
/// on every replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The audit sequence number.
    pub id: i64,
    /// The event kind.
    pub kind: EventKind,
    /// The audit action behind it (`cert.redeem`, `ca.activate`, ...).
    pub action: String,
    /// When, RFC 3339.
    pub at: String,
    /// Who acted.
    pub actor: String,
    /// What it acted on (a serial, a CA ID, ...).
    pub target: String,
    /// The audit record's details.
    pub details: serde_json::Value,
}

impl Event {
    /// The event an audit record is, if its action is an event kind.
    pub fn from_audit(r: &AuditRecord) -> Option<Event> {
        Some(Event {
            id: r.seq,
            kind: EventKind::of_action(&r.action)?,
            action: r.action.clone(),
            at: rfc3339(r.at),
            actor: r.actor.clone(),
            target: r.target.clone(),
            details: serde_json::from_str(&r.details).unwrap_or(serde_json::Value::Null),
        })
    }
}

/// Register a webhook receiver (`POST /v1/webhooks`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookCreateRequest {
    /// The receiver, `https://host[:port]/path` (no user information, at most 2048 bytes).
    pub url: String,
    /// The event kinds to deliver (at least one).
    pub kinds: Vec<EventKind>,
    /// Trust anchors (PEM) for a receiver with a private CA; default: the
    /// system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Operator note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A registered webhook (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Webhook {
    /// ID.
    pub id: String,
    /// Receiver URL.
    pub url: String,
    /// Event kinds delivered.
    pub kinds: Vec<EventKind>,
    /// Whether it trusts its own anchors (`ca_pem`) instead of the system's.
    pub private_ca: bool,
    /// Operator note.
    pub description: Option<String>,
    /// Who registered it.
    pub created_by: String,
    /// When, RFC 3339.
    pub created_at: String,
    /// The last event handled (delivered or given up on).
    pub last_event_id: i64,
    /// Failed attempts so far at the next event.
    pub attempts: i64,
}

/// A webhook just registered: its signing secret is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookCreated {
    /// The webhook.
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The HMAC-SHA256 key (64 hex characters; the key is this text itself).
    pub secret: String,
}

/// Registered webhooks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookList {
    /// The webhooks.
    pub items: Vec<Webhook>,
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// The attempt failed; another follows after a backoff.
    Retrying,
    /// The attempt failed and was the last; the event is skipped.
    Failed,
}

impl DeliveryOutcome {
    /// The outcome's name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Retrying => "retrying",
            DeliveryOutcome::Failed => "failed",
        }
    }

    /// Parses an outcome's name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Delivered, Self::Retrying, Self::Failed]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// The webhook.
    pub webhook_id: String,
    /// The event (audit seq).
    pub event_id: i64,
    /// The event kind.
    pub kind: EventKind,
    /// Attempt number for this event, from 1.
    pub attempt: i64,
    /// What came of it.
    pub outcome: DeliveryOutcome,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<u16>,
    /// Why it failed, if it did (never a secret).
    pub error: Option<String>,
    /// How long the attempt took, milliseconds.
    pub duration_ms: i64,
    /// When, RFC 3339.
    pub at: String,
}

/// Delivery attempts of one webhook, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookDeliveryList {
    /// The attempts.
    pub items: Vec<WebhookDelivery>,
}

/// Asks for a JWT-SVID for the caller's own SPIFFE ID (`POST /v1/jwt-svids`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSvidRequest {
    /// Audiences (`aud`), 1 to 16, each 1 to 256 printable characters.
    pub audience: Vec<String>,
    /// Lifetime, seconds (60 to 3600; default 300).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// A JWT-SVID.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JwtSvid {
    /// The token (compact JWS, ES256).
    pub token: String,
    /// Its `sub`.
    pub spiffe_id: String,
    /// Its `exp`, RFC 3339.
    pub expires_at: String,
}

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
    #[serde(default)]
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

// ---- platform-token (JWT) attestation ---------------------------------------

/// The path prefix of the parent IDs of entries that sidecars in direct mode
/// claim with a platform token: `spiffe://<td>/tessera/issuer/<issuer-name>`.
pub const ISSUER_PATH_PREFIX: &str = "/tessera/issuer/";

/// A platform token (Kubernetes projected service-account token or OIDC ID
/// token) and a CSR: `POST /v1/nodes/attest` (a node agent's identity) and
/// `POST /v1/svids/platform` (a sidecar in direct mode).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformAttestRequest {
    /// The token, compact JWS.
    pub token: String,
    /// The PKCS#10 CSR, PEM.
    pub csr: String,
    /// `POST /v1/svids/platform` only: the SPIFFE ID wanted, when several
    /// entries match the token.
    #[serde(default)]
    pub spiffe_id: Option<String>,
}

impl std::fmt::Debug for PlatformAttestRequest {
    // The token is a bearer credential: never in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformAttestRequest")
            .field("spiffe_id", &self.spiffe_id)
            .finish_non_exhaustive()
    }
}
