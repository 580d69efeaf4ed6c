//! The CA engine: signing-key generation, the CA certificate, leaf issuance from a
//! verified CSR, and CRL signing. It holds keys in memory only; persistence and
//! encryption at rest belong to the store and the keystore.
//!
//! Architecture invariant: leaf fields come only from [`LeafSpec`], built by the
//! server from the registration entry and policy; the CSR contributes its public
//! key and nothing else.
//!
//! `import` holds the CAs whose certificate comes from outside: the first-start
//! import and the offline intermediate flow (CSR for the operator's root, then
//! the signed certificate checked and completed).

mod import;
mod key_form;
pub(crate) use import::imported_generation;
pub use import::{ImportedIntermediate, import_signed_intermediate, prepare_intermediate};
pub use key_form::KeyFormError;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension,
    DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, PublicKeyData, RevokedCertParams, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::CertificateDer;
use std::net::IpAddr;
use tessera_core::{SpiffeId, TrustDomain};
use time::OffsetDateTime;

/// Errors from the CA engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// rcgen refused the parameters or key.
    #[error("certificate construction failed: {0}")]
    Build(#[from] rcgen::Error),
    /// The CA certificate or key could not be parsed or does not fit together.
    #[error("CA material invalid: {0}")]
    Invalid(String),
    /// Randomness was unavailable.
    #[error("random number generator failed")]
    Rng,
}

/// Signing-key algorithm of a CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA over P-256 with SHA-256 (default).
    #[default]
    EcdsaP256,
    /// ECDSA over P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA (PKCS#1 v1.5) with SHA-256: only for an imported CA key (ring
    /// cannot generate RSA keys, so `ca.key_algorithm` cannot name it).
    RsaSha256,
}

impl KeyAlgorithm {
    /// The rcgen signature algorithm.
    pub fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
            Self::RsaSha256 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    /// The name used in config and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
            Self::Ed25519 => "ed25519",
            Self::RsaSha256 => "rsa-sha256",
        }
    }

    /// Parses a config name (the algorithms Tessera can generate a key for).
    pub fn parse(s: &str) -> Option<Self> {
        [Self::EcdsaP256, Self::EcdsaP384, Self::Ed25519]
            .into_iter()
            .find(|a| a.as_str() == s)
    }

    /// Generates a fresh key pair for this algorithm.
    pub fn generate(self) -> Result<KeyPair, CaError> {
        Ok(KeyPair::generate_for(self.rcgen())?)
    }
}

/// A random positive serial number of 127 bits (16 octets, top bit clear, second set).
pub fn random_serial() -> Result<[u8; 16], CaError> {
    let mut s = random_bytes::<16>()?;
    s[0] = (s[0] & 0x7f) | 0x40;
    Ok(s)
}

/// A random identifier (hex, 128 bits), for CAs, entries, tokens and credentials.
pub fn random_id() -> Result<String, CaError> {
    Ok(hex::encode(random_bytes::<16>()?))
}

/// `N` bytes from the system's RNG, for every secret and identifier the CA
/// makes (join tokens, API tokens, webhook secrets, IDs). A failing RNG is
/// [`CaError::Rng`], never a predictable (all-zero) secret.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CaError> {
    filled(|b| SystemRandom::new().fill(b))
}

/// `N` bytes from `fill`, refused if it fails or leaves them all zero (a
/// chance of 2^-128 and worse for a working RNG of 16 bytes and more; for a
/// broken one, the likeliest output).
fn filled<const N: usize>(
    fill: impl FnOnce(&mut [u8]) -> Result<(), ring::error::Unspecified>,
) -> Result<[u8; N], CaError> {
    let mut b = [0u8; N];
    fill(&mut b).map_err(|_| CaError::Rng)?;
    if b.iter().all(|&x| x == 0) {
        return Err(CaError::Rng);
    }
    Ok(b)
}

fn odt(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The CA certificate's parameters for trust domain `td` and generation `ca_id`.
fn ca_params(
    td: &TrustDomain,
    ca_id: &str,
    not_before: i64,
    not_after: i64,
) -> Result<CertificateParams, CaError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Tessera");
    dn.push(DnType::CommonName, format!("Tessera CA {}", td.as_str()));
    // A unique subject per CA generation, so old and new CAs never share a
    // name. RFC 5280 (appendix A.1, X520SerialNumber) makes serialNumber a
    // PrintableString; rcgen would encode a plain string as UTF8String.
    let serial = rcgen::string::PrintableString::try_from(ca_id)?;
    dn.push(
        DnType::CustomDnType(vec![2, 5, 4, 5]),
        DnValue::PrintableString(serial),
    );
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    if let Ok(uri) = td.id_string().try_into() {
        p.subject_alt_names = vec![SanType::URI(uri)];
    }
    p.not_before = odt(not_before);
    p.not_after = odt(not_after);
    p.key_identifier_method = KeyIdMethod::Sha256;
    Ok(p)
}

/// Creates a self-signed root for `td`. Returns the certificate and the key's PKCS#8 DER.
pub fn new_root(
    td: &TrustDomain,
    ca_id: &str,
    alg: KeyAlgorithm,
    now: i64,
    ttl_seconds: i64,
) -> Result<(CertificateDer<'static>, Vec<u8>), CaError> {
    let key = alg.generate()?;
    let mut p = ca_params(td, ca_id, now - 60, now + ttl_seconds)?;
    p.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    let cert = p.self_signed(&key)?;
    Ok((cert.der().clone(), key.serialize_der()))
}

/// Creates a key and a CSR for running as an intermediate under an operator's root.
///
/// The CSR's extensionRequest asks for what an operator signing with
/// `openssl x509 -req -copy_extensions copy` (or `openssl ca` with
/// `copy_extensions = copy`) then keeps: basicConstraints critical cA with
/// pathLen 0 (Tessera signs only leaves), keyUsage critical keyCertSign and
/// cRLSign, and the URI SAN `spiffe://<td>`.
///
/// It deliberately does not ask for NameConstraints, although rcgen can encode
/// them in a CSR: rustls-webpki (Tessera's sidecars, CLI and the API's client
/// authentication) rejects every chain that carries a URI name constraint
/// (RUSTSEC-2026-0098, 0.103.12 and later), so a constraint permitting
/// `spiffe://<td>` URIs would make every certificate under the intermediate
/// unusable. See [`name_constraints`] and the README for what the operator may
/// add instead.
pub fn intermediate_csr(
    td: &TrustDomain,
    ca_id: &str,
    alg: KeyAlgorithm,
) -> Result<(String, Vec<u8>), CaError> {
    let key = alg.generate()?;
    let mut p = ca_params(td, ca_id, 0, 1)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let csr = p.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_der()))
}

/// What a CA certificate's NameConstraints extension constrains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NameConstraintsInfo {
    /// The certificate carries a NameConstraints extension.
    pub present: bool,
    /// Some permitted or excluded subtree is a URI (which rustls-webpki
    /// cannot process and rejects unconditionally).
    pub uri: bool,
}

/// Reads the NameConstraints extension of a certificate.
pub fn name_constraints(der: &[u8]) -> Result<NameConstraintsInfo, CaError> {
    let cert = tessera_core::svid::parse(der).map_err(|e| CaError::Invalid(e.to_string()))?;
    let nc = cert
        .name_constraints()
        .map_err(|e| CaError::Invalid(format!("NameConstraints: {e}")))?;
    Ok(match nc {
        None => NameConstraintsInfo::default(),
        Some(ext) => {
            let v = ext.value;
            let uri = v
                .permitted_subtrees
                .iter()
                .chain(v.excluded_subtrees.iter())
                .flatten()
                .any(|s| matches!(s.base, x509_parser::extensions::GeneralName::URI(_)));
            NameConstraintsInfo { present: true, uri }
        }
    })
}

/// What the server decided a leaf certificate says.
#[derive(Debug, Clone)]
pub struct LeafSpec<'a> {
    /// The SPIFFE ID (the only URI SAN).
    pub spiffe_id: &'a SpiffeId,
    /// DNS SANs from the entry.
    pub dns_names: &'a [String],
    /// IP SANs (only for the CA's own API certificate).
    pub ip_addrs: &'a [IpAddr],
    /// Requested lifetime in seconds.
    pub ttl_seconds: i64,
    /// Back-dating of notBefore, seconds.
    pub skew_seconds: i64,
    /// SHA-256 of the attestation record, for the binding extension.
    pub attestation_hash: Option<[u8; 32]>,
}

/// A certificate the CA just signed.
#[derive(Debug, Clone)]
pub struct SignedLeaf {
    /// DER.
    pub der: CertificateDer<'static>,
    /// Serial, hex.
    pub serial: String,
    /// notBefore, unix seconds.
    pub not_before: i64,
    /// notAfter, unix seconds.
    pub not_after: i64,
}

/// A CA generation ready to sign: its certificate, upstream chain and key.
pub struct SigningCa {
    /// The CA's ID (also in its subject's serialNumber).
    pub id: String,
    /// The CA certificate.
    pub cert: CertificateDer<'static>,
    /// Certificates between this CA and the trust anchor (empty for a root).
    pub upstream_chain: Vec<CertificateDer<'static>>,
    /// Key algorithm.
    pub algorithm: KeyAlgorithm,
    /// notBefore of the CA certificate.
    pub not_before: i64,
    /// notAfter of the CA certificate; leaves never outlive it.
    pub not_after: i64,
    /// Subject DN as text.
    pub subject: String,
    /// Whether the CA certificate is self-signed (a trust anchor itself).
    pub self_signed: bool,
    issuer: Issuer<'static, KeyPair>,
}

tessera_core::debug_without_secrets!(SigningCa: id, subject);

impl SigningCa {
    /// Loads a CA from its certificate, upstream chain and PKCS#8 (or PEM) key,
    /// checking that they fit together and that the certificate may sign.
    pub fn load(
        id: &str,
        cert: CertificateDer<'static>,
        upstream_chain: Vec<CertificateDer<'static>>,
        key_der: &[u8],
    ) -> Result<Self, CaError> {
        let key = KeyPair::try_from(key_der).map_err(|e| CaError::Invalid(e.to_string()))?;
        let subject = tessera_core::svid::check_signing_cert(&cert)
            .map_err(|e| CaError::Invalid(format!("not a signing certificate: {e}")))?;
        let parsed =
            tessera_core::svid::parse(&cert).map_err(|e| CaError::Invalid(e.to_string()))?;
        let spki = parsed.public_key().subject_public_key.data.as_ref();
        if spki != key.der_bytes() {
            return Err(CaError::Invalid(
                "CA key does not match CA certificate".into(),
            ));
        }
        let algorithm = [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Ed25519,
            KeyAlgorithm::RsaSha256,
        ]
        .into_iter()
        .find(|a| key.algorithm() == a.rcgen())
        .ok_or_else(|| {
            CaError::Invalid(
                "unsupported CA key algorithm (ECDSA P-256 or P-384, Ed25519, RSA)".into(),
            )
        })?;
        let not_before = parsed.validity().not_before.timestamp();
        let not_after = parsed.validity().not_after.timestamp();
        let self_signed = parsed.subject() == parsed.issuer();
        let issuer = Issuer::from_ca_cert_der(&cert, key)?;
        Ok(Self {
            self_signed,
            id: id.to_owned(),
            cert,
            upstream_chain,
            algorithm,
            not_before,
            not_after,
            subject,
            issuer,
        })
    }

    /// Certificates to send after a leaf: this CA and its upstream chain when it
    /// is an intermediate; nothing when it is itself the trust anchor.
    pub fn upstream_chain_if_intermediate(&self) -> impl Iterator<Item = &[u8]> {
        let own = (!self.self_signed).then_some(self.cert.as_ref());
        own.into_iter()
            .chain(self.upstream_chain.iter().map(|c| c.as_ref()))
    }

    /// Signs a leaf for `public_key` as the spec says, at time `now`.
    pub fn sign_leaf(
        &self,
        spec: &LeafSpec<'_>,
        public_key: &impl PublicKeyData,
        now: i64,
    ) -> Result<SignedLeaf, CaError> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Tessera");
        p.distinguished_name = dn;
        let mut sans = Vec::with_capacity(1 + spec.dns_names.len() + spec.ip_addrs.len());
        sans.push(SanType::URI(
            spec.spiffe_id
                .as_str()
                .try_into()
                .map_err(|_| CaError::Invalid("SPIFFE ID is not IA5".into()))?,
        ));
        for d in spec.dns_names {
            sans.push(SanType::DnsName(d.as_str().try_into().map_err(|_| {
                CaError::Invalid(format!("DNS name {d:?} is not IA5"))
            })?));
        }
        for ip in spec.ip_addrs {
            sans.push(SanType::IpAddress(*ip));
        }
        p.subject_alt_names = sans;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        let serial = random_serial()?;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        let not_before = (now - spec.skew_seconds).max(self.not_before);
        let not_after = (now + spec.ttl_seconds).min(self.not_after);
        if not_after <= now {
            return Err(CaError::Invalid("CA certificate has expired".into()));
        }
        p.not_before = odt(not_before);
        p.not_after = odt(not_after);
        if let Some(h) = &spec.attestation_hash {
            p.custom_extensions = vec![CustomExtension::from_oid_content(
                tessera_core::svid::BINDING_OID_ARCS,
                tessera_core::svid::binding_extension_value(h),
            )];
        }
        let cert = p.signed_by(public_key, &self.issuer)?;
        Ok(SignedLeaf {
            der: cert.der().clone(),
            serial: hex::encode(serial),
            not_before,
            not_after,
        })
    }

    /// Signs a CRL listing `revoked` (serial hex, revoked_at, reason code).
    pub fn sign_crl(
        &self,
        revoked: &[(String, i64, i64)],
        this_update: i64,
        next_update: i64,
        number: u64,
    ) -> Result<Vec<u8>, CaError> {
        let revoked_certs = revoked
            .iter()
            .filter_map(|(serial, at, reason)| {
                Some(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&hex::decode(serial).ok()?),
                    revocation_time: odt(*at),
                    reason_code: crl_reason(*reason),
                    invalidity_date: None,
                })
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: odt(this_update),
            next_update: odt(next_update),
            crl_number: SerialNumber::from_slice(&der_uint(number)),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.der().to_vec())
    }
}

/// Minimal big-endian bytes of a non-negative DER INTEGER.
fn der_uint(n: u64) -> Vec<u8> {
    let b = n.to_be_bytes();
    let first = b.iter().position(|x| *x != 0).unwrap_or(7);
    let mut v = b[first..].to_vec();
    if v[0] & 0x80 != 0 {
        v.insert(0, 0);
    }
    v
}

fn crl_reason(code: i64) -> Option<rcgen::RevocationReason> {
    use rcgen::RevocationReason as R;
    Some(match code {
        1 => R::KeyCompromise,
        2 => R::CaCompromise,
        3 => R::AffiliationChanged,
        4 => R::Superseded,
        5 => R::CessationOfOperation,
        9 => R::PrivilegeWithdrawn,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11 item 9: an RNG that fails, or "succeeds" with nothing but
    /// zeros, yields an error, never a secret.
    #[test]
    fn rng_failure_is_an_error_never_a_zero_secret() {
        let failed = filled::<32>(|_| Err(ring::error::Unspecified));
        assert!(matches!(failed, Err(CaError::Rng)), "{failed:?}");
        let zeros = filled::<32>(|_| Ok(()));
        assert!(matches!(zeros, Err(CaError::Rng)), "{zeros:?}");
        let ones = filled::<4>(|b| {
            b.fill(1);
            Ok(())
        });
        assert_eq!(ones.unwrap(), [1; 4]);
        let a = random_bytes::<32>().unwrap();
        assert_ne!(a, random_bytes::<32>().unwrap());
        assert_eq!(random_id().unwrap().len(), 32);
    }
}
