//! How each resource reads as a table row: its columns and its cells, in one
//! place so that the tables stay alike (`-` for an absent value, lists
//! comma-separated).

use super::{Row, or_dash};
use tessera_core::api;

impl Row for api::CaInfo {
    const HEADERS: &'static [&'static str] = &[
        "ID",
        "STATE",
        "KIND",
        "KEY",
        "NOT AFTER",
        "DEPENDENTS",
        "SUBJECT",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.state.to_string(),
            self.kind.to_string(),
            self.key_algorithm.to_string(),
            self.not_after.to_string(),
            self.dependents.to_string(),
            self.subject.to_string(),
        ]
    }
}

impl Row for api::Entry {
    const HEADERS: &'static [&'static str] =
        &["ID", "SPIFFE ID", "SELECTORS", "PARENT", "TTL", "HINT"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.spiffe_id.to_string(),
            self.selectors.join(","),
            or_dash(&self.parent_id),
            self.ttl_seconds.to_string(),
            or_dash(&self.hint),
        ]
    }
}

impl Row for api::TokenInfo {
    const HEADERS: &'static [&'static str] = &["ID", "SPIFFE ID", "EXPIRES", "USED"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.spiffe_id.to_string(),
            self.expires_at.to_string(),
            or_dash(&self.used_at),
        ]
    }
}

impl Row for api::CertificateRecord {
    const HEADERS: &'static [&'static str] = &["SERIAL", "SPIFFE ID", "NOT AFTER", "REVOKED"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.serial.to_string(),
            self.spiffe_id.to_string(),
            self.not_after.to_string(),
            or_dash(&self.revoked_at),
        ]
    }
}

impl Row for api::AuditRecord {
    const HEADERS: &'static [&'static str] = &["SEQ", "TIME", "ACTOR", "ACTION", "TARGET"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.seq.to_string(),
            tessera_core::time::rfc3339(self.at),
            self.actor.to_string(),
            self.action.to_string(),
            self.target.to_string(),
        ]
    }
}

impl Row for api::ApiCredential {
    const HEADERS: &'static [&'static str] = &["ID", "KIND", "NAME", "ROLE", "EXPIRES", "DISABLED"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.kind.to_string(),
            self.name.to_string(),
            self.role.as_str().into(),
            self.expires_at.to_string(),
            self.disabled.to_string(),
        ]
    }
}

impl Row for api::DenialRecord {
    const HEADERS: &'static [&'static str] = &[
        "TIME",
        "REASON",
        "SOURCE",
        "PEER",
        "DESTINATION",
        "LISTENER",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            tessera_core::time::rfc3339(self.at),
            self.reason.as_str().into(),
            or_dash(&self.peer_spiffe_id),
            self.peer_addr.to_string(),
            self.reporter.to_string(),
            self.listener.to_string(),
        ]
    }
}

impl Row for api::NodeInfo {
    const HEADERS: &'static [&'static str] =
        &["NAME", "SPIFFE ID", "ATTESTATION", "BANNED", "LAST SEEN"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.spiffe_id.to_string(),
            self.attestation_type.to_string(),
            or_dash(&self.banned_at),
            self.last_seen.to_string(),
        ]
    }
}

impl Row for api::Webhook {
    const HEADERS: &'static [&'static str] = &[
        "ID",
        "URL",
        "KINDS",
        "LAST EVENT",
        "ATTEMPTS",
        "DESCRIPTION",
    ];

    fn cells(&self) -> Vec<String> {
        let kinds: Vec<&str> = self.kinds.iter().map(|k| k.as_str()).collect();
        vec![
            self.id.to_string(),
            self.url.to_string(),
            kinds.join(","),
            self.last_event_id.to_string(),
            self.attempts.to_string(),
            or_dash(&self.description),
        ]
    }
}

impl Row for api::WebhookDelivery {
    const HEADERS: &'static [&'static str] = &[
        "TIME", "EVENT", "KIND", "ATTEMPT", "OUTCOME", "STATUS", "MS", "ERROR",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.at.to_string(),
            self.event_id.to_string(),
            self.kind.as_str().into(),
            self.attempt.to_string(),
            self.outcome.as_str().into(),
            or_dash(&self.status_code),
            self.duration_ms.to_string(),
            or_dash(&self.error),
        ]
    }
}

/// `tessera events` prints these cells joined by two spaces as each event
/// arrives, under the headers printed once at the start.
impl Row for api::Event {
    const HEADERS: &'static [&'static str] = &["ID", "TIME", "KIND", "ACTION", "TARGET", "ACTOR"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.at.to_string(),
            self.kind.as_str().into(),
            self.action.to_string(),
            self.target.to_string(),
            self.actor.to_string(),
        ]
    }
}

impl Row for api::Federation {
    const HEADERS: &'static [&'static str] = &[
        "TRUST DOMAIN",
        "PROFILE",
        "HEALTH",
        "SEQUENCE",
        "BUNDLE AGE",
        "LAST SUCCESS",
        "LAST ERROR",
    ];

    fn cells(&self) -> Vec<String> {
        let health = match (self.healthy, self.stale) {
            (true, _) => "healthy",
            (false, true) => "STALE",
            (false, false) => "unhealthy",
        };
        vec![
            self.trust_domain.clone(),
            self.profile.clone(),
            health.into(),
            or_dash(&self.sequence),
            self.bundle_age_seconds
                .map_or_else(|| "-".into(), |s| format!("{s}s")),
            or_dash(&self.last_success_at),
            or_dash(&self.last_error),
        ]
    }
}
