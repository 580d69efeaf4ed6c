//! Other TLS stacks as HTTPS clients: curl, `openssl s_client`, GnuTLS's
//! `gnutls-cli` and Python's `ssl` (Debian packages `.ci/run` installs), each
//! sending one `GET` and reporting the status it got, for the interop tests
//! of the CA API and of a sidecar's inbound listener.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// The clients [`http_status`] knows.
pub const TLS_CLIENTS: [&str; 4] = ["curl", "openssl", "gnutls", "python"];

/// How a client checks the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// The chain against the bundle, and the DNS name `localhost` (the CA API).
    Localhost,
    /// The chain against the bundle only: a SPIFFE peer is named by the URI
    /// SAN, which none of these clients matches. openssl and Python check the
    /// chain alone; gnutls-cli goes on past a name mismatch (`--insecure`)
    /// and prints its verdict, which the caller reads; curl has no way to
    /// skip only the name and checks nothing (`-k`). Python prints the
    /// peer's SANs (`PEER ...`) for the caller to check the SPIFFE ID.
    Chain,
}

const REQUEST: &str = "GET PATH HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

/// Runs `cmd` with `stdin` written and kept open until it exits (gnutls-cli
/// hangs up at end of input, before the answer; the request's
/// `Connection: close` ends every client when the server closes); returns
/// stdout and stderr together.
pub fn run_with_input(mut cmd: Command, stdin: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (.ci/run installs it)"));
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(stdin.as_bytes());
    let read = |r: Option<Box<dyn Read + Send>>| {
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

/// The HTTP status `client` (one of [`TLS_CLIENTS`]) got for `GET path` from
/// `localhost:port`, or `None` when no answer came (the handshake or the
/// connection was refused); with the client's whole output. Files are named
/// relative to `dir`: the bundle `ca_file`, and the client certificate and
/// key `cred`, if any.
pub fn http_status(
    dir: &Path,
    client: &str,
    port: u16,
    ca_file: &str,
    cred: Option<(&str, &str)>,
    path: &str,
    verify: Verify,
) -> (Option<u16>, String) {
    let url = format!("https://localhost:{port}{path}");
    let request = REQUEST.replace("PATH", path);
    let text = match client {
        "curl" => {
            let mut c = Command::new("curl");
            c.current_dir(dir)
                .args(["-sS", "-o", "/dev/null", "-w", "HTTP/1.1 %{http_code}\n"])
                .args(["--cacert", ca_file, "--max-time", "20"]);
            if verify == Verify::Chain {
                c.arg("-k");
            }
            if let Some((cert, key)) = cred {
                c.args(["--cert", cert, "--key", key]);
            }
            c.arg(&url);
            run_with_input(c, "")
        }
        "openssl" => {
            let mut c = Command::new("openssl");
            c.current_dir(dir)
                .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
                .args(["-CAfile", ca_file, "-verify_return_error", "-quiet"])
                .args(["-ign_eof", "-servername", "localhost"]);
            if verify == Verify::Localhost {
                c.args(["-verify_hostname", "localhost"]);
            }
            if let Some((cert, key)) = cred {
                c.args(["-cert", cert, "-key", key]);
            }
            run_with_input(c, &request)
        }
        "gnutls" => {
            let mut c = Command::new("gnutls-cli");
            c.current_dir(dir)
                .args(["--x509cafile", ca_file, "-p", &port.to_string()]);
            if verify == Verify::Chain {
                c.arg("--insecure");
            }
            if let Some((cert, key)) = cred {
                c.args(["--x509certfile", cert, "--x509keyfile", key]);
            }
            c.arg("localhost");
            run_with_input(c, &request)
        }
        "python" => {
            let script = "import http.client, ssl, sys\n\
                ctx = ssl.create_default_context(cafile=sys.argv[3])\n\
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2\n\
                ctx.check_hostname = sys.argv[4] == 'localhost'\n\
                if len(sys.argv) > 5: ctx.load_cert_chain(sys.argv[5], sys.argv[6])\n\
                c = http.client.HTTPSConnection('localhost', int(sys.argv[1]), context=ctx, timeout=20)\n\
                c.request('GET', sys.argv[2])\n\
                print('PEER', c.sock.getpeercert().get('subjectAltName'))\n\
                print('HTTP/1.1', c.getresponse().status)\n";
            let mut c = Command::new("python3");
            let names = if verify == Verify::Localhost {
                "localhost"
            } else {
                "chain"
            };
            c.current_dir(dir)
                .args(["-c", script, &port.to_string(), path, ca_file, names]);
            if let Some((cert, key)) = cred {
                c.args([cert, key]);
            }
            run_with_input(c, "")
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
