//! Platform-token (JWT) attestation: the tests mint their own tokens (ES256
//! and EdDSA with ring keys, RS256 with an RSA key made by `openssl
//! genpkey`) and present them to a real server. Every refusal answers a
//! clear problem, issues nothing and writes an `attestation.refuse` audit
//! record; a `jti` is single-use; JWKS served over HTTPS is refreshed on an
//! unknown `kid` at most once per window.

use crate::both_backends;
use crate::common::{
    Clients, Db, Harness, TestDb, assert_problem, config, create_entry, csr, get, post, strs,
};
use crate::receiver;
use bytes::Bytes;
use http_body_util::Full;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sqlx::Row;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tessera_ca::config::JwtIssuerConfig;
use tessera_core::api::Role;
use tessera_core::now_unix;
use tessera_test_support::{SigningKey, hs256, jwks, token, unsigned};

const OIDC_ISS: &str = "https://ci.example.test";
const K8S_ISS: &str = "https://kubernetes.default.svc.cluster.local";
const WEB: &str = "spiffe://example.org/web";

fn oidc_claims(sub: &str, jti: &str) -> Value {
    let now = now_unix();
    json!({"iss": OIDC_ISS, "aud": "tessera", "sub": sub, "iat": now - 5, "nbf": now - 5,
           "exp": now + 600, "jti": jti})
}

fn k8s_claims(ns: &str, sa: &str, node: &str, jti: &str) -> Value {
    let now = now_unix();
    json!({
        "iss": K8S_ISS, "aud": ["tessera"], "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "iat": now - 5, "nbf": now - 5, "exp": now + 3600, "jti": jti,
        "kubernetes.io": {
            "namespace": ns,
            "serviceaccount": {"name": sa, "uid": "sa-uid-1"},
            "pod": {"name": format!("{sa}-pod"), "uid": "pod-uid-1"},
            "node": {"name": node, "uid": "node-uid-1"},
            "warnafter": now + 3000,
        }
    })
}

fn issuer(name: &str, iss: &str, kind: &str) -> JwtIssuerConfig {
    JwtIssuerConfig {
        name: name.into(),
        issuer: iss.into(),
        audiences: vec!["tessera".into()],
        kind: kind.into(),
        ..Default::default()
    }
}

/// Starts a server with these issuers (a `jwks_file` of "FILE:<doc>" is
/// written to the data directory first).
async fn start(db: Db, issuers: Vec<JwtIssuerConfig>) -> Harness {
    start_with(db, issuers, &[]).await
}

/// [`start`] with extra `--set` style overrides.
async fn start_with(db: Db, issuers: Vec<JwtIssuerConfig>, sets: &[&str]) -> Harness {
    let tdb = TestDb::new(db).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&tdb, dir.path(), sets);
    for (n, mut i) in issuers.into_iter().enumerate() {
        if let Some(doc) = i.jwks_file.strip_prefix("FILE:") {
            let p = dir.path().join(format!("jwks-{n}.json"));
            std::fs::write(&p, doc).unwrap();
            i.jwks_file = p.display().to_string();
        }
        cfg.attestation.jwt_issuers.push(i);
    }
    Harness::start_config(tdb, dir, cfg).await
}

async fn present(h: &Harness, route: &str, tok: &str) -> (StatusCode, Value) {
    let (_key, csr) = csr();
    post(&h.anonymous(), route, json!({"token": tok, "csr": csr})).await
}

/// [`present`] at `/v1/svids/platform` on a task of its own (for races).
fn present_spawned(h: &Harness, tok: String) -> tokio::task::JoinHandle<(StatusCode, Value)> {
    let (client, (_key, csr)) = (h.anonymous(), csr());
    let body = json!({"token": tok, "csr": csr});
    tokio::spawn(async move { post(&client, "/v1/svids/platform", body).await })
}

/// An entry for `web` (selector `jwt:sub:web`) parented to the JWT issuer `issuer`.
async fn web_under_issuer(h: &Harness, issuer: &str) {
    let parent = format!("spiffe://example.org/tessera/issuer/{issuer}");
    entry(h, WEB, &["jwt:sub:web"], &parent).await;
}

async fn refusals_audited(h: &Harness) -> i64 {
    let mut c = h.db.raw().await;
    sqlx::query("SELECT COUNT(*) FROM audit_log WHERE action = 'attestation.refuse'")
        .fetch_one(&mut c)
        .await
        .unwrap()
        .get::<i64, _>(0)
}

async fn entry(h: &Harness, spiffe_id: &str, selectors: &[&str], parent: &str) {
    h.entry_with(json!({"spiffe_id": spiffe_id, "selectors": selectors, "parent_id": parent}))
        .await;
}

/// A server trusting the OIDC issuer `ci` with `keys` (key, kid), and the
/// entry for [`WEB`] under it (`jwt:sub:web`).
async fn ci_with_web(db: Db, keys: &[(&SigningKey, &str)]) -> Harness {
    ci_with_web_and(db, keys, &[]).await
}

/// [`ci_with_web`] with extra `--set` style overrides.
async fn ci_with_web_and(db: Db, keys: &[(&SigningKey, &str)], sets: &[&str]) -> Harness {
    let mut ci = issuer("ci", OIDC_ISS, "oidc");
    ci.jwks_file = format!("FILE:{}", jwks(keys));
    let h = start_with(db, vec![ci], sets).await;
    web_under_issuer(&h, "ci").await;
    h
}

/// Garbage on the public attestation routes is counted, never audited:
/// 10,000 tokens that never verify (malformed, forged signature, unknown
/// issuer), on both routes, add no audit row; a good token still works.
async fn unverified_tokens_write_no_audit(db: Db) {
    let ec = SigningKey::es256();
    // 10,000 requests from one loopback source: the per-source rate limit of
    // the public routes would answer most of them 429 before they are read.
    let h = ci_with_web_and(
        db,
        &[(&ec, "ec")],
        &["limits.public_requests_per_second_per_source=0"],
    )
    .await;
    let before = h.count("audit_log").await;
    let (_key, csr) = csr();
    let forged = token(
        &SigningKey::es256(),
        json!({"kid": "ec"}),
        &oidc_claims("web", "f"),
    );
    let stranger = {
        let mut c = oidc_claims("web", "s");
        c["iss"] = json!("https://evil.test");
        token(&ec, json!({"kid": "ec"}), &c)
    };
    // One HTTP/2 connection carries them all (ALPN h2 offered).
    let tls = tessera_core::tls::api_client_config(&h.anchors(), None, true).unwrap();
    let client = tessera_core::client::Client::new(h.url(), tls, None).unwrap();
    let conn = client.connect().await.unwrap();
    const TOTAL: usize = 10_000;
    const AT_ONCE: usize = 50;
    let mut refused = 0;
    for batch in 0..TOTAL / AT_ONCE {
        let calls = (0..AT_ONCE).map(|i| {
            let n = batch * AT_ONCE + i;
            let route = ["/v1/nodes/attest", "/v1/svids/platform"][n % 2];
            let tok = match n % 3 {
                0 => format!("garbage.{n}.x"),
                1 => forged.clone(),
                _ => stranger.clone(),
            };
            let body = serde_json::to_vec(&json!({"token": tok, "csr": csr})).unwrap();
            let req = client
                .request(
                    hyper::Method::POST,
                    route,
                    Some(body),
                    "application/json",
                    "application/json",
                    &[],
                )
                .unwrap();
            let conn = conn.share().expect("an HTTP/2 connection");
            // Each answer is read to its end: a client that drops answers
            // unread resets their streams, and after 1,024 resets whose
            // DATA still arrives h2 closes the connection
            // (ENHANCE_YOUR_CALM), which is the client's doing, not the CA's.
            async move {
                let resp = conn.send(req).await.unwrap();
                tessera_core::client::read_limited(resp, 64 * 1024)
                    .await
                    .unwrap()
                    .status
            }
        });
        for status in futures_util::future::join_all(calls).await {
            assert_eq!(status, StatusCode::FORBIDDEN);
            refused += 1;
        }
    }
    assert_eq!(refused, TOTAL / AT_ONCE * AT_ONCE);
    assert_eq!(h.count("audit_log").await, before, "garbage was audited");
    // A token whose signature verified is still audited when refused (no
    // entry for `db`); a good one is issued.
    for (sub, want, audited) in [
        ("db", StatusCode::FORBIDDEN, 1),
        ("web", StatusCode::CREATED, 1),
    ] {
        let t = token(&ec, json!({"kid": "ec"}), &oidc_claims(sub, sub));
        let (s, v) = present(&h, "/v1/svids/platform", &t).await;
        assert_eq!(s, want, "{sub}: {v}");
        assert_eq!(refusals_audited(&h).await, audited, "{sub}");
    }
}

both_backends!(unverified_tokens_write_no_audit);

/// Direct mode with an OIDC issuer: every algorithm, every refusal.
async fn workload_tokens(db: Db) {
    let (ec, rs, ed) = (
        SigningKey::es256(),
        SigningKey::rs256(),
        SigningKey::eddsa(),
    );
    let h = ci_with_web(db, &[(&ec, "ec"), (&rs, "rsa"), (&ed, "ed")]).await;
    let route = "/v1/svids/platform";

    // Valid, with each algorithm.
    for (k, kid) in [(&ec, "ec"), (&rs, "rsa"), (&ed, "ed")] {
        let t = token(
            k,
            json!({"kid": kid}),
            &oidc_claims("web", &format!("ok-{kid}")),
        );
        let (s, v) = present(&h, route, &t).await;
        assert_eq!(s, StatusCode::CREATED, "{kid}: {v}");
        assert_eq!(v["spiffe_id"], WEB);
        let info = tessera_core::svid::check_leaf(
            &tessera_core::pem::certs(v["certificate"].as_str().unwrap().as_bytes()).unwrap()[0],
        )
        .unwrap();
        assert_eq!(info.spiffe_id.as_str(), WEB);
    }
    let issued = h.count("certificates").await;

    let now = now_unix();
    let with = |k: &str, val: Value| {
        let mut c = oidc_claims("web", &format!("bad-{k}"));
        c[k] = val;
        c
    };
    let rsa_pub = rs.public_der();
    let other = SigningKey::es256();
    // Signed with the trusted EC key under its own kid.
    let ec_token = |claims: &Value| token(&ec, json!({"kid": "ec"}), claims);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "forged signature",
            token(&other, json!({"kid": "ec"}), &oidc_claims("web", "f1")),
            "bad signature",
        ),
        (
            "wrong issuer",
            ec_token(&with("iss", json!("https://evil.test"))),
            "issuer is not trusted",
        ),
        (
            "wrong audience",
            ec_token(&with("aud", json!(["someone-else"]))),
            "audience",
        ),
        (
            "expired",
            ec_token(&with("exp", json!(now - 120))),
            "expired",
        ),
        (
            "nbf in the future",
            ec_token(&with("nbf", json!(now + 600))),
            "not yet valid (nbf",
        ),
        (
            "iat in the future",
            ec_token(&with("iat", json!(now + 600))),
            "not yet valid (iat",
        ),
        (
            "alg none",
            unsigned(
                json!({"alg": "none", "kid": "ec"}),
                &oidc_claims("web", "n1"),
            ),
            "\"none\" is not accepted",
        ),
        (
            "HS256 keyed with the RSA public key",
            hs256(
                json!({"alg": "HS256", "typ": "JWT", "kid": "rsa"}),
                &oidc_claims("web", "h1"),
                &rsa_pub,
            ),
            "\"HS256\" is not accepted",
        ),
        (
            "ES256 header on the RSA key",
            token(&ec, json!({"kid": "rsa"}), &oidc_claims("web", "c1")),
            "algorithm is taken from the key",
        ),
        (
            "unknown kid",
            token(&ec, json!({"kid": "nope"}), &oidc_claims("web", "u1")),
            "no key \"nope\"",
        ),
        (
            "oversized token",
            ec_token(&with("pad", json!("x".repeat(9000)))),
            "larger than",
        ),
        (
            "no entry matches",
            ec_token(&oidc_claims("db", "s1")),
            "no entry parented to spiffe://example.org/tessera/issuer/ci",
        ),
    ];
    let before = refusals_audited(&h).await;
    let mut audited = before;
    for (what, t, reason) in &cases {
        let (s, v) = present(&h, route, t).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{what}: {v}");
        let code = if *what == "no entry matches" {
            "no_entry"
        } else {
            "platform_token_refused"
        };
        assert_eq!(v["code"], code, "{what}: {v}");
        let detail = v["detail"].as_str().unwrap();
        assert!(detail.contains(reason), "{what}: {detail}");
        // The token is never echoed.
        assert!(
            !detail.contains(t.as_str()) && !detail.contains(&t[..20]),
            "{what}"
        );
        // Only a token whose signature verified is worth an audit record.
        let unverified = [
            "bad signature",
            "issuer is not trusted",
            "is not accepted",
            "algorithm is taken from the key",
            "no key",
            "larger than",
        ]
        .iter()
        .any(|r| reason.contains(r));
        audited += i64::from(!unverified);
        assert_eq!(refusals_audited(&h).await, audited, "{what}");
    }
    assert!(audited > before && audited < before + cases.len() as i64);
    assert_eq!(h.count("certificates").await, issued, "a refusal issued");

    // This issuer has no node_selectors: its tokens attest no node.
    let t = token(
        &ec,
        json!({"kid": "ec"}),
        &oidc_claims("host-1", "node-try"),
    );
    let (s, v) = present(&h, "/v1/nodes/attest", &t).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("not allowed to attest nodes"),
        "{v}"
    );
    assert_eq!(h.count("nodes").await, 0);

    // Replay: the same jti twice; the second is refused and issues nothing.
    let t = token(&ed, json!({"kid": "ed"}), &oidc_claims("web", "once"));
    let (s, v) = present(&h, route, &t).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let first = v;
    let audited = refusals_audited(&h).await;
    let (s, v) = present(&h, route, &t).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["code"], "platform_token_refused");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("jti was already used"),
        "{v}"
    );
    assert_eq!(refusals_audited(&h).await, audited + 1);
    assert_eq!(h.count("certificates").await, issued + 1);
    assert_eq!(h.count("jwt_jtis").await, 4);

    // Racing one token: of several concurrent presentations exactly one is
    // issued (the jti's primary key decides inside the commit).
    let racer = token(&ec, json!({"kid": "ec"}), &oidc_claims("web", "race"));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(present_spawned(&h, racer.clone()));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap().0 {
            StatusCode::CREATED => won += 1,
            s => assert_eq!(s, StatusCode::FORBIDDEN),
        }
    }
    assert_eq!(won, 1, "exactly one presentation of a jti wins");
    assert_eq!(h.count("certificates").await, issued + 2);

    // No audit record holds a token.
    let mut c = h.db.raw().await;
    let rows = sqlx::query("SELECT details FROM audit_log")
        .fetch_all(&mut c)
        .await
        .unwrap();
    for r in &rows {
        let d: String = r.get(0);
        assert!(!d.contains(&racer[..40]) && !d.contains(&t[..40]), "{d}");
    }

    // The attestation record names the issuer and the token's selectors,
    // never the token.
    let mut c = h.db.raw().await;
    let row = sqlx::query("SELECT attestation FROM certificates WHERE serial = $1")
        .bind(first["serial"].as_str().unwrap().to_owned())
        .fetch_one(&mut c)
        .await
        .unwrap();
    let att: Value = serde_json::from_str(&row.get::<String, _>(0)).unwrap();
    assert_eq!(att["method"], "platform_token");
    assert_eq!(att["issuer"], "ci");
    assert_eq!(att["alg"], "EdDSA");
    assert!(
        att["selectors"]
            .as_array()
            .unwrap()
            .contains(&json!("jwt:sub:web"))
    );
    assert!(!row.get::<String, _>(0).contains(&t[..40]));

    // Spent jtis are pruned once their tokens have expired.
    let far = now_unix() + 10 * 86400;
    h.auth
        .store
        .prune(
            tessera_ca::store::PruneBefore {
                expired: far,
                denials: 0,
            },
            1000,
        )
        .await
        .unwrap();
    assert_eq!(h.count("jwt_jtis").await, 0);

    // Such a certificate is renewed only with a fresh token.
    let (k2, csr2) = csr();
    let t = token(&ec, json!({"kid": "ec"}), &oidc_claims("web", "for-renew"));
    let (s, v) = post(&h.anonymous(), route, json!({"token": t, "csr": csr2})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let holder = h.with_cert(v["certificate"].as_str().unwrap(), &k2.serialize_pem());
    // It authenticates as a workload (revocation feed, denials).
    let (s, v) = get(&holder, "/v1/revocations?since=0&wait=1&bundle=1").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, csr3) = csr();
    let (s, v) = post(&holder, "/v1/certs/renew", json!({"csr": csr3})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["code"], "renewal_refused");
    assert!(v["detail"].as_str().unwrap().contains("fresh token"), "{v}");
}

both_backends!(workload_tokens);

/// Kubernetes tokens: node attestation (only for the agent's service
/// account), the node's selectors, ban; and a pod in direct mode.
async fn kubernetes_nodes_and_pods(db: Db) {
    let key = SigningKey::es256();
    let mut k8s = issuer("k8s", K8S_ISS, "kubernetes");
    k8s.jwks_file = format!("FILE:{}", jwks(&[(&key, "k1")]));
    k8s.node_selectors = vec!["k8s:ns:tessera".into(), "k8s:sa:agent".into()];
    k8s.require_jti = true;
    let h = start(db, vec![k8s]).await;
    let admin = h.operator(Role::Admin).await;
    let tok = |c: Value| token(&key, json!({"kid": "k1"}), &c);
    // A service-account token (namespace, account, node, jti) presented at `route`.
    let present_k8s = async |route: &str, ns: &str, sa: &str, node: &str, jti: &str| {
        present(&h, route, &tok(k8s_claims(ns, sa, node, jti))).await
    };

    // The agent's service account attests node-1.
    let (k, csr1) = csr();
    let (s, v) = post(
        &h.anonymous(),
        "/v1/nodes/attest",
        json!({"token": tok(k8s_claims("tessera", "agent", "node-1", "a1")), "csr": csr1}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let node_id = "spiffe://example.org/tessera/agent/k8s.node-1";
    assert_eq!(v["spiffe_id"], node_id);
    let node = h.with_cert(v["certificate"].as_str().unwrap(), &k.serialize_pem());
    let (s, v) = get(&admin, "/v1/nodes/k8s.node-1").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["attestation_type"], "platform_token");
    let sel = strs(&v["selectors"]);
    for want in [
        "k8s:ns:tessera",
        "k8s:sa:agent",
        "k8s:pod-name:agent-pod",
        "k8s:pod-uid:pod-uid-1",
        "k8s:node-name:node-1",
        "jwt:issuer-name:k8s",
    ] {
        assert!(sel.contains(&want), "{want} not in {sel:?}");
    }
    // The node certificate is a node's: it may list its entries.
    let (s, v) = get(&node, "/v1/agent/entries").await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Another service account cannot attest a node.
    let before = h.count("certificates").await;
    let (s, v) = present_k8s("/v1/nodes/attest", "shop", "web", "node-1", "a2").await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("platform_token_refused"))
    );
    assert!(
        v["detail"].as_str().unwrap().contains("node selector"),
        "{v}"
    );
    // A token without jti, with require_jti.
    let mut c = k8s_claims("tessera", "agent", "node-2", "x");
    c.as_object_mut().unwrap().remove("jti");
    let (s, v) = present(&h, "/v1/nodes/attest", &tok(c)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("jti"), "{v}");
    // A node entry under the issuer's prefix cannot be registered by hand.
    let (s, v) = post(
        &admin,
        "/v1/entries",
        json!({"spiffe_id": "spiffe://example.org/tessera/agent/k8s.node-9",
                    "selectors": ["node:name:x"]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Banned: re-attestation is refused, and audited.
    let (s, v) = post(&admin, "/v1/nodes/k8s.node-1/ban", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let audited = refusals_audited(&h).await;
    let (s, v) = present_k8s("/v1/nodes/attest", "tessera", "agent", "node-1", "a3").await;
    assert_problem(s, &v, StatusCode::FORBIDDEN, "node_refused");
    assert_eq!(refusals_audited(&h).await, audited + 1);
    assert_eq!(h.count("certificates").await, before);
    let (s, v) = get(&node, "/v1/agent/entries").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    // Unbanned: a fresh token attests again.
    let (s, _) = post(&admin, "/v1/nodes/k8s.node-1/unban", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = present_k8s("/v1/nodes/attest", "tessera", "agent", "node-1", "a4").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // A pod in direct mode gets the entry parented to the issuer whose
    // selectors its token carries.
    entry(
        &h,
        WEB,
        &["k8s:ns:shop", "k8s:sa:web"],
        "spiffe://example.org/tessera/issuer/k8s",
    )
    .await;
    let (s, v) = present_k8s("/v1/svids/platform", "shop", "web", "node-1", "p1").await;
    assert_eq!(
        (s, v["spiffe_id"].as_str()),
        (StatusCode::CREATED, Some(WEB)),
        "{v}"
    );
    let (s, v) = present_k8s("/v1/svids/platform", "shop", "db", "node-1", "p2").await;
    assert_problem(s, &v, StatusCode::FORBIDDEN, "no_entry");
}

both_backends!(kubernetes_nodes_and_pods);

/// A loopback HTTPS server serving a JWKS document it can swap, counting requests.
struct JwksServer {
    url: String,
    ca_file: std::path::PathBuf,
    doc: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    /// The number of requests served, to await rather than poll.
    served: tokio::sync::watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn jwks_server(doc: String) -> JwksServer {
    let pki = receiver::pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("jwks-ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let doc = Arc::new(Mutex::new(doc));
    let hits = Arc::new(AtomicUsize::new(0));
    let (served_tx, served) = tokio::sync::watch::channel(0usize);
    let served_tx = Arc::new(served_tx);
    let (d, n) = (doc.clone(), hits.clone());
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, d, n, w) = (acceptor.clone(), d.clone(), n.clone(), served_tx.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req| {
                    let count = n.fetch_add(1, Ordering::SeqCst) + 1;
                    w.send_replace(count);
                    let body = d.lock().unwrap().clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    JwksServer {
        url: format!("https://localhost:{port}/keys.json"),
        ca_file,
        doc,
        hits,
        served,
        task,
        _dir: dir,
    }
}

/// JWKS over HTTPS: fetched at start; a rotated key is picked up by the
/// refresh its unknown kid triggers; a burst of unknown kids costs at most
/// one fetch per window and is refused.
async fn jwks_url_refresh(db: Db) {
    let (a, b) = (SigningKey::es256(), SigningKey::es256());
    let rot = jwks_server(jwks(&[(&a, "a")])).await;
    let burst = jwks_server(jwks(&[(&a, "a")])).await;
    let url_issuer = |name: &str, iss: &str, s: &JwksServer| {
        let mut i = issuer(name, iss, "oidc");
        i.jwks_url = s.url.clone();
        i.jwks_ca_file = s.ca_file.display().to_string();
        i.jwks_min_refresh_seconds = 3600;
        i
    };
    let other_iss = "https://other.example.test";
    let h = start(
        db,
        vec![
            url_issuer("rot", OIDC_ISS, &rot),
            url_issuer("burst", other_iss, &burst),
        ],
    )
    .await;
    web_under_issuer(&h, "rot").await;
    assert_eq!(rot.hits.load(Ordering::SeqCst), 1, "fetched at start");
    assert_eq!(burst.hits.load(Ordering::SeqCst), 1, "fetched at start");
    let route = "/v1/svids/platform";

    let t = token(&a, json!({"kid": "a"}), &oidc_claims("web", "r1"));
    assert_eq!(present(&h, route, &t).await.0, StatusCode::CREATED);
    assert_eq!(
        rot.hits.load(Ordering::SeqCst),
        1,
        "a known kid costs no fetch"
    );

    // The issuer rotates to key b: the first token signed with it triggers
    // one refresh and is accepted.
    *rot.doc.lock().unwrap() = jwks(&[(&a, "a"), (&b, "b")]);
    let t = token(&b, json!({"kid": "b"}), &oidc_claims("web", "r2"));
    let (s, v) = present(&h, route, &t).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(rot.hits.load(Ordering::SeqCst), 2);
    // Within the window, another unknown kid is refused without a fetch.
    let t = token(&b, json!({"kid": "c"}), &oidc_claims("web", "r3"));
    let (s, v) = present(&h, route, &t).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(rot.hits.load(Ordering::SeqCst), 2);

    // A burst of tokens with invented kids: all refused, one fetch.
    let mut tasks = Vec::new();
    for n in 0..8 {
        let mut c = oidc_claims("web", &format!("b{n}"));
        c["iss"] = json!(other_iss);
        let t = token(&a, json!({"kid": format!("invented-{n}")}), &c);
        tasks.push(present_spawned(&h, t));
    }
    for t in tasks {
        let (s, v) = t.await.unwrap();
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        assert!(v["detail"].as_str().unwrap().contains("no key"), "{v}");
    }
    assert_eq!(
        burst.hits.load(Ordering::SeqCst),
        2,
        "one fetch for the whole burst"
    );
}

both_backends!(jwks_url_refresh);

/// An OIDC issuer attesting nodes: the node name comes from `sub`, only
/// tokens carrying the configured claim selector may attest, and a `sub`
/// that is not a SPIFFE path segment is refused.
async fn oidc_nodes(db: Db) {
    let key = SigningKey::eddsa();
    let mut ci = issuer("fleet", OIDC_ISS, "oidc");
    ci.jwks_file = format!("FILE:{}", jwks(&[(&key, "k")]));
    ci.selector_claims = vec!["role".into()];
    ci.node_selectors = vec!["jwt:claim:role:node".into()];
    let h = start(db, vec![ci]).await;
    let tok = |sub: &str, role: &str, jti: &str| {
        let mut c = oidc_claims(sub, jti);
        c["role"] = json!(role);
        token(&key, json!({"kid": "k"}), &c)
    };
    let (s, v) = present(&h, "/v1/nodes/attest", &tok("host-1", "node", "n1")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["spiffe_id"],
        "spiffe://example.org/tessera/agent/fleet.host-1"
    );
    let (s, v) = present(&h, "/v1/nodes/attest", &tok("host-2", "builder", "n2")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("node selector"),
        "{v}"
    );
    let (s, v) = present(&h, "/v1/nodes/attest", &tok("repo:acme/x", "node", "n3")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("path segment"),
        "{v}"
    );
    assert_eq!(h.count("nodes").await, 1);
}

both_backends!(oidc_nodes);

/// The periodic refresh (every `jwks_refresh_seconds`) fetches the JWKS
/// again without any token asking, and the rotated key is then accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_url_periodic_refresh() {
    let (a, b) = (SigningKey::es256(), SigningKey::es256());
    let srv = jwks_server(jwks(&[(&a, "a")])).await;
    let mut i = issuer("per", OIDC_ISS, "oidc");
    i.jwks_url = srv.url.clone();
    i.jwks_ca_file = srv.ca_file.display().to_string();
    i.jwks_refresh_seconds = 10;
    i.jwks_min_refresh_seconds = 3600;
    let h = start(Db::Sqlite, vec![i]).await;
    web_under_issuer(&h, "per").await;
    assert_eq!(srv.hits.load(Ordering::SeqCst), 1, "fetched at start");
    *srv.doc.lock().unwrap() = jwks(&[(&a, "a"), (&b, "b")]);
    let mut served = srv.served.clone();
    // The background task ticks every 10 s and refreshes once 10 s have passed.
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        served.wait_for(|n| *n >= 2),
    )
    .await
    .expect("no periodic refresh within 30 s")
    .unwrap();
    let t = token(&b, json!({"kid": "b"}), &oidc_claims("web", "p1"));
    let (s, v) = present(&h, "/v1/svids/platform", &t).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // The periodic fetch happened above with no token asking; the CA may
    // still have been reading its answer when the token arrived, so one
    // on-demand fetch is tolerated (no more: the window is an hour).
    assert!(srv.hits.load(Ordering::SeqCst) <= 3);
}
