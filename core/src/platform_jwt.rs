//! Verification of third-party platform tokens (Kubernetes projected
//! service-account tokens, OIDC ID tokens): JWS compact tokens signed by an
//! issuer Tessera does not control, checked against that issuer's JWKS.
//!
//! Like [`crate::jwt`] this uses ring directly, not `jsonwebtoken` (whose
//! backends are aws-lc-rs, which we forbid, or RustCrypto with the `rsa`
//! crate and its advisory); ring verifies the three algorithms accepted here.
//!
//! The rules that make it safe:
//! - the algorithm allow-list is ES256, RS256 and EdDSA (Ed25519); `none`,
//!   every HMAC algorithm and anything else is refused before a key is
//!   looked at;
//! - the verification algorithm is taken from the *key* (its `kty`/`crv`),
//!   and the token's `alg` must agree with it: a token cannot make an RSA
//!   public key serve as an HMAC secret (the RS256 → HS256 confusion), nor an
//!   EC key be read as anything but P-256 ECDSA;
//! - issuer, audience, `exp`, `nbf` and `iat` are checked with a leeway that
//!   is bounded ([`MAX_LEEWAY_SECONDS`]);
//! - sizes are bounded (token, JWKS document, number of keys);
//! - errors never contain the token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents};
use serde_json::Value;

/// Most bytes of a platform token (a Kubernetes token is about 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Most bytes of a JWKS document.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys read from one JWKS document (extra ones are an error).
pub const MAX_JWKS_KEYS: usize = 64;
/// Largest clock leeway an issuer may be configured with, seconds.
pub const MAX_LEEWAY_SECONDS: u64 = 300;
/// Longest `kid`, `iss`, `sub`, `jti` or audience value accepted, bytes.
pub const MAX_CLAIM_BYTES: usize = 1024;

/// A signature algorithm Tessera accepts for platform tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (2048 to 8192 bits).
    Rs256,
    /// Ed25519.
    EdDsa,
}

impl Alg {
    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::Rs256 => "RS256",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// The algorithm of a JOSE name, if it is on the allow-list.
    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "ES256" => Some(Alg::Es256),
            "RS256" => Some(Alg::Rs256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }
}

/// Why a JWKS document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// Larger than [`MAX_JWKS_BYTES`].
    #[error("JWKS larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// Not a JSON object with a `keys` array.
    #[error("JWKS is not a JSON object with a \"keys\" array")]
    Malformed,
    /// More than [`MAX_JWKS_KEYS`] keys.
    #[error("JWKS has more than {MAX_JWKS_KEYS} keys")]
    TooManyKeys,
    /// No key Tessera can use (EC P-256, RSA, OKP Ed25519 with `use` sig).
    #[error("JWKS has no usable signing key (EC P-256, RSA 2048-8192, OKP Ed25519)")]
    NoUsableKey,
}

/// Why a platform token was refused. Messages are safe to return to the
/// caller: they never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformJwtError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("token larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    /// Not a JWS compact token with JSON header and claims.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not ES256, RS256 or EdDSA (`none`, HMAC, ...).
    #[error("algorithm {0:?} is not accepted (ES256, RS256 or EdDSA only)")]
    Algorithm(String),
    /// No key of the issuer's JWKS has the token's `kid`.
    #[error("no key {0:?} in the issuer's JWKS")]
    UnknownKey(String),
    /// The key named by `kid` is of another type than the header's `alg`
    /// (the algorithm-confusion attempt).
    #[error("key {kid:?} cannot verify {alg} (the algorithm is taken from the key)")]
    KeyMismatch {
        /// The token's `alg`.
        alg: String,
        /// The key's ID.
        kid: String,
    },
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// No configured issuer has the token's `iss` (or it differs from the one checked).
    #[error("issuer {0:?} is not trusted")]
    Issuer(String),
    /// None of the token's audiences is accepted.
    #[error("audience not accepted (the token must name one of the configured audiences)")]
    Audience,
    /// A required claim is missing or has the wrong type.
    #[error("claim {0:?} missing or invalid")]
    Claim(&'static str),
    /// `exp` (plus leeway) has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` lies in the future beyond the leeway.
    #[error("token not yet valid ({0} is in the future)")]
    NotYetValid(&'static str),
}

/// One usable public key of a JWKS.
#[derive(Clone)]
pub struct PublicKey {
    kid: Option<String>,
    alg: Alg,
    material: KeyMaterial,
}

#[derive(Clone)]
enum KeyMaterial {
    /// Uncompressed P-256 point.
    Ec(Vec<u8>),
    /// RSA modulus and exponent, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Ed25519 public key.
    Ed(Vec<u8>),
}

crate::debug_without_secrets!(PublicKey: kid, alg);

impl PublicKey {
    /// The key ID, if the JWKS gave one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The one algorithm this key verifies (from its `kty`/`crv`).
    pub fn alg(&self) -> Alg {
        self.alg
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match &self.material {
            KeyMaterial::Ec(p) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, p)
                    .verify(msg, sig)
                    .is_ok()
            }
            KeyMaterial::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
                .is_ok(),
            KeyMaterial::Ed(k) => signature::UnparsedPublicKey::new(&signature::ED25519, k)
                .verify(msg, sig)
                .is_ok(),
        }
    }

    /// Reads one JWK; None if it is not a signing key of a supported type.
    fn from_jwk(k: &Value) -> Option<PublicKey> {
        let s = |name: &str| k.get(name).and_then(Value::as_str);
        let b64 = |name: &str| s(name).and_then(|v| URL_SAFE_NO_PAD.decode(v).ok());
        if s("use").is_some_and(|u| u != "sig") {
            return None;
        }
        let kid = match k.get("kid") {
            None => None,
            Some(Value::String(v)) if v.len() <= MAX_CLAIM_BYTES => Some(v.clone()),
            Some(_) => return None,
        };
        let (alg, material) = match s("kty")? {
            "EC" if s("crv")? == "P-256" => {
                let (x, y) = (b64("x")?, b64("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return None;
                }
                (Alg::Es256, KeyMaterial::Ec([&[4u8][..], &x, &y].concat()))
            }
            "RSA" => {
                let (n, e) = (b64("n")?, b64("e")?);
                // ring enforces 2048..=8192 bits at verification; refuse
                // obviously unusable keys here so they never shadow a kid.
                let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
                if !(2048..=8192).contains(&bits) || e.is_empty() || e.len() > 8 {
                    return None;
                }
                (Alg::Rs256, KeyMaterial::Rsa { n, e })
            }
            "OKP" if s("crv")? == "Ed25519" => {
                let x = b64("x")?;
                if x.len() != 32 {
                    return None;
                }
                (Alg::EdDsa, KeyMaterial::Ed(x))
            }
            _ => return None,
        };
        // A JWK may pin its algorithm; one that contradicts its type is unusable.
        if s("alg").is_some_and(|a| a != alg.as_str()) {
            return None;
        }
        Some(PublicKey { kid, alg, material })
    }
}

/// The usable keys of an issuer's JWKS.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<PublicKey>,
}

impl KeySet {
    /// Parses a JWKS document, keeping the keys Tessera can verify with
    /// (others, such as encryption keys or P-384, are skipped).
    pub fn parse(doc: &[u8]) -> Result<KeySet, JwksError> {
        use crate::bundle::BundleError as E;
        let (_, keys) =
            crate::bundle::jwk_set(doc, MAX_JWKS_BYTES, MAX_JWKS_KEYS).map_err(|e| match e {
                E::TooLarge => JwksError::TooLarge,
                E::TooManyKeys => JwksError::TooManyKeys,
                _ => JwksError::Malformed,
            })?;
        let keys: Vec<PublicKey> = keys.iter().filter_map(PublicKey::from_jwk).collect();
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(KeySet { keys })
    }

    /// The keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Whether a key answers to `kid` (or, for a token without `kid`,
    /// whether the set has exactly one key).
    pub fn has(&self, kid: Option<&str>) -> bool {
        self.find(kid).is_some()
    }

    fn find(&self, kid: Option<&str>) -> Option<&PublicKey> {
        match kid {
            Some(k) => self.keys.iter().find(|p| p.kid.as_deref() == Some(k)),
            // Without a kid, only an unambiguous set will do.
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }
}

/// The JOSE header of a token, read before any verification (to pick the
/// issuer's keys and decide whether to refresh them). Nothing in it is
/// trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedHeader {
    /// `alg` as sent.
    pub alg: String,
    /// `kid` as sent.
    pub kid: Option<String>,
    /// `iss` of the (unverified) claims, to find the issuer's configuration.
    pub iss: Option<String>,
}

struct Parts<'a> {
    header: Value,
    claims: Value,
    signed: &'a str,
    signature: Vec<u8>,
}

fn split(token: &str) -> Result<Parts<'_>, PlatformJwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(PlatformJwtError::TooLarge);
    }
    let mut it = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(PlatformJwtError::Malformed("not three dot-separated parts"));
    };
    let json = |p: &str, what: &'static str| -> Result<Value, PlatformJwtError> {
        let raw = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| PlatformJwtError::Malformed(what))?;
        match serde_json::from_slice(&raw) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(PlatformJwtError::Malformed(what)),
        }
    };
    let header = json(h, "header is not base64url JSON object")?;
    let claims = json(c, "claims are not a base64url JSON object")?;
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| PlatformJwtError::Malformed("signature is not base64url"))?;
    Ok(Parts {
        header,
        claims,
        signed: &token[..h.len() + 1 + c.len()],
        signature,
    })
}

/// A caller-controlled string made safe for an error message (and so for
/// logs and the audit log): at most 128 characters, control characters
/// dropped so nothing can forge a log line.
fn short(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(128).collect()
}

/// Reads a token's header and `iss` without verifying anything.
pub fn peek(token: &str) -> Result<UnverifiedHeader, PlatformJwtError> {
    let p = split(token)?;
    let alg = p
        .header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(PlatformJwtError::Malformed("header has no alg"))?;
    let kid = match p.header.get("kid") {
        None => None,
        Some(Value::String(k)) if k.len() <= MAX_CLAIM_BYTES => Some(k.clone()),
        Some(_) => return Err(PlatformJwtError::Malformed("kid is not a short string")),
    };
    Ok(UnverifiedHeader {
        alg: short(alg),
        kid,
        iss: p
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .map(|s| s.chars().take(MAX_CLAIM_BYTES).collect()),
    })
}

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The exact `iss`.
    pub issuer: String,
    /// Accepted audiences: the token must name at least one.
    pub audiences: Vec<String>,
    /// Clock leeway for `exp`, `nbf` and `iat`, seconds (capped at [`MAX_LEEWAY_SECONDS`]).
    pub leeway_seconds: u64,
    /// Refuse a token without a `jti`.
    pub require_jti: bool,
}

/// A token that verified: its claims are authentic and current.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// `iss`.
    pub issuer: String,
    /// `sub`, if any.
    pub subject: Option<String>,
    /// Every audience the token names.
    pub audiences: Vec<String>,
    /// `exp`, unix seconds.
    pub expires_at: i64,
    /// `iat`, if any.
    pub issued_at: Option<i64>,
    /// `jti`, if any.
    pub jti: Option<String>,
    /// The algorithm that verified it (the key's).
    pub alg: Alg,
    /// The key's ID, if any.
    pub kid: Option<String>,
    /// Every claim, as signed.
    pub claims: Value,
}

fn time_claim(claims: &Value, name: &'static str) -> Result<Option<i64>, PlatformJwtError> {
    match claims.get(name) {
        None => Ok(None),
        // NumericDate may carry a fraction; whole seconds are what we compare.
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or(PlatformJwtError::Claim(name)),
        Some(_) => Err(PlatformJwtError::Claim(name)),
    }
}

fn string_claim(claims: &Value, name: &'static str) -> Result<Option<String>, PlatformJwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_CLAIM_BYTES => {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(PlatformJwtError::Claim(name)),
    }
}

/// Verifies `token` with `keys` against `policy` at `now` (unix seconds).
pub fn verify(
    token: &str,
    keys: &KeySet,
    policy: &Policy,
    now: i64,
) -> Result<VerifiedToken, PlatformJwtError> {
    let head = peek(token)?;
    // The allow-list first: `none` and HMAC never reach key lookup.
    let alg = Alg::parse(&head.alg).ok_or_else(|| PlatformJwtError::Algorithm(head.alg.clone()))?;
    let key = keys.find(head.kid.as_deref()).ok_or_else(|| {
        PlatformJwtError::UnknownKey(head.kid.as_deref().map(short).unwrap_or_default())
    })?;
    // The key decides the algorithm; the header may only agree with it.
    if key.alg != alg {
        return Err(PlatformJwtError::KeyMismatch {
            alg: alg.as_str().into(),
            kid: key.kid.as_deref().map(short).unwrap_or_default(),
        });
    }
    let p = split(token)?;
    if !key.verify(p.signed.as_bytes(), &p.signature) {
        return Err(PlatformJwtError::Signature);
    }
    let c = &p.claims;
    let iss = string_claim(c, "iss")?.ok_or(PlatformJwtError::Claim("iss"))?;
    if iss != policy.issuer {
        return Err(PlatformJwtError::Issuer(short(&iss)));
    }
    let audiences: Vec<String> = match c.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(a)) if a.len() <= 64 => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or(PlatformJwtError::Claim("aud"))?,
        _ => return Err(PlatformJwtError::Claim("aud")),
    };
    if !audiences.iter().any(|a| policy.audiences.contains(a)) {
        return Err(PlatformJwtError::Audience);
    }
    let leeway = policy.leeway_seconds.min(MAX_LEEWAY_SECONDS) as i64;
    let exp = time_claim(c, "exp")?.ok_or(PlatformJwtError::Claim("exp"))?;
    if exp.saturating_add(leeway) <= now {
        return Err(PlatformJwtError::Expired);
    }
    if time_claim(c, "nbf")?.is_some_and(|nbf| nbf.saturating_sub(leeway) > now) {
        return Err(PlatformJwtError::NotYetValid("nbf"));
    }
    let iat = time_claim(c, "iat")?;
    if iat.is_some_and(|iat| iat.saturating_sub(leeway) > now) {
        return Err(PlatformJwtError::NotYetValid("iat"));
    }
    let jti = string_claim(c, "jti")?;
    if policy.require_jti && jti.is_none() {
        return Err(PlatformJwtError::Claim("jti"));
    }
    Ok(VerifiedToken {
        issuer: iss,
        subject: string_claim(c, "sub")?,
        audiences,
        expires_at: exp,
        issued_at: iat,
        jti,
        alg,
        kid: key.kid.clone(),
        claims: p.claims,
    })
}

/// Reads a platform token from a file (Kubernetes mounts a projected token
/// and rotates it in place, so callers read it again for every attestation):
/// at most [`MAX_TOKEN_BYTES`], surrounding whitespace trimmed. The error
/// names the file, never its content.
pub fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_TOKEN_BYTES as u64 + 2).read_to_string(&mut text))
        .map_err(|e| format!("platform token file {}: {e}", path.display()))?;
    let t = text.trim();
    if t.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "platform token file {}: larger than {MAX_TOKEN_BYTES} bytes",
            path.display()
        ));
    }
    if t.is_empty() {
        return Err(format!("platform token file {}: empty", path.display()));
    }
    Ok(t.to_owned())
}
