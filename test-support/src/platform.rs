//! Platform tokens (JWS compact, as Kubernetes or an OIDC issuer signs them)
//! minted with keys the test holds, so tests exercise the real verifier
//! with real signatures (the CA never signs platform tokens); Kubernetes
//! service-account tokens in particular, and the CA configuration that
//! trusts their key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::RsaPublicKeyComponents;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use tessera_core::now_unix;
use tessera_core::platform_jwt::Alg;

/// A signing key of one of the algorithms platform tokens may use.
pub enum SigningKey {
    /// P-256.
    Es256(EcdsaKeyPair),
    /// RSA.
    Rs256(RsaKeyPair),
    /// Ed25519.
    EdDsa(Ed25519KeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey")
    }
}

impl SigningKey {
    /// A fresh P-256 key.
    pub fn es256() -> SigningKey {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let der = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("P-256 key");
        SigningKey::Es256(EcdsaKeyPair::from_pkcs8(alg, der.as_ref(), &rng).expect("P-256"))
    }

    /// A fresh Ed25519 key.
    pub fn eddsa() -> SigningKey {
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("Ed25519 key");
        SigningKey::EdDsa(Ed25519KeyPair::from_pkcs8(der.as_ref()).expect("Ed25519"))
    }

    /// A fresh 2048-bit RSA key, made by `openssl genpkey` (ring cannot
    /// generate RSA keys; its PEM output is PKCS#8, which ring reads).
    pub fn rs256() -> SigningKey {
        let out = crate::openssl_output(
            Path::new("."),
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
        );
        assert!(out.status.success(), "openssl genpkey failed");
        let der = PrivatePkcs8KeyDer::from_pem_slice(&out.stdout).expect("PKCS#8 PEM");
        SigningKey::Rs256(RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).expect("RSA key"))
    }

    /// The algorithm.
    pub fn alg(&self) -> Alg {
        match self {
            SigningKey::Es256(_) => Alg::Es256,
            SigningKey::Rs256(_) => Alg::Rs256,
            SigningKey::EdDsa(_) => Alg::EdDsa,
        }
    }

    /// The public key as a JWK with `kid`.
    pub fn jwk(&self, kid: &str) -> Value {
        let e = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match self {
            SigningKey::Es256(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                    "alg": "ES256", "x": e(&p[1..33]), "y": e(&p[33..65])})
            }
            SigningKey::Rs256(k) => {
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                    "n": e(&c.n), "e": e(&c.e)})
            }
            SigningKey::EdDsa(k) => json!({"kty": "OKP", "crv": "Ed25519",
                "kid": kid, "use": "sig", "alg": "EdDSA", "x": e(k.public_key().as_ref())}),
        }
    }

    /// The public key's DER as ring exposes it (for RSA: the PKCS#1
    /// RSAPublicKey), which the HMAC-confusion tests use as a "secret".
    pub fn public_der(&self) -> Vec<u8> {
        match self {
            SigningKey::Es256(k) => k.public_key().as_ref().to_vec(),
            SigningKey::Rs256(k) => k.public_key().as_ref().to_vec(),
            SigningKey::EdDsa(k) => k.public_key().as_ref().to_vec(),
        }
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            SigningKey::Es256(k) => k.sign(&rng, msg).expect("sign").as_ref().to_vec(),
            SigningKey::Rs256(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .expect("sign");
                sig
            }
            SigningKey::EdDsa(k) => k.sign(msg).as_ref().to_vec(),
        }
    }
}

/// A JWKS document (text) with each key under its `kid`.
pub fn jwks(keys: &[(&SigningKey, &str)]) -> String {
    json!({"keys": keys.iter().map(|(k, kid)| k.jwk(kid)).collect::<Vec<_>>()}).to_string()
}

/// `header.claims` in base64url, the part a JWS signs.
fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// A compact token with `header` (merged over `{"alg": <key's>, "typ": "JWT"}`)
/// and `claims`, signed by `key`.
pub fn token(key: &SigningKey, header: Value, claims: &Value) -> String {
    let mut h = json!({"alg": key.alg().as_str(), "typ": "JWT"});
    if let (Some(h), Value::Object(extra)) = (h.as_object_mut(), header) {
        h.extend(extra);
    }
    let input = signing_input(&h, claims);
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// A token with `header` as given and no signature (`alg` `none`).
pub fn unsigned(header: Value, claims: &Value) -> String {
    format!("{}.", signing_input(&header, claims))
}

/// A token with an arbitrary header signed by HMAC-SHA256 under `secret`
/// (the algorithm-confusion attack: `secret` is a public key's bytes).
pub fn hs256(header: Value, claims: &Value, secret: &[u8]) -> String {
    let input = signing_input(&header, claims);
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&k, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// The issuer of the cluster's service-account tokens.
const KUBERNETES_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A projected service-account token for `namespace`/`service_account` in
/// pod `pod` (scheduled on `node`, if given), audience `tessera`, valid for
/// an hour, signed by `key` as `kid` `k1`; `jti` makes it single-use.
pub fn kubernetes_token(
    key: &SigningKey,
    (namespace, service_account, pod): (&str, &str, &str),
    node: Option<&str>,
    jti: &str,
) -> String {
    let now = now_unix();
    let mut claims = json!({
        "iss": KUBERNETES_ISSUER, "aud": ["tessera"],
        "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
        "iat": now - 5, "nbf": now - 5, "exp": now + 3600, "jti": jti,
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": service_account, "uid": "sa-1"},
            "pod": {"name": pod, "uid": "pod-1"},
        }
    });
    if let Some(node) = node {
        claims["kubernetes.io"]["node"] = json!({"name": node, "uid": "node-uid-1"});
    }
    token(key, json!({"kid": "k1"}), &claims)
}

/// Writes `jwks.json` (`key` as `k1`) and `ca.toml` into `dir`: the CA's
/// configuration trusting that key as Kubernetes issuer `k8s` (`jti`
/// required), followed by `extra` lines of that issuer's table. Returns the
/// path of `ca.toml`.
pub fn kubernetes_issuer_config(dir: &Path, key: &SigningKey, extra: &str) -> PathBuf {
    let jwks_file = dir.join("jwks.json");
    std::fs::write(&jwks_file, jwks(&[(key, "k1")])).unwrap();
    let toml = dir.join("ca.toml");
    std::fs::write(
        &toml,
        format!(
            "[[attestation.jwt_issuers]]\nname = \"k8s\"\nkind = \"kubernetes\"\n\
             issuer = \"{KUBERNETES_ISSUER}\"\naudiences = [\"tessera\"]\n\
             jwks_file = \"{}\"\nrequire_jti = true\n{extra}",
            jwks_file.display()
        ),
    )
    .unwrap();
    toml
}
