//! X.509-SVID checks shared by the CA, the sidecar, the CLI and the tests.
//!
//! [`check_leaf`] applies the X.509-SVID leaf rules; [`check_tessera_leaf`] adds the
//! stricter Tessera certificate profile (both EKUs, random serial of 64+ bits);
//! [`check_signing_cert`] applies the signing-certificate rules.

use crate::spiffe::{SpiffeId, SpiffeIdError};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::Oid;
use x509_parser::prelude::{FromDer, X509Certificate};

/// OID arcs of the attestation-binding extension (see ARCHITECTURE.md).
pub const BINDING_OID_ARCS: &[u64] = &[1, 3, 6, 1, 4, 1, 32473, 7368, 1, 1];
/// The same OID in dotted form.
pub const BINDING_OID: &str = "1.3.6.1.4.1.32473.7368.1.1";

/// Why a certificate is not an acceptable X.509-SVID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SvidError {
    /// The DER could not be parsed as an X.509 certificate.
    #[error("not a DER X.509 certificate")]
    Malformed,
    /// There is no URI SAN or more than one.
    #[error("must carry exactly one URI SAN, found {0}")]
    UriSanCount(usize),
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("URI SAN is not a valid SPIFFE ID: {0}")]
    BadSpiffeId(SpiffeIdError),
    /// basicConstraints is absent or has the wrong cA flag.
    #[error("basicConstraints must be present with cA={0}")]
    BasicConstraints(bool),
    /// keyUsage is absent, not critical, or has the wrong bits.
    #[error("keyUsage: {0}")]
    KeyUsage(&'static str),
    /// extendedKeyUsage lacks a required purpose.
    #[error("extendedKeyUsage must include {0}")]
    ExtendedKeyUsage(&'static str),
    /// The serial number is not positive or is longer than 20 octets.
    #[error("serial number must be positive and at most 20 octets")]
    Serial,
    /// The serial carries fewer than 64 bits.
    #[error("serial number must carry at least 64 bits")]
    SerialTooShort,
    /// notBefore is not before notAfter.
    #[error("validity period is empty")]
    Validity,
    /// A signing certificate carries a SPIFFE ID with a path.
    #[error("signing certificate SPIFFE ID must not have a path")]
    SigningIdHasPath,
}

/// What a checked leaf certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// The SPIFFE ID from the single URI SAN.
    pub spiffe_id: SpiffeId,
    /// The serial number, lowercase hex without leading zeros stripped.
    pub serial: String,
    /// notBefore, unix seconds.
    pub not_before: i64,
    /// notAfter, unix seconds.
    pub not_after: i64,
    /// DNS SANs, if any.
    pub dns_names: Vec<String>,
    /// The issuer's distinguished name, as text.
    pub issuer: String,
    /// SHA-256 of the attestation record, from the binding extension, if present.
    pub attestation_hash: Option<[u8; 32]>,
}

/// Parses a certificate, mapping every parse failure to [`SvidError::Malformed`].
pub fn parse(der: &[u8]) -> Result<X509Certificate<'_>, SvidError> {
    match X509Certificate::from_der(der) {
        Ok((&[], cert)) => Ok(cert),
        _ => Err(SvidError::Malformed),
    }
}

/// The serial number of a parsed certificate as lowercase hex (big-endian, as encoded).
pub fn serial_hex(cert: &X509Certificate<'_>) -> String {
    hex::encode(cert.raw_serial())
}

/// The certificate's URI SANs, in order (empty without a SAN extension).
pub fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Vec<&'a str> {
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                if let GeneralName::URI(u) = name {
                    out.push(*u);
                }
            }
        }
    }
    out
}

fn dns_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                if let GeneralName::DNSName(d) = name {
                    out.push((*d).to_owned());
                }
            }
        }
    }
    out
}

/// Reads the attestation-binding extension's SHA-256, if the certificate has one.
pub fn binding_hash(cert: &X509Certificate<'_>) -> Option<[u8; 32]> {
    let oid = Oid::from(BINDING_OID_ARCS).ok()?;
    let ext = cert.extensions().iter().find(|e| e.oid == oid)?;
    // extnValue holds a DER OCTET STRING of 32 bytes: 04 20 <digest>.
    let v = ext.value;
    if v.len() == 34 && v[0] == 0x04 && v[1] == 0x20 {
        let mut out = [0u8; 32];
        out.copy_from_slice(&v[2..]);
        Some(out)
    } else {
        None
    }
}

/// Encodes a SHA-256 digest as the binding extension's DER content.
pub fn binding_extension_value(digest: &[u8; 32]) -> Vec<u8> {
    let mut v = Vec::with_capacity(34);
    v.extend_from_slice(&[0x04, 0x20]);
    v.extend_from_slice(digest);
    v
}

/// Applies the X.509-SVID leaf rules and returns what the certificate says.
pub fn check_leaf(der: &[u8]) -> Result<LeafInfo, SvidError> {
    let cert = parse(der)?;
    check_leaf_parsed(&cert)
}

/// [`check_leaf`] on an already parsed certificate.
pub fn check_leaf_parsed(cert: &X509Certificate<'_>) -> Result<LeafInfo, SvidError> {
    let uris = uri_sans(cert);
    if uris.len() != 1 {
        return Err(SvidError::UriSanCount(uris.len()));
    }
    let spiffe_id = SpiffeId::new(uris[0]).map_err(SvidError::BadSpiffeId)?;
    match cert.basic_constraints() {
        Ok(Some(bc)) if !bc.value.ca => {}
        _ => return Err(SvidError::BasicConstraints(false)),
    }
    match cert.key_usage() {
        Ok(Some(ku)) => {
            if !ku.critical {
                return Err(SvidError::KeyUsage("must be critical"));
            }
            if !ku.value.digital_signature() {
                return Err(SvidError::KeyUsage("digitalSignature must be set"));
            }
            if ku.value.key_cert_sign() || ku.value.crl_sign() {
                return Err(SvidError::KeyUsage(
                    "keyCertSign and cRLSign must not be set",
                ));
            }
        }
        _ => return Err(SvidError::KeyUsage("must be present")),
    }
    let raw = cert.raw_serial();
    if raw.is_empty() || raw.len() > 20 || raw[0] & 0x80 != 0 || raw.iter().all(|b| *b == 0) {
        return Err(SvidError::Serial);
    }
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    if not_before >= not_after {
        return Err(SvidError::Validity);
    }
    Ok(LeafInfo {
        spiffe_id,
        serial: serial_hex(cert),
        not_before,
        not_after,
        dns_names: dns_sans(cert),
        issuer: cert.issuer().to_string(),
        attestation_hash: binding_hash(cert),
    })
}

/// Applies [`check_leaf`] plus the Tessera profile: serverAuth and clientAuth EKUs and
/// a serial with at least 64 significant bits.
pub fn check_tessera_leaf(der: &[u8]) -> Result<LeafInfo, SvidError> {
    let cert = parse(der)?;
    let info = check_leaf_parsed(&cert)?;
    match cert.extended_key_usage() {
        Ok(Some(eku)) => {
            if !eku.value.server_auth {
                return Err(SvidError::ExtendedKeyUsage("serverAuth"));
            }
            if !eku.value.client_auth {
                return Err(SvidError::ExtendedKeyUsage("clientAuth"));
            }
        }
        _ => return Err(SvidError::ExtendedKeyUsage("serverAuth and clientAuth")),
    }
    let raw = cert.raw_serial();
    let first = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    let significant = raw[first..].len() * 8;
    let lead = raw
        .get(first)
        .map(|b| b.leading_zeros() as usize)
        .unwrap_or(0);
    if significant.saturating_sub(lead) < 64 {
        return Err(SvidError::SerialTooShort);
    }
    Ok(info)
}

/// Applies the signing-certificate rules: cA=true, keyCertSign, and a SPIFFE ID
/// without a path if a URI SAN is present. Returns the subject as text.
pub fn check_signing_cert(der: &[u8]) -> Result<String, SvidError> {
    let cert = parse(der)?;
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        _ => return Err(SvidError::BasicConstraints(true)),
    }
    match cert.key_usage() {
        Ok(Some(ku)) if ku.value.key_cert_sign() => {}
        _ => return Err(SvidError::KeyUsage("keyCertSign must be set")),
    }
    let uris = uri_sans(&cert);
    if uris.len() > 1 {
        return Err(SvidError::UriSanCount(uris.len()));
    }
    if let Some(u) = uris.first() {
        let id = SpiffeId::parse_any(u).map_err(SvidError::BadSpiffeId)?;
        if !id.path().is_empty() {
            return Err(SvidError::SigningIdHasPath);
        }
    }
    Ok(cert.subject().to_string())
}

/// The trust domain a CA certificate names by its one URI SAN
/// (`spiffe://<td>`, no path), if it names exactly one.
pub fn signing_trust_domain(der: &[u8]) -> Option<crate::TrustDomain> {
    let cert = parse(der).ok()?;
    match uri_sans(&cert).as_slice() {
        [u] => SpiffeId::parse_any(u)
            .ok()
            .filter(|id| id.path().is_empty())
            .map(|id| id.trust_domain()),
        _ => None,
    }
}

/// The SPIFFE ID of a leaf, checked by [`check_leaf`]; for use on handshake peers.
pub fn peer_spiffe_id(der: &[u8]) -> Result<SpiffeId, SvidError> {
    check_leaf(der).map(|i| i.spiffe_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CustomExtension, ExtendedKeyUsagePurpose, IsCa,
        KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    };

    fn ca() -> (CertificateParams, KeyPair) {
        let p = tessera_test_support::spiffe_root_params("Test CA");
        (p, KeyPair::generate().unwrap())
    }

    /// A valid Tessera leaf's parameters; each case breaks one rule.
    fn good_leaf() -> CertificateParams {
        let mut p = tessera_test_support::svid_params("spiffe://example.org/web");
        p.not_before = rcgen::date_time_ymd(2025, 1, 1);
        p.not_after = rcgen::date_time_ymd(2025, 1, 2);
        p
    }

    fn sign(p: &CertificateParams) -> Vec<u8> {
        let (cap, cak) = ca();
        let issuer = rcgen::Issuer::new(cap, cak);
        let key = KeyPair::generate().unwrap();
        p.signed_by(&key, &issuer).unwrap().der().to_vec()
    }

    #[test]
    fn valid_leaf_passes_every_check() {
        let info = check_tessera_leaf(&sign(&good_leaf())).unwrap();
        assert_eq!(info.spiffe_id.as_str(), "spiffe://example.org/web");
        assert_eq!(info.serial, "4a".repeat(16));
        assert_eq!(info.not_after - info.not_before, 86400);
    }

    #[test]
    fn one_invalid_leaf_per_rule() {
        type Breaker = fn(&mut CertificateParams);
        let cases: Vec<(&str, Breaker, SvidError)> = vec![
            (
                "no URI SAN",
                |p| p.subject_alt_names = vec![SanType::DnsName("web".try_into().unwrap())],
                SvidError::UriSanCount(0),
            ),
            (
                "two URI SANs",
                |p| {
                    p.subject_alt_names
                        .push(SanType::URI("spiffe://example.org/b".try_into().unwrap()))
                },
                SvidError::UriSanCount(2),
            ),
            (
                "URI SAN not a SPIFFE ID",
                |p| {
                    p.subject_alt_names =
                        vec![SanType::URI("https://example.org/web".try_into().unwrap())]
                },
                SvidError::BadSpiffeId(SpiffeIdError::WrongScheme),
            ),
            (
                "basicConstraints absent",
                |p| p.is_ca = IsCa::NoCa,
                SvidError::BasicConstraints(false),
            ),
            (
                "cA=true on a leaf",
                |p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained),
                SvidError::BasicConstraints(false),
            ),
            (
                "keyUsage absent",
                |p| p.key_usages.clear(),
                SvidError::KeyUsage("must be present"),
            ),
            (
                "keyUsage not critical",
                |p| {
                    p.key_usages.clear();
                    // BIT STRING with digitalSignature only, marked non-critical.
                    p.custom_extensions = vec![CustomExtension::from_oid_content(
                        &[2, 5, 29, 15],
                        vec![0x03, 0x02, 0x07, 0x80],
                    )];
                },
                SvidError::KeyUsage("must be critical"),
            ),
            (
                "no digitalSignature",
                |p| p.key_usages = vec![KeyUsagePurpose::KeyEncipherment],
                SvidError::KeyUsage("digitalSignature must be set"),
            ),
            (
                "keyCertSign on a leaf",
                |p| p.key_usages.push(KeyUsagePurpose::KeyCertSign),
                SvidError::KeyUsage("keyCertSign and cRLSign must not be set"),
            ),
            (
                "no clientAuth",
                |p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth],
                SvidError::ExtendedKeyUsage("clientAuth"),
            ),
            (
                "no serverAuth",
                |p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth],
                SvidError::ExtendedKeyUsage("serverAuth"),
            ),
            (
                "no EKU",
                |p| p.extended_key_usages.clear(),
                SvidError::ExtendedKeyUsage("serverAuth and clientAuth"),
            ),
            (
                "serial under 64 bits",
                |p| p.serial_number = Some(SerialNumber::from_slice(&[0x01, 0x02, 0x03])),
                SvidError::SerialTooShort,
            ),
            (
                "empty validity",
                |p| p.not_after = p.not_before,
                SvidError::Validity,
            ),
        ];
        for (name, breaker, want) in cases {
            let mut p = good_leaf();
            breaker(&mut p);
            assert_eq!(check_tessera_leaf(&sign(&p)).unwrap_err(), want, "{name}");
        }
        assert_eq!(
            check_leaf(b"not a certificate").unwrap_err(),
            SvidError::Malformed
        );
    }

    #[test]
    fn signing_certificate_rules() {
        let (p, k) = ca();
        let der = p.self_signed(&k).unwrap().der().to_vec();
        assert!(check_signing_cert(&der).is_ok());
        // A leaf is not a signing certificate.
        assert_eq!(
            check_signing_cert(&sign(&good_leaf())).unwrap_err(),
            SvidError::BasicConstraints(true)
        );
        let (mut p, k) = ca();
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        assert_eq!(
            check_signing_cert(p.self_signed(&k).unwrap().der()).unwrap_err(),
            SvidError::KeyUsage("keyCertSign must be set")
        );
        let (mut p, k) = ca();
        p.subject_alt_names = vec![SanType::URI("spiffe://example.org/ca".try_into().unwrap())];
        assert_eq!(
            check_signing_cert(p.self_signed(&k).unwrap().der()).unwrap_err(),
            SvidError::SigningIdHasPath
        );
    }

    #[test]
    fn binding_extension_roundtrip() {
        let mut p = good_leaf();
        let digest = [7u8; 32];
        p.custom_extensions = vec![CustomExtension::from_oid_content(
            BINDING_OID_ARCS,
            binding_extension_value(&digest),
        )];
        let info = check_tessera_leaf(&sign(&p)).unwrap();
        assert_eq!(info.attestation_hash, Some(digest));
    }
}
