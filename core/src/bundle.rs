//! SPIFFE bundles (SPIFFE Trust Domain and Bundle standard, section 4): the
//! one parser used for every bundle Tessera reads from elsewhere (a foreign
//! bundle endpoint, an operator's bootstrap file, the tests), and the one
//! renderer of Tessera's own bundle document.
//!
//! Parse rules, from the standard and the X.509-SVID and JWT-SVID standards'
//! bundle sections:
//! - `keys` must be present (it may be empty: the domain revoked everything);
//! - a key with a missing or unknown `use` is ignored;
//! - an `x509-svid` key carries exactly one certificate in `x5c` (several
//!   are refused, not truncated: the publisher is broken or hostile);
//! - a `jwt-svid` key must have a non-empty `kid`, unique in the bundle;
//! - `kty` must be set on every key of a known use; a `jwt-svid` key of a
//!   type Tessera cannot use is kept for workloads but never verifies here;
//! - `spiffe_sequence` and `spiffe_refresh_hint`, when present, are
//!   non-negative integers.
//!
//! Limits: at most [`MAX_BUNDLE_BYTES`] of JSON and [`MAX_KEYS`] keys.

use crate::TrustDomain;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::CertificateDer;
use serde_json::{Map, Value, json};
use x509_parser::public_key::PublicKey;

/// Most bytes of a bundle document accepted.
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;
/// Most keys in one bundle.
pub const MAX_KEYS: usize = 256;

/// Why a bundle document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Larger than [`MAX_BUNDLE_BYTES`].
    #[error("bundle larger than {MAX_BUNDLE_BYTES} bytes")]
    TooLarge,
    /// Not a JSON object.
    #[error("bundle is not a JSON object: {0}")]
    Json(String),
    /// The `keys` parameter is missing or not an array.
    #[error("bundle has no \"keys\" array")]
    MissingKeys,
    /// More than [`MAX_KEYS`] keys.
    #[error("bundle has more than {MAX_KEYS} keys")]
    TooManyKeys,
    /// A key of a known use has no `kty`.
    #[error("key {0}: kty missing")]
    MissingKty(usize),
    /// An `x509-svid` key's `x5c` does not hold exactly one certificate.
    #[error("key {index}: x509-svid x5c must hold exactly one certificate, found {found}")]
    X5cCount {
        /// Position in `keys`.
        index: usize,
        /// How many certificates it held.
        found: usize,
    },
    /// An `x509-svid` key's certificate is not base64 DER of a certificate.
    #[error("key {0}: x5c is not a base64 DER certificate")]
    X5cCertificate(usize),
    /// A `jwt-svid` key has no `kid`.
    #[error("key {0}: jwt-svid key without kid")]
    MissingKid(usize),
    /// Two `jwt-svid` keys share a `kid`.
    #[error("key {0}: duplicate kid {1:?}")]
    DuplicateKid(usize, String),
    /// `spiffe_sequence` or `spiffe_refresh_hint` is not a non-negative integer.
    #[error("{0} is not a non-negative integer")]
    BadNumber(&'static str),
    /// An X.509 authority names another trust domain (its URI SAN is
    /// `spiffe://<other>`): the document is some other domain's bundle.
    #[error("key {index}: the X.509 authority belongs to trust domain {named}, not this one")]
    ForeignAuthority {
        /// Position in `keys` (or in the PEM).
        index: usize,
        /// The trust domain it names.
        named: String,
    },
    /// A PEM bootstrap bundle held no certificate.
    #[error("PEM bundle holds no certificate")]
    EmptyPem,
}

/// A parsed SPIFFE bundle of one trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeBundle {
    /// The trust domain the bundle is for (never read from the document).
    pub trust_domain: TrustDomain,
    /// X.509 authorities (`x509-svid` keys), in document order.
    pub x509_authorities: Vec<CertificateDer<'static>>,
    /// JWT authorities (`jwt-svid` keys) as the JWKs were published.
    pub jwt_authorities: Vec<Value>,
    /// `spiffe_sequence`, if present.
    pub sequence: Option<u64>,
    /// `spiffe_refresh_hint` in seconds, if present.
    pub refresh_hint: Option<u64>,
}

fn number(doc: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, BundleError> {
    match doc.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(BundleError::BadNumber(name)),
    }
}

/// The members and `keys` of a JWK Set document (RFC 7517 §5) within the
/// size and count limits; shared by SPIFFE bundles and OIDC JWKS, which then
/// read the keys each by its own rules.
pub(crate) fn jwk_set(
    doc: &[u8],
    max_bytes: usize,
    max_keys: usize,
) -> Result<(Map<String, Value>, Vec<Value>), BundleError> {
    if doc.len() > max_bytes {
        return Err(BundleError::TooLarge);
    }
    let mut doc: Map<String, Value> =
        serde_json::from_slice(doc).map_err(|e| BundleError::Json(e.to_string()))?;
    let Some(Value::Array(keys)) = doc.remove("keys") else {
        return Err(BundleError::MissingKeys);
    };
    if keys.len() > max_keys {
        return Err(BundleError::TooManyKeys);
    }
    Ok((doc, keys))
}

/// Refuses an authority whose URI SAN names a trust domain other than
/// `td`. An authority naming none (an operator's root) is accepted: the
/// standard does not require CA certificates to carry a SPIFFE ID.
fn own_domain(td: &TrustDomain, index: usize, der: &[u8]) -> Result<(), BundleError> {
    match crate::svid::signing_trust_domain(der) {
        Some(named) if &named != td => Err(BundleError::ForeignAuthority {
            index,
            named: named.to_string(),
        }),
        _ => Ok(()),
    }
}

impl SpiffeBundle {
    /// Parses a SPIFFE bundle document for `trust_domain` (rules in the module docs).
    pub fn parse(trust_domain: &TrustDomain, doc: &[u8]) -> Result<Self, BundleError> {
        let (doc, keys) = jwk_set(doc, MAX_BUNDLE_BYTES, MAX_KEYS)?;
        let mut bundle = SpiffeBundle {
            trust_domain: trust_domain.clone(),
            x509_authorities: vec![],
            jwt_authorities: vec![],
            sequence: number(&doc, "spiffe_sequence")?,
            refresh_hint: number(&doc, "spiffe_refresh_hint")?,
        };
        for (index, key) in keys.iter().enumerate() {
            let use_ = key.get("use").and_then(Value::as_str);
            if !matches!(use_, Some("x509-svid" | "jwt-svid")) {
                // The standard: a missing or unknown use means ignore the key.
                continue;
            }
            if key.get("kty").and_then(Value::as_str).is_none() {
                return Err(BundleError::MissingKty(index));
            }
            if use_ == Some("x509-svid") {
                let x5c = key.get("x5c").and_then(Value::as_array);
                let found = x5c.map_or(0, Vec::len);
                let Some([cert]) = x5c.map(Vec::as_slice) else {
                    return Err(BundleError::X5cCount { index, found });
                };
                let der = cert
                    .as_str()
                    .and_then(|s| STANDARD.decode(s).ok())
                    .filter(|d| crate::svid::parse(d).is_ok())
                    .ok_or(BundleError::X5cCertificate(index))?;
                own_domain(trust_domain, index, &der)?;
                bundle.x509_authorities.push(CertificateDer::from(der));
            } else {
                let kid = key
                    .get("kid")
                    .and_then(Value::as_str)
                    .filter(|k| !k.is_empty())
                    .ok_or(BundleError::MissingKid(index))?;
                if bundle.jwt_authorities.iter().any(|k| k["kid"] == kid) {
                    return Err(BundleError::DuplicateKid(index, kid.to_owned()));
                }
                bundle.jwt_authorities.push(key.clone());
            }
        }
        Ok(bundle)
    }

    /// A bundle of X.509 authorities from PEM (an operator's bootstrap file).
    pub fn from_pem(trust_domain: &TrustDomain, pem: &[u8]) -> Result<Self, BundleError> {
        let certs = crate::pem::certs(pem).map_err(|_| BundleError::EmptyPem)?;
        if certs.is_empty() {
            return Err(BundleError::EmptyPem);
        }
        for (index, c) in certs.iter().enumerate() {
            own_domain(trust_domain, index, c)?;
        }
        Ok(SpiffeBundle {
            trust_domain: trust_domain.clone(),
            x509_authorities: certs,
            jwt_authorities: vec![],
            sequence: None,
            refresh_hint: None,
        })
    }

    /// A bootstrap bundle in either form: SPIFFE JSON if it starts with `{`, else PEM.
    pub fn from_bootstrap(trust_domain: &TrustDomain, doc: &[u8]) -> Result<Self, BundleError> {
        if doc.trim_ascii_start().starts_with(b"{") {
            Self::parse(trust_domain, doc)
        } else {
            Self::from_pem(trust_domain, doc)
        }
    }

    /// The `jwt-svid` keys Tessera can verify with (EC P-256).
    pub fn verifying_keys(&self) -> Vec<crate::jwt::Jwk> {
        self.jwt_authorities
            .iter()
            .filter_map(|k| serde_json::from_value(k.clone()).ok())
            .filter(|k: &crate::jwt::Jwk| k.kty == "EC" && k.crv == "P-256")
            .collect()
    }

    /// The PEM of the X.509 authorities.
    pub fn x509_pem(&self) -> String {
        crate::pem::encode_certs(self.x509_authorities.iter().map(|c| c.as_ref()))
    }

    /// Renders the bundle as a SPIFFE bundle document.
    pub fn to_json(&self) -> String {
        let mut keys: Vec<Value> = self
            .x509_authorities
            .iter()
            .filter_map(|c| x509_jwk(c))
            .collect();
        keys.extend(self.jwt_authorities.iter().cloned());
        let mut doc = json!({ "keys": keys });
        if let Some(s) = self.sequence {
            doc["spiffe_sequence"] = s.into();
        }
        if let Some(h) = self.refresh_hint {
            doc["spiffe_refresh_hint"] = h.into();
        }
        doc.to_string()
    }
}

/// The `x509-svid` JWK of a certificate: its public key and the certificate
/// itself in `x5c`. `None` for a key type JWK cannot carry.
pub fn x509_jwk(der: &CertificateDer<'_>) -> Option<Value> {
    let cert = crate::svid::parse(der).ok()?;
    let spki = cert.public_key();
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let x5c = vec![STANDARD.encode(der.as_ref())];
    let alg_oid = spki.algorithm.algorithm.to_id_string();
    if alg_oid == "1.3.101.112" {
        return Some(json!({"use": "x509-svid", "kty": "OKP", "crv": "Ed25519",
            "x": b64(&spki.subject_public_key.data), "x5c": x5c}));
    }
    match spki.parsed().ok()? {
        PublicKey::EC(point) => {
            let data = point.data();
            let (crv, n) = match data.len() {
                65 => ("P-256", 32),
                97 => ("P-384", 48),
                _ => return None,
            };
            Some(json!({"use": "x509-svid", "kty": "EC", "crv": crv,
                "x": b64(&data[1..1 + n]), "y": b64(&data[1 + n..]), "x5c": x5c}))
        }
        PublicKey::RSA(rsa) => {
            let strip = |b: &[u8]| {
                let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
                b[i..].to_vec()
            };
            Some(json!({"use": "x509-svid", "kty": "RSA",
                "n": b64(&strip(rsa.modulus)), "e": b64(&strip(rsa.exponent)), "x5c": x5c}))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("other.org").unwrap()
    }

    fn cert_b64() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        STANDARD.encode(p.self_signed(&key).unwrap().der())
    }

    fn jwt_key(kid: Option<&str>) -> Value {
        let mut k = json!({"use": "jwt-svid", "kty": "EC", "crv": "P-256",
            "x": "AAAA", "y": "AAAA"});
        if let Some(kid) = kid {
            k["kid"] = kid.into();
        }
        k
    }

    fn parse(v: Value) -> Result<SpiffeBundle, BundleError> {
        SpiffeBundle::parse(&td(), v.to_string().as_bytes())
    }

    #[test]
    fn parses_both_uses_and_round_trips() {
        let c = cert_b64();
        let b = parse(json!({"keys": [
            {"use": "x509-svid", "kty": "EC", "x5c": [c]},
            jwt_key(Some("k1")),
        ], "spiffe_sequence": 7, "spiffe_refresh_hint": 60}))
        .unwrap();
        assert_eq!(b.x509_authorities.len(), 1);
        assert_eq!(b.jwt_authorities.len(), 1);
        assert_eq!((b.sequence, b.refresh_hint), (Some(7), Some(60)));
        assert_eq!(
            SpiffeBundle::parse(&td(), b.to_json().as_bytes()).unwrap(),
            b
        );
    }

    /// A CA certificate naming `spiffe://<td>` by its URI SAN, base64 DER.
    fn ca_of(td: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.subject_alt_names = vec![rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(format!("spiffe://{td}")).unwrap(),
        )];
        STANDARD.encode(p.self_signed(&key).unwrap().der())
    }

    #[test]
    fn an_authority_of_another_trust_domain_is_refused() {
        let key = |c: String| json!({"keys": [{"use": "x509-svid", "kty": "EC", "x5c": [c]}]});
        assert!(parse(key(ca_of("other.org"))).is_ok());
        assert_eq!(
            parse(key(ca_of("example.org"))),
            Err(BundleError::ForeignAuthority {
                index: 0,
                named: "example.org".into()
            })
        );
        let der = STANDARD.decode(ca_of("example.org")).unwrap();
        let pem = crate::pem::encode_certs([der.as_slice()]);
        assert!(matches!(
            SpiffeBundle::from_pem(&td(), pem.as_bytes()),
            Err(BundleError::ForeignAuthority { .. })
        ));
    }

    #[test]
    fn missing_keys_is_refused_empty_keys_is_not() {
        assert_eq!(
            parse(json!({"spiffe_sequence": 1})),
            Err(BundleError::MissingKeys)
        );
        assert_eq!(parse(json!({"keys": {}})), Err(BundleError::MissingKeys));
        let empty = parse(json!({"keys": []})).unwrap();
        assert!(empty.x509_authorities.is_empty() && empty.jwt_authorities.is_empty());
    }

    #[test]
    fn unknown_or_missing_use_is_ignored() {
        let b = parse(json!({"keys": [
            {"use": "sig", "kty": "EC", "x5c": ["not even base64", "two"]},
            {"kty": "EC", "x5c": []},
            {"use": "X509-SVID", "kty": "EC"},
        ]}))
        .unwrap();
        assert!(b.x509_authorities.is_empty() && b.jwt_authorities.is_empty());
    }

    #[test]
    fn several_certificates_in_one_x5c_are_refused() {
        let c = cert_b64();
        assert_eq!(
            parse(json!({"keys": [{"use": "x509-svid", "kty": "EC", "x5c": [c, c]}]})),
            Err(BundleError::X5cCount { index: 0, found: 2 })
        );
        assert_eq!(
            parse(json!({"keys": [{"use": "x509-svid", "kty": "EC"}]})),
            Err(BundleError::X5cCount { index: 0, found: 0 })
        );
        assert_eq!(
            parse(json!({"keys": [{"use": "x509-svid", "kty": "EC", "x5c": ["AAAA"]}]})),
            Err(BundleError::X5cCertificate(0))
        );
    }

    #[test]
    fn jwt_svid_key_without_kid_is_refused() {
        assert_eq!(
            parse(json!({"keys": [jwt_key(None)]})),
            Err(BundleError::MissingKid(0))
        );
        assert_eq!(
            parse(json!({"keys": [jwt_key(Some(""))]})),
            Err(BundleError::MissingKid(0))
        );
        assert_eq!(
            parse(json!({"keys": [jwt_key(Some("a")), jwt_key(Some("a"))]})),
            Err(BundleError::DuplicateKid(1, "a".into()))
        );
    }

    #[test]
    fn malformed_numbers_sizes_and_kty_are_refused() {
        assert_eq!(
            parse(json!({"keys": [], "spiffe_sequence": -1})),
            Err(BundleError::BadNumber("spiffe_sequence"))
        );
        assert_eq!(
            parse(json!({"keys": [], "spiffe_refresh_hint": "60"})),
            Err(BundleError::BadNumber("spiffe_refresh_hint"))
        );
        assert_eq!(
            parse(json!({"keys": [{"use": "jwt-svid", "kid": "a"}]})),
            Err(BundleError::MissingKty(0))
        );
        let many: Vec<Value> = (0..=MAX_KEYS).map(|_| json!({"use": "x"})).collect();
        assert_eq!(parse(json!({"keys": many})), Err(BundleError::TooManyKeys));
        let big = vec![b' '; MAX_BUNDLE_BYTES + 1];
        assert_eq!(SpiffeBundle::parse(&td(), &big), Err(BundleError::TooLarge));
        assert!(matches!(
            SpiffeBundle::parse(&td(), b"[]"),
            Err(BundleError::Json(_))
        ));
    }

    #[test]
    fn bootstrap_accepts_pem_or_json() {
        let c = cert_b64();
        let der = STANDARD.decode(&c).unwrap();
        let pem = crate::pem::encode_certs([der.as_slice()]);
        let b = SpiffeBundle::from_bootstrap(&td(), pem.as_bytes()).unwrap();
        assert_eq!(b.x509_authorities.len(), 1);
        let j = SpiffeBundle::from_bootstrap(&td(), b.to_json().as_bytes()).unwrap();
        assert_eq!(j.x509_authorities, b.x509_authorities);
        assert_eq!(
            SpiffeBundle::from_bootstrap(&td(), b"nothing here"),
            Err(BundleError::EmptyPem)
        );
    }
}
