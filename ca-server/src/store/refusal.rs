//! Why the store refused a write: a precondition it checks inside the write's
//! transaction no longer held. Each refusal is a state the caller can act on
//! (the API answers it with `409 conflict`, or a route-specific refusal), never
//! a database failure: those are [`super::StoreError`]'s other variants.

use tessera_core::api::CaState;
use tessera_core::time::rfc3339;

/// A precondition of a write that did not hold; the text is what clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The join token was redeemed already or has expired.
    #[error("join token already used or expired")]
    TokenSpent,
    /// The platform token's `jti` was seen before (a replay).
    #[error("platform token jti was already used")]
    JtiReplayed,
    /// The registration entry was deleted.
    #[error("registration entry no longer exists")]
    EntryGone,
    /// The certificate being renewed is revoked (or was pruned).
    #[error("certificate is revoked or unknown")]
    CertificateRevoked,
    /// The generation that signed the leaf was revoked or retired meanwhile.
    #[error("the signing CA was revoked or retired; ask again")]
    IssuerUnusable,
    /// The node is banned.
    #[error("the node is banned")]
    NodeBanned,
    /// The node was never recorded (attested issuance needs a known node).
    #[error("the node is not registered")]
    NodeUnregistered,
    /// Another replica bootstrapped the database first.
    #[error("an active CA already exists")]
    ActiveCaExists,
    /// No pending generation has that ID (imported already, or cancelled).
    #[error("no pending CA with that ID")]
    NoPendingCa,
    /// Only a prepared generation can be activated.
    #[error("CA {id} is {state}; only a prepared CA can be activated")]
    NotPrepared {
        /// The generation.
        id: String,
        /// Its state.
        state: CaState,
    },
    /// The generation has not been published for the minimum overlap yet.
    #[error(
        "CA {id} has been published for {published_for}s; the minimum overlap has not \
         elapsed (activate after {})",
        rfc3339(*.activate_after)
    )]
    OverlapNotElapsed {
        /// The generation.
        id: String,
        /// Seconds it has been published.
        published_for: i64,
        /// When activation will be allowed, unix seconds.
        activate_after: i64,
    },
    /// Unexpired, unrevoked leaves still depend on the retired generation.
    #[error("{count} unexpired certificate(s) still depend on CA {id}")]
    Dependents {
        /// The generation.
        id: String,
        /// How many leaves.
        count: i64,
    },
    /// The active generation cannot be removed.
    #[error("the active CA cannot be retired: prepare and activate another generation first")]
    ActiveCannotRetire,
    /// The generation is in a state the transition does not start from.
    #[error("CA {id} is {state}")]
    CaState {
        /// The generation.
        id: String,
        /// Its state.
        state: CaState,
    },
    /// Revoking the active generation needs one to take over.
    #[error("revoking the active CA needs a replacement: no prepared generation exists")]
    NoReplacement,
    /// A successor is already waiting for the operator's root.
    #[error(
        "CA {id} is already pending (its CSR waits for the operator's root): import the \
         signed certificate with `tessera-ca ca import-signed`, or cancel it with \
         `tessera ca retire {id}`"
    )]
    AlreadyPending {
        /// The pending generation.
        id: String,
    },
    /// A successor is already published.
    #[error(
        "CA {id} is already prepared: activate it (`tessera ca activate {id}` or `tessera ca \
         rotate`) or cancel it (`tessera ca retire {id}`) first"
    )]
    AlreadyPrepared {
        /// The prepared generation.
        id: String,
    },
    /// A certificate credential for this SPIFFE ID exists already.
    #[error("a credential for this SPIFFE ID exists")]
    CredentialExists,
    /// The trust domain already has a federation relationship.
    #[error("a federation relationship with {trust_domain} exists; change it with update")]
    FederationExists {
        /// The foreign trust domain.
        trust_domain: String,
    },
    /// The relationship limit is reached.
    #[error("at most {max} federation relationships")]
    FederationLimit {
        /// The limit.
        max: i64,
    },
    /// A fetched bundle's sequence is not higher than the one held (internal:
    /// the poll keeps the bundle held, nobody sees this refusal).
    #[error("the fetched bundle is not newer than the one held")]
    BundleNotNewer,
    /// The webhook limit is reached.
    #[error("at most {max} webhooks (webhooks.max_webhooks)")]
    WebhookLimit {
        /// `webhooks.max_webhooks`.
        max: i64,
    },
}

impl Refusal {
    /// Whether the refusal is about the node the request came through (or
    /// attests), which routes answer as a refusal of the node.
    pub fn is_node(&self) -> bool {
        matches!(self, Refusal::NodeBanned | Refusal::NodeUnregistered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts clients have always seen for these refusals.
    #[test]
    fn texts_are_stable() {
        let id = || "ab".repeat(16);
        let cases = [
            (
                Refusal::TokenSpent,
                "join token already used or expired".to_owned(),
            ),
            (
                Refusal::JtiReplayed,
                "platform token jti was already used".into(),
            ),
            (
                Refusal::EntryGone,
                "registration entry no longer exists".into(),
            ),
            (
                Refusal::CertificateRevoked,
                "certificate is revoked or unknown".into(),
            ),
            (
                Refusal::IssuerUnusable,
                "the signing CA was revoked or retired; ask again".into(),
            ),
            (Refusal::NodeBanned, "the node is banned".into()),
            (
                Refusal::NodeUnregistered,
                "the node is not registered".into(),
            ),
            (
                Refusal::ActiveCaExists,
                "an active CA already exists".into(),
            ),
            (Refusal::NoPendingCa, "no pending CA with that ID".into()),
            (
                Refusal::NotPrepared {
                    id: id(),
                    state: CaState::Active,
                },
                format!("CA {} is active; only a prepared CA can be activated", id()),
            ),
            (
                Refusal::OverlapNotElapsed {
                    id: id(),
                    published_for: 5,
                    activate_after: 0,
                },
                format!(
                    "CA {} has been published for 5s; the minimum overlap has not elapsed \
                     (activate after {})",
                    id(),
                    rfc3339(0)
                ),
            ),
            (
                Refusal::Dependents { id: id(), count: 3 },
                format!("3 unexpired certificate(s) still depend on CA {}", id()),
            ),
            (
                Refusal::ActiveCannotRetire,
                "the active CA cannot be retired: prepare and activate another generation first"
                    .into(),
            ),
            (
                Refusal::CaState {
                    id: id(),
                    state: CaState::Removed,
                },
                format!("CA {} is removed", id()),
            ),
            (
                Refusal::NoReplacement,
                "revoking the active CA needs a replacement: no prepared generation exists".into(),
            ),
            (
                Refusal::AlreadyPending { id: id() },
                format!(
                    "CA {0} is already pending (its CSR waits for the operator's root): import \
                     the signed certificate with `tessera-ca ca import-signed`, or cancel it \
                     with `tessera ca retire {0}`",
                    id()
                ),
            ),
            (
                Refusal::AlreadyPrepared { id: id() },
                format!(
                    "CA {0} is already prepared: activate it (`tessera ca activate {0}` or \
                     `tessera ca rotate`) or cancel it (`tessera ca retire {0}`) first",
                    id()
                ),
            ),
            (
                Refusal::CredentialExists,
                "a credential for this SPIFFE ID exists".into(),
            ),
            (
                Refusal::WebhookLimit { max: 7 },
                "at most 7 webhooks (webhooks.max_webhooks)".into(),
            ),
        ];
        for (r, text) in cases {
            assert_eq!(r.to_string(), text);
        }
    }
}
