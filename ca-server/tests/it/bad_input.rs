//! Bad input: every malformed, hostile or out-of-policy request is refused with
//! a stable problem `code` (and a `detail` naming the field or reason), and
//! changes nothing in the database.

use crate::both_backends;
use crate::common::{
    Clients, Db, Harness, call, csr, delete, get, issue, post, renew, revoke, test_audit,
};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use tessera_ca::ca::LeafSpec;
use tessera_ca::store::{NewCert, TokenRow};
use tessera_core::api::Role;
use tessera_core::client::Client;

const WEB: &str = "spiffe://example.org/web";

/// Tables whose row counts must not move when a request is refused.
const TABLES: [&str; 5] = [
    "certificates",
    "entries",
    "join_tokens",
    "audit_log",
    "revocations",
];

/// Row counts of [`TABLES`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counts(Vec<(&'static str, i64)>);

impl Counts {
    /// Like [`Harness::count`] for each table, on one connection and in one
    /// query (a PostgreSQL connection costs ~0.1 s in a debug build).
    async fn of(h: &Harness) -> Self {
        use sqlx::Row;
        let sql = format!(
            "SELECT {}",
            TABLES
                .iter()
                .map(|t| format!("(SELECT COUNT(*) FROM {t})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut c = h.db.raw().await;
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut c)
            .await
            .unwrap();
        Counts(
            TABLES
                .iter()
                .enumerate()
                .map(|(i, t)| (*t, row.get::<i64, _>(i)))
                .collect(),
        )
    }

    fn get(&self, table: &str) -> i64 {
        self.0
            .iter()
            .find(|(t, _)| *t == table)
            .map(|(_, n)| *n)
            .unwrap()
    }
}

/// Asserts nothing changed since `before`.
async fn assert_unchanged(h: &Harness, before: &Counts, what: &str) {
    let after = Counts::of(h).await;
    assert_eq!(
        &after, before,
        "{what}: a refused request changed the database"
    );
}

/// Asserts a problem document: status, stable code, and a detail mentioning
/// each of `detail_has` (case-insensitive).
#[track_caller]
fn problem(
    what: &str,
    (s, v): &(StatusCode, Value),
    status: StatusCode,
    code: &str,
    detail_has: &[&str],
) {
    assert_eq!(*s, status, "{what}: status ({v})");
    assert_eq!(v["code"], code, "{what}: code ({v})");
    assert_eq!(v["status"], status.as_u16(), "{what}: problem status ({v})");
    let detail = v["detail"].as_str().unwrap_or_default().to_lowercase();
    for want in detail_has {
        assert!(
            detail.contains(&want.to_lowercase()),
            "{what}: detail {detail:?} does not mention {want:?}"
        );
    }
}

/// One call with a raw body and content type; returns status and parsed body.
async fn raw(
    c: &Client,
    method: Method,
    path: &str,
    body: impl Into<Vec<u8>>,
    content_type: &str,
) -> (StatusCode, Value) {
    let r = c
        .call_with(method, path, Some(body.into()), content_type)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

fn random_bytes(n: usize) -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    ring::rand::SystemRandom::new().fill(&mut b).unwrap();
    b
}

/// An RSA-1024 CSR made by the openssl command (rcgen cannot make RSA keys).
fn rsa1024_csr() -> String {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "req", "-new", "-newkey", "rsa:1024", "-nodes", "-keyout", "k.pem",
    ];
    tessera_test_support::openssl(
        dir.path(),
        &[&args[..], &["-subj", "/CN=x", "-out", "csr.pem"]].concat(),
    );
    std::fs::read_to_string(dir.path().join("csr.pem")).unwrap()
}

/// A valid CSR whose signature no longer verifies: one byte of the signature
/// (at the end of the DER) flipped.
fn corrupted_signature_csr() -> String {
    let (_, pem) = csr();
    let mut der = tessera_core::pem::csr(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    let n = der.len();
    der[n - 2] ^= 0x55;
    tessera_core::pem::encode("CERTIFICATE REQUEST", &der)
}

/// A well-formed, correctly signed CSR that is larger than 16 KiB (a big
/// requested extension) but fits in the 64 KiB body limit.
fn oversized_csr() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 4, 1, 55555, 1],
        vec![0x42; 17 * 1024],
    )];
    let pem = p.serialize_request(&key).unwrap().pem().unwrap();
    assert!(
        pem.len() > 16 * 1024 && pem.len() < 60 * 1024,
        "{}",
        pem.len()
    );
    pem
}

/// CSR cases: (name, CSR text, status, code, detail must mention).
fn bad_csrs() -> Vec<(
    &'static str,
    String,
    StatusCode,
    &'static str,
    &'static [&'static str],
)> {
    let bad = StatusCode::BAD_REQUEST;
    // Random bytes as a string: not PEM, not DER.
    let random_der: String = [0x30u8, 0x82]
        .into_iter()
        .chain(random_bytes(300))
        .map(char::from)
        .collect();
    vec![
        (
            "garbage between PEM lines",
            "-----BEGIN CERTIFICATE REQUEST-----\n!!not*base64@@\n-----END CERTIFICATE REQUEST-----\n"
                .into(),
            bad,
            "csr_malformed",
            &["csr", "pem or der"],
        ),
        (
            "base64 of non-DER between PEM lines",
            "-----BEGIN CERTIFICATE REQUEST-----\naGVsbG8sIHdvcmxkIQ==\n-----END CERTIFICATE REQUEST-----\n"
                .into(),
            bad,
            "csr_malformed",
            &["csr", "pem or der"],
        ),
        (
            "random bytes",
            random_der,
            bad,
            "csr_malformed",
            &["csr", "pem or der"],
        ),
        ("empty", String::new(), bad, "csr_malformed", &["csr"]),
        (
            "corrupted signature",
            corrupted_signature_csr(),
            bad,
            "csr_bad_signature",
            &["csr", "signature"],
        ),
        (
            "RSA-1024 key",
            rsa1024_csr(),
            bad,
            "csr_key_refused",
            &["csr", "RSA-1024", "2048"],
        ),
        (
            "oversized",
            oversized_csr(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "csr_too_large",
            &["csr", "16384"],
        ),
    ]
}

/// Bad CSRs on every route that takes one: redeem, operator issue and renew.
async fn csrs_refused(db: Db) {
    let h = Harness::start(db).await;
    h.entry(WEB).await;
    let token = h.join_token(WEB).await;
    let (cert, key, _) = h.workload(WEB).await;
    let issuer = h.operator(Role::Issuer).await;
    let anon = h.anonymous();
    let workload = h.with_cert(&cert, &key);
    let before = Counts::of(&h).await;

    for (name, bad, status, code, detail) in bad_csrs() {
        let r = post(
            &anon,
            "/v1/certs/redeem",
            json!({"token": token, "csr": bad}),
        )
        .await;
        problem(&format!("redeem, {name}"), &r, status, code, detail);
        let r = post(&issuer, "/v1/certs", json!({"spiffe_id": WEB, "csr": bad})).await;
        problem(&format!("issue, {name}"), &r, status, code, detail);
        let r = post(&workload, "/v1/certs/renew", json!({"csr": bad})).await;
        problem(&format!("renew, {name}"), &r, status, code, detail);
    }
    assert_unchanged(&h, &before, "bad CSRs").await;

    // The join token was not consumed by the refused attempts.
    let (s, v) = post(
        &anon,
        "/v1/certs/redeem",
        json!({"token": token, "csr": csr().1}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let after = Counts::of(&h).await;
    assert_eq!(after.get("certificates"), before.get("certificates") + 1);
}

both_backends!(csrs_refused);

/// SPIFFE IDs outside the trust domain or invalid per the standard, and bad
/// selectors, on every route that takes them.
async fn ids_and_selectors_refused(db: Db) {
    let h = Harness::start(db).await;
    let entry = h.entry(WEB).await;
    let admin = h.operator(Role::Admin).await;
    let before = Counts::of(&h).await;

    let wrong_td: &[(&str, &[&str])] = &[
        ("spiffe://other.org/web", &["spiffe_id", "example.org"]),
        (
            "spiffe://example.org.evil/web",
            &["spiffe_id", "example.org"],
        ),
    ];
    let invalid: &[(&str, &[&str])] = &[
        ("spiffe://Example.org/web", &["spiffe_id", "trust domain"]),
        ("spiffe://example.org/a/../web", &["spiffe_id", "'..'"]),
        ("spiffe://example.org/./web", &["spiffe_id", "'.'"]),
        (
            "spiffe://example.org/web/",
            &["spiffe_id", "trailing slash"],
        ),
        ("spiffe://example.org/web?x=1", &["spiffe_id", "query"]),
        ("spiffe://example.org/w%65b", &["spiffe_id", "percent"]),
        ("spiffe://example.org/web#frag", &["spiffe_id", "fragment"]),
        ("spiffe://example.org:443/web", &["spiffe_id", "port"]),
        ("https://example.org/web", &["spiffe_id", "scheme"]),
        ("spiffe://example.org//web", &["spiffe_id", "empty segment"]),
        ("spiffe://example.org", &["spiffe_id", "path"]),
        ("", &["spiffe_id", "scheme"]),
    ];
    let cases = wrong_td
        .iter()
        .map(|(id, d)| (*id, "wrong_trust_domain", *d))
        .chain(invalid.iter().map(|(id, d)| (*id, "invalid_spiffe_id", *d)));
    let bad = StatusCode::BAD_REQUEST;
    let entry_path = format!("/v1/entries/{}", entry["id"].as_str().unwrap());
    for (id, code, detail) in cases {
        let sel = json!({"spiffe_id": id, "selectors": ["unix:uid:1000"]});
        let r = post(&admin, "/v1/entries", sel.clone()).await;
        problem(&format!("entry create {id:?}"), &r, bad, code, detail);
        let r = call(&admin, Method::PUT, &entry_path, Some(sel)).await;
        problem(&format!("entry update {id:?}"), &r, bad, code, detail);
        let r = issue(&admin, id).await;
        problem(&format!("issue {id:?}"), &r, bad, code, detail);
        let r = post(&admin, "/v1/tokens", json!({"spiffe_id": id})).await;
        problem(&format!("token create {id:?}"), &r, bad, code, detail);
        let r = revoke(&admin, json!({"spiffe_id": id})).await;
        problem(&format!("revoke {id:?}"), &r, bad, code, detail);
    }

    // A valid ID in the trust domain that no entry grants.
    let nobody = "spiffe://example.org/nobody";
    let r = issue(&admin, nobody).await;
    problem(
        "issue without entry",
        &r,
        StatusCode::FORBIDDEN,
        "no_entry",
        &[nobody],
    );
    let r = post(&admin, "/v1/tokens", json!({"spiffe_id": nobody})).await;
    problem(
        "token without entry",
        &r,
        StatusCode::FORBIDDEN,
        "no_entry",
        &[nobody],
    );

    // parent_id is a SPIFFE ID too (any trust domain, but valid).
    let r = post(
        &admin,
        "/v1/entries",
        json!({
            "spiffe_id": "spiffe://example.org/child",
            "selectors": ["unix:uid:1000"],
            "parent_id": "spiffe://example.org/node/",
        }),
    )
    .await;
    problem("parent_id", &r, bad, "invalid_spiffe_id", &["parent_id"]);

    // Selectors: never empty, each `type:value` with a lowercase type.
    let too_many: Vec<String> = (0..65).map(|i| format!("unix:uid:{i}")).collect();
    let long = format!("unix:{}", "a".repeat(600));
    let bad_selectors: Vec<(Value, &[&str])> = vec![
        (json!([]), &["selectors", "at least one"]),
        (json!(["unix"]), &["selectors", "\"unix\""]),
        (json!([":1000"]), &["selectors", "\":1000\""]),
        (json!(["unix:"]), &["selectors", "\"unix:\""]),
        (json!(["Unix:uid:1000"]), &["selectors", "Unix:uid:1000"]),
        (json!(["unix uid:1000"]), &["selectors"]),
        (json!(["unix:uid\n1000"]), &["selectors"]),
        (
            json!(["unix:uid:1000", "nocolon"]),
            &["selectors", "nocolon"],
        ),
        (json!([long]), &["selectors"]),
        (json!(too_many), &["selectors", "64"]),
    ];
    for (sel, detail) in bad_selectors {
        let body = json!({"spiffe_id": "spiffe://example.org/other", "selectors": sel});
        let r = post(&admin, "/v1/entries", body).await;
        problem(
            &format!("create, selectors {sel}"),
            &r,
            bad,
            "invalid_field",
            detail,
        );
        let body = json!({"spiffe_id": WEB, "selectors": sel});
        let r = call(&admin, Method::PUT, &entry_path, Some(body)).await;
        problem(
            &format!("update, selectors {sel}"),
            &r,
            bad,
            "invalid_field",
            detail,
        );
    }
    assert_unchanged(&h, &before, "bad SPIFFE IDs and selectors").await;

    // The entry the updates targeted is as it was.
    let (s, now) = get(&admin, &entry_path).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(now, entry);
}

both_backends!(ids_and_selectors_refused);

/// Join tokens: unknown, wrong secret, malformed, expired, reused, raced.
async fn join_tokens_refused(db: Db) {
    let h = Harness::start(db).await;
    let entry = h.entry(WEB).await;
    let token = h.join_token(WEB).await;
    let (id, secret) = token
        .strip_prefix("tsj_")
        .and_then(|t| t.split_once('.'))
        .unwrap();
    let (id, secret) = (id.to_owned(), secret.to_owned());

    // An expired token, put straight into the store.
    let now = tessera_core::now_unix();
    let expired_id = tessera_ca::ca::random_id().unwrap();
    let expired_secret = "expired-token-secret-0123456789";
    h.store_token(TokenRow {
        id: expired_id.clone(),
        token_hash: sha256_hex(expired_secret.as_bytes()),
        entry_id: entry["id"].as_str().unwrap().to_owned(),
        expires_at: now - 60,
        used_at: None,
        created_at: now - 660,
    })
    .await;

    let anon = h.anonymous();
    let before = Counts::of(&h).await;
    let redeem = |t: String| {
        let anon = &anon;
        async move {
            post(
                anon,
                "/v1/certs/redeem",
                json!({"token": t, "csr": csr().1}),
            )
            .await
        }
    };
    let refused = StatusCode::FORBIDDEN;
    let code = "join_token_refused";

    let r = redeem(format!("tsj_{expired_id}.{expired_secret}")).await;
    problem("expired", &r, refused, code, &["join token", "expired"]);
    let r = redeem(format!(
        "tsj_{}.{secret}",
        tessera_ca::ca::random_id().unwrap()
    ))
    .await;
    problem("unknown id", &r, refused, code, &["join token", "unknown"]);
    let r = redeem(format!("tsj_{id}.{}", "A".repeat(secret.len()))).await;
    problem(
        "wrong secret",
        &r,
        refused,
        code,
        &["join token", "unknown"],
    );
    let r = redeem(format!("tsj_{id}.{expired_secret}")).await;
    problem("another token's secret", &r, refused, code, &["unknown"]);
    for bad in [
        String::new(),
        "not-a-token".into(),
        "tsj_abc.secret".into(),
        format!("tsj_{}.{secret}", "g".repeat(32)),
        format!("tsa_{id}.{secret}"),
        format!("tsj_{id}"),
        format!("tsj_{id}."),
        format!("tsj_{id}.{}", "a".repeat(129)),
        format!("tsj_{id}{secret}"),
    ] {
        let r = redeem(bad.clone()).await;
        problem(
            &format!("malformed {bad:?}"),
            &r,
            refused,
            code,
            &["join token", "malformed"],
        );
    }
    assert_unchanged(&h, &before, "refused join tokens").await;

    // None of that consumed the real token; it works once, then never again.
    let (s, v) = redeem(token.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let after_first = Counts::of(&h).await;
    assert_eq!(
        after_first.get("certificates"),
        before.get("certificates") + 1
    );
    let r = redeem(token.clone()).await;
    problem("reused", &r, refused, code, &["join token", "already used"]);
    assert_unchanged(&h, &after_first, "reused join token").await;

    // Eight concurrent redeems of one fresh token: exactly one wins.
    let token = h.join_token(WEB).await;
    let before = Counts::of(&h).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (c, token, barrier) = (h.anonymous(), token.clone(), barrier.clone());
            let body = json!({"token": token, "csr": csr().1});
            tokio::spawn(async move {
                barrier.wait().await;
                post(&c, "/v1/certs/redeem", body).await
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if r.0 == StatusCode::CREATED {
            created += 1;
        } else {
            problem("raced redeem", &r, refused, code, &["already used"]);
        }
    }
    assert_eq!(created, 1, "exactly one concurrent redeem may succeed");
    let after = Counts::of(&h).await;
    assert_eq!(after.get("certificates"), before.get("certificates") + 1);
    assert_eq!(after.get("audit_log"), before.get("audit_log") + 1);
    assert_eq!(after.get("join_tokens"), before.get("join_tokens"));
    assert_eq!(after.get("entries"), before.get("entries"));
    // The token is spent.
    let tid = token
        .strip_prefix("tsj_")
        .unwrap()
        .split('.')
        .next()
        .unwrap();
    let admin = h.operator(Role::Auditor).await;
    let (s, list) = get(&admin, "/v1/tokens").await;
    assert_eq!(s, StatusCode::OK);
    let row = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == tid)
        .unwrap();
    assert!(row["used_at"].is_string(), "{row}");
}

both_backends!(join_tokens_refused);

/// A CA nobody trusts, and a leaf from it for `spiffe_id` reusing `serial`
/// (so the ledger would know the serial if the TLS layer let it through).
fn foreign_leaf(spiffe_id: &str, serial: &str) -> (String, String) {
    use rcgen::{Issuer, KeyPair, SerialNumber};
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ca = tessera_test_support::spiffe_root_params("Tessera CA example.org");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = tessera_test_support::svid_params(spiffe_id);
    p.serial_number = Some(SerialNumber::from_slice(&hex::decode(serial).unwrap()));
    let cert = p.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Renewal with a revoked, foreign, expired or missing certificate, and after
/// the entry was deleted.
async fn renewals_refused(db: Db) {
    let h = Harness::start(db).await;
    let entry = h.entry(WEB).await;
    let (revoked_cert, revoked_key, revoked) = h.workload(WEB).await;
    let (live_cert, live_key, live) = h.workload(WEB).await;
    let admin = h.operator(Role::Admin).await;

    // Revoked.
    let (s, v) = revoke(&admin, json!({"serial": revoked["serial"]})).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Expired: signed by our own CA, recorded in the ledger, well-formed
    // (notBefore < notAfter) and expired 30 seconds ago. (Backdating by hours
    // is not possible: notBefore is clamped to the CA's own notBefore, which is
    // a minute ago, and a leaf with notBefore > notAfter is malformed rather
    // than expired.)
    let ca = h.auth.signing_ca();
    let expired_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let web_id = tessera_core::SpiffeId::new(WEB).unwrap();
    let now = tessera_core::now_unix();
    let attestation = json!({"method": "test"}).to_string();
    let hash = ring::digest::digest(&ring::digest::SHA256, attestation.as_bytes());
    let leaf = ca
        .sign_leaf(
            &LeafSpec {
                spiffe_id: &web_id,
                dns_names: &[],
                ip_addrs: &[],
                ttl_seconds: 20,
                skew_seconds: 0,
                attestation_hash: Some(hash.as_ref().try_into().unwrap()),
            },
            &expired_key,
            now - 50,
        )
        .unwrap();
    assert!(leaf.not_before < leaf.not_after && leaf.not_after < now);
    h.auth
        .store
        .record_certificate(
            NewCert {
                serial: leaf.serial.clone(),
                spiffe_id: WEB.into(),
                entry_id: entry["id"].as_str().unwrap().to_owned(),
                ca_id: ca.id.clone(),
                not_before: leaf.not_before,
                not_after: leaf.not_after,
                requested_by: "test".into(),
                attestation_hash: hex::encode(hash),
                attestation,
                der: leaf.der.to_vec(),
                node_spiffe_id: None,
            },
            vec![],
            test_audit("cert.issue", &leaf.serial),
        )
        .await
        .unwrap();
    let expired_pem = tessera_core::pem::encode("CERTIFICATE", &leaf.der);

    let before = Counts::of(&h).await;

    let r = renew(&h.with_cert(&revoked_cert, &revoked_key)).await;
    match r.0 {
        StatusCode::UNAUTHORIZED => problem("revoked", &r, r.0, "unauthenticated", &["revoked"]),
        _ => problem(
            "revoked",
            &r,
            StatusCode::FORBIDDEN,
            "renewal_refused",
            &["revoked"],
        ),
    }

    // A foreign CA's leaf for our SPIFFE ID with a serial the ledger knows:
    // the TLS handshake refuses it before any handler runs.
    let (foreign_cert, foreign_key) = foreign_leaf(WEB, live["serial"].as_str().unwrap());
    let res = h
        .with_cert(&foreign_cert, &foreign_key)
        .call(
            Method::POST,
            "/v1/certs/renew",
            Some(serde_json::to_vec(&json!({"csr": csr().1})).unwrap()),
        )
        .await;
    match res {
        Err(_) => {}
        Ok(r) => panic!(
            "foreign certificate got an HTTP answer: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ),
    }

    // Expired: the handshake refuses it, or at worst the server does.
    let res = h
        .with_cert(&expired_pem, &expired_key.serialize_pem())
        .call(
            Method::POST,
            "/v1/certs/renew",
            Some(serde_json::to_vec(&json!({"csr": csr().1})).unwrap()),
        )
        .await;
    if let Ok(r) = res {
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        assert!(
            (r.status == StatusCode::UNAUTHORIZED && v["code"] == "unauthenticated")
                || (r.status == StatusCode::FORBIDDEN && v["code"] == "renewal_refused"),
            "expired certificate: {} {v}",
            r.status
        );
    }

    // No client certificate on the mTLS-only route.
    let r = renew(&h.anonymous()).await;
    problem(
        "no certificate",
        &r,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        &["certificate"],
    );
    // An operator certificate is not a workload certificate.
    let r = renew(&admin).await;
    problem(
        "operator certificate",
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        &["workload"],
    );
    assert_unchanged(&h, &before, "refused renewals").await;

    // The entry is deleted: a live, unrevoked certificate no longer renews.
    let path = format!("/v1/entries/{}", entry["id"].as_str().unwrap());
    let (s, v) = delete(&admin, &path).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let before = Counts::of(&h).await;
    let r = renew(&h.with_cert(&live_cert, &live_key)).await;
    problem(
        "entry deleted",
        &r,
        StatusCode::FORBIDDEN,
        "renewal_refused",
        &["entry", "deleted"],
    );
    assert_unchanged(&h, &before, "renewal after entry deletion").await;
}

both_backends!(renewals_refused);

/// Request framing: body limit, unknown and missing fields, broken JSON,
/// wrong content type, unknown query parameters.
async fn framing_refused(db: Db) {
    let h = Harness::start(db).await;
    h.entry(WEB).await;
    let admin = h.operator(Role::Admin).await;
    let anon = h.anonymous();
    let before = Counts::of(&h).await;
    let bad = StatusCode::BAD_REQUEST;
    let entry_body = |extra: Value| {
        let mut b = json!({"spiffe_id": "spiffe://example.org/new", "selectors": ["unix:uid:1"]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        serde_json::to_vec(&b).unwrap()
    };

    // Over the 64 KiB body limit (valid JSON otherwise).
    let big = entry_body(json!({"note": "n".repeat(70 * 1024)}));
    let r = raw(&admin, Method::POST, "/v1/entries", big, "application/json").await;
    problem(
        "body over limit",
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &["limit"],
    );
    let big = serde_json::to_vec(&json!({"token": "x", "csr": "A".repeat(70 * 1024)})).unwrap();
    let r = raw(
        &anon,
        Method::POST,
        "/v1/certs/redeem",
        big,
        "application/json",
    )
    .await;
    problem(
        "redeem body over limit",
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &["limit"],
    );

    // Unknown, missing and mistyped fields.
    let cases: Vec<(&str, &str, Vec<u8>, &[&str])> = vec![
        (
            "unknown field",
            "/v1/entries",
            entry_body(json!({"colour": "red"})),
            &["colour"],
        ),
        (
            "missing field",
            "/v1/entries",
            br#"{"spiffe_id": "spiffe://example.org/new"}"#.to_vec(),
            &["selectors"],
        ),
        (
            "mistyped field",
            "/v1/entries",
            entry_body(json!({"selectors": "unix:uid:1"})),
            &["selectors"],
        ),
        (
            "negative ttl",
            "/v1/entries",
            entry_body(json!({"ttl_seconds": -5})),
            &["ttl_seconds"],
        ),
        (
            "unknown field on redeem",
            "/v1/certs/redeem",
            br#"{"token": "x", "csr": "y", "spiffe_id": "spiffe://example.org/web"}"#.to_vec(),
            &["spiffe_id"],
        ),
        (
            "unknown field on issue",
            "/v1/certs",
            br#"{"spiffe_id": "spiffe://example.org/web", "csr": "y", "is_ca": true}"#.to_vec(),
            &["is_ca"],
        ),
        (
            "unknown revocation reason",
            "/v1/revocations",
            br#"{"serial": "01", "reason": "because"}"#.to_vec(),
            &["reason"],
        ),
        (
            "JSON array instead of object",
            "/v1/entries",
            b"[]".to_vec(),
            &[],
        ),
    ];
    for (name, path, body, detail) in cases {
        let r = raw(&admin, Method::POST, path, body, "application/json").await;
        problem(name, &r, bad, "invalid_body", detail);
    }

    // Not JSON at all.
    for body in [
        &br#"{"spiffe_id": "spiffe://example.org/new", "selectors": ["#[..],
        b"{'spiffe_id': 'x'}",
        b"not json",
        b"",
        b"{\"spiffe_id\": \"spiffe://example.org/new\", \"selectors\": [\"unix:uid:1\"]}}",
    ] {
        let what = format!("malformed JSON {:?}", String::from_utf8_lossy(body));
        let r = raw(
            &admin,
            Method::POST,
            "/v1/entries",
            body,
            "application/json",
        )
        .await;
        problem(&what, &r, bad, "malformed_json", &[]);
    }

    // A valid JSON body with the wrong content type.
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let refused = |r: &(StatusCode, Value)| {
            let code = "unsupported_media_type";
            problem(
                ct,
                r,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code,
                &["application/json"],
            );
        };
        let r = raw(
            &admin,
            Method::POST,
            "/v1/entries",
            entry_body(json!({})),
            ct,
        )
        .await;
        refused(&r);
        let body = serde_json::to_vec(&json!({"token": "x", "csr": "y"})).unwrap();
        let r = raw(&anon, Method::POST, "/v1/certs/redeem", body, ct).await;
        refused(&r);
    }

    // Query parameters.
    for (q, detail) in [
        ("colour=red", &["colour"][..]),
        ("spiffe_id=x&colour=red", &["colour"]),
        ("limit=abc", &["limit"]),
        ("revoked=maybe", &["revoked"]),
        ("limit=0", &["limit"]),
        ("limit=1001", &["limit"]),
        ("expiring_within=-1", &["expiring_within"]),
    ] {
        let r = get(&admin, &format!("/v1/certs?{q}")).await;
        problem(
            &format!("GET /v1/certs?{q}"),
            &r,
            bad,
            "invalid_query",
            detail,
        );
    }
    assert_unchanged(&h, &before, "badly framed requests").await;
}

both_backends!(framing_refused);

/// Revocation requests naming no selector, several, or unknown things.
async fn revocations_refused(db: Db) {
    let h = Harness::start(db).await;
    let entry = h.entry(WEB).await;
    let (_, _, issued) = h.workload(WEB).await;
    let serial = issued["serial"].as_str().unwrap();
    let entry_id = entry["id"].as_str().unwrap();
    let issuer = h.operator(Role::Issuer).await;
    let before = Counts::of(&h).await;
    let bad = StatusCode::BAD_REQUEST;
    let one = &["serial|spiffe_id|entry_id", "exactly one"][..];

    for (name, body, status, code, detail) in [
        ("none", json!({}), bad, "invalid_field", one),
        (
            "reason only",
            json!({"reason": "key_compromise"}),
            bad,
            "invalid_field",
            one,
        ),
        (
            "serial and spiffe_id",
            json!({"serial": serial, "spiffe_id": WEB}),
            bad,
            "invalid_field",
            one,
        ),
        (
            "serial and entry_id",
            json!({"serial": serial, "entry_id": entry_id}),
            bad,
            "invalid_field",
            one,
        ),
        (
            "all three",
            json!({"serial": serial, "spiffe_id": WEB, "entry_id": entry_id}),
            bad,
            "invalid_field",
            one,
        ),
        (
            "serial not hex",
            json!({"serial": "not-hex"}),
            bad,
            "invalid_field",
            &["serial", "hex"][..],
        ),
        (
            "serial too long",
            json!({"serial": "ab".repeat(21)}),
            bad,
            "invalid_field",
            &["serial"][..],
        ),
        (
            "unknown serial",
            json!({"serial": tessera_ca::ca::random_id().unwrap()}),
            StatusCode::NOT_FOUND,
            "not_found",
            &["certificate"][..],
        ),
        (
            "unknown entry",
            json!({"entry_id": tessera_ca::ca::random_id().unwrap()}),
            StatusCode::NOT_FOUND,
            "not_found",
            &["entry"][..],
        ),
    ] {
        let r = revoke(&issuer, body).await;
        problem(name, &r, status, code, detail);
    }
    assert_unchanged(&h, &before, "refused revocations").await;

    // Nothing was revoked: the ledger and the CRL agree.
    let (s, list) = get(&issuer, "/v1/certs?revoked=true").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"], json!([]));
    let (s, cert) = get(&issuer, &format!("/v1/certs/{serial}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cert["revoked_at"], Value::Null);
    let (s, feed) = get(&issuer, "/v1/revocations?since=0").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(feed["revocations"], json!([]));
}

both_backends!(revocations_refused);
