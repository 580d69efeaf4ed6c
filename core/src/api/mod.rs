//! REST API wire types shared by the CA server, the CLI and the agent (JSON, `/v1`),
//! one module per resource.
//!
//! Request types refuse unknown fields, so a typo in a field name is an error
//! rather than a silently ignored option.
//!
//! SPIFFE IDs stay `String` here on purpose: the authority parses each one so a
//! refusal answers `invalid_spiffe_id` naming the field, not a JSON error.

mod agent;
mod audit;
mod ca;
mod certs;
mod credentials;
mod denials;
mod entries;
mod events;
mod federation;
mod jwt_svids;
mod nodes;
mod platform;
mod problem;
mod tokens;
mod webhooks;
pub mod whole;

pub use agent::{
    AgentFederatedBundles, AgentJwtSvidRequest, AgentJwtSvidResponse, AgentSvidRequest,
    AgentSvidResponse, WorkloadAttestation,
};
pub use audit::{AuditList, AuditRecord};
pub use ca::{CaInfo, CaRevokeResponse, CaState, CaStatus, NextTransition, ScheduleInfo};
pub use certs::{
    CertificateList, CertificateRecord, IssueRequest, IssuedCertificate, RedeemRequest,
    RenewRequest, RevocationEvent, RevocationFeed, RevocationReason, RevokeRequest, RevokeResponse,
};
pub use credentials::{
    ApiCredential, ApiCredentialList, ApiTokenCreateRequest, ApiTokenCreated, Role,
};
pub use denials::{Denial, DenialList, DenialReason, DenialRecord, DenialReport};
pub use entries::{Entry, EntryList, EntryRequest};
pub use events::{Event, EventKind};
pub use federation::{
    Federation, FederationCreateRequest, FederationList, FederationUpdateRequest,
};
pub use jwt_svids::{JwtSvid, JwtSvidRequest};
pub use nodes::{NodeBanResponse, NodeInfo, NodeList};
pub use platform::PlatformAttestRequest;
pub use problem::Problem;
pub use tokens::{TokenCreateRequest, TokenCreated, TokenInfo, TokenList};
pub use webhooks::{
    DeliveryOutcome, Webhook, WebhookCreateRequest, WebhookCreated, WebhookDelivery,
    WebhookDeliveryList, WebhookList,
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11 item 9: no `Debug` of a type holding a token or secret shows it.
    #[test]
    fn debug_never_shows_a_secret() {
        const S: &str = "SECRET-d0d0cafe";
        let webhook = serde_json::json!({
            "id": "w", "url": "https://h/", "kinds": [], "private_ca": false,
            "created_by": "admin", "created_at": "t", "last_event_id": 0, "attempts": 0,
            "secret": S
        });
        let shown = [
            format!(
                "{:?}",
                RedeemRequest {
                    token: S.into(),
                    csr: "csr".into()
                }
            ),
            format!(
                "{:?}",
                serde_json::from_value::<JwtSvid>(serde_json::json!({
                    "token": S, "spiffe_id": "spiffe://td/w", "expires_at": "t"
                }))
                .unwrap()
            ),
            format!(
                "{:?}",
                serde_json::from_value::<TokenCreated>(serde_json::json!({
                    "id": "i", "token": S, "entry_id": "e", "expires_at": "t"
                }))
                .unwrap()
            ),
            format!(
                "{:?}",
                serde_json::from_value::<ApiTokenCreated>(serde_json::json!({
                    "id": "i", "token": S, "role": "admin", "expires_at": "t"
                }))
                .unwrap()
            ),
            format!(
                "{:?}",
                serde_json::from_value::<WebhookCreated>(webhook).unwrap()
            ),
            format!(
                "{:?}",
                PlatformAttestRequest {
                    token: S.into(),
                    csr: "csr".into(),
                    spiffe_id: None
                }
            ),
        ];
        for s in &shown {
            assert!(!s.contains(S), "{s}");
        }
        // The rest is still there to debug with.
        assert!(shown[3].contains("Admin"), "{}", shown[3]);
    }
}
