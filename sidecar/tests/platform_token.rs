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
use tessera_test_support::{CaBuilder, SigningKey, kubernetes_issuer_config, kubernetes_token};

/// The pod's projected token.
fn k8s_token(key: &SigningKey, jti: &str) -> String {
    kubernetes_token(key, ("shop", "web", "web-0"), None, jti)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_identity_from_a_platform_token() {
    let key = SigningKey::es256();
    let dir = tempfile::tempdir().unwrap();
    let ca = CaBuilder::new()
        .config(kubernetes_issuer_config(dir.path(), &key, ""))
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
    let first = s.serial().await;

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
    let second = s.serial().await;
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
