//! Issue 11, item 2: in intermediate mode, trust follows Tessera's own
//! generations. Tessera runs under an operator's openssl root with an
//! imported intermediate A (whose key the test holds), rotates to B through
//! the CSR flow and revokes A. A leaf then minted with A's key, and a leaf
//! from another CA under the same root, are refused by a sidecar's inbound
//! listener allowing `spiffe://example.org/*`; B's leaves keep working.

mod common;

use common::*;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tessera_core::client::Client;
use tessera_test_support::{
    Ca, CaBuilder, Db, SPIFFE_INTERMEDIATE_EXT, TestDb, both_backends, ca_ids, openssl,
    openssl_csr, openssl_pkcs8_key, openssl_self_signed_ca, poll_until, post,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Signs `csr` with `issuer` (`issuer.pem`, `issuer.key`) into `out.pem`
/// with the extension section `ext` (`[v3]`) and a 16-byte `serial`.
fn sign(dir: &Path, csr: &str, issuer: &str, out: &str, ext: &str, serial: u8) {
    std::fs::write(dir.join(format!("{out}.cnf")), ext).unwrap();
    let serial = format!("0x4a{}", format!("{serial:02x}").repeat(15));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            &format!("{issuer}.pem"),
            "-CAkey",
            &format!("{issuer}.key"),
            "-set_serial",
            &serial,
            "-days",
            "30",
            "-extfile",
            &format!("{out}.cnf"),
            "-extensions",
            "v3",
            "-out",
            &format!("{out}.pem"),
        ],
    );
}

/// A new key `name.key` and its CSR `name.csr`.
fn csr(dir: &Path, name: &str) {
    openssl_pkcs8_key(dir, name);
    openssl_csr(
        dir,
        &format!("{name}.key"),
        &format!("/O=Operator/CN={name}"),
        &format!("{name}.csr"),
    );
}

/// An intermediate `name` (`name.pem`, `name.key`) signed by `root`.
fn intermediate(dir: &Path, name: &str, serial: u8) {
    csr(dir, name);
    sign(
        dir,
        &format!("{name}.csr"),
        "root",
        name,
        &SPIFFE_INTERMEDIATE_EXT.replace("[v3_ca]", "[v3]"),
        serial,
    );
}

/// An X.509-SVID `name` for `spiffe://example.org/name` signed by `issuer`
/// with the issuer's key (what a thief of that key can make).
fn minted_leaf(dir: &Path, issuer: &str, name: &str, serial: u8) {
    csr(dir, name);
    let ext = format!(
        "[v3]\nbasicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:spiffe://example.org/{name}\n"
    );
    sign(dir, &format!("{name}.csr"), issuer, name, &ext, serial);
}

/// Connects to the sidecar's inbound listener with `chain` and `key` (PEM),
/// trusting `anchors` for the sidecar: Ok once a message echoes back.
async fn through(
    addr: &str,
    anchors: &[rustls::pki_types::CertificateDer<'static>],
    chain: &str,
    key: &str,
) -> std::io::Result<()> {
    let chain = tessera_core::pem::certs(chain.as_bytes()).unwrap();
    let key = tessera_core::pem::private_key(key.as_bytes()).unwrap();
    let me =
        tessera_core::tls::RotatingKey::new(tessera_core::tls::certified_key(chain, key).unwrap());
    let cfg = tessera_core::tls::spiffe_client_config(
        anchors,
        Arc::new(me),
        tessera_core::SpiffeIdPattern::new(&sid("app")).unwrap(),
        Arc::default(),
        false,
    )
    .unwrap();
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("app").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await?;
    s.write_all(b"hello").await?;
    let mut buf = [0u8; 5];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("timeout"))??;
    assert_eq!(&buf, b"hello");
    Ok(())
}

async fn revoking_an_intermediate_revokes_its_trust(db: Db) {
    let db = TestDb::new(db).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    // The operator's root, intermediate A (imported, key held here) and C,
    // another CA under the same root that Tessera never knew.
    openssl_pkcs8_key(dir, "root");
    openssl_self_signed_ca(dir, "root.key", "root.pem", "/O=Operator/CN=root", &[]);
    intermediate(dir, "a", 1);
    intermediate(dir, "c", 2);
    let p = |f: &str| dir.join(f).display().to_string();
    let ca: Ca = CaBuilder::new()
        .sets([
            format!("ca.import_cert=\"{}\"", p("a.pem")),
            format!("ca.import_key=\"{}\"", p("a.key")),
            format!("ca.import_bundle=\"{}\"", p("root.pem")),
            "rotation.enabled=false".into(),
            "rotation.check_interval_seconds=1".into(),
            "rotation.lease_seconds=3".into(),
            "rotation.min_overlap_seconds=3".into(),
        ])
        .database(&db)
        .start("tessera-ca");
    let v = await_ca(ca.admin(), "A active", |v| ca_ids(v, "active").len() == 1).await;
    let a_id = ca_ids(&v, "active")[0].clone();
    // The admin certificate falls with A: keep an API token.
    let api_token = admin_token(&ca).await;

    // Rotate to B through the CSR flow, the root signing.
    let tessera_ca = |args: &[&str]| {
        let out = ca.builder().command().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    tessera_ca(&["ca", "csr", "--out", &p("b.csr")]);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "b.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-set_serial",
            "0x4b03030303030303",
            "-days",
            "365",
            "-copy_extensions",
            "copy",
            "-out",
            "b.pem",
        ],
    );
    tessera_ca(&[
        "ca",
        "import-signed",
        "--cert",
        &p("b.pem"),
        "--bundle",
        &p("root.pem"),
    ]);
    let v = await_ca(ca.admin(), "B prepared", |v| {
        ca_ids(v, "prepared").len() == 1
    })
    .await;
    let b_id = ca_ids(&v, "prepared")[0].clone();
    let (s, v) = post(ca.admin(), "/v1/ca/rotate", None).await;
    assert!(s.is_success(), "{s} {v}");
    await_ca(ca.admin(), "B active", |v| {
        ca_ids(v, "active") == [b_id.clone()]
    })
    .await;
    let bundle = || async {
        let r = ca
            .admin()
            .call(hyper::Method::GET, "/v1/bundle", None)
            .await;
        tessera_core::pem::certs(&r.unwrap().body).unwrap()
    };
    let anchors = bundle().await;
    assert_eq!(anchors.len(), 2, "A and B are the anchors, not the root");
    let ops = Client::new(
        ca.url(),
        tessera_core::tls::api_client_config(&anchors, None, false).unwrap(),
        Some(api_token),
    )
    .unwrap();

    // The app's sidecar (under B) and a peer under B.
    let app = echo_server().await;
    let t = token(&ca, "app").await;
    let sidecar = Sidecar::start(&ca, &t, &inbound("in", &app, "spiffe://example.org/*"));
    let target = sidecar.addr("inbound", "in");
    ca.entry(&sid("peer"), &["test:peer"], None).await;
    let (peer_key, peer_csr) = tessera_test_support::csr();
    let (s, issued) = post(
        &ops,
        "/v1/certs",
        json!({"spiffe_id": sid("peer"), "csr": peer_csr}),
    )
    .await;
    assert!(s.is_success(), "{s} {issued}");
    let peer_chain = format!(
        "{}{}",
        issued["certificate"].as_str().unwrap(),
        issued["chain"].as_str().unwrap()
    );
    let peer_key = peer_key.serialize_pem();
    let b_works = || through(&target, &anchors, &peer_chain, &peer_key);
    b_works().await.expect("B's leaf before A is revoked");

    // C's leaves were never Tessera's.
    minted_leaf(dir, "c", "stranger", 5);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let stranger = format!("{}{}", read("stranger.pem"), read("c.pem"));
    assert!(
        through(&target, &anchors, &stranger, &read("stranger.key"))
            .await
            .is_err(),
        "a leaf of another CA under the same root was accepted"
    );
    sidecar
        .proc
        .await_stderr("spiffe://example.org/stranger", DEADLINE);

    // A is revoked; its stolen key mints a leaf the ledger never saw.
    let (s, v) = post(&ops, &format!("/v1/ca/{a_id}/revoke"), None).await;
    assert!(s.is_success(), "{s} {v}");
    minted_leaf(dir, "a", "evil", 6);
    let evil = format!("{}{}", read("evil.pem"), read("a.pem"));
    poll_until(
        Duration::from_secs(30),
        "the sidecar refuses A's leaves",
        || async {
            through(&target, &anchors, &evil, &read("evil.key"))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    for who in ["evil", "stranger"] {
        let line = sidecar.proc.await_stderr(&sid(who), DEADLINE);
        assert!(line.contains("untrusted_chain"), "{line}");
    }
    b_works().await.expect("B's leaf after A is revoked");
    let b_cert = tessera_core::pem::certs(read("b.pem").as_bytes()).unwrap();
    assert_eq!(bundle_of(&ops).await, b_cert, "only B is an anchor");
    drop((sidecar, ca));
}

async fn bundle_of(c: &Client) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let r = c
        .call(hyper::Method::GET, "/v1/bundle", None)
        .await
        .unwrap();
    tessera_core::pem::certs(&r.body).unwrap()
}

both_backends!(revoking_an_intermediate_revokes_its_trust);
