//! The SPIFFE bundle format: a JWK Set whose keys carry `use: x509-svid` and
//! `x5c` (trust anchors), or `use: jwt-svid` and a `kid` (JWT-SVID keys).
//! Rendering lives in `tessera_core::bundle`, shared with the parser.

use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};

/// Renders trust anchors and JWT-SVID keys as a SPIFFE bundle document.
pub fn spiffe_bundle(
    anchors: &[CertificateDer<'static>],
    jwt_keys: &[tessera_core::jwt::Jwk],
    sequence: i64,
    refresh_hint: u64,
) -> String {
    let mut keys: Vec<Value> = anchors
        .iter()
        .filter_map(|c| tessera_core::bundle::x509_jwk(c))
        .collect();
    keys.extend(jwt_keys.iter().filter_map(|k| serde_json::to_value(k).ok()));
    json!({
        "keys": keys,
        "spiffe_sequence": sequence,
        "spiffe_refresh_hint": refresh_hint,
    })
    .to_string()
}
