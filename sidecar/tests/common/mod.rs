//! Shared by the sidecar's process tests: sidecars started from a config
//! snippet against a real `tessera-ca` (both from the test-support crate's
//! process and CA helpers), join tokens, and an echo app.

#![allow(dead_code)]

use std::time::Duration;
use tessera_test_support::{Ca, Metrics, Process};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest wait for a sidecar event (a log line, an echo).
pub const DEADLINE: Duration = Duration::from_secs(20);

/// An entry (selector `test:<name>`) and a join token for
/// `spiffe://example.org/<name>`.
pub async fn token(ca: &Ca, name: &str) -> String {
    let id = format!("spiffe://example.org/{name}");
    ca.entry(&id, &[&format!("test:{name}")], None).await;
    ca.join_token(&id).await
}

/// [`token`] for each of `names`, in order.
pub async fn tokens<const N: usize>(ca: &Ca, names: [&str; N]) -> [String; N] {
    let mut out = Vec::with_capacity(N);
    for name in names {
        out.push(token(ca, name).await);
    }
    out.try_into().expect("one token a name")
}

/// Issues a certificate for `spiffe://example.org/<name>` into `dir` (key.pem,
/// cert.pem, bundle.pem) the way a workload would: key made here, CSR sent.
pub async fn issue_files(ca: &Ca, name: &str, dir: &std::path::Path) {
    let token = token(ca, name).await;
    let (key, csr) = tessera_test_support::csr();
    let r = ca
        .call(
            hyper::Method::POST,
            "/v1/certs/redeem",
            Some(serde_json::json!({"token": token, "csr": csr})),
        )
        .await;
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), r["certificate"].as_str().unwrap()).unwrap();
    std::fs::write(dir.join("bundle.pem"), r["bundle"].as_str().unwrap()).unwrap();
}

/// `spiffe://example.org/<name>`.
pub fn sid(name: &str) -> String {
    format!("spiffe://example.org/{name}")
}

/// An `[[inbound]]` listener `name` on a free loopback port, forwarding to
/// `forward`, admitting the SPIFFE IDs `allow` matches.
pub fn inbound(name: &str, forward: &str, allow: &str) -> String {
    format!(
        "[[inbound]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nforward = \"{forward}\"\nallow = [\"{allow}\"]\n"
    )
}

/// An `[[outbound]]` listener `name` on a free loopback port, to `upstream`,
/// which must present `server_id`.
pub fn outbound(name: &str, upstream: &str, server_id: &str) -> String {
    format!(
        "[[outbound]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\nserver_id = \"{server_id}\"\n"
    )
}

/// Sidecar B (inbound `in` to `app`, admitting only A) and then A (outbound
/// `out` to B, which must be B); each side is `(name, join token, extra
/// configuration in front of its listener)`, the name being the last
/// segment of its SPIFFE ID. Returns `(a, b)`.
pub fn pair(
    ca: &Ca,
    app: &str,
    a: (&str, &str, &str),
    b: (&str, &str, &str),
) -> (Sidecar, Sidecar) {
    let (a_name, a_token, a_cfg) = a;
    let (b_name, b_token, b_cfg) = b;
    let b = Sidecar::start(
        ca,
        b_token,
        &format!("{b_cfg}{}", inbound("in", app, &sid(a_name))),
    );
    let upstream = b.addr("inbound", "in");
    let a = Sidecar::start(
        ca,
        a_token,
        &format!("{a_cfg}{}", outbound("out", &upstream, &sid(b_name))),
    );
    (a, b)
}

/// [`pair`] with a fresh join token ([`token`]) for each side; each side is
/// `(name, extra configuration in front of its listener)`.
pub async fn token_pair(
    ca: &Ca,
    app: &str,
    a: (&str, &str),
    b: (&str, &str),
) -> (Sidecar, Sidecar) {
    let (ta, tb) = (token(ca, a.0).await, token(ca, b.0).await);
    pair(ca, app, (a.0, &ta, a.1), (b.0, &tb, b.1))
}

/// Entries (selector `t:x`, certificates living `ttl` seconds) and join
/// tokens for `spiffe://example.org/<name>` of each of `names`.
pub async fn short_lived_tokens<const N: usize>(
    ca: &Ca,
    names: [&str; N],
    ttl: u64,
) -> [String; N] {
    let mut tokens = [const { String::new() }; N];
    for (name, token) in names.iter().zip(tokens.iter_mut()) {
        let id = sid(name);
        ca.call(
            hyper::Method::POST,
            "/v1/entries",
            Some(serde_json::json!({"spiffe_id": id, "selectors": ["t:x"], "ttl_seconds": ttl})),
        )
        .await;
        *token = ca.join_token(&id).await;
    }
    tokens
}

/// The start of every sidecar configuration here: the CA, its bundle and an
/// admin endpoint on a free loopback port.
pub fn base_config(ca: &Ca) -> String {
    format!(
        "ca_url = \"{}\"\nca_bundle = \"{}\"\nadmin_listen = \"127.0.0.1:0\"\n",
        ca.url(),
        ca.bundle_path().display()
    )
}

/// A `tessera-sidecar` process and the addresses it printed.
pub struct Sidecar {
    pub proc: Process,
    pub addrs: serde_json::Value,
    _dir: tempfile::TempDir,
}

impl Sidecar {
    /// Starts a sidecar with join token `token` and `listeners` (TOML), and
    /// waits until it is ready.
    pub fn start(ca: &Ca, token: &str, listeners: &str) -> Sidecar {
        Self::start_args(ca, token, listeners, &[])
    }

    /// [`Sidecar::start`] with extra command-line arguments.
    pub fn start_args(ca: &Ca, token: &str, listeners: &str, args: &[&str]) -> Sidecar {
        let cfg = format!("{}[denials]\nflush_ms = 200\n{listeners}", base_config(ca));
        let s = Self::spawn(&cfg, Some(token), args);
        s.await_log("ready");
        s
    }

    /// Starts a sidecar on the whole configuration `cfg` (TOML) with a join
    /// token or none in its environment; returns once it printed its
    /// addresses, ready or not.
    pub fn spawn(cfg: &str, token: Option<&str>, args: &[&str]) -> Sidecar {
        Self::spawn_env(cfg, token, args, &[])
    }

    /// [`Sidecar::spawn`] with extra environment variables.
    pub fn spawn_env(
        cfg: &str,
        token: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sidecar.toml"), cfg).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tessera-sidecar"));
        cmd.arg("--config")
            .arg(dir.path().join("sidecar.toml"))
            .args(args)
            .env_remove("TESSERA_JOIN_TOKEN")
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .env("TESSERA_LOG", "info");
        if let Some(t) = token {
            cmd.env("TESSERA_JOIN_TOKEN", t);
        }
        cmd.envs(env.iter().copied());
        let proc = Process::spawn("tessera-sidecar", &mut cmd);
        let line = proc
            .first_stdout_line(DEADLINE)
            .unwrap_or_else(|| panic!("the sidecar printed nothing\n{}", proc.describe()));
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("first line {line:?}: {e}"));
        Sidecar {
            proc,
            addrs: v["tessera_sidecar"].clone(),
            _dir: dir,
        }
    }

    /// The address of listener `name` of `kind` (`inbound`, `outbound`).
    pub fn addr(&self, kind: &str, name: &str) -> String {
        self.addrs[kind][name].as_str().unwrap().to_owned()
    }

    /// `GET path` on the admin endpoint: the whole HTTP response.
    pub async fn admin_get(&self, path: &str) -> String {
        tessera_test_support::http_get(self.addrs["admin"].as_str().unwrap(), path).await
    }

    /// The identity the admin endpoint reports (`/identity`, JSON).
    pub async fn identity(&self) -> serde_json::Value {
        let page = self.admin_get("/identity").await;
        let body = page.split("\r\n\r\n").nth(1).unwrap();
        let body = body.lines().find(|l| l.starts_with('{')).unwrap_or(body);
        serde_json::from_str(body).unwrap_or_else(|e| panic!("/identity {page:?}: {e}"))
    }

    /// The serial of the certificate the sidecar holds.
    pub async fn serial(&self) -> String {
        self.identity().await["serial"].as_str().unwrap().to_owned()
    }

    /// The admin endpoint's metrics.
    pub async fn metrics(&self) -> Metrics {
        Metrics::fetch_http(self.addrs["admin"].as_str().unwrap()).await
    }

    /// Waits until the unlabelled metric `name` reaches `at_least` (bounded polling).
    pub async fn await_metric(&self, name: &str, at_least: f64) {
        tessera_test_support::poll_until(Duration::from_secs(30), name, || async {
            (self.metrics().await.value(name, &[]).unwrap_or(0.0) >= at_least).then_some(())
        })
        .await
    }

    /// The first log line containing `needle`, waiting up to [`DEADLINE`].
    pub fn await_log(&self, needle: &str) -> String {
        self.proc.await_stderr(needle, DEADLINE)
    }

    /// Waits up to 10 s for the sidecar to exit; panics unless it exited 0.
    pub fn assert_clean_exit(&mut self, what: &str) {
        let status = self.proc.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "{what}: {status:?}");
    }

    /// How many log lines so far contain `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.proc.count_stderr(needle)
    }
}

/// An app that echoes every connection back; returns its address.
pub async fn echo_server() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Whether a new connection to `addr` fails to carry an echo of `msg`
/// (refused, or closed before the echo came back).
pub async fn echo_refused(addr: &str, msg: &[u8]) -> bool {
    let mut s = TcpStream::connect(addr).await.unwrap();
    echo(&mut s, msg).await.is_err()
}

/// Writes `msg` and reads the echo; Err if the connection is refused or closed.
pub async fn echo(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    s.write_all(msg).await?;
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("timeout"))??;
    assert_eq!(buf, msg);
    Ok(())
}

/// Polls `GET /v1/ca` through `admin` until `pred` holds (an event on the CA).
pub async fn await_ca(
    admin: &tessera_core::client::Client,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    tessera_test_support::poll_until(Duration::from_secs(30), what, || async {
        let (s, v) = tessera_test_support::get(admin, "/v1/ca").await;
        (s.is_success() && pred(&v)).then_some(v)
    })
    .await
}

/// A new admin API token (`POST /v1/credentials`): it outlives the admin
/// certificate when that falls with its CA generation.
pub async fn admin_token(ca: &Ca) -> String {
    ca.call(
        hyper::Method::POST,
        "/v1/credentials",
        Some(serde_json::json!({"name": "ops", "role": "admin"})),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned()
}
