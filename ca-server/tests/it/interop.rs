//! Other TLS stacks as clients of the CA API: curl, `openssl s_client`,
//! GnuTLS's `gnutls-cli` and Python's `ssl`, each with an operator's
//! certificate (served), without one (public routes served, the rest 401) and
//! with a certificate of a foreign CA claiming the same SPIFFE ID (never
//! served). Each verifies the server against the bundle and by host name.
//! Then sslyze scans the port.

use crate::common::{Clients, Db, Harness};
use std::path::Path;
use tessera_core::api::Role;
use tessera_test_support::sslyze;
use tessera_test_support::tls_clients::{TLS_CLIENTS, Verify, http_status};
use tessera_test_support::{openssl_csr, openssl_ec_key};

/// Which client certificate a client presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cred {
    Operator,
    None,
    Foreign,
}

impl Cred {
    /// (certificate, key) file names in the work directory.
    fn files(self) -> Option<(&'static str, &'static str)> {
        match self {
            Cred::Operator => Some(("op.pem", "op.key")),
            Cred::None => None,
            Cred::Foreign => Some(("foreign.pem", "foreign.key")),
        }
    }
}

/// The HTTP status `client` got for `GET path` on port `port` (checking the
/// server by the bundle and the name `localhost`), with its output.
fn status(dir: &Path, client: &str, port: u16, cred: Cred, path: &str) -> (Option<u16>, String) {
    http_status(
        dir,
        client,
        port,
        "bundle.pem",
        cred.files(),
        path,
        Verify::Localhost,
    )
}

/// A temporary directory with the CA's bundle (bundle.pem) and an admin
/// operator's certificate and key (op.pem, op.key).
async fn admin_files(h: &Harness) -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let bundle = tessera_core::pem::encode_certs(h.anchors().iter().map(|c| c.as_ref()));
    std::fs::write(dir.join("bundle.pem"), bundle).unwrap();
    let (key, cert) = h
        .auth
        .issue_operator_cert("admin", Role::Admin)
        .await
        .unwrap();
    std::fs::write(dir.join("op.pem"), cert).unwrap();
    std::fs::write(dir.join("op.key"), key).unwrap();
    work
}

/// A foreign CA (made by openssl) and a leaf it signed for the admin
/// operator's SPIFFE ID: foreign.pem, foreign.key.
fn foreign_identity(dir: &Path) {
    crate::upstream::operator_root(dir, "evil-ca");
    openssl_ec_key(dir, "foreign.key");
    openssl_csr(dir, "foreign.key", "/O=Elsewhere", "foreign.csr");
    crate::upstream::sign_csr(
        dir,
        "evil-ca",
        "foreign.csr",
        "foreign.pem",
        "1",
        Some(
            "basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\n\
             subjectAltName=URI:spiffe://example.org/tessera/operator/admin\n",
        ),
        false,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_openssl_gnutls_and_python_as_ca_api_clients() {
    let h = Harness::start(Db::Sqlite).await;
    let work = admin_files(&h).await;
    let dir = work.path();
    foreign_identity(dir);
    let port = h.running.as_ref().unwrap().addr.port();

    for client in TLS_CLIENTS {
        let dir = dir.to_owned();
        let (op, none, none_public, foreign) = tokio::task::spawn_blocking(move || {
            (
                status(&dir, client, port, Cred::Operator, "/v1/ca"),
                status(&dir, client, port, Cred::None, "/v1/ca"),
                status(&dir, client, port, Cred::None, "/v1/bundle"),
                status(&dir, client, port, Cred::Foreign, "/v1/ca"),
            )
        })
        .await
        .unwrap();
        assert_eq!(
            op.0,
            Some(200),
            "{client} with the operator's certificate: {}",
            op.1
        );
        assert_eq!(
            none.0,
            Some(401),
            "{client} without a certificate: {}",
            none.1
        );
        assert_eq!(
            none_public.0,
            Some(200),
            "{client}, public route: {}",
            none_public.1
        );
        assert!(
            matches!(foreign.0, None | Some(401)),
            "{client} with a foreign CA's certificate was answered: {}",
            foreign.1
        );
    }
}

/// sslyze on the CA API port: TLS 1.2 and 1.3 only, strong suites and
/// groups, no compression or renegotiation, Mozilla's intermediate
/// configuration; the chain is the server certificate (for `localhost` and
/// 127.0.0.1) under the CA's root, verified against the bundle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslyze_scan_of_the_ca_api() {
    let h = Harness::start(Db::Sqlite).await;
    let work = admin_files(&h).await;
    let bundle = work.path().join("bundle.pem");
    let target = format!("localhost:{}", h.running.as_ref().unwrap().addr.port());
    let scan =
        tokio::task::spawn_blocking(move || sslyze::scan(&target, &bundle, None, "intermediate"))
            .await
            .unwrap();
    scan.assert_hardened("the CA API", &[]);
    assert!(scan.supports("tls_1_2"), "{}", scan.report);
    let chain = scan.verified_chain();
    assert_eq!(
        chain.len(),
        2,
        "server certificate and root:\n{}",
        scan.report
    );
    let san = &chain[0]["subject_alternative_name"];
    assert_eq!(
        san["dns_names"],
        serde_json::json!(["localhost"]),
        "{}",
        scan.report
    );
    assert_eq!(
        san["ip_addresses"],
        serde_json::json!(["127.0.0.1"]),
        "{}",
        scan.report
    );
}

/// A client that keeps its connection after an early answer (Python's
/// `http.client`; `requests`, which schemathesis uses, pools connections)
/// can go on using it: a body over the 64 KiB limit → 413, the admin on a
/// workload-only route, refused before its body is read → 403, then a
/// `GET` on the same connection → 200. Without draining the unread bodies
/// the server closed the connection, and the next request met a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answers_keep_the_connection_usable() {
    let h = Harness::start(Db::Sqlite).await;
    let work = admin_files(&h).await;
    let dir = work.path().to_owned();
    let port = h.running.as_ref().unwrap().addr.port().to_string();
    let script = "import http.client, ssl, sys\n\
        ctx = ssl.create_default_context(cafile='bundle.pem')\n\
        ctx.load_cert_chain('op.pem', 'op.key')\n\
        c = http.client.HTTPSConnection('localhost', int(sys.argv[1]), context=ctx, timeout=20)\n\
        body = b'{\"x\": \"' + b'a' * 300000 + b'\"}'\n\
        for method, path in [('POST', '/v1/entries'), ('POST', '/v1/denials'), ('GET', '/v1/ca')]:\n\
        \x20   try:\n\
        \x20       c.request(method, path, body=body if method == 'POST' else None,\n\
        \x20                 headers={'content-type': 'application/json'})\n\
        \x20       r = c.getresponse()\n\
        \x20       r.read()\n\
        \x20       print(path, r.status)\n\
        \x20   except OSError as e:\n\
        \x20       print(path, 'failed:', e)\n";
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .current_dir(&dir)
            .args(["-c", script, &port])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["/v1/entries 413", "/v1/denials 403", "/v1/ca 200"],
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
