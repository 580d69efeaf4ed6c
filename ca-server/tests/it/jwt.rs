//! JWT-SVIDs on both backends: a workload gets one for its own SPIFFE ID,
//! openssl verifies the ES256 signature against the key the bundle's JWKS
//! publishes, `core::jwt` validates audience and expiry, keys rotate with the
//! CA generation (published before use) and leave the bundle when it is revoked.

use crate::both_backends;
use crate::common::{Clients, Db, Harness, ca_ids, create_entry, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::StatusCode;
use serde_json::{Value, json};
use std::process::Command;
use tessera_core::api::Role;
use tessera_core::jwt::{self, JwtError};

async fn jwks(h: &Harness) -> Vec<jwt::Jwk> {
    let r = h.fetch("/v1/bundle?format=jwks").await;
    assert_eq!(r.status, StatusCode::OK);
    jwt::bundle_keys(std::str::from_utf8(&r.body).unwrap())
}

/// Verifies an ES256 JWS with openssl: the JWK becomes a SubjectPublicKeyInfo,
/// the r||s signature a DER ECDSA-Sig-Value.
fn openssl_verifies(dir: &std::path::Path, token: &str, key: &jwt::Jwk) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    let x = URL_SAFE_NO_PAD.decode(&key.x).unwrap();
    let y = URL_SAFE_NO_PAD.decode(&key.y).unwrap();
    // SPKI for P-256: fixed 26-byte prefix, then the uncompressed point.
    let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
    spki.push(4);
    spki.extend(&x);
    spki.extend(&y);
    std::fs::write(dir.join("jwt.pub.der"), &spki).unwrap();
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let int = |b: &[u8]| {
        let mut v: Vec<u8> = b.iter().copied().skip_while(|x| *x == 0).collect();
        if v.first().is_none_or(|f| *f & 0x80 != 0) {
            v.insert(0, 0);
        }
        let mut out = vec![2, v.len() as u8];
        out.extend(v);
        out
    };
    let (r, s) = (int(&sig[..32]), int(&sig[32..]));
    let mut der = vec![0x30, (r.len() + s.len()) as u8];
    der.extend(r);
    der.extend(s);
    std::fs::write(dir.join("jwt.sig"), der).unwrap();
    std::fs::write(dir.join("jwt.input"), format!("{}.{}", parts[0], parts[1])).unwrap();
    Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(dir.join("jwt.pub.der"))
        .args(["-keyform", "DER", "-signature"])
        .arg(dir.join("jwt.sig"))
        .arg(dir.join("jwt.input"))
        .output()
        .expect("openssl must be installed (.ci/run installs it)")
        .status
        .success()
}

fn kid_of(token: &str) -> String {
    let h = URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    serde_json::from_slice::<Value>(&h).unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn jwt_svids(db: Db) {
    let h = Harness::start_with(
        db,
        &["rotation.enabled=false", "rotation.min_overlap_seconds=1"],
    )
    .await;
    h.entry("spiffe://example.org/web").await;
    let (cert, key, _) = h.workload("spiffe://example.org/web").await;
    let web = h.with_cert(&cert, &key);
    let (s, v) = post(&web, "/v1/jwt-svids", json!({"audience": ["db", "cache"]})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    assert_eq!(v["spiffe_id"], "spiffe://example.org/web");
    let keys = jwks(&h).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(openssl_verifies(h.dir.path(), &token, &keys[0]));
    let now = tessera_core::now_unix();
    let ok = jwt::validate(&token, "db", &keys, now).unwrap();
    assert_eq!(ok.spiffe_id, "spiffe://example.org/web");
    assert!(ok.expires_at <= now + 300 && ok.expires_at > now + 200);
    assert_eq!(
        jwt::validate(&token, "payments", &keys, now),
        Err(JwtError::Audience("payments".into()))
    );
    assert_eq!(
        jwt::validate(&token, "db", &keys, now + 301),
        Err(JwtError::Expired)
    );

    // Refusals: not a workload, bad audiences or lifetime; nothing issued.
    let admin = h.operator(Role::Admin).await;
    let (s, _) = post(&admin, "/v1/jwt-svids", json!({"audience": ["db"]})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = post(&h.anonymous(), "/v1/jwt-svids", json!({"audience": ["db"]})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    for bad in [
        json!({"audience": []}),
        json!({"audience": ["x".repeat(257)]}),
        json!({"audience": (0..17).map(|i| i.to_string()).collect::<Vec<_>>()}),
        json!({"audience": ["a\u{0007}b"]}),
        json!({"audience": ["db"], "ttl_seconds": 10}),
        json!({"audience": ["db"], "ttl_seconds": 86400}),
        json!({"audience": ["db"], "sub": "spiffe://example.org/admin"}),
    ] {
        let (s, v) = post(&web, "/v1/jwt-svids", bad.clone()).await;
        assert!(s.is_client_error(), "{bad}: {s} {v}");
        assert_ne!(s, StatusCode::CREATED);
    }

    // Rotation: the prepared generation's key is published before it signs.
    let admin = h.operator(Role::Admin).await;
    let (s, st) = post(&admin, "/v1/ca/prepare", None).await;
    assert_eq!(s, StatusCode::CREATED, "{st}");
    let prepared = ca_ids(&st, "prepared")[0].clone();
    assert_eq!(jwks(&h).await.len(), 2);
    let (_, v) = post(&web, "/v1/jwt-svids", json!({"audience": ["db"]})).await;
    assert_eq!(
        kid_of(v["token"].as_str().unwrap()),
        kid_of(&token),
        "still the old key"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let admin = h.operator(Role::Admin).await;
    let (s, st) = post(&admin, &format!("/v1/ca/{prepared}/activate"), None).await;
    assert_eq!(s, StatusCode::OK, "{st}");
    let web = h.with_cert(&cert, &key);
    let (_, v) = post(&web, "/v1/jwt-svids", json!({"audience": ["db"]})).await;
    let fresh = v["token"].as_str().unwrap().to_owned();
    assert_ne!(
        kid_of(&fresh),
        kid_of(&token),
        "the new generation's key signs"
    );
    let keys = jwks(&h).await;
    let now = tessera_core::now_unix();
    jwt::validate(&fresh, "db", &keys, now).unwrap();
    jwt::validate(&token, "db", &keys, now).unwrap();

    // Emergency revocation of the old generation: its key leaves the bundle,
    // and tokens it signed stop validating.
    let old = ca_ids(&st, "retired")[0].clone();
    let admin = h.operator(Role::Admin).await;
    let (s, r) = post(&admin, &format!("/v1/ca/{old}/revoke"), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let keys = jwks(&h).await;
    assert_eq!(keys.len(), 1);
    assert!(matches!(
        jwt::validate(&token, "db", &keys, now),
        Err(JwtError::UnknownKey(_))
    ));
    jwt::validate(&fresh, "db", &keys, now).unwrap();
}
both_backends!(jwt_svids);

/// Issue 11 item 9: a JWT-SVID never outlives the certificate that obtained
/// it: a workload whose certificate ends in about 90 s asking for an hour
/// gets a token that expires with the certificate.
async fn jwt_svids_end_with_the_certificate(db: Db) {
    let h = Harness::start(db).await;
    let admin = h.operator(Role::Admin).await;
    let id = "spiffe://example.org/short";
    create_entry(
        &admin,
        json!({"spiffe_id": id, "selectors": ["unix:uid:1"], "ttl_seconds": 90}),
    )
    .await;
    let (cert, key, _) = h.workload(id).await;
    let not_after =
        tessera_core::svid::check_leaf(&tessera_core::pem::certs(cert.as_bytes()).unwrap()[0])
            .unwrap()
            .not_after;
    let web = h.with_cert(&cert, &key);
    let (s, v) = post(
        &web,
        "/v1/jwt-svids",
        json!({"audience": ["db"], "ttl_seconds": 3600}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let keys = jwks(&h).await;
    let now = tessera_core::now_unix();
    let ok = jwt::validate(v["token"].as_str().unwrap(), "db", &keys, now).unwrap();
    assert!(
        ok.expires_at <= not_after,
        "the JWT-SVID expires at {}, after its certificate ({not_after})",
        ok.expires_at
    );
    assert!(ok.expires_at > now + 30, "{} (now {now})", ok.expires_at);
}
both_backends!(jwt_svids_end_with_the_certificate);
