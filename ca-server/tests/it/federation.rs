//! Federation and OIDC discovery on both backends: the SPIFFE bundle
//! endpoint in both profiles (`https_spiffe`: the endpoint's X.509-SVID,
//! checked against the bundle and the configured SPIFFE ID; `https_web`:
//! the operator's files, reloaded when they change), its sequence rising
//! with each bundle change, GET only; and a JWT-SVID verified by PyJWT from
//! the discovery document and the JWKS alone.

use crate::both_backends;
use crate::common::{Clients, Db, Harness, post};
use crate::receiver::pki_for;
use hyper::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use tessera_ca::federation::fetch::{FetchError, fetch_bundle};
use tessera_core::api::Role;
use tessera_core::bundle::SpiffeBundle;
use tessera_core::client::Client;
use tessera_core::{SpiffeId, TrustDomain};
use tessera_test_support::poll_until;

const T: Duration = Duration::from_secs(10);

/// The port of the harness's bundle-endpoint listener.
fn bundle_endpoint_port(h: &Harness) -> u16 {
    h.running
        .as_ref()
        .unwrap()
        .public
        .bundle_endpoint
        .unwrap()
        .port()
}

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn spiffe_tls(h: &Harness, id: &str) -> rustls::ClientConfig {
    tessera_core::tls::bundle_endpoint_client_config(
        &h.auth.bundle().anchors,
        SpiffeId::new(id).unwrap(),
    )
    .unwrap()
}

fn web_tls(ca_pem: &str) -> rustls::ClientConfig {
    let roots = tessera_core::pem::certs(ca_pem.as_bytes()).unwrap();
    tessera_core::tls::webpki_client_config(&roots, None, true).unwrap()
}

const ENDPOINT_ID: &str = "spiffe://example.org/tessera/bundle-endpoint";

async fn bundle_endpoint_https_spiffe(db: Db) {
    let h = Harness::start_with(
        db,
        &[
            "federation.endpoint.listen=\"127.0.0.1:0\"",
            "federation.refresh_hint_seconds=60",
            "rotation.enabled=false",
        ],
    )
    .await;
    let port = bundle_endpoint_port(&h);
    let url = format!("https://127.0.0.1:{port}/");
    let b = fetch_bundle(&url, &td(), spiffe_tls(&h, ENDPOINT_ID), T)
        .await
        .unwrap();
    assert_eq!(b.x509_authorities, h.auth.bundle().anchors);
    assert_eq!(b.jwt_authorities.len(), 1);
    assert_eq!(b.refresh_hint, Some(60));
    let first = b.sequence.unwrap();
    assert!(first >= 1);
    // The same document as /v1/bundle?format=jwks, parsed by the one parser.
    let api = h.fetch("/v1/bundle?format=jwks").await;
    assert_eq!(SpiffeBundle::parse(&td(), &api.body).unwrap(), b);

    // The endpoint's identity is checked: another expected ID is refused.
    let e = fetch_bundle(&url, &td(), spiffe_tls(&h, "spiffe://example.org/web"), T).await;
    assert!(matches!(e, Err(FetchError::Transport(_))), "{e:?}");

    // GET only, one path; no client certificate needed or asked.
    let c = Client::new(&url, spiffe_tls(&h, ENDPOINT_ID), None).unwrap();
    let r = c
        .call(Method::POST, "/", Some(b"{}".to_vec()))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = c.call(Method::GET, "/v1/entries", None).await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // A bundle change (a prepared generation) raises the sequence by one.
    let admin = h.operator(Role::Admin).await;
    let (s, v) = post(&admin, "/v1/ca/prepare", None).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let b2 = fetch_bundle(&url, &td(), spiffe_tls(&h, ENDPOINT_ID), T)
        .await
        .unwrap();
    assert_eq!(b2.sequence, Some(first + 1));
    assert_eq!(b2.x509_authorities.len(), 2);
    assert_eq!(b2.jwt_authorities.len(), 2);
}
both_backends!(bundle_endpoint_https_spiffe);

async fn bundle_endpoint_https_web(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("web.crt"), dir.path().join("web.key"));
    let one = pki_for("localhost");
    std::fs::write(&cert, &one.cert_pem).unwrap();
    std::fs::write(&key, &one.key_pem).unwrap();
    let sets = [
        "federation.endpoint.listen=\"127.0.0.1:0\"".to_owned(),
        "federation.endpoint.profile=\"https_web\"".to_owned(),
        format!("federation.endpoint.cert_file=\"{}\"", cert.display()),
        format!("federation.endpoint.key_file=\"{}\"", key.display()),
        "federation.endpoint.reload_seconds=1".to_owned(),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let h = Harness::start_with(db, &sets).await;
    let port = bundle_endpoint_port(&h);
    let url = format!("https://localhost:{port}");
    let b = fetch_bundle(&url, &td(), web_tls(&one.ca_pem), T)
        .await
        .unwrap();
    assert_eq!(b.x509_authorities, h.auth.bundle().anchors);

    // New files (another web CA): served without a restart.
    let two = pki_for("localhost");
    std::fs::write(&key, &two.key_pem).unwrap();
    std::fs::write(&cert, &two.cert_pem).unwrap();
    poll_until(T, "the reloaded web certificate", || {
        let (url, tls) = (url.clone(), web_tls(&two.ca_pem));
        async move { fetch_bundle(&url, &td(), tls, T).await.ok() }
    })
    .await;
    let old = fetch_bundle(&url, &td(), web_tls(&one.ca_pem), T).await;
    assert!(old.is_err(), "the old certificate is gone");
}
both_backends!(bundle_endpoint_https_web);

async fn oidc_discovery_pyjwt(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = (
        dir.path().join("oidc.crt"),
        dir.path().join("oidc.key"),
        dir.path().join("oidc-ca.pem"),
    );
    let web = pki_for("oidc.test");
    std::fs::write(&cert, &web.cert_pem).unwrap();
    std::fs::write(&key, &web.key_pem).unwrap();
    std::fs::write(&ca, &web.ca_pem).unwrap();
    let issuer = "https://oidc.test/tessera";
    let sets = [
        format!("oidc_discovery.issuer=\"{issuer}\""),
        "oidc_discovery.listen=\"127.0.0.1:0\"".to_owned(),
        format!("oidc_discovery.cert_file=\"{}\"", cert.display()),
        format!("oidc_discovery.key_file=\"{}\"", key.display()),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let h = Harness::start_with(db, &sets).await;
    let port = h
        .running
        .as_ref()
        .unwrap()
        .public
        .oidc_discovery
        .unwrap()
        .port();
    h.entry("spiffe://example.org/web").await;
    let (c, k, _) = h.workload("spiffe://example.org/web").await;
    let (s, v) = post(
        &h.with_cert(&c, &k),
        "/v1/jwt-svids",
        json!({"audience": ["db"]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    // The claims carry the configured issuer.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
    assert_eq!(claims["iss"], issuer);
    claims["sub"] = "spiffe://example.org/admin".into();
    parts[1] = b64.encode(claims.to_string());
    let tampered = parts.join(".");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/oidc_verify.py");
    let out = std::process::Command::new(tessera_test_support::python::venv_python())
        .arg(script)
        .args([issuer, &port.to_string()])
        .arg(&ca)
        .args(["db", &token, &tampered])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "verified spiffe://example.org/web"
    );
}
both_backends!(oidc_discovery_pyjwt);
