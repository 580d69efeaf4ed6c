//! Direct mode with a platform token: a real `tessera-ca` trusting a
//! Kubernetes issuer (JWKS file), and a real `tessera-sidecar` holding a
//! projected service-account token in a file. The sidecar gets the entry
//! parented to the issuer; when its certificate is revoked it re-issues by
//! reading the token file again (the first token's `jti` is spent, so only a
//! fresh read can succeed).

mod common;

use common::*;
use hyper::Method;
use serde_json::json;
use tessera_core::now_unix;
use tessera_core::platform_jwt::mint::{SigningKey, token};
use tessera_test_support::CaBuilder;

const ISS: &str = "https://kubernetes.default.svc.cluster.local";

fn k8s_token(key: &SigningKey, jti: &str) -> String {
    let now = now_unix();
    let claims = json!({
        "iss": ISS, "aud": ["tessera"], "sub": "system:serviceaccount:shop:web",
        "iat": now - 5, "nbf": now - 5, "exp": now + 3600, "jti": jti,
        "kubernetes.io": {
            "namespace": "shop",
            "serviceaccount": {"name": "web", "uid": "sa-1"},
            "pod": {"name": "web-0", "uid": "pod-1"},
        }
    });
    token(key, json!({"kid": "k1"}), &claims)
}

fn serial_of(identity_page: &str) -> String {
    let body = identity_page.split("\r\n\r\n").nth(1).unwrap();
    let body = body.lines().find(|l| l.starts_with('{')).unwrap_or(body);
    serde_json::from_str::<serde_json::Value>(body).unwrap()["serial"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_identity_from_a_platform_token() {
    let key = SigningKey::es256();
    let dir = tempfile::tempdir().unwrap();
    let jwks = json!({"keys": [key.jwk("k1")]}).to_string();
    std::fs::write(dir.path().join("jwks.json"), jwks).unwrap();
    std::fs::write(
        dir.path().join("ca.toml"),
        format!(
            "[[attestation.jwt_issuers]]\nname = \"k8s\"\nkind = \"kubernetes\"\nissuer = \"{ISS}\"\n\
             audiences = [\"tessera\"]\njwks_file = \"{}\"\nrequire_jti = true\n",
            dir.path().join("jwks.json").display()
        ),
    )
    .unwrap();
    let ca = CaBuilder::new()
        .config(dir.path().join("ca.toml"))
        .start("tessera-ca");
    ca.call(
        Method::POST,
        "/v1/entries",
        Some(json!({"spiffe_id": "spiffe://example.org/web",
                    "selectors": ["k8s:ns:shop", "k8s:sa:web"],
                    "parent_id": "spiffe://example.org/tessera/issuer/k8s"})),
    )
    .await;

    let side = tempfile::tempdir().unwrap();
    let token_file = side.path().join("token");
    std::fs::write(&token_file, k8s_token(&key, "first")).unwrap();
    let app = echo_server().await;
    let cfg = format!(
        "{}platform_token_file = \"{}\"\n[renew]\nretry_min_ms = 100\nretry_max_ms = 400\n{}",
        base_config(&ca),
        token_file.display(),
        inbound("api", &app, "spiffe://example.org/web")
    );
    let s = Sidecar::spawn(&cfg, None, &[]);
    s.await_log("ready");
    let ident = s.admin_get("/identity").await;
    assert!(ident.contains("spiffe://example.org/web"), "{ident}");
    let first = serial_of(&ident);

    // The platform rotates the token; then the certificate is revoked: the
    // sidecar re-issues at once with the token now in the file.
    std::fs::write(&token_file, k8s_token(&key, "second")).unwrap();
    let installed = s.count_log("identity installed");
    ca.call(
        Method::POST,
        "/v1/revocations",
        Some(json!({"serial": first, "reason": "superseded"})),
    )
    .await;
    s.await_log("own certificate revoked");
    s.proc.wait_for("re-issue", DEADLINE, |o| {
        (o.stderr_count("identity installed") > installed).then_some(())
    });
    let second = serial_of(&s.admin_get("/identity").await);
    assert_ne!(first, second);
    // Never the token in the sidecar's log.
    let tok = std::fs::read_to_string(&token_file).unwrap();
    assert!(!s.proc.stderr_lines().iter().any(|l| l.contains(&tok[..40])));

    // Both issuances are in the ledger as platform-token attestations.
    let certs = ca
        .call(
            Method::GET,
            "/v1/certs?spiffe_id=spiffe://example.org/web",
            None,
        )
        .await;
    assert_eq!(certs["items"].as_array().unwrap().len(), 2, "{certs}");
}
