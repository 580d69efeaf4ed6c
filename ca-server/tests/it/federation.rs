//! Federation and OIDC discovery on both backends: the SPIFFE bundle
//! endpoint in both profiles (`https_spiffe`: the endpoint's X.509-SVID,
//! checked against the bundle and the configured SPIFFE ID; `https_web`:
//! the operator's files, reloaded when they change), its sequence rising
//! with each bundle change, GET only; and a JWT-SVID verified by PyJWT from
//! the discovery document and the JWKS alone.

use crate::both_backends;
use crate::common::{Clients, Db, Harness, get, post};
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

// ---- federation relationships (issue 16, item 2) ----------------------------

const OTHER_ENDPOINT_ID: &str = "spiffe://other.org/tessera/bundle-endpoint";

fn other() -> TrustDomain {
    TrustDomain::new("other.org").unwrap()
}

/// B: a second CA, for `other.org`, serving its bundle on `https_spiffe`
/// with a 2 s refresh hint.
async fn other_org(db: Db) -> Harness {
    Harness::start_with(
        db,
        &[
            "trust_domain=\"other.org\"",
            "federation.endpoint.listen=\"127.0.0.1:0\"",
            "federation.refresh_hint_seconds=2",
            "rotation.enabled=false",
        ],
    )
    .await
}

/// `h`'s X.509 authorities as PEM: a bootstrap bundle handed over out of band.
fn anchors_pem(h: &Harness) -> String {
    tessera_core::pem::encode_certs(h.auth.bundle().anchors.iter().map(|c| c.as_ref()))
}

/// Creates, as `admin`, the relationship with B (`other.org`) over its
/// `https_spiffe` endpoint, bootstrapped with B's authorities.
async fn federate_with(admin: &Client, b: &Harness) -> serde_json::Value {
    let url = format!("https://127.0.0.1:{}/", bundle_endpoint_port(b));
    let (s, v) = post(
        admin,
        "/v1/federation",
        json!({"trust_domain": "other.org", "bundle_endpoint_url": url,
            "profile": "https_spiffe", "endpoint_spiffe_id": OTHER_ENDPOINT_ID,
            "bootstrap_bundle": anchors_pem(b)}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

/// The relationship `td` as A's admin sees it.
async fn relationship(admin: &Client, td: &str) -> serde_json::Value {
    let (s, v) = get(admin, &format!("/v1/federation/{td}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

/// The foreign bundle a relationship holds, parsed.
fn held(v: &serde_json::Value) -> SpiffeBundle {
    SpiffeBundle::parse(&other(), v["bundle"].as_str().unwrap().as_bytes()).unwrap()
}

/// Two real CAs: A (example.org) federates with B (other.org) over B's
/// `https_spiffe` endpoint, bootstrapped with B's bundle; A's poller brings
/// B's bundle, then its rotation; B down: A keeps the last good bundle and
/// reports the relationship unhealthy, then stale; removal drops it.
async fn federation_follows_a_foreign_bundle_endpoint(db: Db) {
    let b = other_org(db).await;
    let a = Harness::start_with(
        db,
        &[
            "federation.poll_min_seconds=1",
            "federation.stale_after_seconds=3",
            "rotation.enabled=false",
        ],
    )
    .await;
    let admin = a.operator(Role::Admin).await;
    let b_anchors = b.auth.bundle().anchors.clone();
    let v = federate_with(&admin, &b).await;
    assert_eq!(v["x509_authorities"], 1, "the bootstrap bundle is held");

    // The poller (not a refresh) brings B's bundle, sequence and hint.
    let b_seq = b.auth.bundle().sequence;
    let v = poll_until(T, "B's bundle at A", || {
        let admin = &admin;
        async move {
            let v = relationship(admin, "other.org").await;
            (v["sequence"] == b_seq).then_some(v)
        }
    })
    .await;
    assert_eq!(held(&v).x509_authorities, b_anchors);
    assert_eq!(held(&v).jwt_authorities.len(), 1);
    assert_eq!(v["refresh_hint_seconds"], 2);
    assert_eq!(v["healthy"], true, "{v}");
    assert!(v["last_error"].is_null());
    // Never merged: A's own bundle holds A's generation only.
    let own = SpiffeBundle::parse(&td(), &a.fetch("/v1/bundle?format=jwks").await.body).unwrap();
    assert_eq!(own.x509_authorities, a.auth.bundle().anchors);
    assert!(!own.x509_authorities.iter().any(|c| b_anchors.contains(c)));

    // B rotates (a prepared generation): A picks up the next sequence, each
    // poll authenticated by the bundle the previous one brought.
    let b_admin = b.operator(Role::Admin).await;
    let (s, p) = post(&b_admin, "/v1/ca/prepare", None).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let v = poll_until(T, "B's rotation at A", || {
        let admin = &admin;
        async move {
            let v = relationship(admin, "other.org").await;
            (v["sequence"] == b_seq + 1).then_some(v)
        }
    })
    .await;
    assert_eq!(held(&v).x509_authorities, b.auth.bundle().anchors);
    assert_eq!(held(&v).x509_authorities.len(), 2);
    let m = poll_until(T, "the sequence metric", || {
        let c = a.anonymous();
        async move {
            let m = tessera_test_support::Metrics::fetch(&c).await;
            let s = m.value(
                "tessera_federation_bundle_sequence",
                &[("trust_domain", "other.org")],
            );
            (s == Some((b_seq + 1) as f64)).then_some(m)
        }
    })
    .await;
    assert_eq!(
        m.value(
            "tessera_federation_healthy",
            &[("trust_domain", "other.org")]
        ),
        Some(1.0)
    );
    let records = crate::common::audit_log(&admin).await;
    let actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
    assert!(actions.contains(&"federation.create"), "{actions:?}");
    assert!(
        actions
            .iter()
            .filter(|a| **a == "federation.bundle")
            .count()
            >= 2,
        "each new foreign bundle is audited: {actions:?}"
    );

    // B down: a refresh fails clearly, the last good bundle stays.
    let kept = v["bundle"].clone();
    let mut b = b;
    b.running.take().unwrap().shutdown(T).await;
    let (s, e) = post(&admin, "/v1/federation/other.org/refresh", None).await;
    crate::common::assert_problem(
        s,
        &e,
        StatusCode::BAD_GATEWAY,
        "bundle_endpoint_unreachable",
    );
    assert!(e["detail"].as_str().unwrap().contains("other.org"), "{e}");
    let v = relationship(&admin, "other.org").await;
    assert_eq!(v["bundle"], kept);
    assert_eq!(v["sequence"], b_seq + 1);
    assert_eq!(v["healthy"], false);
    assert!(v["last_error"].is_string(), "{v}");
    assert!(v["failures"].as_i64().unwrap() >= 1);
    // ... and once no poll has succeeded for stale_after_seconds, `tessera
    // ca status` warns (GET /v1/ca) and the list says so.
    let status = poll_until(T, "a stale warning", || {
        let admin = &admin;
        async move {
            let (_, s) = get(admin, "/v1/ca").await;
            s["stale_federations"]
                .as_array()
                .is_some_and(|w| !w.is_empty())
                .then_some(s)
        }
    })
    .await;
    let warning = status["stale_federations"][0].as_str().unwrap();
    assert!(warning.contains("other.org"), "{warning}");
    let (_, list) = get(&admin, "/v1/federation").await;
    assert_eq!(list["items"][0]["stale"], true, "{list}");
    assert_eq!(list["items"][0]["bundle"], kept);
    let m = tessera_test_support::Metrics::fetch(&a.anonymous()).await;
    assert_eq!(
        m.value(
            "tessera_federation_healthy",
            &[("trust_domain", "other.org")]
        ),
        Some(0.0)
    );
    assert!(m.sum("tessera_federation_polls_total", &[("outcome", "failed")]) >= 1.0);

    // Removal: gone from the list, the status and the metrics.
    let (s, _) = crate::common::delete(&admin, "/v1/federation/other.org").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = get(&admin, "/v1/federation/other.org").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, status) = get(&admin, "/v1/ca").await;
    assert!(status.get("stale_federations").is_none(), "{status}");
    poll_until(T, "the metric series removed", || {
        let c = a.anonymous();
        async move {
            let m = tessera_test_support::Metrics::fetch(&c).await;
            m.value(
                "tessera_federation_healthy",
                &[("trust_domain", "other.org")],
            )
            .is_none()
            .then_some(())
        }
    })
    .await;
}
both_backends!(federation_follows_a_foreign_bundle_endpoint);

/// Bad input refused with a clear error, changing nothing: relationships
/// that cannot be right, and fetched bundles that break the bundle rules
/// (served by a stand-in `https_web` endpoint the test controls).
async fn federation_refuses_bad_input(db: Db) {
    use std::sync::{Arc, Mutex};
    let b = other_org(db).await;
    let good = b.fetch("/v1/bundle?format=jwks").await.body;
    let serving = Arc::new(Mutex::new(good.clone()));
    let rcv = crate::receiver::start(crate::receiver::Mode::Serve(serving.clone()), 0).await;
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("web-roots.pem");
    std::fs::write(&roots, &rcv.ca_pem).unwrap();
    let roots_set = format!("federation.web_roots_file=\"{}\"", roots.display());
    // Polls only when asked (the first, at creation, aside).
    let a = Harness::start_with(
        db,
        &[
            &roots_set,
            "federation.poll_min_seconds=3600",
            "federation.poll_max_seconds=3600",
        ],
    )
    .await;
    let admin = a.operator(Role::Admin).await;
    let pem = anchors_pem(&b);
    let audit_before = a.count("audit_log").await;
    let spiffe = |extra: serde_json::Value| {
        let mut r = json!({"trust_domain": "other.org", "bundle_endpoint_url": "https://localhost:1/",
            "profile": "https_spiffe", "endpoint_spiffe_id": OTHER_ENDPOINT_ID, "bootstrap_bundle": pem});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    let own_pem = a.auth.bundle().pem.clone();
    let (field, bad) = ("invalid_field", "wrong_trust_domain");
    #[rustfmt::skip]
    let cases = [
        (spiffe(json!({"trust_domain": "example.org"})), field, "own trust domain"),
        (spiffe(json!({"trust_domain": "Other.Org"})), field, "trust_domain"),
        (spiffe(json!({"bundle_endpoint_url": "http://x/"})), field, "https://"),
        (spiffe(json!({"profile": "https"})), field, "profile"),
        (spiffe(json!({"endpoint_spiffe_id": "spiffe://a.b/x"})), bad, "endpoint_spiffe_id"),
        (spiffe(json!({"bootstrap_bundle": null})), field, "bootstrap_bundle"),
        (spiffe(json!({"bootstrap_bundle": "{\"keys\": 1}"})), field, "\"keys\""),
        (spiffe(json!({"bootstrap_bundle": own_pem})), field, "domain example.org"),
        (spiffe(json!({"unknown": 1})), "invalid_body", "unknown"),
    ];
    for (body, code, says) in cases {
        let (s, v) = post(&admin, "/v1/federation", body.clone()).await;
        assert_eq!(v["code"], code, "{body}: {v}");
        assert!(s.is_client_error(), "{body}: {s}");
        assert!(v["detail"].as_str().unwrap().contains(says), "{body}: {v}");
    }
    assert_eq!(a.count("federation_relationships").await, 0);
    assert_eq!(
        a.count("audit_log").await,
        audit_before,
        "refusals record nothing"
    );

    // A good https_web relationship; a duplicate is refused.
    let url = rcv.url("/bundle");
    let web =
        json!({"trust_domain": "other.org", "bundle_endpoint_url": &url, "profile": "https_web"});
    let (s, v) = post(&admin, "/v1/federation", web.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = post(&admin, "/v1/federation", web).await;
    crate::common::assert_problem(s, &v, StatusCode::CONFLICT, "conflict");
    let (s, v) = post(&admin, "/v1/federation/other.org/refresh", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let first = relationship(&admin, "other.org").await;
    assert_eq!(held(&first).x509_authorities, b.auth.bundle().anchors);

    // Updates are validated like creation, and a refused one changes nothing.
    let path = "/v1/federation/other.org";
    for (body, code) in [
        (json!({"bundle_endpoint_url": "ftp://x"}), "invalid_field"),
        (json!({"profile": "https_spiffe"}), "invalid_field"),
        (
            json!({"endpoint_spiffe_id": OTHER_ENDPOINT_ID}),
            "invalid_field",
        ),
        (json!({"bootstrap_bundle": "junk"}), "invalid_field"),
        (json!({"trust_domain": "x.org"}), "invalid_body"),
    ] {
        let (s, v) =
            crate::common::call(&admin, hyper::Method::PUT, path, Some(body.clone())).await;
        crate::common::assert_problem(s, &v, StatusCode::BAD_REQUEST, code);
    }
    let (s, v) = crate::common::call(
        &admin,
        hyper::Method::PUT,
        "/v1/federation/none.org",
        Some(json!({})),
    )
    .await;
    crate::common::assert_problem(s, &v, StatusCode::NOT_FOUND, "not_found");
    let unchanged = relationship(&admin, "other.org").await;
    assert_eq!(unchanged["bundle_endpoint_url"], url);
    assert_eq!(unchanged["bundle"], first["bundle"]);

    // Documents the bundle rules refuse: each poll fails, nothing changes
    // but the health record.
    let doc: serde_json::Value = serde_json::from_slice(&good).unwrap();
    let x5c = doc["keys"][0]["x5c"][0].clone();
    let mut two_certs = doc.clone();
    two_certs["keys"][0]["x5c"] = json!([x5c, x5c]);
    let mut no_kid = doc.clone();
    let jwt = no_kid["keys"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|k| k["use"] == "jwt-svid")
        .unwrap();
    jwt.as_object_mut().unwrap().remove("kid");
    let higher = |mut d: serde_json::Value| {
        d["spiffe_sequence"] = json!(1000);
        d.to_string()
    };
    let wrong_domain = a.fetch("/v1/bundle?format=jwks").await.body;
    for (served, says) in [
        (
            higher(serde_json::from_slice(&wrong_domain).unwrap()),
            "trust domain example.org",
        ),
        ("{\"spiffe_sequence\": 1000}".to_owned(), "\"keys\""),
        (higher(two_certs), "exactly one certificate"),
        (higher(no_kid), "without kid"),
        ("not json".to_owned(), "JSON"),
        (
            format!("{{\"keys\": [], \"pad\": \"{}\"}}", "x".repeat(2 << 20)),
            "larger than",
        ),
    ] {
        *serving.lock().unwrap() = served.into();
        let audit = a.count("audit_log").await;
        let (s, v) = post(&admin, "/v1/federation/other.org/refresh", None).await;
        crate::common::assert_problem(s, &v, StatusCode::BAD_GATEWAY, "foreign_bundle_refused");
        assert!(v["detail"].as_str().unwrap().contains(says), "{says}: {v}");
        let now = relationship(&admin, "other.org").await;
        assert_eq!(
            (&now["bundle"], &now["sequence"]),
            (&first["bundle"], &first["sequence"])
        );
        assert!(now["last_error"].as_str().unwrap().contains(says), "{now}");
        assert_eq!(
            a.count("audit_log").await,
            audit,
            "a refused bundle is not recorded"
        );
    }
    // An older or equal sequence is ignored (and the poll is a success).
    let mut older = doc.clone();
    older["spiffe_sequence"] = json!(0);
    older["keys"] = json!([]);
    *serving.lock().unwrap() = older.to_string().into();
    let (s, v) = post(&admin, "/v1/federation/other.org/refresh", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["bundle"], &v["sequence"]),
        (&first["bundle"], &first["sequence"])
    );
    assert!(v["last_error"].is_null(), "{v}");

    // Auditors read, only admins change.
    let auditor = a.operator(Role::Auditor).await;
    let (s, _) = get(&auditor, "/v1/federation").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = post(&auditor, "/v1/federation/other.org/refresh", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}
both_backends!(federation_refuses_bad_input);

/// Polls of the replica `c` serves, whatever their outcome.
async fn polls(c: &Client) -> f64 {
    tessera_test_support::Metrics::fetch(c).await.sum(
        "tessera_federation_polls_total",
        &[("trust_domain", "other.org")],
    )
}

/// Two replicas on one database: exactly one polls (the lease); when it
/// stops, the other takes over once the lease lapses.
async fn one_poller_among_replicas(db: Db) {
    let b = other_org(db).await;
    let sets = [
        "federation.poll_min_seconds=1".to_owned(),
        "federation.lease_seconds=2".to_owned(),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let mut a1 = Harness::start_with(db, &sets).await;
    let cfg = crate::common::config(&a1.db, a1.dir.path(), &sets);
    let auth2 = tessera_ca::authority::Authority::start(cfg).await.unwrap();
    let running2 = tessera_ca::server::start(auth2.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let c2 = tessera_test_support::client(
        &format!("https://localhost:{}", running2.addr.port()),
        &a1.anchors(),
        None,
        None,
    );
    let admin = a1.operator(Role::Admin).await;
    federate_with(&admin, &b).await;
    let c1 = a1.anonymous();
    let (p1, p2) = poll_until(T, "three polls", || {
        let (c1, c2) = (&c1, &c2);
        async move {
            let (p1, p2) = (polls(c1).await, polls(c2).await);
            (p1 + p2 >= 3.0).then_some((p1, p2))
        }
    })
    .await;
    assert_eq!(p1.min(p2), 0.0, "one replica polls: {p1} and {p2}");
    // The polling replica stops: the other takes over.
    let (rest, before) = if p1 > 0.0 {
        a1.running.take().unwrap().shutdown(T).await;
        let before = polls(&c2).await;
        (c2, before)
    } else {
        running2.shutdown(T).await;
        let before = polls(&c1).await;
        (c1, before)
    };
    poll_until(T, "the other replica polling", || {
        let rest = &rest;
        async move { (polls(rest).await > before).then_some(()) }
    })
    .await;
}
both_backends!(one_poller_among_replicas);

/// Issue 16 item 3 (start): entries name the foreign trust domains their
/// workloads receive bundles of; each must have a relationship.
async fn entries_federate_with_known_domains(db: Db) {
    let a = Harness::start(db).await;
    let admin = a.operator(Role::Admin).await;
    let entry = |fw: serde_json::Value| {
        json!({"spiffe_id": "spiffe://example.org/web", "selectors": ["unix:uid:1"],
            "federates_with": fw})
    };
    for (fw, says) in [
        (
            json!(["other.org"]),
            "no federation relationship with other.org",
        ),
        (json!(["example.org"]), "own trust domain"),
        (json!(["Other.Org"]), "federates_with"),
    ] {
        let (s, v) = post(&admin, "/v1/entries", entry(fw)).await;
        crate::common::assert_problem(s, &v, StatusCode::BAD_REQUEST, "invalid_field");
        assert!(v["detail"].as_str().unwrap().contains(says), "{v}");
    }
    assert_eq!(a.count("entries").await, 0);
    let (s, v) = post(
        &admin,
        "/v1/federation",
        json!({"trust_domain": "other.org", "bundle_endpoint_url": "https://localhost:1/",
            "profile": "https_web"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, e) = post(
        &admin,
        "/v1/entries",
        entry(json!(["other.org", "other.org"])),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    assert_eq!(e["federates_with"], json!(["other.org"]));
    let path = format!("/v1/entries/{}", e["id"].as_str().unwrap());
    let (_, shown) = get(&admin, &path).await;
    assert_eq!(shown["federates_with"], json!(["other.org"]));
    let (s, u) =
        crate::common::call(&admin, hyper::Method::PUT, &path, Some(entry(json!([])))).await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u["federates_with"], json!([]));
}
both_backends!(entries_federate_with_known_domains);
