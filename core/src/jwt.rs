//! JWT-SVIDs (SPIFFE JWT-SVID standard): ES256 tokens whose `sub` is a SPIFFE
//! ID, signed by a CA-held P-256 key and checked against the `jwt-svid` keys of
//! the SPIFFE bundle (JWKS).
//!
//! Signing and verification use ring directly, not `jsonwebtoken`: ES256 is the
//! only algorithm, the format is three base64url parts, and ring is already the
//! one crypto provider (jsonwebtoken would add a second backend and, with
//! `rust_crypto`, the `rsa` crate and its advisory). Verification accepts only
//! `alg: ES256` with a `kid` found in the bundle, so the classic `alg: none` and
//! algorithm-confusion attacks have nothing to work with.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    self, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Most bytes of a token accepted for verification.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a JWT-SVID was refused (or could not be made).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts of JSON, or too large.
    #[error("malformed token")]
    Malformed,
    /// The header names another algorithm than ES256.
    #[error("algorithm {0:?} is not accepted (ES256 only)")]
    Algorithm(String),
    /// No bundle key has the token's `kid`.
    #[error("no key {0:?} in the bundle")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// `exp` has passed (or is missing).
    #[error("expired")]
    Expired,
    /// The audience asked for is not among the token's.
    #[error("audience {0:?} not in the token")]
    Audience(String),
    /// `sub` is not a SPIFFE ID.
    #[error("sub is not a SPIFFE ID: {0}")]
    Subject(String),
    /// A signing key could not be loaded or used.
    #[error("signing key: {0}")]
    Key(String),
}

/// A public `jwt-svid` key as it appears in a SPIFFE bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key ID, matched against the token header's `kid`.
    pub kid: String,
    /// `EC`.
    pub kty: String,
    /// `P-256`.
    pub crv: String,
    /// X coordinate, base64url.
    pub x: String,
    /// Y coordinate, base64url.
    pub y: String,
    /// `jwt-svid`.
    #[serde(rename = "use")]
    pub use_: String,
}

impl Jwk {
    /// The uncompressed point (0x04 || x || y).
    fn point(&self) -> Option<Vec<u8>> {
        let x = URL_SAFE_NO_PAD.decode(&self.x).ok()?;
        let y = URL_SAFE_NO_PAD.decode(&self.y).ok()?;
        (x.len() == 32 && y.len() == 32).then(|| [&[4u8][..], &x, &y].concat())
    }
}

/// Reads the `jwt-svid` keys of a SPIFFE bundle document (JWKS); others are skipped.
pub fn bundle_keys(jwks: &str) -> Vec<Jwk> {
    serde_json::from_str::<Value>(jwks)
        .ok()
        .and_then(|v| v.get("keys").cloned())
        .and_then(|k| serde_json::from_value::<Vec<Value>>(k).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|k| k.get("use").and_then(Value::as_str) == Some("jwt-svid"))
        .filter_map(|k| serde_json::from_value(k).ok())
        .collect()
}

/// A CA-held JWT-SVID signing key.
pub struct JwtSigner {
    key: EcdsaKeyPair,
    kid: String,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl JwtSigner {
    /// Makes a new P-256 key; returns its PKCS#8 DER (to be sealed by the caller).
    pub fn generate() -> Result<Vec<u8>, JwtError> {
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map(|d| d.as_ref().to_vec())
            .map_err(|e| JwtError::Key(e.to_string()))
    }

    /// Loads a PKCS#8 P-256 key under `kid`.
    pub fn load(pkcs8: &[u8], kid: &str) -> Result<Self, JwtError> {
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|e| JwtError::Key(e.to_string()))?;
        Ok(Self {
            key,
            kid: kid.to_owned(),
        })
    }

    /// The key ID.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a bundle entry.
    pub fn jwk(&self) -> Jwk {
        let p = self.key.public_key().as_ref();
        Jwk {
            kid: self.kid.clone(),
            kty: "EC".into(),
            crv: "P-256".into(),
            x: URL_SAFE_NO_PAD.encode(&p[1..33]),
            y: URL_SAFE_NO_PAD.encode(&p[33..65]),
            use_: "jwt-svid".into(),
        }
    }

    /// Signs a JWT-SVID for `sub` and `aud`, valid from `iat` until `exp`.
    pub fn sign(&self, sub: &str, aud: &[String], iat: i64, exp: i64) -> Result<String, JwtError> {
        self.sign_issued(None, sub, aud, iat, exp)
    }

    /// Signs a JWT-SVID as [`Self::sign`], with an `iss` claim when `iss` is
    /// given (the configured OIDC discovery issuer).
    pub fn sign_issued(
        &self,
        iss: Option<&str>,
        sub: &str,
        aud: &[String],
        iat: i64,
        exp: i64,
    ) -> Result<String, JwtError> {
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let mut claims = json!({"sub": sub, "aud": aud, "iat": iat, "exp": exp});
        if let Some(iss) = iss {
            claims["iss"] = iss.into();
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|e| JwtError::Key(e.to_string()))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }
}

/// The claims of a JWT-SVID that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The SPIFFE ID (`sub`).
    pub spiffe_id: String,
    /// Audiences.
    pub audience: Vec<String>,
    /// Expiry, unix seconds.
    pub expires_at: i64,
    /// Every claim, as sent.
    pub claims: Value,
}

/// Verifies `token` against the bundle's `jwt-svid` keys for `audience` at `now`.
pub fn validate(token: &str, audience: &str, keys: &[Jwk], now: i64) -> Result<Verified, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let json_part = |p: &str| -> Result<Value, JwtError> {
        let raw = URL_SAFE_NO_PAD.decode(p).map_err(|_| JwtError::Malformed)?;
        serde_json::from_slice(&raw).map_err(|_| JwtError::Malformed)
    };
    let header = json_part(h)?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if alg != "ES256" {
        return Err(JwtError::Algorithm(alg.to_owned()));
    }
    let kid = header.get("kid").and_then(Value::as_str).unwrap_or("");
    let key = keys
        .iter()
        .find(|k| k.kid == kid && k.kty == "EC" && k.crv == "P-256")
        .ok_or_else(|| JwtError::UnknownKey(kid.to_owned()))?;
    let point = key
        .point()
        .ok_or_else(|| JwtError::UnknownKey(kid.to_owned()))?;
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
    signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| JwtError::Signature)?;
    let claims = json_part(c)?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(JwtError::Expired)?;
    if exp <= now {
        return Err(JwtError::Expired);
    }
    let audiences: Vec<String> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    };
    if !audiences.iter().any(|a| a == audience) {
        return Err(JwtError::Audience(audience.to_owned()));
    }
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    let id = crate::SpiffeId::new(sub).map_err(|e| JwtError::Subject(e.to_string()))?;
    Ok(Verified {
        spiffe_id: id.to_string(),
        audience: audiences,
        expires_at: exp,
        claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(kid: &str) -> JwtSigner {
        JwtSigner::load(&JwtSigner::generate().unwrap(), kid).unwrap()
    }

    #[test]
    fn round_trip_and_every_refusal() {
        let s = signer("k1");
        let keys = vec![s.jwk()];
        let t = s
            .sign(
                "spiffe://example.org/web",
                &["db".into(), "cache".into()],
                100,
                400,
            )
            .unwrap();
        let v = validate(&t, "db", &keys, 200).unwrap();
        assert_eq!(v.spiffe_id, "spiffe://example.org/web");
        assert_eq!(v.expires_at, 400);
        assert_eq!(validate(&t, "db", &keys, 400), Err(JwtError::Expired));
        assert_eq!(
            validate(&t, "other", &keys, 200),
            Err(JwtError::Audience("other".into()))
        );
        let other = signer("k2");
        assert_eq!(
            validate(&t, "db", &[other.jwk()], 200),
            Err(JwtError::UnknownKey("k1".into()))
        );
        // Same kid, another key: the signature fails.
        let impostor = signer("k1");
        assert_eq!(
            validate(&t, "db", &[impostor.jwk()], 200),
            Err(JwtError::Signature)
        );
        // Tampered claims.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            json!({"sub": "spiffe://example.org/admin", "aud": ["db"], "exp": 400}).to_string(),
        );
        parts[1] = &forged;
        assert_eq!(
            validate(&parts.join("."), "db", &keys, 200),
            Err(JwtError::Signature)
        );
        // alg: none and HS256 are refused before any key is looked at.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#),
            parts[1]
        );
        assert_eq!(
            validate(&none, "db", &keys, 200),
            Err(JwtError::Algorithm("none".into()))
        );
        assert_eq!(validate("a.b", "db", &keys, 200), Err(JwtError::Malformed));
        assert_eq!(
            validate(&"x".repeat(MAX_TOKEN_BYTES + 1), "db", &keys, 200),
            Err(JwtError::Malformed)
        );
        let bad_sub = s
            .sign("https://example.org/web", &["db".into()], 100, 400)
            .unwrap();
        assert!(matches!(
            validate(&bad_sub, "db", &keys, 200),
            Err(JwtError::Subject(_))
        ));
    }

    #[test]
    fn bundle_keys_reads_only_jwt_svid_keys() {
        let s = signer("k1");
        let doc = json!({"keys": [s.jwk(), {"use": "x509-svid", "kty": "EC"}]}).to_string();
        assert_eq!(bundle_keys(&doc), vec![s.jwk()]);
        assert!(bundle_keys("not json").is_empty());
    }
}
