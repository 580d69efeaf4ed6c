//! Concatenated DER certificates: how the Workload API carries chains and
//! bundles.

use rustls::pki_types::CertificateDer;

/// A list of concatenated DER certificates that does not split into whole
/// certificates (or is empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed DER certificate list")]
pub struct DerListError;

/// Splits concatenated DER certificates; at least one must be present.
pub fn split_der(mut der: &[u8]) -> Result<Vec<CertificateDer<'static>>, DerListError> {
    let mut out = Vec::new();
    while !der.is_empty() {
        if der.len() < 2 || der[0] != 0x30 {
            return Err(DerListError);
        }
        let (len, header) = match der[1] {
            n if n < 0x80 => (n as usize, 2),
            0x81 if der.len() >= 3 => (der[2] as usize, 3),
            0x82 if der.len() >= 4 => (((der[2] as usize) << 8) | der[3] as usize, 4),
            0x83 if der.len() >= 5 => (
                ((der[2] as usize) << 16) | ((der[3] as usize) << 8) | der[4] as usize,
                5,
            ),
            _ => return Err(DerListError),
        };
        let total = header + len;
        if total > der.len() {
            return Err(DerListError);
        }
        out.push(CertificateDer::from(der[..total].to_vec()));
        der = &der[total..];
    }
    if out.is_empty() {
        return Err(DerListError);
    }
    Ok(out)
}

/// Concatenates DER certificates (the inverse of [`split_der`]).
pub fn concat_der<'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'static>>) -> Vec<u8> {
    let mut out = Vec::new();
    for c in certs {
        out.extend_from_slice(c.as_ref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_concatenated_der() {
        let a = [0x30, 0x03, 1, 2, 3];
        let mut b = vec![0x30, 0x81, 0x80];
        b.extend(std::iter::repeat_n(7u8, 0x80));
        let joined: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        let out = split_der(&joined).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ref(), &a[..]);
        assert_eq!(out[1].as_ref(), &b[..]);
        assert_eq!(concat_der(&out), joined);
        assert!(split_der(&[0x30, 0x05, 1]).is_err());
        assert!(split_der(&[]).is_err());
        assert!(split_der(&[0x31, 0x00]).is_err());
    }
}
