//! Other TLS stacks as clients of the CA API: curl, `openssl s_client`,
//! GnuTLS's `gnutls-cli` and Python's `ssl`, each with an operator's
//! certificate (served), without one (public routes served, the rest 401) and
//! with a certificate of a foreign CA claiming the same SPIFFE ID (never
//! served). Each verifies the server against the bundle and by host name.

use crate::common::{Clients, Db, Harness};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use tessera_core::api::Role;
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

const REQUEST: &str = "GET PATH HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

/// Runs `cmd` with `stdin` written and kept open until it exits (gnutls-cli
/// hangs up at end of input, before the answer; the request's
/// `Connection: close` ends every client when the server closes); returns
/// stdout and stderr together.
fn run(mut cmd: Command, stdin: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (.ci/run installs it)"));
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(stdin.as_bytes());
    let read = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = read(child.stdout.take().map(|r| Box::new(r) as _));
    let err = read(child.stderr.take().map(|r| Box::new(r) as _));
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let _ = child.wait();
    drop(input);
    format!("{out}{err}")
}

/// The HTTP status `client` got for `GET path` on port `port`, or `None`
/// when no answer came (the handshake was refused); with its output.
fn status(dir: &Path, client: &str, port: u16, cred: Cred, path: &str) -> (Option<u16>, String) {
    let url = format!("https://localhost:{port}{path}");
    let request = REQUEST.replace("PATH", path);
    let text = match client {
        "curl" => {
            let mut c = Command::new("curl");
            c.current_dir(dir)
                .args(["-sS", "-o", "/dev/null", "-w", "HTTP/1.1 %{http_code}\n"])
                .args(["--cacert", "bundle.pem", "--max-time", "20"]);
            if let Some((cert, key)) = cred.files() {
                c.args(["--cert", cert, "--key", key]);
            }
            c.arg(&url);
            run(c, "")
        }
        "openssl" => {
            let mut c = Command::new("openssl");
            c.current_dir(dir)
                .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
                .args(["-servername", "localhost", "-verify_hostname", "localhost"])
                .args(["-CAfile", "bundle.pem", "-verify_return_error", "-quiet"])
                .args(["-ign_eof"]);
            if let Some((cert, key)) = cred.files() {
                c.args(["-cert", cert, "-key", key]);
            }
            run(c, &request)
        }
        "gnutls" => {
            let mut c = Command::new("gnutls-cli");
            c.current_dir(dir)
                .args(["--x509cafile", "bundle.pem", "-p", &port.to_string()]);
            if let Some((cert, key)) = cred.files() {
                c.args(["--x509certfile", cert, "--x509keyfile", key]);
            }
            c.arg("localhost");
            run(c, &request)
        }
        "python" => {
            let script = "import http.client, ssl, sys\n\
                ctx = ssl.create_default_context(cafile='bundle.pem')\n\
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2\n\
                if len(sys.argv) > 3: ctx.load_cert_chain(sys.argv[3], sys.argv[4])\n\
                c = http.client.HTTPSConnection('localhost', int(sys.argv[1]), context=ctx, timeout=20)\n\
                c.request('GET', sys.argv[2])\n\
                print('HTTP/1.1', c.getresponse().status)\n";
            let mut c = Command::new("python3");
            c.current_dir(dir)
                .args(["-c", script, &port.to_string(), path]);
            if let Some((cert, key)) = cred.files() {
                c.args([cert, key]);
            }
            run(c, "")
        }
        other => panic!("unknown client {other}"),
    };
    let code = text
        .lines()
        .find_map(|l| l.strip_prefix("HTTP/1.1 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|c| c.parse().ok())
        .filter(|c| *c != 0);
    (code, text)
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
    foreign_identity(dir);
    let port = h.running.as_ref().unwrap().addr.port();

    for client in ["curl", "openssl", "gnutls", "python"] {
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
