//! The X.509-SVID a workload holds: its chain, its private key and what the
//! leaf says; and [`Identity`], the SVID with the trust bundle it came with.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use tessera_core::SpiffeId;
use tessera_core::api::IssuedCertificate;

use crate::der::{DerListError, split_der};
use crate::key::PrivateKey;

/// Why certificates and a key do not make an SVID.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SvidParseError {
    /// The PEM text is malformed or holds no certificate.
    #[error("{0}")]
    Pem(#[from] tessera_core::pem::PemError),
    /// The DER certificate list is malformed.
    #[error("{0}")]
    Der(#[from] DerListError),
    /// The leaf breaks the X.509-SVID rules.
    #[error("not an X.509-SVID: {0}")]
    Leaf(#[from] tessera_core::svid::SvidError),
    /// The key is not the leaf certificate's key.
    #[error("the key does not belong to the certificate")]
    KeyMismatch,
    /// The key is unusable (malformed, unsupported).
    #[error("unusable key: {0}")]
    Key(String),
}

/// An X.509-SVID with its private key. The key is shared (`Arc`) by the
/// SVIDs issued for it together and erased when the last one is dropped;
/// `Debug` never shows it.
#[derive(Clone)]
pub struct Svid {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKey>,
    spiffe_id: SpiffeId,
    serial: String,
    not_before: i64,
    not_after: i64,
    received_at: i64,
}

tessera_core::debug_without_secrets!(Svid: spiffe_id, serial, not_after);

/// The span renewal timing counts: from when the certificate arrived (never
/// before its notBefore) to its notAfter, unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// When the certificate arrived, within its validity.
    pub start: i64,
    /// Its notAfter.
    pub not_after: i64,
}

impl Svid {
    /// An SVID from `chain` (leaf first) and its key, received at
    /// `received_at` (unix seconds): the leaf must pass the X.509-SVID leaf
    /// rules and the key must be the leaf's.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: Arc<PrivateKey>,
        received_at: i64,
    ) -> Result<Self, SvidParseError> {
        let leaf =
            chain
                .first()
                .ok_or(SvidParseError::Pem(tessera_core::pem::PemError::Missing(
                    "CERTIFICATE",
                )))?;
        let info = tessera_core::svid::check_leaf(leaf)?;
        match tessera_core::tls::certified_key(chain.clone(), key.to_der()) {
            Ok(_) => {}
            Err(tessera_core::tls::TlsError::Rustls(rustls::Error::InconsistentKeys(_))) => {
                return Err(SvidParseError::KeyMismatch);
            }
            Err(e) => return Err(SvidParseError::Key(e.to_string())),
        }
        Ok(Self {
            chain,
            key,
            spiffe_id: info.spiffe_id,
            serial: info.serial,
            not_before: info.not_before,
            not_after: info.not_after,
            received_at,
        })
    }

    /// An SVID from concatenated DER certificates (the Workload API's
    /// encoding), received now.
    pub fn from_der(chain: &[u8], key: Arc<PrivateKey>) -> Result<Self, SvidParseError> {
        Self::new(split_der(chain)?, key, tessera_core::now_unix())
    }

    /// The certificate chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The private key.
    pub fn key(&self) -> &Arc<PrivateKey> {
        &self.key
    }

    /// The SPIFFE ID of the leaf.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The leaf's serial, lowercase hex.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// notBefore, unix seconds.
    pub fn not_before(&self) -> i64 {
        self.not_before
    }

    /// notAfter, unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// When it arrived, unix seconds.
    pub fn received_at(&self) -> i64 {
        self.received_at
    }

    /// What renewal timing counts: from receipt, not from the back-dated
    /// notBefore (the CA back-dates it for clock skew, which would pull
    /// every renewal earlier and, for short lifetimes, into a loop).
    pub fn lifetime(&self) -> Lifetime {
        Lifetime {
            start: self.received_at.clamp(self.not_before, self.not_after),
            not_after: self.not_after,
        }
    }

    /// Whether notAfter has passed.
    pub fn expired(&self) -> bool {
        self.not_after <= tessera_core::now_unix()
    }

    /// A rustls signing key for this identity.
    pub fn certified_key(&self) -> Result<rustls::sign::CertifiedKey, tessera_core::tls::TlsError> {
        tessera_core::tls::certified_key(self.chain.clone(), self.key.to_der())
    }

    /// The chain as PEM.
    pub fn chain_pem(&self) -> String {
        tessera_core::pem::encode_certs(self.chain.iter().map(|c| c.as_ref()))
    }
}

/// An SVID and the trust bundle (the CA certificates) that came with it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The SVID.
    pub svid: Svid,
    /// Trust anchors, DER.
    pub bundle: Vec<CertificateDer<'static>>,
}

impl Identity {
    /// The identity in the CA's answer to an issuance for `key`, received now.
    pub fn from_issued(
        issued: &IssuedCertificate,
        key: Arc<PrivateKey>,
    ) -> Result<Self, SvidParseError> {
        let mut chain = tessera_core::pem::certs(issued.certificate.as_bytes())?;
        if !issued.chain.trim().is_empty() {
            chain.extend(tessera_core::pem::certs(issued.chain.as_bytes())?);
        }
        let bundle = tessera_core::pem::certs(issued.bundle.as_bytes())?;
        Ok(Self {
            svid: Svid::new(chain, key, tessera_core::now_unix())?,
            bundle,
        })
    }

    /// The trust bundle as PEM.
    pub fn bundle_pem(&self) -> String {
        tessera_core::pem::encode_certs(self.bundle.iter().map(|c| c.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{Issuer, KeyPair};

    /// A CA (PEM) and a leaf for `spiffe://example.org/web` (PEM) with its key.
    fn issued() -> (IssuedCertificate, PrivateKey) {
        let ca = tessera_test_support::spiffe_root_params("Test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let mut p = tessera_test_support::svid_params("spiffe://example.org/web");
        p.not_before = rcgen::date_time_ymd(2025, 1, 1);
        p.not_after = rcgen::date_time_ymd(2025, 1, 2);
        let key = KeyPair::generate().unwrap();
        let leaf = p.signed_by(&key, &issuer).unwrap();
        let answer = IssuedCertificate {
            serial: "4a".repeat(16),
            spiffe_id: "spiffe://example.org/web".into(),
            certificate: leaf.pem(),
            chain: String::new(),
            bundle: ca_cert.pem(),
            not_before: String::new(),
            not_after: String::new(),
            attestation_hash: String::new(),
            hint: None,
        };
        (answer, PrivateKey::from_pkcs8_der(key.serialize_der()))
    }

    #[test]
    fn from_the_cas_answer_with_its_key_only() {
        let (answer, key) = issued();
        let id = Identity::from_issued(&answer, Arc::new(key)).unwrap();
        let svid = &id.svid;
        assert_eq!(svid.spiffe_id().as_str(), "spiffe://example.org/web");
        assert_eq!(svid.serial(), "4a".repeat(16));
        assert_eq!(svid.not_after() - svid.not_before(), 86_400);
        assert_eq!(id.bundle.len(), 1);
        assert!(svid.expired());
        // Received long after notAfter: renewal timing is clamped to validity.
        assert_eq!(svid.lifetime().start, svid.not_after());
        let early = Svid::new(svid.chain().to_vec(), svid.key().clone(), 0).unwrap();
        assert_eq!(early.lifetime().start, svid.not_before());
        // Debug names the identity, never the key.
        let shown = format!("{svid:?}");
        assert!(shown.contains("spiffe://example.org/web"), "{shown}");
        assert!(!shown.contains("key"), "{shown}");
        // The same certificate with another key is refused.
        let (_, other) = issued();
        assert!(matches!(
            Identity::from_issued(&answer, Arc::new(other)),
            Err(SvidParseError::KeyMismatch)
        ));
        // DER round trip, as the Workload API carries it.
        let der = crate::concat_der(svid.chain());
        let back = Svid::from_der(&der, svid.key().clone()).unwrap();
        assert_eq!(back.serial(), svid.serial());
    }
}
