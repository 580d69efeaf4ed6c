//! Reading an existing CA key in the forms operators have: PKCS#8
//! (`BEGIN PRIVATE KEY`, `openssl genpkey`), SEC1 (`BEGIN EC PRIVATE KEY`,
//! `openssl ecparam -genkey`) and PKCS#1 (`BEGIN RSA PRIVATE KEY`,
//! `openssl genrsa -traditional`), all unencrypted. ring (behind rcgen) reads
//! only PKCS#8, so SEC1 and PKCS#1 keys are wrapped into a PKCS#8
//! PrivateKeyInfo (RFC 5208) here, the key itself unchanged. Anything else is
//! refused naming the form found and the command that converts it.

use rustls::pki_types::PrivateKeyDer;

/// The one command that rewrites any key openssl reads as unencrypted PKCS#8.
const CONVERT: &str = "convert it with `openssl pkey -in KEY -out KEY.pkcs8.pem` \
                       (unencrypted PKCS#8) and import that";

/// Why a CA key could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFormError {
    /// No private key block at all.
    #[error(
        "no private key found: expected an unencrypted PKCS#8 (BEGIN PRIVATE KEY), SEC1 \
         (BEGIN EC PRIVATE KEY) or PKCS#1 (BEGIN RSA PRIVATE KEY) PEM key; {CONVERT}"
    )]
    Missing,
    /// A passphrase-protected key.
    #[error("found an encrypted {0} key; the CA seals its keys itself: {CONVERT}")]
    Encrypted(&'static str),
    /// A key block of a known form whose content does not parse.
    #[error("found a {form} key that does not parse ({reason}); {CONVERT}")]
    Malformed {
        /// The form found.
        form: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// Reads the first private key of `pem` and returns it as PKCS#8 DER.
pub fn pkcs8_from_pem(pem: &str) -> Result<Vec<u8>, KeyFormError> {
    if pem.contains("BEGIN ENCRYPTED PRIVATE KEY") {
        return Err(KeyFormError::Encrypted(
            "PKCS#8 (BEGIN ENCRYPTED PRIVATE KEY)",
        ));
    }
    if pem.contains("Proc-Type: 4,ENCRYPTED") {
        let form = if pem.contains("BEGIN RSA PRIVATE KEY") {
            "PKCS#1 (BEGIN RSA PRIVATE KEY, Proc-Type ENCRYPTED)"
        } else {
            "SEC1 (BEGIN EC PRIVATE KEY, Proc-Type ENCRYPTED)"
        };
        return Err(KeyFormError::Encrypted(form));
    }
    let key = tessera_core::pem::private_key(pem.as_bytes()).map_err(|e| match e {
        tessera_core::pem::PemError::Missing(_) => KeyFormError::Missing,
        other => KeyFormError::Malformed {
            form: "PEM",
            reason: other.to_string(),
        },
    })?;
    Ok(match key {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        PrivateKeyDer::Sec1(k) => sec1_to_pkcs8(k.secret_sec1_der())?,
        PrivateKeyDer::Pkcs1(k) => pkcs8(RSA_ENCRYPTION_ALG_ID, k.secret_pkcs1_der()),
        _ => return Err(KeyFormError::Missing),
    })
}

/// AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }, DER.
const RSA_ENCRYPTION_ALG_ID: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// The OID id-ecPublicKey (1.2.840.10045.2.1), DER.
const EC_PUBLIC_KEY_OID: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

/// PrivateKeyInfo { version 0, `alg_id`, privateKey OCTET STRING `key` }.
fn pkcs8(alg_id: &[u8], key: &[u8]) -> Vec<u8> {
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(alg_id);
    body.extend(tlv(0x04, key));
    tlv(0x30, &body)
}

/// A SEC1 ECPrivateKey (RFC 5915) as PKCS#8: the curve comes from its
/// `parameters` field, which OpenSSL always writes.
fn sec1_to_pkcs8(sec1: &[u8]) -> Result<Vec<u8>, KeyFormError> {
    let malformed = |reason: &str| KeyFormError::Malformed {
        form: "SEC1 (BEGIN EC PRIVATE KEY)",
        reason: reason.to_owned(),
    };
    let (tag, mut fields, rest) = read_tlv(sec1).ok_or_else(|| malformed("not DER"))?;
    if tag != 0x30 || !rest.is_empty() {
        return Err(malformed("not one ECPrivateKey SEQUENCE"));
    }
    let mut curve = None;
    while !fields.is_empty() {
        let (tag, value, rest) = read_tlv(fields).ok_or_else(|| malformed("not DER"))?;
        if tag == 0xa0 {
            curve = Some(value);
        }
        fields = rest;
    }
    let curve = curve.ok_or_else(|| malformed("no curve named (parameters absent)"))?;
    let mut alg_id = EC_PUBLIC_KEY_OID.to_vec();
    alg_id.extend_from_slice(curve);
    Ok(pkcs8(&tlv(0x30, &alg_id), sec1))
}

/// One DER TLV.
fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = value.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
    out
}

/// Reads one DER TLV (single-byte tag, definite length): (tag, value, rest).
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || input.len() < n {
            return None;
        }
        let len = input[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        input = &input[n..];
        len
    };
    (input.len() >= len).then(|| (tag, &input[..len], &input[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_round_trips_short_and_long_lengths() {
        for n in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let v = vec![7u8; n];
            let enc = tlv(0x04, &v);
            let (tag, value, rest) = read_tlv(&enc).unwrap();
            assert_eq!((tag, value, rest.len()), (0x04, v.as_slice(), 0));
        }
    }

    #[test]
    fn truncated_and_garbage_input_is_refused() {
        assert!(read_tlv(&[0x30, 0x05, 0x00]).is_none());
        assert!(read_tlv(&[0x30, 0x85, 1, 2, 3, 4, 5]).is_none());
        assert!(read_tlv(&[]).is_none());
        assert!(matches!(
            sec1_to_pkcs8(&[0x30, 0x03, 0x02, 0x01, 0x01]),
            Err(KeyFormError::Malformed { .. })
        ));
        assert!(matches!(
            pkcs8_from_pem("hello"),
            Err(KeyFormError::Missing)
        ));
    }
}
