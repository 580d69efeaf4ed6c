//! The platform-token verifier against tokens signed with real keys of
//! every accepted algorithm, and every refusal; JWKS parsing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tessera_core::platform_jwt::{
    JwksError, KeySet, MAX_JWKS_BYTES, MAX_TOKEN_BYTES, PlatformJwtError, Policy, verify,
};
use tessera_test_support::{SigningKey, hs256, jwks, token, unsigned};

const NOW: i64 = 1_800_000_000;

fn policy() -> Policy {
    Policy {
        issuer: "https://issuer.example".into(),
        audiences: vec!["tessera".into()],
        leeway_seconds: 60,
        require_jti: false,
    }
}

fn claims() -> Value {
    json!({"iss": "https://issuer.example", "aud": ["other", "tessera"], "sub": "s1",
           "exp": NOW + 600, "iat": NOW - 10, "nbf": NOW - 10, "jti": "j1"})
}

fn set(keys: &[(&SigningKey, &str)]) -> KeySet {
    KeySet::parse(jwks(keys).as_bytes()).unwrap()
}

#[test]
fn each_algorithm_verifies() {
    let keys = [
        SigningKey::es256(),
        SigningKey::rs256(),
        SigningKey::eddsa(),
    ];
    let ks = set(&[(&keys[0], "ec"), (&keys[1], "rsa"), (&keys[2], "ed")]);
    for (k, kid) in keys.iter().zip(["ec", "rsa", "ed"]) {
        let t = token(k, json!({"kid": kid}), &claims());
        let v = verify(&t, &ks, &policy(), NOW).unwrap();
        assert_eq!(v.alg, k.alg());
        assert_eq!(v.subject.as_deref(), Some("s1"));
        assert_eq!(v.jti.as_deref(), Some("j1"));
        assert_eq!(v.expires_at, NOW + 600);
    }
}

#[test]
fn refusals() {
    let ec = SigningKey::es256();
    let rs = SigningKey::rs256();
    let ks = set(&[(&ec, "ec"), (&rs, "rsa")]);
    let p = policy();
    let ok = |c: &Value| token(&ec, json!({"kid": "ec"}), c);
    let with = |k: &str, v: Value| {
        let mut c = claims();
        c[k] = v;
        c
    };
    // Forged signature: same kid, another key.
    let other = SigningKey::es256();
    let forged = token(&other, json!({"kid": "ec"}), &claims());
    assert_eq!(
        verify(&forged, &ks, &p, NOW),
        Err(PlatformJwtError::Signature)
    );
    // Tampered claims.
    let t = ok(&claims());
    let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(with("sub", json!("admin")).to_string());
    assert_eq!(
        verify(&parts.join("."), &ks, &p, NOW),
        Err(PlatformJwtError::Signature)
    );
    assert!(matches!(
        verify(&ok(&with("iss", json!("https://evil"))), &ks, &p, NOW),
        Err(PlatformJwtError::Issuer(_))
    ));
    assert_eq!(
        verify(&ok(&with("aud", json!("nobody"))), &ks, &p, NOW),
        Err(PlatformJwtError::Audience)
    );
    // Expired beyond the leeway; within it, accepted.
    assert_eq!(
        verify(&ok(&with("exp", json!(NOW - 61))), &ks, &p, NOW),
        Err(PlatformJwtError::Expired)
    );
    assert!(verify(&ok(&with("exp", json!(NOW - 30))), &ks, &p, NOW).is_ok());
    assert_eq!(
        verify(&ok(&with("nbf", json!(NOW + 61))), &ks, &p, NOW),
        Err(PlatformJwtError::NotYetValid("nbf"))
    );
    assert_eq!(
        verify(&ok(&with("iat", json!(NOW + 61))), &ks, &p, NOW),
        Err(PlatformJwtError::NotYetValid("iat"))
    );
    // A huge configured leeway is capped.
    let lax = Policy {
        leeway_seconds: 100_000,
        ..policy()
    };
    assert_eq!(
        verify(&ok(&with("exp", json!(NOW - 301))), &ks, &lax, NOW),
        Err(PlatformJwtError::Expired)
    );
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        verify(&ok(&c), &ks, &p, NOW),
        Err(PlatformJwtError::Claim("exp"))
    );
    let mut c = claims();
    c.as_object_mut().unwrap().remove("jti");
    let strict = Policy {
        require_jti: true,
        ..policy()
    };
    assert_eq!(
        verify(&ok(&c), &ks, &strict, NOW),
        Err(PlatformJwtError::Claim("jti"))
    );
    // alg none: refused before any key is looked at.
    let none = unsigned(json!({"alg": "none", "kid": "ec"}), &claims());
    assert_eq!(
        verify(&none, &ks, &p, NOW),
        Err(PlatformJwtError::Algorithm("none".into()))
    );
    // RS256 -> HS256 confusion: HMAC keyed with the RSA public key.
    let hs = hs256(
        json!({"alg": "HS256", "kid": "rsa"}),
        &claims(),
        &rs.public_der(),
    );
    assert_eq!(
        verify(&hs, &ks, &p, NOW),
        Err(PlatformJwtError::Algorithm("HS256".into()))
    );
    // An allowed alg naming a key of another type: refused, not tried.
    let confused = token(&ec, json!({"kid": "rsa"}), &claims());
    assert!(matches!(
        verify(&confused, &ks, &p, NOW),
        Err(PlatformJwtError::KeyMismatch { .. })
    ));
    assert_eq!(
        verify(&token(&ec, json!({"kid": "nope"}), &claims()), &ks, &p, NOW),
        Err(PlatformJwtError::UnknownKey("nope".into()))
    );
    // A caller-chosen kid cannot forge a log line through the error.
    assert_eq!(
        verify(
            &token(&ec, json!({"kid": "a\nlevel=ERROR x"}), &claims()),
            &ks,
            &p,
            NOW
        ),
        Err(PlatformJwtError::UnknownKey("alevel=ERROR x".into()))
    );
    // No kid with two keys: ambiguous, refused.
    assert!(matches!(
        verify(&token(&ec, json!({}), &claims()), &ks, &p, NOW),
        Err(PlatformJwtError::UnknownKey(_))
    ));
    assert_eq!(
        verify(&"a".repeat(MAX_TOKEN_BYTES + 1), &ks, &p, NOW),
        Err(PlatformJwtError::TooLarge)
    );
    assert!(matches!(
        verify("a.b", &ks, &p, NOW),
        Err(PlatformJwtError::Malformed(_))
    ));
}

#[test]
fn jwks_parsing() {
    let ec = SigningKey::es256();
    let mut bad_alg = ec.jwk("x");
    bad_alg["alg"] = json!("RS256");
    let mut enc = ec.jwk("y");
    enc["use"] = json!("enc");
    let doc = json!({"keys": [ec.jwk("a"), bad_alg, enc,
        {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}]});
    let ks = KeySet::parse(doc.to_string().as_bytes()).unwrap();
    assert_eq!(ks.keys().len(), 1);
    assert!(ks.has(Some("a")) && !ks.has(Some("hmac")) && ks.has(None));
    assert_eq!(
        KeySet::parse(br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).unwrap_err(),
        JwksError::NoUsableKey
    );
    assert_eq!(KeySet::parse(b"[]").unwrap_err(), JwksError::Malformed);
    assert_eq!(
        KeySet::parse(&vec![b' '; MAX_JWKS_BYTES + 1]).unwrap_err(),
        JwksError::TooLarge
    );
}
