//! Other TLS stacks on both sides of a sidecar (openssl on both sides is in
//! `mesh.rs`): curl, `openssl s_client`, GnuTLS's `gnutls-cli` and Python's
//! `ssl` as clients of an inbound listener, with a workload certificate
//! (the app answers), without one and with one of another trust domain
//! (refused); GnuTLS's `gnutls-serv` and a Python `ssl` server as the
//! upstream of an outbound listener, presenting a Tessera certificate with
//! the expected SPIFFE ID (relayed) or another (refused). Then sslyze scans
//! an inbound listener.

mod common;

use common::*;
use std::path::Path;
use tessera_test_support::tls_clients::{TLS_CLIENTS, Verify, http_status};
use tessera_test_support::{Ca, Process, openssl_foreign_leaf, openssl_output, sslyze};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An app answering every connection with one HTTP response once it has read
/// the request head, then closing; returns its address.
async fn http_app() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\napp\n",
                    )
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A temporary directory (and its path) holding a workload certificate for
/// `spiffe://example.org/<name>`: key.pem, cert.pem, bundle.pem.
async fn workload_dir(ca: &Ca, name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    issue_files(ca, name, dir.path()).await;
    let path = dir.path().to_owned();
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_tls_clients_at_an_inbound_listener() {
    let ca = Ca::start();
    let app = http_app().await;
    let (_files, d) = workload_dir(&ca, "ix-client").await;
    // Same path, another trust domain, a CA the sidecar does not know.
    openssl_foreign_leaf(&d, "foreign", "spiffe://other.org/ix-client");
    let tb = token(&ca, "ix-b").await;
    let b = Sidecar::start(&ca, &tb, &inbound("in", &app, &sid("ix-client")));
    let port: u16 = b
        .addr("inbound", "in")
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();

    for client in TLS_CLIENTS {
        let d = d.clone();
        let (ok, none, foreign) = tokio::task::spawn_blocking(move || {
            let get = |cred| http_status(&d, client, port, "bundle.pem", cred, "/", Verify::Chain);
            (
                get(Some(("cert.pem", "key.pem"))),
                get(None),
                get(Some(("foreign.pem", "foreign.key"))),
            )
        })
        .await
        .unwrap();
        assert_eq!(
            ok.0,
            Some(200),
            "{client} with a workload certificate: {}",
            ok.1
        );
        match client {
            // Python's verified peer certificate names the sidecar.
            "python" => assert!(
                ok.1.contains("'URI', 'spiffe://example.org/ix-b'"),
                "{}",
                ok.1
            ),
            // gnutls-cli went on past the name only: the chain was trusted.
            "gnutls" => assert!(
                !ok.1.contains("issuer is unknown") && !ok.1.contains("signer not found"),
                "{}",
                ok.1
            ),
            _ => {}
        }
        assert_eq!(none.0, None, "{client} without a certificate: {}", none.1);
        assert_eq!(
            foreign.0, None,
            "{client} with another trust domain's certificate: {}",
            foreign.1
        );
    }
    // Each refusal is the sidecar's, and says why.
    let refused = |reason: &str| b.count_log("connection denied") > 0 && b.count_log(reason) > 0;
    assert!(
        refused("no_certificate") && refused("untrusted_chain"),
        "{}",
        b.proc.describe()
    );
}

/// A Python `ssl` echo server: one connection at a time, client certificate
/// required (verified against the bundle); prints its port.
const PYTHON_ECHO: &str = "import socket, ssl, sys\n\
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2\n\
    ctx.load_cert_chain(sys.argv[1], sys.argv[2])\n\
    ctx.load_verify_locations(sys.argv[3])\n\
    ctx.verify_mode = ssl.CERT_REQUIRED\n\
    l = socket.create_server(('127.0.0.1', 0))\n\
    print('port', l.getsockname()[1], flush=True)\n\
    while True:\n\
    \x20   c, _ = l.accept()\n\
    \x20   try:\n\
    \x20       s = ctx.wrap_socket(c, server_side=True)\n\
    \x20       while (b := s.recv(4096)):\n\
    \x20           s.sendall(b)\n\
    \x20       s.close()\n\
    \x20   except (ssl.SSLError, OSError) as e:\n\
    \x20       print('refused', e, file=sys.stderr, flush=True)\n";

/// Starts upstream server `kind` (`gnutls` or `python`) with the Tessera
/// certificate in `dir`; returns it and its port once it listens.
fn upstream(kind: &str, dir: &Path) -> (Process, u16) {
    let (cert, key, bundle) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("bundle.pem"),
    );
    match kind {
        "gnutls" => {
            // gnutls-serv takes no port 0: a port the kernel just handed out.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut cmd = std::process::Command::new("gnutls-serv");
            cmd.args(["--echo", "--require-client-cert", "--verify-client-cert"])
                .args(["-p", &port.to_string()])
                .arg(format!("--x509certfile={}", cert.display()))
                .arg(format!("--x509keyfile={}", key.display()))
                .arg(format!("--x509cafile={}", bundle.display()));
            let p = Process::spawn("gnutls-serv", &mut cmd);
            p.wait_for("listening line", DEADLINE, |o| {
                o.stdout
                    .iter()
                    .chain(&o.stderr)
                    .any(|l| l.contains("listening"))
                    .then_some(())
            });
            (p, port)
        }
        "python" => {
            let mut cmd = std::process::Command::new("python3");
            cmd.args(["-c", PYTHON_ECHO]).args([&cert, &key, &bundle]);
            let p = Process::spawn("python-ssl-server", &mut cmd);
            let line = p.first_stdout_line(DEADLINE).unwrap_or_default();
            let port = line
                .strip_prefix("port ")
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("python server: {line:?}\n{}", p.describe()));
            (p, port)
        }
        other => panic!("unknown server {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gnutls_and_python_servers_as_upstreams() {
    let ca = Ca::start();
    let files = tempfile::tempdir().unwrap();
    for who in ["ix-up", "ix-wrong"] {
        std::fs::create_dir_all(files.path().join(who)).unwrap();
        issue_files(&ca, who, &files.path().join(who)).await;
    }
    for kind in ["gnutls", "python"] {
        for (who, expect_ok) in [("ix-up", true), ("ix-wrong", false)] {
            let (server, port) = upstream(kind, &files.path().join(who));
            let token = token(&ca, &format!("ix-a-{kind}-{who}")).await;
            let a = Sidecar::start(
                &ca,
                &token,
                &outbound("out", &format!("127.0.0.1:{port}"), &sid("ix-up")),
            );
            let mut s = TcpStream::connect(a.addr("outbound", "out")).await.unwrap();
            let relayed = echo(&mut s, b"through the sidecar\n").await;
            assert_eq!(
                relayed.is_ok(),
                expect_ok,
                "{kind} upstream presenting {who}: {relayed:?}\n{}\n{}",
                a.proc.describe(),
                server.describe()
            );
            if !expect_ok {
                let line = a.await_log("connection denied");
                assert!(line.contains("spiffe://example.org/ix-wrong"), "{line}");
            }
        }
    }
}

/// sslyze on an inbound listener, presenting a workload certificate the
/// listener admits: by default TLS 1.3 only (Mozilla's modern
/// configuration); with `tls12 = true` also TLS 1.2 with strong suites
/// (intermediate). Either way no compression or renegotiation, only strong
/// groups, and the chain is the sidecar's own SVID under the CA's root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslyze_scan_of_an_inbound_listener() {
    let ca = Ca::start();
    let app = echo_server().await;
    let (_files, d) = workload_dir(&ca, "scanner").await;
    for (mozilla, tls12) in [("modern", false), ("intermediate", true)] {
        let tb = token(&ca, &format!("scanned-{mozilla}")).await;
        let b = Sidecar::start_args(
            &ca,
            &tb,
            &inbound("in", &app, &sid("scanner")),
            &["--set", &format!("tls12={tls12}")],
        );
        let target = b.addr("inbound", "in").replace("127.0.0.1", "localhost");
        let dir = d.clone();
        let scan = tokio::task::spawn_blocking(move || {
            let d = dir;
            let client = (d.join("cert.pem"), d.join("key.pem"));
            sslyze::scan(
                &target,
                &d.join("bundle.pem"),
                Some((&client.0, &client.1)),
                mozilla,
            )
        })
        .await
        .unwrap();
        // sslyze's path validation (and so Mozilla's check of it) wants the
        // host name in the certificate; an SVID names a SPIFFE ID, so openssl
        // verifies the chain instead.
        scan.assert_hardened(
            &format!("an inbound listener ({mozilla})"),
            &["certificate_path_validation"],
        );
        assert_eq!(scan.supports("tls_1_2"), tls12, "{}", scan.report);
        let chain = scan.received_chain();
        assert_eq!(
            chain.len(),
            1,
            "the SVID alone, no anchor:\n{}",
            scan.report
        );
        std::fs::write(d.join("leaf.pem"), chain[0]["as_pem"].as_str().unwrap()).unwrap();
        let verify = openssl_output(
            &d,
            &[
                "verify",
                "-x509_strict",
                "-purpose",
                "sslserver",
                "-CAfile",
                "bundle.pem",
                "leaf.pem",
            ],
        );
        assert!(verify.status.success(), "{verify:?}\n{}", scan.report);
        // The sidecar's own SVID (sslyze's JSON serial is a float: read the PEM).
        let serial = openssl_output(&d, &["x509", "-noout", "-serial", "-in", "leaf.pem"]);
        assert_eq!(
            String::from_utf8_lossy(&serial.stdout)
                .trim()
                .to_lowercase(),
            format!("serial={}", b.serial().await.to_lowercase()),
            "{}",
            scan.report
        );
    }
}
