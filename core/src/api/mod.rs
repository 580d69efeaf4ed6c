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
