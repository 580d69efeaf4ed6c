//! Revocation and what followers poll: revoking certificates, the CRLs of the
//! published generations, the revocation feed's version (its watch wakes
//! long-polls, also across replicas) and the trust bundle.

use super::{Authority, AuthorityError, Principal, Result, not_found};
use crate::store::CaRow;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use tessera_core::api::{self, CaState};
use tessera_core::{now_unix, pem};
use tokio::sync::watch;

/// The trust bundle in the forms it is served.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Trust anchors.
    pub anchors: Vec<CertificateDer<'static>>,
    /// PEM of the anchors.
    pub pem: String,
    /// SPIFFE bundle (JWKS) JSON.
    pub jwks: String,
    /// The SPIFFE bundle sequence: rises whenever the anchors or JWT-SVID
    /// keys change (numbered by the store, the same on every replica).
    pub sequence: i64,
    /// Digest of the content (anchors and JWT-SVID keys): what a change is.
    pub digest: String,
    /// The JWT-SVID keys of the published generations.
    pub jwt_keys: Vec<tessera_core::jwt::Jwk>,
}

/// A signed CRL in both encodings.
#[derive(Debug, Clone)]
pub struct Crl {
    /// DER.
    pub der: Vec<u8>,
    /// PEM.
    pub pem: String,
    /// When it was made.
    pub this_update: i64,
}

impl Authority {
    /// The current trust bundle.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.bundle
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The CRL of a CA (the active one if `ca_id` is None).
    pub fn crl(&self, ca_id: Option<&str>) -> Option<Arc<Crl>> {
        let id = ca_id
            .map(str::to_owned)
            .unwrap_or_else(|| self.signing_ca().id.clone());
        self.crls.read().ok()?.get(&id).cloned()
    }

    /// Watch channel of the revocation-feed version.
    pub fn revocation_watch(&self) -> watch::Receiver<i64> {
        self.rev_version.subscribe()
    }

    /// Picks up revocations written by other replicas: if the stored feed version
    /// moved, regenerate the CRLs first and only then wake feed followers, so a
    /// follower that saw a revocation never fetches a CRL without it.
    pub async fn sync_revocations(&self) -> Result<i64> {
        let v = self.store.revocation_version().await?;
        if v > *self.rev_version.borrow() {
            self.publish_revocations(v).await?;
        }
        Ok(v)
    }

    /// Regenerates the CRL of every generation that can still be trusted
    /// (each published one whose key is here), and forgets the CRLs of
    /// generations that left the bundle.
    pub async fn refresh_crls(&self) -> Result<()> {
        let signers = self
            .crl_signers
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let now = now_unix();
        let next = now + self.cfg.crl.interval_seconds * 2;
        let mut fresh = std::collections::HashMap::new();
        for ca in signers.iter() {
            let entries = self.store.crl_entries(&ca.id, now).await?;
            // CRL numbers must increase; milliseconds since the epoch do, across replicas too.
            let number = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let der = ca.sign_crl(&entries, now, next, number)?;
            let crl = Crl {
                pem: pem::encode("X509 CRL", &der),
                der,
                this_update: now,
            };
            fresh.insert(ca.id.clone(), Arc::new(crl));
        }
        if let Ok(mut m) = self.crls.write() {
            *m = fresh;
        }
        Ok(())
    }

    /// Regenerates the CRLs, then raises the feed version to `version`, so a
    /// follower woken by the feed never fetches a CRL without the revocation.
    pub(super) async fn publish_revocations(&self, version: i64) -> Result<()> {
        self.refresh_crls().await?;
        self.announce_revocations(version);
        Ok(())
    }

    /// Raises the feed version to `version` (if it is newer), waking followers.
    pub(super) fn announce_revocations(&self, version: i64) {
        crate::store::raise(&self.rev_version, version);
    }

    /// Revokes by exactly one selector; regenerates the CRL and wakes the feed.
    pub async fn revoke(
        &self,
        req: &api::RevokeRequest,
        actor: &Principal,
    ) -> Result<api::RevokeResponse> {
        let given = [
            req.serial.is_some(),
            req.spiffe_id.is_some(),
            req.entry_id.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            return Err(AuthorityError::Invalid {
                field: "serial|spiffe_id|entry_id",
                reason: "give exactly one".into(),
            });
        }
        if let Some(s) = &req.serial
            && (s.is_empty() || s.len() > 40 || !s.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(AuthorityError::Invalid {
                field: "serial",
                reason: "must be hex, at most 20 octets".into(),
            });
        }
        if let Some(s) = &req.spiffe_id {
            self.check_td("spiffe_id", s)?;
        }
        let serial = req.serial.as_ref().map(|s| s.to_ascii_lowercase());
        if let Some(s) = &serial {
            self.store
                .get_cert(s)
                .await
                .map_err(not_found("certificate"))?;
        }
        if let Some(e) = &req.entry_id {
            self.store.get_entry(e).await.map_err(not_found("entry"))?;
        }
        let (revoked, version) = self
            .store
            .revoke(
                serial,
                req.spiffe_id.clone(),
                req.entry_id.clone(),
                req.reason.code(),
                now_unix(),
                &actor.audit_name(),
            )
            .await?;
        self.metrics
            .revoked
            .add(&[req.reason.as_str()], revoked.len() as u64);
        if !revoked.is_empty() {
            self.publish_revocations(version).await?;
        }
        let version = if revoked.is_empty() {
            *self.rev_version.borrow()
        } else {
            version
        };
        Ok(api::RevokeResponse { revoked, version })
    }
}

impl Bundle {
    /// The bundle numbered `sequence`, its document advertising `refresh_hint`.
    pub(super) fn numbered(mut self, sequence: i64, refresh_hint: u64) -> Self {
        self.sequence = sequence;
        self.jwks =
            crate::jwks::spiffe_bundle(&self.anchors, &self.jwt_keys, sequence, refresh_hint);
        self
    }
}

/// Builds the trust bundle (numbered 0 until [`Bundle::numbered`]): the
/// published generations' certificates.
pub(super) fn build_bundle(cas: &[CaRow], jwt_keys: &[tessera_core::jwt::Jwk]) -> Result<Bundle> {
    let mut anchors: Vec<CertificateDer<'static>> = Vec::new();
    // The active generation first, then the prepared one, then retired ones:
    // a stable order for followers that read the first anchor.
    let rank = |s: CaState| match s {
        CaState::Active => 0,
        CaState::Prepared => 1,
        _ => 2,
    };
    let mut published: Vec<&CaRow> = cas.iter().filter(|c| c.state.is_published()).collect();
    published.sort_by_key(|c| rank(c.state));
    // Each published generation's own certificate is an anchor, an
    // intermediate's too (not the operator's root above it): trust follows
    // Tessera's generations, so revoking one removes its leaves' trust, and
    // another CA under the same root is no anchor of ours.
    for cert in published.into_iter().filter_map(CaRow::certificate) {
        if !anchors.contains(&cert) {
            anchors.push(cert);
        }
    }
    if anchors.is_empty() {
        return Err(AuthorityError::NotFound("trust anchor"));
    }
    let pem = pem::encode_certs(anchors.iter().map(|c| c.as_ref()));
    // The digest covers the JWT-SVID keys too: a new one must reach followers.
    let keys_json = serde_json::to_string(jwt_keys).unwrap_or_default();
    let digest = super::sha256_hex(format!("{pem}{keys_json}").as_bytes());
    Ok(Bundle {
        anchors,
        pem,
        jwks: String::new(),
        sequence: 0,
        digest,
        jwt_keys: jwt_keys.to_vec(),
    })
}
