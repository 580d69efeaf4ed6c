//! Tessera as an intermediate under an operator's root made by `openssl`:
//! the CSR flow (`ca csr` → operator signs → `ca import-signed`) and importing
//! an existing CA certificate and key. Leaves must verify against the
//! operator's root with openssl.

use crate::both_backends;
use crate::common::{Clients, Db, Harness, TestDb, config, get, post};
use hyper::{Method, StatusCode};
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_ca::authority::Authority;
use tessera_ca::ca::{import_signed_intermediate, prepare_intermediate};
use tessera_core::api::{CaState, Role};
use tessera_test_support::{
    CaBuilder, SPIFFE_INTERMEDIATE_EXT as CA_EXT, openssl, openssl_csr, openssl_ec_key,
    openssl_output, openssl_pkcs8_key as pkcs8_key, openssl_self_signed_ca,
};

/// webpki's verdict (the verifier Tessera's sidecars and API use for client
/// certificates) on `leaf` with `chain` under `anchors`.
fn webpki_verifies(
    anchors: &[CertificateDer<'static>],
    leaf: &CertificateDer<'static>,
    chain: &[CertificateDer<'static>],
) -> Result<(), rustls::Error> {
    let roots = Arc::new(tessera_core::tls::root_store(anchors).unwrap());
    let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots,
        tessera_core::tls::provider(),
    )
    .build()
    .unwrap();
    v.verify_client_cert(leaf, chain, rustls::pki_types::UnixTime::now())
        .map(|_| ())
}

fn certs_of(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    tessera_core::pem::certs(pem).unwrap()
}

/// An operator root (EC P-256) in `dir`: <name>.key, <name>.pem.
pub(crate) fn operator_root(dir: &Path, name: &str) {
    openssl_ec_key(dir, &format!("{name}.key"));
    openssl_self_signed_ca(
        dir,
        &format!("{name}.key"),
        &format!("{name}.pem"),
        &format!("/O=Operator/CN={name}"),
        &[],
    );
}

/// Issues a workload certificate through the harness and checks it with openssl
/// against `root.pem` (the intermediate travels in the chain).
async fn leaf_verifies_against_root(h: &Harness, dir: &Path) -> String {
    let (_, _, issued) = leaf_under_root(h, dir, "spiffe://example.org/web").await;
    issued["serial"].as_str().unwrap().to_owned()
}

/// Creates an entry for `id`, issues a leaf for it and checks it under
/// `root.pem` with openssl and webpki. Returns (cert PEM, key PEM, response).
async fn leaf_under_root(h: &Harness, dir: &Path, id: &str) -> (String, String, Value) {
    h.entry(id).await;
    let (cert, key, issued) = h.workload(id).await;
    let chain = issued["chain"].as_str().unwrap();
    assert!(
        !chain.is_empty(),
        "an intermediate's leaves carry the chain"
    );
    // The bundle is Tessera's own generations (the intermediate), not the
    // operator's root: trust follows the generations (issue 11, item 2).
    let bundle = tessera_core::pem::certs(&h.fetch("/v1/bundle").await.body).unwrap();
    let root = certs_of(&std::fs::read(dir.join("root.pem")).unwrap());
    assert!(
        bundle.contains(&certs_of(chain.as_bytes())[0]) && !bundle.contains(&root[0]),
        "the bundle is the intermediate, not the operator's root"
    );
    std::fs::write(dir.join("leaf.pem"), &cert).unwrap();
    std::fs::write(dir.join("chain.pem"), chain).unwrap();
    webpki_verifies(
        &certs_of(&std::fs::read(dir.join("root.pem")).unwrap()),
        &certs_of(cert.as_bytes())[0],
        &certs_of(chain.as_bytes()),
    )
    .expect("webpki accepts the leaf under the operator's root");
    let out = verify_under_root(dir, "chain.pem", "leaf.pem");
    assert!(
        out.status.success(),
        "openssl verify: {}",
        text(&out.stderr)
    );
    tessera_core::svid::check_tessera_leaf(&tessera_core::pem::certs(cert.as_bytes()).unwrap()[0])
        .unwrap();
    (cert, key, issued)
}

/// `openssl verify -x509_strict` of `leaf` under `root.pem` with the
/// intermediates in `untrusted` (files in `dir`).
fn verify_under_root(dir: &Path, untrusted: &str, leaf: &str) -> std::process::Output {
    let args = [
        "verify",
        "-x509_strict",
        "-CAfile",
        "root.pem",
        "-untrusted",
        untrusted,
        leaf,
    ];
    openssl_output(dir, &args)
}

/// Signs `csr` with the operator root `ca` into `out`: `-days`, an optional
/// extension section from `ext.cnf`-style text, and `-copy_extensions copy`
/// (keep what the CSR asks for) when `copy`.
pub(crate) fn sign_csr(
    dir: &Path,
    ca: &str,
    csr: &str,
    out: &str,
    days: &str,
    ext: Option<&str>,
    copy: bool,
) {
    let mut args: Vec<String> = [
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        &format!("{ca}.pem"),
        "-CAkey",
        &format!("{ca}.key"),
        "-CAcreateserial",
        "-days",
        days,
        "-out",
        out,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(ext) = ext {
        let f = format!("{out}.cnf");
        std::fs::write(dir.join(&f), format!("[v3_ca]\n{ext}")).unwrap();
        args.extend(["-extfile".into(), f, "-extensions".into(), "v3_ca".into()]);
    }
    if copy {
        args.extend(["-copy_extensions".into(), "copy".into()]);
    }
    openssl(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// The `cas` table and the audit log's length, to prove a refusal changed nothing.
async fn snapshot(db: &TestDb) -> (Vec<(String, String, Option<String>)>, i64) {
    use sqlx::Row;
    let mut c = db.raw().await;
    let cas = sqlx::query("SELECT id, state, cert_pem FROM cas ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&mut c)
        .await
        .unwrap()
        .get(0);
    (cas, n)
}

async fn csr_flow_under_openssl_root(db: Db) {
    let db = TestDb::new(db).await;
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let cfg = config(&db, data.path(), &[]);
    operator_root(dir, "root");
    operator_root(dir, "other");

    let (id, csr) = prepare_intermediate(&cfg).await.unwrap();
    // A pending intermediate is not silently replaced by a self-signed root.
    let err = Authority::start(cfg.clone())
        .await
        .err()
        .expect("start must wait for the import");
    assert!(err.to_string().contains("import-signed"), "{err}");
    // One successor at a time.
    let e = prepare_intermediate(&cfg).await.unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("CA {id} is already pending")),
        "{e}"
    );

    std::fs::write(dir.join("int.csr"), csr).unwrap();
    // The CSR asks for what Tessera needs and no name constraints (see ca::intermediate_csr).
    let text = openssl_output(dir, &["req", "-in", "int.csr", "-noout", "-text"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
    assert!(text.contains("URI:spiffe://example.org"), "{text}");
    assert!(!text.contains("Name Constraints"), "{text}");

    // A key that is not the pending CA's, signed properly.
    openssl_ec_key(dir, "stranger.key");
    openssl_csr(dir, "stranger.key", "/O=Tessera", "stranger.csr");
    sign_csr(
        dir,
        "root",
        "stranger.csr",
        "stranger.pem",
        "365",
        Some(CA_EXT.trim_start_matches("[v3_ca]\n")),
        false,
    );
    let ext = |extra: &str| format!("{}{extra}", CA_EXT.trim_start_matches("[v3_ca]\n"));
    let not_ca = "basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\nsubjectAltName=URI:spiffe://example.org\n";
    let no_certsign = "basicConstraints=critical,CA:true\nkeyUsage=critical,cRLSign,digitalSignature\nsubjectAltName=URI:spiffe://example.org\n";
    let uri_nc = ext("nameConstraints=critical,permitted;URI:example.org\n");
    // The pending CA's CSR signed wrongly: by another root, as no CA, without
    // keyCertSign, with a notAfter within a maximum-lifetime leaf
    // (issuance.max_ttl_seconds = one day), with URI name constraints.
    for (ca, out, days, ext) in [
        ("other", "wrong.pem", "365", ext("")),
        ("root", "not_ca.pem", "365", not_ca.to_owned()),
        ("root", "no_certsign.pem", "365", no_certsign.to_owned()),
        ("root", "short.pem", "1", ext("")),
        ("root", "uri_nc.pem", "365", uri_nc),
    ] {
        sign_csr(dir, ca, "int.csr", out, days, Some(&ext), false);
    }
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();

    let before = snapshot(&db).await;
    for (file, field, needle) in [
        ("stranger.pem", "--cert", "key does not match"),
        (
            "wrong.pem",
            "--cert",
            "not signed by any certificate in --chain or --bundle",
        ),
        // The operator's root itself is not the pending CA's certificate.
        ("root.pem", "--cert", "does not match"),
        (
            "not_ca.pem",
            "--cert",
            "basicConstraints must be present with cA=true",
        ),
        ("no_certsign.pem", "--cert", "keyCertSign must be set"),
        (
            "short.pem",
            "--cert",
            "expires before a maximum-lifetime leaf",
        ),
        ("uri_nc.pem", "--cert", "URI name constraints"),
    ] {
        let e = import_signed_intermediate(&cfg, &read(file), &read("root.pem"), None)
            .await
            .expect_err(file);
        let e = e.to_string();
        assert!(e.starts_with(field) && e.contains(needle), "{file}: {e}");
        assert_eq!(snapshot(&db).await, before, "{file} changed the store");
    }

    // Signed keeping the CSR's extensions (OpenSSL 3 `-copy_extensions copy`).
    sign_csr(dir, "root", "int.csr", "int.pem", "365", None, true);
    let done = import_signed_intermediate(&cfg, &read("int.pem"), &read("root.pem"), None)
        .await
        .unwrap();
    assert_eq!(done.id, id);
    assert_eq!(done.state, CaState::Active);
    assert!(!done.name_constrained);
    let int = tessera_core::svid::parse(&certs_of(&read("int.pem"))[0])
        .unwrap()
        .basic_constraints()
        .unwrap()
        .unwrap()
        .value
        .path_len_constraint;
    assert_eq!(int, Some(0), "the CSR's pathLen 0 was copied");
    let h = Harness::start_config(db, data, cfg).await;
    assert_eq!(h.auth.signing_ca().id, id);
    let status = h.auth.ca_status().await.unwrap();
    assert_eq!(status.cas[0].name_constrained, Some(false));
    leaf_verifies_against_root(&h, dir).await;
}

both_backends!(csr_flow_under_openssl_root);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_existing_intermediate_key_and_cert() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    operator_root(dir, "root");
    std::fs::write(dir.join("ext.cnf"), CA_EXT).unwrap();
    pkcs8_key(dir, "int");
    openssl_csr(
        dir,
        "int.key",
        "/O=Operator/CN=Tessera intermediate",
        "int.csr",
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "int.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-days",
            "365",
            "-extfile",
            "ext.cnf",
            "-extensions",
            "v3_ca",
            "-out",
            "int.pem",
        ],
    );
    let p = |f: &str| dir.join(f).display().to_string();
    let h = Harness::start_with(
        Db::Sqlite,
        &[
            &format!("ca.import_cert=\"{}\"", p("int.pem")),
            &format!("ca.import_key=\"{}\"", p("int.key")),
            &format!("ca.import_bundle=\"{}\"", p("root.pem")),
        ],
    )
    .await;
    let status = h.auth.ca_status().await.unwrap();
    assert_eq!(status.cas.len(), 1);
    assert_eq!(status.cas[0].kind, "intermediate");
    let serial = leaf_verifies_against_root(&h, dir).await;

    // Another child of the operator's root, copying a real workload's serial
    // and SPIFFE ID: not even the TLS layer accepts it (the anchors are
    // Tessera's intermediates), and were it let through, the ledger's exact-DER
    // check would refuse it.
    std::fs::write(
        dir.join("leaf.cnf"),
        "[v3_leaf]\nbasicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:spiffe://example.org/web\n",
    )
    .unwrap();
    pkcs8_key(dir, "forged");
    openssl_csr(dir, "forged.key", "/O=Tessera", "forged.csr");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "forged.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-set_serial",
            &format!("0x{serial}"),
            "-days",
            "1",
            "-extfile",
            "leaf.cnf",
            "-extensions",
            "v3_leaf",
            "-out",
            "forged.pem",
        ],
    );
    let forged = h.with_cert(
        &std::fs::read_to_string(dir.join("forged.pem")).unwrap(),
        &std::fs::read_to_string(dir.join("forged.key")).unwrap(),
    );
    for (method, path, body) in [
        (Method::GET, "/v1/revocations", None),
        (
            Method::POST,
            "/v1/certs/renew",
            Some(serde_json::json!({"csr": crate::common::csr().1}).to_string()),
        ),
    ] {
        // TLS 1.3: the server's refusal arrives after the client's Finished,
        // so it surfaces on the exchange, not the handshake.
        let r = forged
            .call(method, path, body.map(String::into_bytes))
            .await;
        assert!(
            r.is_err(),
            "forged certificate at {path}: {:?}",
            r.map(|r| r.status)
        );
    }
}

/// Name constraints an operator's root may add that webpki can process: DNS
/// names of entries and of the API server, and the API server's addresses.
const NC_DNS_IP: &str = "nameConstraints=critical,permitted;DNS:example.org,permitted;DNS:localhost,\
    permitted;IP:127.0.0.0/255.0.0.0\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";

/// A server running as an intermediate under `root.pem` in `dir` (signed for
/// `days` with CA_EXT, i.e. dropping whatever the CSR asked for). Returns the
/// harness and its configuration.
pub(crate) async fn intermediate_harness(
    db: Db,
    dir: &Path,
    sets: &[&str],
    days: &str,
) -> (Harness, tessera_ca::config::Config) {
    let db = TestDb::new(db).await;
    let data = tempfile::tempdir().unwrap();
    let cfg = config(&db, data.path(), sets);
    operator_root(dir, "root");
    let (_, csr) = prepare_intermediate(&cfg).await.unwrap();
    std::fs::write(dir.join("first.csr"), csr).unwrap();
    sign_csr(
        dir,
        "root",
        "first.csr",
        "first.pem",
        days,
        Some(CA_EXT.trim_start_matches("[v3_ca]\n")),
        false,
    );
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let done = import_signed_intermediate(&cfg, &read("first.pem"), &read("root.pem"), None)
        .await
        .unwrap();
    assert_eq!(
        (done.state, done.name_constrained),
        (CaState::Active, false)
    );
    (Harness::start_config(db, data, cfg.clone()).await, cfg)
}

/// Runs the real `tessera-ca` binary against the harness's database and data
/// directory (same KEK file), as an operator would beside a running server.
fn tessera_ca(h: &Harness, args: &[&str]) -> std::process::Output {
    CaBuilder::new()
        .data_dir(h.dir.path())
        .database(&h.db)
        .trust_domain("example.org")
        .log("warn")
        .command()
        .args(args)
        .output()
        .expect("running tessera-ca")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn ca_json(h: &Harness) -> Value {
    let (s, v) = get(&h.operator(Role::Admin).await, "/v1/ca").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn ca_entry<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["cas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("CA {id} missing: {v}"))
}

/// Rotation of the intermediate through the CSR flow while the server runs:
/// `ca csr` (pending) → the operator's openssl root signs → `ca import-signed`
/// (prepared, picked up by the running server) → `tessera ca rotate` activates
/// it after the overlap → leaves chain to the new intermediate and verify with
/// openssl and webpki → the old one retires and is removed once its leaves
/// have expired. Every step is audited.
async fn intermediate_rotation_through_csr(db: Db) {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let (h, _) = intermediate_harness(
        db,
        dir,
        &[
            "rotation.check_interval_seconds=1",
            "rotation.lease_seconds=3",
            "rotation.min_overlap_seconds=4",
        ],
        "365",
    )
    .await;
    let old = h.auth.signing_ca().id.clone();
    let (old_cert, old_key, old_issued) =
        leaf_under_root(&h, dir, "spiffe://example.org/before").await;
    let old_chain = old_issued["chain"].as_str().unwrap().to_owned();
    let mut watch = h.auth.ca_watch();
    watch.mark_unchanged();

    // The operator asks for a successor while the server runs.
    let csr_path = dir.join("next.csr").display().to_string();
    let out = tessera_ca(&h, &["ca", "csr", "--out", &csr_path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = text(&out.stdout);
    let next = line
        .strip_prefix("pending intermediate CA ")
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("unexpected output {line:?}"))
        .to_owned();
    tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .expect("the server notices the pending generation")
        .unwrap();
    watch.mark_unchanged();
    // One successor at a time; the API cannot make one for an intermediate.
    let again = dir.join("again.csr").display().to_string();
    let out = tessera_ca(&h, &["ca", "csr", "--out", &again]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("CA {next} is already pending")),
        "{}",
        text(&out.stderr)
    );
    let (s, v) = post(&h.operator(Role::Admin).await, "/v1/ca/prepare", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("tessera-ca ca csr"),
        "{v}"
    );
    assert_eq!(ca_entry(&ca_json(&h).await, &next)["state"], "pending");

    // The root signs it, keeping the CSR's extensions and adding name
    // constraints webpki can process.
    sign_csr(
        dir,
        "root",
        "next.csr",
        "next.pem",
        "365",
        Some(NC_DNS_IP),
        true,
    );
    let (cert, root) = (
        dir.join("next.pem").display().to_string(),
        dir.join("root.pem").display().to_string(),
    );
    let out = tessera_ca(
        &h,
        &["ca", "import-signed", "--cert", &cert, "--bundle", &root],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let imported = Instant::now();
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!("intermediate CA {next} is prepared")),
        "{said}"
    );
    assert!(said.contains("name_constrained: true"), "{said}");
    // The running server picks it up from the database (its CA poll).
    tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .expect("the server picks up the prepared generation")
        .unwrap();
    let noticed = imported.elapsed();
    eprintln!("prepared intermediate picked up by the running server after {noticed:?}");
    assert!(noticed < Duration::from_secs(3), "{noticed:?}");
    let out = tessera_ca(&h, &["ca", "csr", "--out", &again]);
    assert!(
        text(&out.stderr).contains(&format!("CA {next} is already prepared")),
        "{}",
        text(&out.stderr)
    );
    let v = ca_json(&h).await;
    assert_eq!(ca_entry(&v, &next)["state"], "prepared");
    assert_eq!(ca_entry(&v, &next)["name_constrained"], true);
    assert_eq!(ca_entry(&v, &old)["name_constrained"], false);
    assert_eq!(v["schedule"]["next"]["action"], "activate", "{v}");
    assert!(v["schedule"]["stalled"].is_null(), "{v}");
    let next_cert = certs_of(&std::fs::read(dir.join("next.pem")).unwrap());
    assert!(
        h.anchors().contains(&next_cert[0]) && h.anchors().len() == 2,
        "both intermediates are the anchors"
    );

    // Not before the overlap; `tessera ca rotate` then activates it.
    let (s, v) = post(
        &h.operator(Role::Admin).await,
        &format!("/v1/ca/{next}/activate"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("overlap"), "{v}");
    let (s, v) = post(&h.operator(Role::Admin).await, "/v1/ca/rotate", None).await;
    assert!(s.is_success(), "{s} {v}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while h.auth.signing_ca().id != next {
        tokio::time::timeout_at(deadline, watch.changed())
            .await
            .expect("the schedule activates the rotated intermediate")
            .unwrap();
    }
    let v = ca_json(&h).await;
    assert_eq!(ca_entry(&v, &old)["state"], "retired");
    assert_eq!(ca_entry(&v, &next)["state"], "active");

    // New leaves chain to the new intermediate; old leaves still renew.
    let (_, _, issued) = leaf_under_root(&h, dir, "spiffe://example.org/after").await;
    let chain = certs_of(issued["chain"].as_str().unwrap().as_bytes());
    assert!(
        tessera_core::svid::parse(&chain[0])
            .unwrap()
            .subject()
            .to_string()
            .contains(&next),
        "leaf chain does not start with the new intermediate"
    );
    let holder = h.with_cert(&format!("{old_cert}{old_chain}"), &old_key);
    let (s, v) = post(
        &holder,
        "/v1/certs/renew",
        json!({"csr": crate::common::csr().1}),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "renewal under the old intermediate: {v}"
    );
    let renewed = certs_of(v["certificate"].as_str().unwrap().as_bytes());
    webpki_verifies(
        &h.anchors(),
        &renewed[0],
        &certs_of(v["chain"].as_str().unwrap().as_bytes()),
    )
    .expect("the renewed leaf verifies under the new intermediate");

    // The old intermediate leaves once its leaves have expired (the clock,
    // straight in the database); the schedule removes it.
    h.expire_leaves_of(&old).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = ca_json(&h).await;
        if ca_entry(&v, &old)["state"] == "removed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old intermediate not removed: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The API server's certificate now comes from the constrained intermediate.
    let (s, _) = get(&h.anonymous(), "/healthz").await;
    assert_eq!(s, StatusCode::OK);

    // The whole flow is in the (intact) audit chain.
    let records = crate::common::verified_audit_log(&h.operator(Role::Admin).await).await;
    let has = |action: &str, target: &str| {
        records
            .iter()
            .find(|r| r.action == action && r.target == target)
            .unwrap_or_else(|| panic!("no {action} of {target} in the audit log"))
            .clone()
    };
    has("ca.prepare_intermediate", &next);
    let import = has("ca.import_signed", &next);
    let details: Value = serde_json::from_str(&import.details).unwrap();
    assert_eq!(details["name_constrained"], true, "{details}");
    has("ca.activate", &next);
    has("ca.remove", &old);
}
both_backends!(intermediate_rotation_through_csr);

/// An intermediate cannot be rotated by the schedule alone: once its
/// successor is due, `schedule.stalled` says what the operator must do, until
/// a signed successor is prepared.
async fn intermediate_schedule_needs_operator(db: Db) {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let sets = [
        "issuance.max_ttl_seconds=3600",
        "issuance.default_ttl_seconds=600",
        "rotation.prepare_at=0.000001",
        "rotation.activate_at=0.5",
    ];
    let (h, cfg) = intermediate_harness(db, dir, &sets, "2").await;
    let active = h.auth.signing_ca().id.clone();
    assert!(
        h.auth.run_schedule_once().await.unwrap(),
        "sole replica holds the lease"
    );
    let v = ca_json(&h).await;
    let why = v["schedule"]["stalled"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"));
    for needle in [
        active.as_str(),
        "is an intermediate",
        "operator must",
        "tessera-ca ca csr",
    ] {
        assert!(why.contains(needle), "{needle}: {why}");
    }
    assert_eq!(
        v["cas"].as_array().unwrap().len(),
        1,
        "the schedule made nothing: {v}"
    );

    // The operator starts: a pending successor; now it waits for the import.
    let (next, csr) = prepare_intermediate(&cfg).await.unwrap();
    let v = ca_json(&h).await;
    let why = v["schedule"]["stalled"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"));
    assert!(
        why.contains(&next) && why.contains("import-signed"),
        "{why}"
    );

    // Signed and imported: prepared, and the schedule goes on alone.
    std::fs::write(dir.join("next.csr"), csr).unwrap();
    sign_csr(dir, "root", "next.csr", "next.pem", "2", None, true);
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let done = import_signed_intermediate(&cfg, &read("next.pem"), &read("root.pem"), None)
        .await
        .unwrap();
    assert_eq!(done.state, CaState::Prepared);
    h.auth.run_schedule_once().await.unwrap();
    let v = ca_json(&h).await;
    assert!(v["schedule"]["stalled"].is_null(), "{v}");
    assert_eq!(v["schedule"]["next"]["action"], "activate", "{v}");
    assert_eq!(v["schedule"]["next"]["ca_id"], next.as_str(), "{v}");
}
both_backends!(intermediate_schedule_needs_operator);

/// Why the CSR asks for no URI name constraints: OpenSSL applies a permitted
/// URI subtree `example.org` to `spiffe://example.org/...` (RFC 5280 host
/// form), but rustls-webpki rejects any chain carrying URI name constraints,
/// so Tessera's own verifiers would refuse every leaf under such a CA.
#[test]
fn uri_name_constraints_openssl_accepts_webpki_refuses() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    operator_root(dir, "root");
    let key = |name: &str| {
        openssl_ec_key(dir, &format!("{name}.key"));
        openssl_csr(
            dir,
            &format!("{name}.key"),
            "/O=Tessera",
            &format!("{name}.csr"),
        );
    };
    key("int");
    sign_csr(
        dir,
        "root",
        "int.csr",
        "int.pem",
        "30",
        Some(&format!(
            "{}nameConstraints=critical,permitted;URI:example.org\n",
            CA_EXT.trim_start_matches("[v3_ca]\n")
        )),
        false,
    );
    let leaf_ext = |td: &str| {
        format!(
            "basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:spiffe://{td}/web\n\
             authorityKeyIdentifier=keyid\n"
        )
    };
    for (name, td) in [("leaf", "example.org"), ("outside", "other.org")] {
        key(name);
        sign_csr(
            dir,
            "int",
            &format!("{name}.csr"),
            &format!("{name}.pem"),
            "1",
            Some(&leaf_ext(td)),
            false,
        );
    }
    let verify = |leaf: &str| verify_under_root(dir, "int.pem", leaf);
    assert!(
        verify("leaf.pem").status.success(),
        "{}",
        text(&verify("leaf.pem").stderr)
    );
    let out = verify("outside.pem");
    assert!(!out.status.success());
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(said.contains("permitted subtree violation"), "{said}");
    let read = |f: &str| certs_of(&std::fs::read(dir.join(f)).unwrap());
    let e = webpki_verifies(&read("root.pem"), &read("leaf.pem")[0], &read("int.pem"))
        .expect_err("webpki fails closed on URI name constraints");
    eprintln!("webpki on a URI-constrained chain: {e}");
}
