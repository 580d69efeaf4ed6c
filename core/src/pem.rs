//! PEM encoding and decoding of the objects Tessera handles.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};

/// Errors while reading PEM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PemError {
    /// The text holds no PEM section of the expected kind.
    #[error("no {0} found in PEM input")]
    Missing(&'static str),
    /// The PEM framing or base64 is broken.
    #[error("malformed PEM: {0}")]
    Malformed(String),
}

/// Encodes DER bytes as PEM with the given label (64-column base64 lines).
pub fn encode(label: &str, der: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = match chunk.len() {
            3 => (chunk[0] as u32) << 16 | (chunk[1] as u32) << 8 | chunk[2] as u32,
            2 => (chunk[0] as u32) << 16 | (chunk[1] as u32) << 8,
            _ => (chunk[0] as u32) << 16,
        };
        b64.push(T[(n >> 18) as usize & 63] as char);
        b64.push(T[(n >> 12) as usize & 63] as char);
        b64.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        b64.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Encodes a list of certificates as concatenated PEM.
pub fn encode_certs<'a>(certs: impl IntoIterator<Item = &'a [u8]>) -> String {
    certs
        .into_iter()
        .map(|c| encode("CERTIFICATE", c))
        .collect()
}

/// Reads every certificate in a PEM text; at least one must be present.
pub fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Malformed(e.to_string()))?;
    if certs.is_empty() {
        return Err(PemError::Missing("CERTIFICATE"));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, SEC1 or PKCS#1) in a PEM text.
pub fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => PemError::Missing("PRIVATE KEY"),
        other => PemError::Malformed(other.to_string()),
    })
}

/// Reads a certificate signing request from PEM.
pub fn csr(pem: &[u8]) -> Result<CertificateSigningRequestDer<'static>, PemError> {
    CertificateSigningRequestDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => PemError::Missing("CERTIFICATE REQUEST"),
        other => PemError::Malformed(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn encode_roundtrip() {
        for len in [0usize, 1, 2, 3, 47, 48, 49, 100] {
            let der: Vec<u8> = (0..len as u8).collect();
            let pem = super::encode("CERTIFICATE", &der);
            if len == 0 {
                continue;
            }
            let back = super::certs(pem.as_bytes()).unwrap();
            assert_eq!(back[0].as_ref(), &der[..]);
        }
    }
}
