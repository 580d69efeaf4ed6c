//! Operators' client certificates and the server's own TLS certificate:
//! both signed here for a key generated here (the key goes to the operator,
//! or stays in memory), neither through [`Authority::issue`].
//!
//! - An operator certificate (`tessera-ca init`, `operator-cert`) is signed by
//!   the active generation without the attestation-binding extension and
//!   recorded in the ledger (no entry; attestation `operator_init`; audit
//!   `cert.issue_operator`) with no preconditions, after its credential row.
//! - The server certificate is signed by the generation
//!   `lifecycle::server_signer` picks, with the configured DNS names and IPs,
//!   and is never recorded: it is re-made on every CA change and rotation.

use super::{Authority, AuthorityError, Principal, Result, sha256_hex};
use crate::ca::{KeyAlgorithm, LeafSpec};
use crate::store::{CredentialRow, NewCert, Refusal, StoreError};
use rustls::pki_types::CertificateDer;
use serde_json::json;
use tessera_core::api::Role;
use tessera_core::{now_unix, pem};

impl Authority {
    /// Issues an operator client certificate (admin or another role) with a key
    /// generated here, for `tessera-ca init`. Returns (key PEM, certificate
    /// chain PEM: the leaf, then any intermediates).
    pub async fn issue_operator_cert(&self, name: &str, role: Role) -> Result<(String, String)> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(AuthorityError::Invalid {
                field: "name",
                reason: "letters, digits, '-' and '_'".into(),
            });
        }
        let id = self
            .td
            .workload_id(&format!("/tessera/operator/{name}"))
            .map_err(|e| AuthorityError::SpiffeId("name", e))?;
        // A name keeps its role: asking for another one is refused rather
        // than printing and auditing a role the credential does not have.
        self.same_role(name, &id, role).await?;
        let key = KeyAlgorithm::EcdsaP256.generate()?;
        let ca = self.signing_ca();
        let now = now_unix();
        let ttl = self.cfg.admin.cert_ttl_seconds;
        let leaf = ca.sign_leaf(
            &LeafSpec {
                spiffe_id: &id,
                dns_names: &[],
                ip_addrs: &[],
                ttl_seconds: ttl,
                skew_seconds: self.cfg.issuance.clock_skew_seconds,
                attestation_hash: None,
            },
            &key,
            now,
        )?;
        {
            let row = CredentialRow {
                id: crate::ca::random_id()?,
                kind: "certificate".into(),
                name: name.to_owned(),
                role,
                spiffe_id: Some(id.to_string()),
                token_hash: None,
                expires_at: i64::MAX / 2,
                disabled: false,
            };
            let audit = Principal::System.audit("credential.create", row.id.clone(), json!({"kind": "certificate", "name": name, "role": role.as_str(), "spiffe_id": id.as_str()}));
            match self.store.insert_credential(&row, audit).await {
                Ok(()) => {}
                // Already registered (an earlier init, or another replica just
                // now): only with the same role.
                Err(StoreError::Refused(Refusal::CredentialExists)) => {
                    self.same_role(name, &id, role).await?
                }
                Err(e) => return Err(e.into()),
            }
        }
        let att = json!({"method": "operator_init", "name": name, "role": role.as_str()});
        let canonical = att.to_string();
        let audit = Principal::System.audit(
            "cert.issue_operator",
            leaf.serial.clone(),
            json!({"spiffe_id": id.as_str(), "role": role.as_str(), "not_after": leaf.not_after}),
        );
        self.store
            .record_certificate(
                NewCert {
                    serial: leaf.serial.clone(),
                    spiffe_id: id.to_string(),
                    entry_id: String::new(),
                    ca_id: ca.id.clone(),
                    not_before: leaf.not_before,
                    not_after: leaf.not_after,
                    requested_by: "system".into(),
                    attestation_hash: sha256_hex(canonical.as_bytes()),
                    attestation: canonical,
                    der: leaf.der.to_vec(),
                    node_spiffe_id: None,
                },
                vec![],
                audit,
            )
            .await?;
        // The certificate file carries the chain, so TLS peers that trust only
        // the root (an operator's, in intermediate mode) can build the path.
        let mut cert_pem = pem::encode("CERTIFICATE", &leaf.der);
        cert_pem.push_str(&pem::encode_certs(ca.upstream_chain_if_intermediate()));
        Ok((key.serialize_pem(), cert_pem))
    }

    /// Refuses `role` for operator `name` if its credential exists with another.
    async fn same_role(&self, name: &str, id: &tessera_core::SpiffeId, role: Role) -> Result<()> {
        match self.store.credential_by_spiffe_id(id.as_str()).await? {
            Some(c) if c.role != role => Err(AuthorityError::Invalid {
                field: "role",
                reason: format!(
                    "operator {name} exists with role {}; use that role, or another name",
                    c.role.as_str()
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Issues the API server's own certificate: key made here, never stored.
    pub fn server_certified_key(&self) -> Result<rustls::sign::CertifiedKey> {
        let id = self
            .td
            .workload_id("/tessera/ca-server")
            .map_err(|e| AuthorityError::SpiffeId("trust_domain", e))?;
        self.own_certified_key(&id, &self.cfg.server_dns_names, &self.cfg.server_ips)
    }

    /// An X.509-SVID for one of the server's own listeners (the API, the
    /// bundle endpoint), signed like the API's: key made here, never stored.
    pub fn own_certified_key(
        &self,
        id: &tessera_core::SpiffeId,
        dns_names: &[String],
        ip_addrs: &[std::net::IpAddr],
    ) -> Result<rustls::sign::CertifiedKey> {
        let key = KeyAlgorithm::EcdsaP256.generate()?;
        let ca = self
            .server_signer
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let leaf = ca.sign_leaf(
            &LeafSpec {
                spiffe_id: id,
                dns_names,
                ip_addrs,
                ttl_seconds: self.cfg.issuance.max_ttl_seconds,
                skew_seconds: self.cfg.issuance.clock_skew_seconds,
                attestation_hash: None,
            },
            &key,
            now_unix(),
        )?;
        let mut chain = vec![leaf.der];
        chain.extend(
            ca.upstream_chain_if_intermediate()
                .map(|c| CertificateDer::from(c.to_vec())),
        );
        let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        tessera_core::tls::certified_key(chain, key_der).map_err(|e| AuthorityError::Invalid {
            field: "server certificate",
            reason: e.to_string(),
        })
    }
}
