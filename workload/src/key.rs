//! Workload keys: generated here, in memory, with a CSR that carries only
//! the public key (the CA reads nothing else from it).

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

/// The algorithm of a generated key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256 (the default: what SPIFFE implementations expect).
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

/// A private key, erased from memory when dropped; its `Debug` shows
/// nothing of it. Keys generated here are PKCS#8; one read from a file keeps
/// its encoding (PKCS#8, SEC1 or PKCS#1).
pub struct PrivateKey {
    format: Format,
    der: Zeroizing<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Pkcs8,
    Sec1,
    Pkcs1,
}

impl PrivateKey {
    /// Takes a PKCS#8 DER key.
    pub fn from_pkcs8_der(der: Vec<u8>) -> Self {
        Self {
            format: Format::Pkcs8,
            der: Zeroizing::new(der),
        }
    }

    /// Takes a key as rustls holds it (from [`tessera_core::pem::private_key`]).
    pub fn from_der(key: &PrivateKeyDer<'_>) -> Self {
        let format = match key {
            PrivateKeyDer::Sec1(_) => Format::Sec1,
            PrivateKeyDer::Pkcs1(_) => Format::Pkcs1,
            _ => Format::Pkcs8,
        };
        Self {
            format,
            der: Zeroizing::new(key.secret_der().to_vec()),
        }
    }

    /// The PKCS#8 DER bytes (`None` for a SEC1 or PKCS#1 key read from a file).
    pub fn pkcs8_der(&self) -> Option<&[u8]> {
        (self.format == Format::Pkcs8).then_some(&self.der[..])
    }

    /// A copy for rustls (which owns the keys it loads).
    pub fn to_der(&self) -> PrivateKeyDer<'static> {
        let der = self.der.to_vec();
        match self.format {
            Format::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
            Format::Sec1 => PrivateKeyDer::Sec1(der.into()),
            Format::Pkcs1 => PrivateKeyDer::Pkcs1(der.into()),
        }
    }

    /// The key as PEM, erased when dropped.
    pub fn to_pem(&self) -> Zeroizing<String> {
        let label = match self.format {
            Format::Pkcs8 => "PRIVATE KEY",
            Format::Sec1 => "EC PRIVATE KEY",
            Format::Pkcs1 => "RSA PRIVATE KEY",
        };
        Zeroizing::new(tessera_core::pem::encode(label, &self.der))
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

/// Key or CSR generation failed.
#[derive(Debug, thiserror::Error)]
#[error("generating a key and CSR: {0}")]
pub struct KeyError(String);

/// A new key and a CSR (PEM) for it. The CSR's subject is empty: the CA
/// takes only its public key and builds every other field itself.
pub fn new_key_and_csr(algorithm: KeyAlgorithm) -> Result<(PrivateKey, String), KeyError> {
    let alg = match algorithm {
        KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
    };
    let err = |e: rcgen::Error| KeyError(e.to_string());
    let key = rcgen::KeyPair::generate_for(alg).map_err(err)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(err)?;
    Ok((PrivateKey::from_pkcs8_der(key.serialize_der()), csr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;

    #[test]
    fn every_algorithm_makes_a_csr_for_its_key() {
        for alg in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Ed25519,
        ] {
            let (key, csr) = new_key_and_csr(alg).unwrap();
            let der = tessera_core::pem::csr(csr.as_bytes()).unwrap();
            let parsed = rcgen::CertificateSigningRequestParams::from_der(&der).unwrap();
            let from_key = rcgen::KeyPair::try_from(key.pkcs8_der().unwrap()).unwrap();
            assert_eq!(
                parsed.public_key.der_bytes(),
                from_key.der_bytes(),
                "{alg:?}"
            );
            assert!(
                parsed.params.distinguished_name.iter().next().is_none(),
                "{alg:?}: empty subject"
            );
            assert_eq!(format!("{key:?}"), "PrivateKey(..)");
            assert!(key.to_pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));
        }
    }
}
