//! The event stream and webhook payloads: events derived from audit records.

use super::AuditRecord;
use crate::time::rfc3339;
use serde::{Deserialize, Serialize};

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
