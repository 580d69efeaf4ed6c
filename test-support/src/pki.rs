//! Keys and certificates a test makes itself: a workload's CSR, an
//! operator's root, an X.509-SVID.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType, SerialNumber,
};

/// A fresh P-256 key and a CSR for it (PEM), as a workload makes them.
pub fn csr() -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    (key, csr)
}

/// The parameters of a root CA for trust domain `example.org` as an
/// operator would make it outside Tessera: `common_name`, `cA`,
/// keyCertSign + cRLSign + digitalSignature, URI SAN `spiffe://example.org`
/// (validity: rcgen's default unless the caller sets it).
pub fn spiffe_root_params(common_name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.subject_alt_names = vec![SanType::URI("spiffe://example.org".try_into().unwrap())];
    p
}

/// The parameters of an X.509-SVID for `spiffe_id` that passes every check
/// of Tessera's profile: `cA=false`, digitalSignature, serverAuth +
/// clientAuth, serial `4a` × 16 (validity: rcgen's default, so valid now,
/// unless the caller sets it).
pub fn svid_params(spiffe_id: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(spiffe_id.try_into().unwrap())];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.serial_number = Some(SerialNumber::from_slice(&[0x4a; 16]));
    p
}
