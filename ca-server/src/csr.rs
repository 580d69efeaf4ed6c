//! Untrusted CSR intake: size limit, parse, proof-of-possession, key policy.
//!
//! Architecture invariant: the only thing taken from a CSR is its public key.
//! Subject, requested extensions and attributes are parsed only to be ignored.

use x509_parser::prelude::{FromDer, X509CertificationRequest};
use x509_parser::public_key::PublicKey;

/// Why a CSR was refused. Each variant maps to a stable API error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// Larger than the configured limit.
    #[error("CSR is larger than {0} bytes")]
    TooLarge(usize),
    /// Not PEM or DER, or not a PKCS#10 structure.
    #[error("CSR is not a valid PEM or DER PKCS#10 request")]
    Malformed,
    /// The signature does not verify with the CSR's own key.
    #[error("CSR signature does not verify (no proof of possession)")]
    BadSignature,
    /// The key is of a refused type or size.
    #[error("CSR key refused: {0}")]
    WeakKey(String),
}

/// A CSR whose signature verified and whose key passed the policy.
#[derive(Debug, Clone)]
pub struct VerifiedCsr {
    /// The subject public key, ready for the certificate builder.
    pub public_key: rcgen::SubjectPublicKeyInfo,
    /// A short name of the key type, for logs and the ledger.
    pub key_type: &'static str,
}

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// The largest RSA modulus accepted, in bits (bounds verification cost).
pub const MAX_RSA_BITS: usize = 8192;

/// Parses and checks a CSR given as PEM text or DER bytes.
pub fn verify(input: &[u8], max_len: usize) -> Result<VerifiedCsr, CsrError> {
    if input.len() > max_len {
        return Err(CsrError::TooLarge(max_len));
    }
    let trimmed = input.trim_ascii_start();
    let der_owned;
    let der: &[u8] = if trimmed.starts_with(b"-----BEGIN") {
        der_owned = tessera_core::pem::csr(trimmed).map_err(|_| CsrError::Malformed)?;
        der_owned.as_ref()
    } else {
        input
    };
    let (rest, req) = X509CertificationRequest::from_der(der).map_err(|_| CsrError::Malformed)?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed);
    }
    let spki = &req.certification_request_info.subject_pki;
    let key_type = if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" {
        if spki.subject_public_key.data.len() != 32 {
            return Err(CsrError::Malformed);
        }
        "ed25519"
    } else {
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => {
                let bits = rsa.key_size();
                if bits < MIN_RSA_BITS {
                    return Err(CsrError::WeakKey(format!(
                        "RSA-{bits} is below the {MIN_RSA_BITS}-bit minimum"
                    )));
                }
                if bits > MAX_RSA_BITS {
                    return Err(CsrError::WeakKey(format!(
                        "RSA-{bits} is above {MAX_RSA_BITS} bits"
                    )));
                }
                "rsa"
            }
            Ok(PublicKey::EC(_)) => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string())
                    .unwrap_or_default();
                match curve.as_str() {
                    "1.2.840.10045.3.1.7" => "ecdsa-p256",
                    "1.3.132.0.34" => "ecdsa-p384",
                    other => {
                        return Err(CsrError::WeakKey(format!(
                            "EC curve {other} is not supported"
                        )));
                    }
                }
            }
            _ => return Err(CsrError::WeakKey("unknown or unsupported key type".into())),
        }
    };
    req.verify_signature().map_err(|_| CsrError::BadSignature)?;
    let public_key =
        rcgen::SubjectPublicKeyInfo::from_der(spki.raw).map_err(|_| CsrError::Malformed)?;
    Ok(VerifiedCsr {
        public_key,
        key_type,
    })
}
