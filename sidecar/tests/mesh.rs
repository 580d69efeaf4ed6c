//! End to end with real processes on loopback: a `tessera-ca`, an echo app, and
//! sidecars A (outbound, allowed), B (inbound, allows only A) and C (outbound,
//! valid certificate but not in B's policy). Then openssl as a peer without a
//! certificate, and a revocation of A closing its open connection.

mod common;

use common::*;
use hyper::Method;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tessera_test_support::{
    Ca, CaBuilder, Metrics, await_closed, openssl_foreign_leaf, openssl_output,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_denied_refused_and_revoked() {
    let ca = Ca::start();
    let app = echo_server().await;
    let [ta, tb, tc] = tokens(&ca, ["a", "b", "c"]).await;
    let b = Sidecar::start(&ca, &tb, &inbound("api", &app, "spiffe://example.org/a"));
    let b_in = b.addr("inbound", "api");
    let to_b = outbound("to-b", &b_in, "spiffe://example.org/b");
    let a = Sidecar::start(&ca, &ta, &to_b);
    let c = Sidecar::start(&ca, &tc, &to_b);

    // A → B: allowed; keep one long connection open.
    let mut long = TcpStream::connect(a.addr("outbound", "to-b"))
        .await
        .unwrap();
    echo(&mut long, b"hello through the mesh").await.unwrap();

    // C → B: valid certificate, not in B's policy: refused, logged with C's identity.
    assert!(
        echo_refused(&c.addr("outbound", "to-b"), b"let me in").await,
        "C must be refused"
    );
    let line = b.await_log("connection denied");
    assert!(
        line.contains("spiffe://example.org/c") && line.contains("not_allowed"),
        "{line}"
    );
    let metrics = b.admin_get("/metrics").await;
    assert!(
        metrics.contains("tessera_sidecar_denied_total{listener=\"api\",reason=\"not_allowed\"} 1"),
        "{metrics}"
    );
    let _ = c.await_log("ready");
    // B reported the denial to the CA: the fleet-wide list shows it, attributed
    // to B's identity (the reporter), with C as the source.
    let found = reported_denial(&ca, "c", "not_allowed").await;
    assert_eq!(found["reporter"], "spiffe://example.org/b", "{found}");
    assert_eq!(found["reason"], "not_allowed");
    assert_eq!(found["listener"], "api");

    // openssl as an independent peer: no client certificate → refused.
    // The refusal is the sidecar's: its denial log line is the event to await.
    Command::new("openssl")
        .args(["s_client", "-connect", &b_in, "-CAfile"])
        .arg(ca.bundle_path())
        .args(["-verify_return_error", "-brief"])
        .stdin(Stdio::null())
        .output()
        .expect("openssl must be installed");
    b.await_log("no_certificate");

    // Readiness and identity are visible on the admin endpoint; no key material.
    assert!(a.admin_get("/readyz").await.starts_with("HTTP/1.1 200"));
    let ident = a.admin_get("/identity").await;
    assert!(
        ident.contains("spiffe://example.org/a") && !ident.contains("PRIVATE"),
        "{ident}"
    );
    let serial = a.serial().await;

    // Revoke A: its open connection is closed and new ones are refused within 5 s.
    let started = std::time::Instant::now();
    ca.call(
        Method::POST,
        "/v1/revocations",
        Some(serde_json::json!({"serial": serial, "reason": "key_compromise"})),
    )
    .await;
    await_closed(
        &mut long,
        Duration::from_secs(5),
        "A's established connection after revocation",
    )
    .await;
    assert!(
        echo_refused(&a.addr("outbound", "to-b"), b"still here?").await,
        "revoked A must be refused"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "revocation took {:?}",
        started.elapsed()
    );
    // The denial names the revoked peer: its certificate parsed and chained.
    let line = b.await_log("reason=\"revoked\"");
    assert!(
        line.contains("peer_spiffe_id=\"spiffe://example.org/a\""),
        "{line}"
    );
    let found = reported_denial(&ca, "a", "revoked").await;
    assert_eq!(found["reporter"], "spiffe://example.org/b", "{found}");
}

/// The denial of `reason` the CA lists for source `spiffe://example.org/<name>`.
/// Sidecars report in batches (flush_ms = 200): asked until it arrives.
async fn reported_denial(ca: &Ca, name: &str, reason: &str) -> serde_json::Value {
    let path = format!("/v1/denials?source=spiffe%3A%2F%2Fexample.org%2F{name}");
    tessera_test_support::poll_until(
        Duration::from_secs(10),
        &format!("{reason} denial of {name} at the CA"),
        || async {
            let l = ca.call(Method::GET, &path, None).await;
            l["items"]
                .as_array()?
                .iter()
                .find(|d| d["reason"] == reason)
                .cloned()
        },
    )
    .await
}

/// A sidecar started while the CA is down is not ready, then becomes ready when
/// the CA comes back, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_ca_appears() {
    let mut ca = Ca::start();
    let app = echo_server().await;
    let token = token(&ca, "late").await;
    ca.kill(); // the CA goes away
    let cfg = format!(
        "{}[renew]\nretry_min_ms = 100\nretry_max_ms = 400\n{}",
        base_config(&ca),
        inbound("in", &app, "spiffe://example.org/*")
    );
    let s = Sidecar::spawn(&cfg, Some(&token), &[]);
    s.await_log("no identity yet");
    assert!(
        s.admin_get("/readyz").await.starts_with("HTTP/1.1 503"),
        "ready without an identity"
    );
    ca.restart(); // on the same port, with the same data
    s.await_log("ready");
    assert!(s.admin_get("/readyz").await.starts_with("HTTP/1.1 200"));
    drop(ca);
}

/// Certificates rotate every few seconds while many short connections and a
/// few long ones flow through a pair of sidecars: zero errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_drops_nothing() {
    let ca = Ca::start();
    let app = echo_server().await;
    // 60 s certificates renewed at 10 % of their life: a rotation every ~6 s.
    let [ta, tb] = short_lived_tokens(&ca, ["ra", "rb"], 60).await;
    let fast = "[renew]\nat_fraction = 0.1\njitter_fraction = 0.0\n";
    let (a, b) = pair(&ca, &app, ("ra", &ta, fast), ("rb", &tb, fast));
    let target = a.addr("outbound", "out");
    let mut longs = Vec::new();
    for _ in 0..3 {
        longs.push(TcpStream::connect(&target).await.unwrap());
    }
    let (mut short_ok, mut errors) = (0u64, Vec::new());
    // Traffic until both sides have rotated twice (events in their logs).
    let mut rotations = 0;
    let end = std::time::Instant::now() + Duration::from_secs(40);
    while rotations < 4 && std::time::Instant::now() < end {
        for _ in 0..20 {
            match TcpStream::connect(&target).await {
                Ok(mut s) => match echo(&mut s, b"short").await {
                    Ok(()) => short_ok += 1,
                    Err(e) => errors.push(format!("short: {e}")),
                },
                Err(e) => errors.push(format!("connect: {e}")),
            }
        }
        for l in longs.iter_mut() {
            if let Err(e) = echo(l, b"long-lived").await {
                errors.push(format!("long: {e}"));
            }
        }
        rotations = [&a, &b]
            .iter()
            .map(|s| s.count_log("identity installed").saturating_sub(1))
            .sum();
    }
    assert!(
        errors.is_empty(),
        "{} errors during rotation: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(rotations >= 4, "only {rotations} rotations happened");
    assert!(
        short_ok > 100,
        "too little traffic: {short_ok}; {:?}",
        a.proc
            .stderr_lines()
            .iter()
            .chain(b.proc.stderr_lines().iter())
            .filter(|l| l.contains("identity"))
            .collect::<Vec<_>>()
    );
}

/// Half-closed TCP and a large transfer arrive intact (SHA-256 both ways).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_and_large_transfer_intact() {
    let ca = Ca::start();
    let app = echo_server().await;
    let (a, _b) = token_pair(&ca, &app, ("big-a", ""), ("big-b", "")).await;
    const TOTAL: usize = 256 * 1024 * 1024;
    let s = TcpStream::connect(a.addr("outbound", "out")).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut chunk = vec![0u8; 64 * 1024];
        let mut sent = 0usize;
        let mut x: u32 = 0x9e3779b9;
        while sent < TOTAL {
            for b in chunk.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            ctx.update(&chunk);
            w.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        w.shutdown().await.unwrap(); // half-close: we are done sending, still reading
        ctx.finish().as_ref().to_vec()
    });
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0usize;
    let read = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
            got += n;
        }
    })
    .await;
    assert!(read.is_ok(), "transfer stalled at {got} bytes");
    assert_eq!(got, TOTAL);
    assert_eq!(
        ctx.finish().as_ref(),
        &writer.await.unwrap()[..],
        "checksum differs"
    );
}

/// A relayed connection quiet in both directions is closed at the idle deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_relays_are_closed() {
    let ca = Ca::start();
    let app = echo_server().await;
    let idle = "[limits]\nidle_timeout_ms = 400\n";
    let (a, _b) = token_pair(&ca, &app, ("idle-a", idle), ("idle-b", idle)).await;
    let mut s = TcpStream::connect(a.addr("outbound", "out")).await.unwrap();
    echo(&mut s, b"ping").await.unwrap();
    let t = std::time::Instant::now();
    await_closed(&mut s, Duration::from_secs(10), "an idle relay").await;
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "closed before the idle deadline"
    );
}

/// openssl's `-cert`, `-key` and `-CAfile` options for the files
/// [`issue_files`] wrote into `files`.
fn identity_files(files: &Path) -> Vec<std::ffi::OsString> {
    let mut args = vec![];
    for (option, file) in [
        ("-cert", "cert.pem"),
        ("-key", "key.pem"),
        ("-CAfile", "bundle.pem"),
    ] {
        args.push(option.into());
        args.push(files.join(file).into_os_string());
    }
    args
}

/// `openssl s_client -quiet` to `addr` presenting the certificate, key and
/// bundle in `files` (plus `extra` options), sending `line`; its output once
/// it ends.
/// An inbound listener `in` to `app` admitting `spiffe://example.org/<client>`,
/// for `s_client`: `-quiet` ignores stdin EOF and waits for the server to
/// close, so a short idle deadline ends the relay once the echo has come back.
fn s_client_inbound(app: &str, client: &str) -> String {
    format!(
        "[limits]\nidle_timeout_ms = 1000\n{}",
        inbound("in", app, &sid(client))
    )
}

fn s_client_sends(files: &Path, addr: &str, extra: &[&str], line: &[u8]) -> std::process::Output {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", addr])
        .args(extra)
        .args(identity_files(files))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl must be installed");
    // A refused handshake may close the pipe before the line is written.
    let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), line);
    child.wait_with_output().unwrap()
}

/// `openssl s_client -brief` to `addr` presenting `leaf.pem` / `leaf.key`
/// from `dir`; what it printed (stdout and stderr).
fn s_client_presents_leaf(dir: &Path, addr: &str) -> String {
    let args = [
        "s_client", "-connect", addr, "-cert", "leaf.pem", "-key", "leaf.key", "-brief",
    ];
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl must be installed");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// openssl as an independent peer on both sides: `s_client` with a proper
/// Tessera certificate gets through an inbound listener; `s_server` presenting
/// the expected SPIFFE ID is accepted as an upstream, one presenting another ID
/// is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_peers_both_ways() {
    let ca = Ca::start();
    let app = echo_server().await;
    let files = tempfile::tempdir().unwrap();
    let d = files.path();
    std::fs::create_dir_all(d.join("client")).unwrap();
    std::fs::create_dir_all(d.join("server")).unwrap();
    std::fs::create_dir_all(d.join("other")).unwrap();
    issue_files(&ca, "ossl-client", &d.join("client")).await;
    issue_files(&ca, "ossl-server", &d.join("server")).await;
    issue_files(&ca, "ossl-other", &d.join("other")).await;
    let tb = token(&ca, "ossl-b").await;
    let b = Sidecar::start(&ca, &tb, &s_client_inbound(&app, "ossl-client"));
    // s_client with a proper certificate: the echo comes back through the relay.
    let addr = b.addr("inbound", "in");
    let out = s_client_sends(&d.join("client"), &addr, &[], b"openssl says hi\n");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("openssl says hi"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // s_server as the upstream, for the expected ID and for another one.
    for (who, expect_ok) in [("server", true), ("other", false)] {
        let dir = d.join(who);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Command::new("openssl")
            .args(["s_server", "-quiet", "-rev", "-accept", &port.to_string()])
            .args(identity_files(&dir))
            .args(["-Verify", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let token = token(&ca, &format!("ossl-a-{who}")).await;
        let a = Sidecar::start(
            &ca,
            &token,
            &outbound(
                "out",
                &format!("127.0.0.1:{port}"),
                "spiffe://example.org/ossl-server",
            ),
        );
        // s_server may need a moment to listen: bounded attempts, not a sleep.
        let mut result = Err(std::io::Error::other("not tried"));
        for _ in 0..50 {
            let mut s = TcpStream::connect(a.addr("outbound", "out")).await.unwrap();
            s.write_all(b"abc\n").await.unwrap();
            let mut buf = [0u8; 4];
            result = tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
                .await
                .unwrap_or(Err(std::io::Error::other("timeout")))
                .map(|_| ());
            if result.is_ok() {
                assert_eq!(&buf, b"cba\n", "s_server -rev reverses each line");
                break;
            }
            if !expect_ok && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
        }
        let _ = server.kill();
        let _ = server.wait();
        assert_eq!(result.is_ok(), expect_ok, "upstream {who}: {result:?}");
    }
}

/// The `[svid_files]` cases: a CA, a join token for `spiffe://example.org/<name>`,
/// and a temp dir `out` whose `svid` directory (`dir`) the config names,
/// touching `out/reloaded` after each write, beside an inbound listener to an
/// echo app allowing the whole trust domain.
struct SvidFilesCase {
    ca: Ca,
    token: String,
    out: tempfile::TempDir,
    dir: std::path::PathBuf,
    config: String,
}

impl SvidFilesCase {
    async fn new(name: &str) -> Self {
        let ca = Ca::start();
        let app = echo_server().await;
        let token = token(&ca, name).await;
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("svid");
        let config = format!(
            "[svid_files]\ndir = \"{}\"\ncommand = \"touch {}\"\n{}",
            dir.display(),
            out.path().join("reloaded").display(),
            inbound("in", &app, "spiffe://example.org/*")
        );
        Self {
            ca,
            token,
            out,
            dir,
            config,
        }
    }

    /// Whether the reload command has run.
    fn reloaded(&self) -> bool {
        self.out.path().join("reloaded").exists()
    }
}

/// For apps doing their own TLS: svid.pem, svid_key.pem (0600) and bundle.pem
/// are written and the reload command runs; and `--exit-with-pid` ends the
/// sidecar when the app exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svid_files_and_exit_with_the_app() {
    use std::os::unix::fs::PermissionsExt;
    let case = SvidFilesCase::new("files").await;
    let dir = &case.dir;
    let mut app_proc = Command::new("sleep").arg("600").spawn().unwrap();
    let pid = app_proc.id().to_string();
    let mut s = Sidecar::start_args(
        &case.ca,
        &case.token,
        &case.config,
        &["--exit-with-pid", &pid],
    );
    let mode = std::fs::metadata(dir.join("svid_key.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(case.reloaded(), "reload command ran");
    let leaf = tessera_core::pem::certs(&std::fs::read(dir.join("svid.pem")).unwrap()).unwrap();
    let info = tessera_core::svid::check_tessera_leaf(&leaf[0]).unwrap();
    assert_eq!(info.spiffe_id.as_str(), "spiffe://example.org/files");
    assert!(s.admin_get("/identity").await.contains(&info.serial));
    tessera_core::pem::private_key(&std::fs::read(dir.join("svid_key.pem")).unwrap()).unwrap();
    let v = openssl_output(dir, &["verify", "-CAfile", "bundle.pem", "svid.pem"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));

    // The app exits: the sidecar drains and exits 0.
    app_proc.kill().unwrap();
    app_proc.wait().unwrap();
    s.await_log("the app exited");
    s.assert_clean_exit("sidecar did not exit cleanly");
}

/// `[svid_files]` renames the certificate last (tessera_workload::PemSet, the
/// CLI's rule too): when the key cannot be replaced, the certificate is not
/// either, so an app reloading on the certificate's change never pairs it
/// with another key. The key's place is taken by a directory here, so its
/// rename fails; the bundle, renamed before it, is there, the certificate is
/// not, no temporary file is left and the reload command does not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svid_files_rename_the_certificate_last() {
    let case = SvidFilesCase::new("files-last").await;
    let dir = &case.dir;
    std::fs::create_dir_all(dir.join("svid_key.pem/occupied")).unwrap();
    let s = Sidecar::start(&case.ca, &case.token, &case.config);
    let line = s.await_log("writing SVID files failed");
    assert!(line.contains("svid_key.pem"), "{line}");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["bundle.pem", "svid_key.pem"],
        "certificate written before its key"
    );
    assert!(!case.reloaded(), "reload ran on incomplete files");
}

/// A client certificate from another CA (same SPIFFE ID shape, allowed ID) is
/// refused at the handshake and recorded as an untrusted chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_refused() {
    let ca = Ca::start();
    let app = echo_server().await;
    let tb = token(&ca, "guard").await;
    let b = Sidecar::start(&ca, &tb, &inbound("in", &app, "spiffe://example.org/*"));
    let w = tempfile::tempdir().unwrap();
    let d = w.path();
    openssl_foreign_leaf(d, "leaf", "spiffe://example.org/web");
    let text = s_client_presents_leaf(d, &b.addr("inbound", "in"));
    let line = b.await_log("connection denied");
    assert!(line.contains("untrusted_chain"), "{line}\n{text}");
}

/// With `proxy_protocol = true` the app first receives a PROXY v2 header
/// carrying the peer's SPIFFE ID, then the peer's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v2_passes_the_peer_identity() {
    let ca = Ca::start();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = l.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut head = [0u8; 16];
        s.read_exact(&mut head).await.unwrap();
        let len = u16::from_be_bytes([head[14], head[15]]) as usize;
        let mut rest = vec![0u8; len];
        s.read_exact(&mut rest).await.unwrap();
        let addr_len = if head[13] == 0x11 { 12 } else { 36 };
        let tlv = &rest[addr_len..];
        let id =
            String::from_utf8(tlv[3..3 + u16::from_be_bytes([tlv[1], tlv[2]]) as usize].to_vec())
                .unwrap();
        let _ = tx.send((head[..12].to_vec(), tlv[0], id));
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let [ta, tb] = tokens(&ca, ["pp-a", "pp-b"]).await;
    let listener = inbound("in", &app, "spiffe://example.org/pp-a") + "proxy_protocol = true\n";
    let b = Sidecar::start(&ca, &tb, &listener);
    let upstream = b.addr("inbound", "in");
    let a = Sidecar::start(
        &ca,
        &ta,
        &outbound("out", &upstream, "spiffe://example.org/pp-b"),
    );
    let mut s = TcpStream::connect(a.addr("outbound", "out")).await.unwrap();
    echo(&mut s, b"after the header").await.unwrap();
    let (sig, tlv_type, id) = rx.await.unwrap();
    assert_eq!(sig, b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!(tlv_type, tessera_sidecar::proxy::PP2_TYPE_SPIFFE_ID);
    assert_eq!(id, "spiffe://example.org/pp-a");
}

/// TLS 1.3 only by default; `tls12 = true` also admits a TLS 1.2 peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_only_when_enabled() {
    let ca = Ca::start();
    let app = echo_server().await;
    let files = tempfile::tempdir().unwrap();
    issue_files(&ca, "old-client", files.path()).await;
    for (tls12, expect) in [(false, false), (true, true)] {
        let token = token(&ca, &format!("tls12-{tls12}")).await;
        let set = format!("tls12={tls12}");
        let b = Sidecar::start_args(
            &ca,
            &token,
            &s_client_inbound(&app, "old-client"),
            &["--set", &set],
        );
        let addr = b.addr("inbound", "in");
        let out = s_client_sends(files.path(), &addr, &["-tls1_2"], b"tls one two\n");
        let echoed = String::from_utf8_lossy(&out.stdout).contains("tls one two");
        assert_eq!(
            echoed,
            expect,
            "tls12 = {tls12}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// SIGTERM: the sidecar stops accepting, lets the open connection finish, and
/// exits 0 once it has. `limits.max_inbound_connections` refuses connections beyond it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_and_graceful_drain() {
    let ca = Ca::start();
    let app = echo_server().await;
    let one = "[limits]\nmax_inbound_connections = 1\n";
    let (a, mut b) = token_pair(&ca, &app, ("drain-a", ""), ("drain-b", one)).await;
    let mut open = TcpStream::connect(a.addr("outbound", "out")).await.unwrap();
    echo(&mut open, b"first").await.unwrap();
    assert!(
        echo_refused(&a.addr("outbound", "out"), b"second").await,
        "a second connection exceeds max_inbound_connections = 1"
    );
    assert!(
        b.admin_get("/metrics").await.contains(
            "tessera_sidecar_denied_total{listener=\"in\",reason=\"connection_limit\"} 1"
        )
    );

    b.proc.signal("TERM");
    b.await_log("draining");
    // Still relaying the open connection while draining; new ones are refused.
    echo(&mut open, b"still flowing").await.unwrap();
    assert!(
        TcpStream::connect(b.addr("inbound", "in")).await.is_err(),
        "accepting after SIGTERM"
    );
    drop(open);
    b.assert_clean_exit("did not exit cleanly after draining");
}

/// The inbound and outbound listeners have caps of their own
/// (`max_inbound_connections`, `max_outbound_connections`): with its outbound
/// cap full, sidecar M still accepts inbound connections, and with its inbound
/// cap full it still serves the app's outbound ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_and_outbound_caps_are_separate() {
    let ca = Ca::start();
    let app = echo_server().await;
    let [ta, tm, tb] = tokens(&ca, ["cap-a", "cap-m", "cap-b"]).await;
    // B: the upstream of M's outbound listener. M: inbound from A, outbound to B.
    let b = Sidecar::start(&ca, &tb, &inbound("in", &app, &sid("cap-m")));
    let caps = "[limits]\nmax_inbound_connections = 1\nmax_outbound_connections = 1\n";
    let m = Sidecar::start(
        &ca,
        &tm,
        &format!(
            "{caps}{}{}",
            inbound("in", &app, &sid("cap-a")),
            outbound("out", &b.addr("inbound", "in"), &sid("cap-b"))
        ),
    );
    let a = Sidecar::start(
        &ca,
        &ta,
        &outbound("out", &m.addr("inbound", "in"), &sid("cap-m")),
    );
    let (m_in, m_out) = (a.addr("outbound", "out"), m.addr("outbound", "out"));

    // The outbound cap full: a second outbound connection is refused, an
    // inbound one is served.
    let mut held_out = TcpStream::connect(&m_out).await.unwrap();
    echo(&mut held_out, b"out one").await.unwrap();
    assert!(
        echo_refused(&m_out, b"out two").await,
        "outbound over its cap"
    );
    let mut held_in = TcpStream::connect(&m_in).await.unwrap();
    echo(&mut held_in, b"in one while outbound is full")
        .await
        .expect("inbound refused while only the outbound cap was full");

    // Now the inbound cap is full too: a second inbound is refused.
    assert!(echo_refused(&m_in, b"in two").await, "inbound over its cap");
    // Free the outbound slot: outbound is served again while inbound stays
    // full. The slot comes back a moment after the relay ends (no event to
    // await): retried until the deadline.
    drop(held_out);
    let (mut served, until) = (false, std::time::Instant::now() + DEADLINE);
    while !served && std::time::Instant::now() < until {
        let mut s = TcpStream::connect(&m_out).await.unwrap();
        served = echo(&mut s, b"out again while inbound is full")
            .await
            .is_ok();
    }
    assert!(
        served,
        "outbound refused while only the inbound cap was full"
    );
    echo(&mut held_in, b"still relaying").await.unwrap();
    let metrics = m.admin_get("/metrics").await;
    for listener in ["in", "out"] {
        assert!(
            metrics.contains(&format!(
                "tessera_sidecar_denied_total{{listener=\"{listener}\",reason=\"connection_limit\"}}"
            )),
            "{listener}: {metrics}"
        );
    }
}

/// A client certificate that chains to the bundle but has expired is refused
/// with reason `expired`. The CA imports a root made here, so the test can sign
/// a leaf whose validity ended years ago (the CA itself never issues one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_client_certificate_is_refused() {
    use rcgen::{Issuer, KeyPair, date_time_ymd};
    let w = tempfile::tempdir().unwrap();
    let d = w.path();
    let root_key = KeyPair::generate().unwrap();
    let mut rp = tessera_test_support::spiffe_root_params("Operator test root");
    rp.not_before = date_time_ymd(2020, 1, 1);
    rp.not_after = date_time_ymd(2090, 1, 1);
    let root = rp.self_signed(&root_key).unwrap();
    std::fs::write(d.join("root.pem"), root.pem()).unwrap();
    std::fs::write(d.join("root.key"), root_key.serialize_pem()).unwrap();
    let ca = CaBuilder::new()
        .set(format!(
            "ca.import_cert=\"{}\"",
            d.join("root.pem").display()
        ))
        .set(format!(
            "ca.import_key=\"{}\"",
            d.join("root.key").display()
        ))
        .start("tessera-ca");
    let app = echo_server().await;
    let tb = token(&ca, "guard").await;
    let b = Sidecar::start(&ca, &tb, &inbound("in", &app, "spiffe://example.org/*"));
    let leaf_key = KeyPair::generate().unwrap();
    let mut lp = tessera_test_support::svid_params("spiffe://example.org/old");
    lp.not_before = date_time_ymd(2021, 1, 1);
    lp.not_after = date_time_ymd(2021, 1, 2);
    let leaf = lp.signed_by(&leaf_key, &Issuer::new(rp, root_key)).unwrap();
    std::fs::write(d.join("leaf.pem"), leaf.pem()).unwrap();
    std::fs::write(d.join("leaf.key"), leaf_key.serialize_pem()).unwrap();
    let text = s_client_presents_leaf(d, &b.addr("inbound", "in"));
    let line = b.await_log("connection denied");
    assert!(
        line.contains("reason=expired") || line.contains("\"expired\""),
        "{line}\n{text}"
    );
    // The certificate parsed: the denial names what it claims, in the log and
    // in the report to the CA.
    assert!(
        line.contains("peer_spiffe_id=\"spiffe://example.org/old\""),
        "{line}"
    );
    let found = reported_denial(&ca, "old", "expired").await;
    assert_eq!(found["reporter"], "spiffe://example.org/guard", "{found}");
    assert!(
        line.contains("listener=in") || line.contains("\"in\""),
        "{line}"
    );
    let metrics = b.admin_get("/metrics").await;
    assert!(
        metrics.contains("tessera_sidecar_denied_total{listener=\"in\",reason=\"expired\"} 1"),
        "{metrics}"
    );
}

/// Metrics follow what happens: active connections per listener while open,
/// bytes in and out per listener once closed (however the relay ended), and
/// the revocation-feed lag growing while the CA is unreachable, while the
/// sidecar keeps serving with its last known state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_track_connections_bytes_and_feed_lag() {
    let mut ca = Ca::start();
    let app = echo_server().await;
    let [ta, tb] = tokens(&ca, ["ma", "mb"]).await;
    let lag = "[revocation]\nwait_seconds = 2\n";
    let listener = inbound("api", &app, "spiffe://example.org/ma");
    let b = Sidecar::start(&ca, &tb, &format!("{lag}{listener}"));
    let upstream = b.addr("inbound", "api");
    let listener = outbound("to-b", &upstream, "spiffe://example.org/mb");
    let a = Sidecar::start(&ca, &ta, &format!("{lag}{listener}"));
    let series = |page: &Metrics, name: &str, listener: &str| -> f64 {
        page.value(name, &[("listener", listener)]).unwrap_or(0.0)
    };
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(a.addr("outbound", "to-b"))
            .await
            .unwrap();
        echo(&mut s, &[7u8; 1000]).await.unwrap();
        conns.push(s);
    }
    let page = a.metrics().await;
    assert_eq!(
        series(&page, "tessera_sidecar_connections_active", "to-b"),
        3.0,
        "{page}"
    );
    assert_eq!(
        series(&page, "tessera_sidecar_connections_opened_total", "to-b"),
        3.0
    );
    drop(conns);
    // Closed: active back to 0, and 3 × 1000 bytes each way on both sides.
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let (pa, pb) = (a.metrics().await, b.metrics().await);
        let done = series(&pa, "tessera_sidecar_connections_active", "to-b") == 0.0
            && series(&pb, "tessera_sidecar_connections_active", "api") == 0.0
            && series(&pa, "tessera_sidecar_connections_closed_total", "to-b") == 3.0
            && series(&pb, "tessera_sidecar_connections_closed_total", "api") == 3.0;
        if done {
            for (page, l) in [(&pa, "to-b"), (&pb, "api")] {
                assert_eq!(
                    series(page, "tessera_sidecar_bytes_in_total", l),
                    3000.0,
                    "{page}"
                );
                assert_eq!(
                    series(page, "tessera_sidecar_bytes_out_total", l),
                    3000.0,
                    "{page}"
                );
            }
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "connections not closed:\n{pa}\n{pb}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = a.metrics().await;
    assert_eq!(
        page.value("tessera_sidecar_revocation_feed_lag_seconds", &[]),
        Some(0.0),
        "{page}"
    );
    assert!(
        page.value("tessera_sidecar_certificate_expiry_timestamp_seconds", &[])
            .unwrap()
            > 0.0
    );
    // The CA goes away: the lag grows, and A → B keeps working.
    ca.kill();
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let page = a.metrics().await;
        if page
            .value("tessera_sidecar_revocation_feed_lag_seconds", &[])
            .unwrap_or(0.0)
            >= 2.0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "feed lag never grew:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut s = TcpStream::connect(a.addr("outbound", "to-b"))
        .await
        .unwrap();
    echo(&mut s, b"still serving without the CA").await.unwrap();
}

/// Environment overrides (`TESSERA_SIDECAR__SECTION__KEY`) reach the sidecar:
/// a file naming a CA URL the sidecar would refuse, corrected from the
/// environment, gives a sidecar that gets its identity and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_overrides_reach_the_sidecar() {
    let ca = Ca::start();
    let app = echo_server().await;
    let t = token(&ca, "from-env").await;
    let cfg = format!(
        "ca_url = \"http://not-https.invalid\"\nca_bundle = \"{}\"\nadmin_listen = \"127.0.0.1:0\"\n{}",
        ca.bundle_path().display(),
        inbound("in", &app, &sid("a"))
    );
    let s = Sidecar::spawn_env(
        &cfg,
        Some(&t),
        &[],
        &[("TESSERA_SIDECAR__CA_URL", ca.url())],
    );
    s.await_log("ready");
    assert_eq!(
        s.identity().await["spiffe_id"],
        "spiffe://example.org/from-env"
    );
}

/// A join token (flag or `TESSERA_JOIN_TOKEN`) together with
/// `platform_token_file` is refused at start, before anything is contacted,
/// by the sidecar and by the agent (`tessera_core::daemon::WorkloadFlags::start`).
#[test]
fn join_token_with_platform_token_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let platform = dir.path().join("platform.jwt");
    std::fs::write(&platform, "x.y.z").unwrap();
    let sidecar = format!(
        "platform_token_file = \"{}\"\n{}",
        platform.display(),
        inbound("in", "127.0.0.1:9", "spiffe://example.org/*")
    );
    let agent = format!(
        "node_name = \"n1\"\nsocket_path = \"{}\"\nplatform_token_file = \"{}\"\n",
        dir.path().join("sock/agent.sock").display(),
        platform.display()
    );
    for (bin, cfg) in [
        (env!("CARGO_BIN_EXE_tessera-sidecar").to_owned(), sidecar),
        (
            tessera_test_support::workspace_binary("tessera-agent", "tessera-agent")
                .display()
                .to_string(),
            agent,
        ),
    ] {
        let file = dir.path().join("config.toml");
        std::fs::write(&file, cfg).unwrap();
        let out = Command::new(&bin)
            .arg("--config")
            .arg(&file)
            .args(["--join-token", "not-a-token"])
            .env_remove("TESSERA_JOIN_TOKEN")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bin} started");
        assert!(
            err.contains("give a join token or platform_token_file, not both"),
            "{bin}: {err}"
        );
    }
}
