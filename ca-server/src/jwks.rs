//! The SPIFFE bundle format: a JWK Set whose keys carry `use: x509-svid` and
//! `x5c` (trust anchors), or `use: jwt-svid` and a `kid` (JWT-SVID keys).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use x509_parser::public_key::PublicKey;

/// Renders trust anchors and JWT-SVID keys as a SPIFFE bundle document.
pub fn spiffe_bundle(
    anchors: &[CertificateDer<'static>],
    jwt_keys: &[tessera_core::jwt::Jwk],
    sequence: i64,
) -> String {
    let mut keys: Vec<Value> = anchors.iter().filter_map(|c| jwk(c)).collect();
    keys.extend(jwt_keys.iter().filter_map(|k| serde_json::to_value(k).ok()));
    json!({
        "keys": keys,
        "spiffe_sequence": sequence,
        "spiffe_refresh_hint": 300,
    })
    .to_string()
}

fn jwk(der: &CertificateDer<'_>) -> Option<Value> {
    let cert = tessera_core::svid::parse(der).ok()?;
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
