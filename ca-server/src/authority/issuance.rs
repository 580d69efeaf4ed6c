//! Issuance: the one path that signs an SVID and records it in the ledger
//! ([`Authority::issue`]), and the routes into it that need no node agent or
//! platform token: an operator's direct issuance, join-token redemption and
//! renewal with the current certificate.

use super::credentials::{secret_matches, split_token};
use super::{Authority, AuthorityError, Principal, Result, sha256};
use crate::ca::LeafSpec;
use crate::csr::{self, VerifiedCsr};
use crate::store::{CertFilter, NewCert, OptionalRow, Precondition, REASON_CA_COMPROMISE, Refusal};
use serde_json::json;
use std::sync::atomic::Ordering;
use tessera_core::api::{self, IssuedCertificate};
use tessera_core::spiffe;
use tessera_core::time::rfc3339;
use tessera_core::{SpiffeId, now_unix, pem};

impl Authority {
    /// What an entry grants: its SPIFFE ID (in this trust domain) and the
    /// lifetime of its certificates (the entry's cap within the issuance limits).
    pub(super) fn entry_grant(&self, entry: &crate::store::EntryRow) -> Result<(SpiffeId, i64)> {
        let id = self.check_td("spiffe_id", &entry.spiffe_id)?;
        Ok((id, self.resolve_ttl(None, entry.ttl_seconds as i64)?))
    }

    pub(super) fn resolve_ttl(&self, requested: Option<u64>, cap: i64) -> Result<i64> {
        let i = &self.cfg.issuance;
        let cap = cap.min(i.max_ttl_seconds);
        match requested {
            None => Ok(cap),
            Some(t) => {
                let t = i64::try_from(t).unwrap_or(i64::MAX);
                if t < i.min_ttl_seconds || t > cap {
                    Err(AuthorityError::Invalid {
                        field: "ttl_seconds",
                        reason: format!("must be between {} and {cap}", i.min_ttl_seconds),
                    })
                } else {
                    Ok(t)
                }
            }
        }
    }

    pub(super) fn verify_csr(&self, csr_text: &str) -> Result<VerifiedCsr> {
        Ok(csr::verify(
            csr_text.as_bytes(),
            self.cfg.limits.max_csr_bytes,
        )?)
    }

    /// Signs and durably records a certificate; the core of every issuance path.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn issue(
        &self,
        entry: &api::Entry,
        spiffe_id: &SpiffeId,
        csr: &VerifiedCsr,
        ttl: i64,
        attestation: serde_json::Value,
        actor: &Principal,
        mut preconditions: Vec<Precondition>,
        action: &'static str,
        node: Option<&SpiffeId>,
    ) -> Result<IssuedCertificate> {
        // The one choke point of issuance: a node set names a group of
        // nodes and is never anyone's identity.
        // Entries made before the /tessera/ paths were reserved are refused
        // here too: no workload certificate names the CA server or an operator.
        if spiffe::node_set_name(spiffe_id.path()).is_some()
            || !spiffe::entry_may_grant(spiffe_id.path())
        {
            return Err(AuthorityError::Invalid {
                field: "spiffe_id",
                reason:
                    "node sets and Tessera's reserved paths (spiffe://<td>/tessera/node-set/…, \
                         /tessera/issuer/…, /tessera/ca-server, /tessera/operator/…) are never \
                         issued to a workload"
                        .into(),
            });
        }
        if let Some(d) = entry.dns_names.iter().find(|d| self.is_server_name(d)) {
            return Err(AuthorityError::Invalid {
                field: "dns_names",
                reason: format!("{d:?} is one of the CA server's own names"),
            });
        }
        let started = std::time::Instant::now();
        let canonical = attestation.to_string();
        let hash = sha256(canonical.as_bytes());
        let ca = self.signing_ca();
        preconditions.push(Precondition::IssuerUsable(ca.id.clone()));
        let now = now_unix();
        // A leaf never outlives its issuer; one that would live less than the
        // minimum TTL is refused rather than issued nearly expired.
        if ca.not_after - now < self.cfg.issuance.min_ttl_seconds {
            return Err(AuthorityError::IssuerExpiring);
        }
        let leaf = ca.sign_leaf(
            &LeafSpec {
                spiffe_id,
                dns_names: &entry.dns_names,
                ip_addrs: &[],
                ttl_seconds: ttl,
                skew_seconds: self.cfg.issuance.clock_skew_seconds,
                attestation_hash: Some(hash),
            },
            &csr.public_key,
            now,
        )?;
        let hash_hex = hex::encode(hash);
        let audit = actor.audit(
            action,
            leaf.serial.clone(),
            json!({
                "spiffe_id": spiffe_id.as_str(),
                "entry_id": entry.id,
                "not_after": leaf.not_after,
                "attestation_hash": hash_hex,
                "key_type": csr.key_type,
            }),
        );
        self.store
            .record_certificate(
                NewCert {
                    serial: leaf.serial.clone(),
                    spiffe_id: spiffe_id.to_string(),
                    entry_id: entry.id.clone(),
                    ca_id: ca.id.clone(),
                    not_before: leaf.not_before,
                    not_after: leaf.not_after,
                    requested_by: actor.audit_name(),
                    attestation: canonical,
                    attestation_hash: hash_hex.clone(),
                    der: leaf.der.to_vec(),
                    node_spiffe_id: node.map(SpiffeId::to_string),
                },
                preconditions,
                audit,
            )
            .await?;
        self.metrics.issued.inc(&[if action == "cert.renew" {
            "renew"
        } else {
            "issue"
        }]);
        self.metrics
            .issue_latency
            .observe(&[action], started.elapsed().as_secs_f64());
        Ok(IssuedCertificate {
            serial: leaf.serial,
            spiffe_id: spiffe_id.to_string(),
            not_before: rfc3339(leaf.not_before),
            not_after: rfc3339(leaf.not_after),
            certificate: pem::encode("CERTIFICATE", &leaf.der),
            chain: pem::encode_certs(ca.upstream_chain_if_intermediate()),
            bundle: self.bundle().pem.clone(),
            attestation_hash: hash_hex,
            hint: None,
        })
    }

    /// The entry direct issuance and join tokens use for `id`: several may
    /// grant one ID (different parents), and the oldest one counts.
    pub(super) async fn oldest_entry_for(&self, id: &SpiffeId) -> Result<api::Entry> {
        self.entries_for(id)
            .await?
            .into_iter()
            .min_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)))
            .ok_or_else(|| AuthorityError::NoEntry(id.to_string()))
    }

    /// The entries granting `id` (cached briefly; see [`crate::cache`]).
    pub(super) async fn entries_for(&self, id: &SpiffeId) -> Result<Vec<api::Entry>> {
        let epoch = self.entry_epoch.load(Ordering::Acquire);
        if let Some(v) = self.entries.get(&id.to_string(), epoch) {
            return Ok(v);
        }
        let v = self.store.list_entries(Some(id.as_str())).await?;
        self.entries.put(id.to_string(), v.clone(), epoch);
        Ok(v)
    }

    /// Issues for a SPIFFE ID that has an entry (operator path).
    pub async fn issue_direct(
        &self,
        req: &api::IssueRequest,
        actor: &Principal,
    ) -> Result<IssuedCertificate> {
        let id = self.check_td("spiffe_id", &req.spiffe_id)?;
        if spiffe::node_name(id.path()).is_some() {
            return Err(AuthorityError::Invalid {
                field: "spiffe_id",
                reason: "node identities are attested with a join token, not issued directly"
                    .into(),
            });
        }
        let csr = self.verify_csr(&req.csr)?;
        let entry = self.oldest_entry_for(&id).await?;
        let ttl = self.resolve_ttl(req.ttl_seconds, entry.ttl_seconds as i64)?;
        let att = json!({
            "method": "api",
            "entry_id": entry.id,
            "spiffe_id": id.as_str(),
            "requested_by": actor.audit_name(),
        });
        let pre = vec![Precondition::EntryExists(entry.id.clone())];
        self.issue(&entry, &id, &csr, ttl, att, actor, pre, "cert.issue", None)
            .await
    }

    /// Redeems a join token with a CSR.
    pub async fn redeem(&self, req: &api::RedeemRequest) -> Result<IssuedCertificate> {
        let (tid, secret) =
            split_token(&req.token, "tsj_").ok_or(AuthorityError::Token("is malformed"))?;
        let csr = self.verify_csr(&req.csr)?;
        let Some(row) = self.store.get_token(tid).await.optional()? else {
            return Err(AuthorityError::Token("is unknown"));
        };
        if !secret_matches(secret, &row.token_hash) {
            return Err(AuthorityError::Token("is unknown"));
        }
        let now = now_unix();
        if row.used_at.is_some() {
            return Err(AuthorityError::Token("was already used"));
        }
        if row.expires_at <= now {
            return Err(AuthorityError::Token("has expired"));
        }
        let Some(entry) = self.store.get_entry(&row.entry_id).await.optional()? else {
            return Err(AuthorityError::Token("refers to a deleted entry"));
        };
        let (id, ttl) = self.entry_grant(&entry)?;
        let att = json!({
            "method": "join_token",
            "token_id": row.id,
            "entry_id": entry.id,
            "spiffe_id": id.as_str(),
            "selectors": entry.selectors,
        });
        let actor = Principal::Workload {
            spiffe_id: id.clone(),
            serial: String::new(),
        };
        let mut pre = vec![
            Precondition::ConsumeToken {
                id: row.id.clone(),
                now,
            },
            Precondition::EntryExists(entry.id.clone()),
        ];
        // A node entry: redeeming attests the node and records it (a banned
        // node cannot come back with a new token until it is unbanned).
        let node = spiffe::node_name(id.path()).map(str::to_owned);
        if let Some(name) = &node {
            pre.extend(Precondition::node(
                id.as_str(),
                name,
                false,
                "join_token",
                None,
                now,
            ));
        }
        let action = if node.is_some() {
            "node.attest"
        } else {
            "cert.redeem"
        };
        self.issue(&entry, &id, &csr, ttl, att, &actor, pre, action, None)
            .await
            .map_err(|e| match e {
                // Spent between our read and the commit: another redemption won.
                AuthorityError::Refused(Refusal::TokenSpent) => {
                    AuthorityError::Token("was already used")
                }
                AuthorityError::Refused(r) if r.is_node() => {
                    AuthorityError::Forbidden(r.to_string())
                }
                other => other,
            })
    }

    /// Renews for a workload authenticated by its current certificate.
    pub async fn renew(
        &self,
        peer_der: &[u8],
        req: &api::RenewRequest,
    ) -> Result<IssuedCertificate> {
        let info = tessera_core::svid::check_leaf(peer_der)
            .map_err(|e| AuthorityError::Renewal(format!("client certificate: {e}")))?;
        let csr = self.verify_csr(&req.csr)?;
        let Some(row) = self.store.get_cert(&info.serial).await.optional()? else {
            return Err(AuthorityError::Renewal(
                "certificate is not in the ledger".into(),
            ));
        };
        let cert = &row.issued;
        if cert.der != peer_der {
            return Err(AuthorityError::Renewal(
                "certificate was not issued by this CA".into(),
            ));
        }
        let now = now_unix();
        // A certificate revoked because its CA was (not because of anything
        // about the holder) may re-issue under the new CA.
        let reissue =
            row.revocation_reason == Some(REASON_CA_COMPROMISE) && self.issuer_revoked(&cert.ca_id);
        if row.revoked_at.is_some() && !reissue {
            return Err(AuthorityError::Renewal("certificate is revoked".into()));
        }
        if cert.not_after <= now {
            return Err(AuthorityError::Renewal("certificate has expired".into()));
        }
        if cert.entry_id.is_empty() {
            return Err(AuthorityError::Renewal(
                "operator certificates are not renewed here".into(),
            ));
        }
        // Platform-token certificates re-attest: each one needs a fresh token.
        if serde_json::from_str::<serde_json::Value>(&cert.attestation)
            .is_ok_and(|a| a["method"] == "platform_token")
        {
            return Err(AuthorityError::Renewal(
                "certificates from a platform token are renewed by presenting a fresh token \
                 (POST /v1/nodes/attest or POST /v1/svids/platform)"
                    .into(),
            ));
        }
        if cert.node_spiffe_id.is_some() {
            return Err(AuthorityError::Renewal(
                "certificates issued through a node agent are renewed only through the agent, \
                 with fresh attestation"
                    .into(),
            ));
        }
        // The ledger's DER is the peer's: its SPIFFE ID is the one recorded.
        let node = self.node_usable(&info.spiffe_id).await?;
        if node == Some(false) {
            return Err(AuthorityError::Renewal("the node is banned".into()));
        }
        let Some(entry) = self.store.get_entry(&cert.entry_id).await.optional()? else {
            return Err(AuthorityError::Renewal(
                "registration entry was deleted".into(),
            ));
        };
        if entry.spiffe_id != cert.spiffe_id {
            return Err(AuthorityError::Renewal(
                "registration entry now grants another SPIFFE ID".into(),
            ));
        }
        let (id, ttl) = self.entry_grant(&entry)?;
        let att = json!({
            "method": "renewal",
            "previous_serial": cert.serial,
            "previous_attestation_hash": cert.attestation_hash,
            "entry_id": entry.id,
            "spiffe_id": id.as_str(),
        });
        let actor = Principal::Workload {
            spiffe_id: id.clone(),
            serial: cert.serial.clone(),
        };
        let mut pre = vec![
            Precondition::NotRevoked {
                serial: cert.serial.clone(),
                unless_ca_compromise: reissue,
            },
            Precondition::EntryExists(entry.id.clone()),
        ];
        if node.is_some()
            && let Some(name) = spiffe::node_name(id.path())
        {
            pre.extend(Precondition::node(
                id.as_str(),
                name,
                true,
                "join_token",
                None,
                now,
            ));
        }
        self.issue(&entry, &id, &csr, ttl, att, &actor, pre, "cert.renew", None)
            .await
            .map_err(|e| match e {
                AuthorityError::Refused(r) if r.is_node() => AuthorityError::Renewal(r.to_string()),
                other => other,
            })
    }

    /// Lists certificates.
    pub async fn list_certs(&self, f: &CertFilter) -> Result<Vec<api::CertificateRecord>> {
        Ok(self
            .store
            .list_certs(f, now_unix())
            .await?
            .iter()
            .map(|r| r.to_api(false))
            .collect())
    }
}
