//! Platform-token (JWT) attestation: a node agent (`POST /v1/nodes/attest`)
//! or a sidecar in direct mode (`POST /v1/svids/platform`) presents a token
//! from a trusted issuer (see [`crate::platform`]) with a CSR.
//!
//! - Nodes: the token must carry the issuer's `node_selectors`; the node is
//!   `spiffe://<td>/tessera/agent/<issuer-name>.<node>` where `<node>` is
//!   the issuer's node-name claim. It is recorded with its selectors (and
//!   `attestation_type = platform_token`), is refused while banned, and is
//!   re-attested with a fresh token instead of renewed.
//! - Workloads: the certificate is for the entry parented to
//!   `spiffe://<td>/tessera/issuer/<issuer-name>` whose selectors are all
//!   among the token's; each issuance presents a fresh token.
//!
//! Every refusal of a token whose signature verified is audited
//! (`attestation.refuse`, method `platform_token`) and counted; a token
//! that never verified (malformed, unknown issuer or key, refused algorithm,
//! bad signature) is anyone's garbage on a public route: it is counted
//! (`attestation_refused{method="platform_token_unverified"}`) and logged at
//! most once a second, never written to the audit log (which would let
//! anyone grow it and take its write lock). No record ever holds the token.
//! A token's `jti`, when it has one, is consumed in the transaction that
//! records the certificate.

use super::{Authority, AuthorityError, Principal, Result};
use crate::csr::VerifiedCsr;
use crate::platform::{self, Issuer, PlatformError};
use crate::store::{Precondition, Refusal};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use tessera_core::api::{self, IssuedCertificate};
use tessera_core::platform_jwt::{MAX_LEEWAY_SECONDS, VerifiedToken};
use tessera_core::spiffe;
use tessera_core::{SpiffeId, now_unix};

/// Most entries read for one issuer per request.
const MAX_ENTRIES_PER_ISSUER: i64 = 10_000;

/// A token that verified, with what it grants.
struct Attested {
    issuer: Arc<Issuer>,
    token: VerifiedToken,
    selectors: Vec<String>,
}

impl Attested {
    /// The single-use precondition for the token's `jti`, if it has one.
    fn consume_jti(&self, now: i64) -> Option<Precondition> {
        self.token.jti.as_ref().map(|jti| Precondition::ConsumeJti {
            issuer: self.issuer.cfg.name.clone(),
            jti_hash: super::sha256_hex(jti.as_bytes()),
            expires_at: self
                .token
                .expires_at
                .saturating_add(MAX_LEEWAY_SECONDS as i64),
            now,
        })
    }

    /// The attestation record (the certificate's binding hash covers it).
    fn record(&self, entry_id: &str, spiffe_id: &SpiffeId) -> serde_json::Value {
        json!({
            "method": "platform_token",
            "issuer": self.issuer.cfg.name,
            "iss": self.token.issuer,
            "sub": self.token.subject,
            "alg": self.token.alg.as_str(),
            "kid": self.token.kid,
            "jti_sha256": self.token.jti.as_ref().map(|j| super::sha256_hex(j.as_bytes())),
            "token_expires_at": self.token.expires_at,
            "entry_id": entry_id,
            "spiffe_id": spiffe_id.as_str(),
            "selectors": self.selectors,
        })
    }
}

/// Whether a verification failure came after the token's signature
/// verified (so the token is the issuer's, and its refusal worth auditing).
fn signature_verified(e: &PlatformError) -> bool {
    use tessera_core::platform_jwt::PlatformJwtError as J;
    !matches!(
        e,
        PlatformError::UnknownIssuer
            | PlatformError::Token(
                J::TooLarge
                    | J::Malformed(_)
                    | J::Algorithm(_)
                    | J::UnknownKey(_)
                    | J::KeyMismatch { .. }
                    | J::Signature
            )
    )
}

impl Authority {
    /// Audits and counts a refused platform token; returns the error to answer.
    async fn refuse_platform(
        &self,
        route: &'static str,
        issuer: Option<&str>,
        sub: Option<&str>,
        reason: String,
    ) -> AuthorityError {
        let audit = Principal::Anonymous.audit(
            "attestation.refuse",
            issuer.unwrap_or("-").to_owned(),
            json!({
                "method": "platform_token",
                "route": route,
                "issuer": issuer,
                "sub": sub,
                "reason": reason,
            }),
        );
        if let Err(e) = self.store.audit(vec![audit]).await {
            tracing::error!(error = %e, "could not audit a platform-token refusal");
        }
        self.metrics.attestation_refused.inc(&["platform_token"]);
        tracing::info!(route, issuer, reason = %reason, "platform token refused");
        AuthorityError::PlatformToken(reason)
    }

    /// Counts and (rate-limited) logs a token that never verified; returns
    /// the error to answer. Nothing is audited (see the module documentation).
    fn refuse_unverified(&self, route: &'static str, reason: String) -> AuthorityError {
        static LAST_LOG: AtomicI64 = AtomicI64::new(0);
        static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
        self.metrics
            .attestation_refused
            .inc(&["platform_token_unverified"]);
        let now = now_unix();
        let last = LAST_LOG.load(Ordering::Relaxed);
        if now > last
            && LAST_LOG
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let suppressed = SUPPRESSED.swap(0, Ordering::AcqRel);
            tracing::info!(route, reason = %reason, suppressed, "unverified platform token refused");
        } else {
            SUPPRESSED.fetch_add(1, Ordering::AcqRel);
        }
        AuthorityError::PlatformToken(reason)
    }

    /// Finds the issuer and verifies the token; refusals of a token whose
    /// signature verified are audited, the others only counted.
    async fn attest_platform(&self, token: &str, route: &'static str) -> Result<Attested> {
        let verified = async {
            let head = tessera_core::platform_jwt::peek(token)?;
            let issuer = head
                .iss
                .as_deref()
                .and_then(|iss| self.issuers.by_issuer(iss))
                .ok_or(PlatformError::UnknownIssuer)?
                .clone();
            let t = issuer.verify(token, now_unix()).await;
            Ok::<_, PlatformError>((issuer, t))
        }
        .await;
        let (issuer, t) = match verified {
            Ok(v) => v,
            Err(e) => return Err(self.refuse_unverified(route, e.to_string())),
        };
        let name = issuer.cfg.name.clone();
        let token = match t {
            Ok(t) => t,
            Err(e) if !signature_verified(&e) => {
                return Err(self.refuse_unverified(route, e.to_string()));
            }
            Err(e) => {
                return Err(self
                    .refuse_platform(route, Some(&name), None, e.to_string())
                    .await);
            }
        };
        match platform::selectors(&issuer.cfg, &token) {
            Ok(selectors) => Ok(Attested {
                issuer,
                token,
                selectors,
            }),
            Err(e) => Err(self
                .refuse_platform(route, Some(&name), token.subject.as_deref(), e.to_string())
                .await),
        }
    }

    /// Issues for a verified token through the one issuance path; a ledger
    /// refusal of the token (a replayed `jti`) or of the node (banned) is
    /// audited like every other refusal of the token.
    #[allow(clippy::too_many_arguments)]
    async fn issue_attested(
        &self,
        route: &'static str,
        a: &Attested,
        entry: &api::Entry,
        id: &SpiffeId,
        csr: &VerifiedCsr,
        ttl: i64,
        pre: Vec<Precondition>,
        action: &'static str,
    ) -> Result<IssuedCertificate> {
        let actor = Principal::Workload {
            spiffe_id: id.clone(),
            serial: String::new(),
        };
        let att = a.record(&entry.id, id);
        let refusal = match self
            .issue(entry, id, csr, ttl, att, &actor, pre, action, None)
            .await
        {
            Err(AuthorityError::Refused(r)) if r == Refusal::JtiReplayed || r.is_node() => r,
            other => return other,
        };
        let (issuer, sub) = (Some(a.issuer.cfg.name.as_str()), a.token.subject.as_deref());
        if refusal.is_node() {
            let reason = refusal.to_string();
            self.refuse_platform(route, issuer, sub, reason.clone())
                .await;
            return Err(AuthorityError::Forbidden(reason));
        }
        let reason = "jti was already used (a replayed token)".to_owned();
        Err(self.refuse_platform(route, issuer, sub, reason).await)
    }

    /// A node attests with a platform token: returns its node certificate.
    pub async fn attest_node_platform(
        &self,
        req: &api::PlatformAttestRequest,
    ) -> Result<IssuedCertificate> {
        const ROUTE: &str = "nodes/attest";
        if req.spiffe_id.is_some() {
            return Err(AuthorityError::Invalid {
                field: "spiffe_id",
                reason: "a node's SPIFFE ID follows from its token; leave it out".into(),
            });
        }
        let a = self.attest_platform(&req.token, ROUTE).await?;
        let cfg = &a.issuer.cfg;
        let sub = a.token.subject.as_deref();
        if cfg.node_selectors.is_empty() {
            let why = format!("issuer {} is not allowed to attest nodes", cfg.name);
            return Err(self.refuse_platform(ROUTE, Some(&cfg.name), sub, why).await);
        }
        if let Some(missing) = cfg
            .node_selectors
            .iter()
            .find(|s| a.selectors.binary_search(s).is_err())
        {
            let why = format!("the token lacks node selector {missing:?}");
            return Err(self.refuse_platform(ROUTE, Some(&cfg.name), sub, why).await);
        }
        let node_value = platform::claim_str(&a.token.claims, cfg.node_claim());
        let Some(node_value) = node_value.filter(|v| platform::path_segment_ok(v)) else {
            let why = format!(
                "claim {} (the node name) is missing or not a SPIFFE path segment (letters, digits, '.', '-', '_')",
                cfg.node_claim()
            );
            return Err(self.refuse_platform(ROUTE, Some(&cfg.name), sub, why).await);
        };
        let name = format!("{}.{node_value}", cfg.name);
        let id = self.check_td(
            "spiffe_id",
            &format!("spiffe://{}{}{name}", self.td, spiffe::NODE_PATH_PREFIX),
        )?;
        // Node names under an issuer's prefix belong to that issuer; a
        // join-token node of the same name (made before the issuer was
        // configured) is not taken over.
        if let Some(n) = self.store.node_by_spiffe_id(id.as_str()).await?
            && n.attestation_type != "platform_token"
        {
            let why = format!("node {name} exists and attested otherwise");
            return Err(self.refuse_platform(ROUTE, Some(&cfg.name), sub, why).await);
        }
        let csr = self.verify_csr(&req.csr)?;
        let now = now_unix();
        let entry_id = format!("platform:{}", cfg.name);
        // Node identities from a platform token have no registration entry:
        // the issuer's configuration is the registration.
        let entry = api::Entry {
            id: entry_id.clone(),
            spiffe_id: id.to_string(),
            selectors: a.selectors.clone(),
            parent_id: None,
            ttl_seconds: cfg.node_ttl_seconds as u64,
            dns_names: vec![],
            note: None,
            hint: None,
            federates_with: vec![],
            created_at: String::new(),
            updated_at: String::new(),
        };
        let ttl = self.resolve_ttl(None, cfg.node_ttl_seconds)?;
        let mut pre: Vec<Precondition> = a.consume_jti(now).into_iter().collect();
        let selectors = serde_json::to_string(&a.selectors).unwrap_or_default();
        pre.extend(Precondition::node(
            id.as_str(),
            &name,
            false,
            "platform_token",
            Some(selectors),
            now,
        ));
        self.issue_attested(ROUTE, &a, &entry, &id, &csr, ttl, pre, "node.attest")
            .await
    }

    /// A workload (sidecar in direct mode) presents a platform token: returns
    /// the certificate of the entry parented to the issuer whose selectors
    /// all match the token's.
    pub async fn platform_svid(
        &self,
        req: &api::PlatformAttestRequest,
    ) -> Result<IssuedCertificate> {
        const ROUTE: &str = "svids/platform";
        let wanted = self.wanted_id(req.spiffe_id.as_deref())?;
        let a = self.attest_platform(&req.token, ROUTE).await?;
        let parent = a.issuer.parent_id(&self.td);
        let sub = a.token.subject.as_deref();
        let mut entries: Vec<api::Entry> = self
            .store
            .entries_by_parent(&parent, MAX_ENTRIES_PER_ISSUER)
            .await?
            .into_iter()
            .filter(|e| {
                wanted.as_ref().is_none_or(|w| w.as_str() == e.spiffe_id)
                    && SpiffeId::new(&e.spiffe_id)
                        .is_ok_and(|id| !spiffe::is_infrastructure_path(id.path()))
                    && e.selectors
                        .iter()
                        .all(|s| a.selectors.binary_search(s).is_ok())
            })
            .collect();
        entries.dedup_by(|x, y| x.spiffe_id == y.spiffe_id);
        let entry = match entries.len() {
            0 => {
                let why = format!(
                    "no entry parented to {parent} has all its selectors among the token's \
                     ({})",
                    a.selectors.join(", ")
                );
                let name = a.issuer.cfg.name.clone();
                self.refuse_platform(ROUTE, Some(&name), sub, why.clone())
                    .await;
                return Err(AuthorityError::NoEntry(why));
            }
            1 => entries.remove(0),
            _ => {
                return Err(AuthorityError::Invalid {
                    field: "spiffe_id",
                    reason: format!(
                        "{} entries match this token; name the one wanted",
                        entries.len()
                    ),
                });
            }
        };
        let (id, ttl) = self.entry_grant(&entry)?;
        let csr = self.verify_csr(&req.csr)?;
        let now = now_unix();
        let mut pre: Vec<Precondition> = a.consume_jti(now).into_iter().collect();
        pre.push(Precondition::EntryExists(entry.id.clone()));
        let action = "cert.platform_issue";
        self.issue_attested(ROUTE, &a, &entry, &id, &csr, ttl, pre, action)
            .await
    }
}
