//! Shared by the sidecar's process tests: child processes with their logs, a
//! real `tessera-ca` (SQLite in its data dir, or a fresh PostgreSQL database),
//! sidecars started from a config snippet, and an echo app.

#![allow(dead_code)]

use hyper::Method;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tessera_core::client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn target_dir_bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_tessera-sidecar"))
        .parent()
        .unwrap()
        .join(name)
}

/// Builds tessera-ca so the test never runs a stale binary.
pub fn ca_binary() -> PathBuf {
    let ok = Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "-p",
            "tessera-ca-server",
            "--bin",
            "tessera-ca",
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok, "building tessera-ca");
    target_dir_bin("tessera-ca")
}

/// A child process killed on drop, with its stderr lines on a channel.
pub struct Proc {
    pub child: Child,
    pub stderr: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> (Proc, String) {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (
            Proc {
                child,
                stderr: rx,
                log: vec![],
            },
            first,
        )
    }

    /// Waits for a stderr line containing `needle` (the event), failing after DEADLINE.
    pub fn await_log(&mut self, needle: &str) -> String {
        if let Some(l) = self.log.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let end = std::time::Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            let line = self.stderr.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no log line with {needle:?}; got:\n{}", self.log.join("\n"))
            });
            self.log.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Ca {
    pub proc: Option<Proc>,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub admin: Client,
}

impl Ca {
    pub fn start() -> Ca {
        Self::start_in(tempfile::tempdir().unwrap(), "127.0.0.1:0")
    }

    /// Starts (or restarts) the CA on `listen` with its data in `dir`.
    pub fn start_in(dir: tempfile::TempDir, listen: &str) -> Ca {
        Self::start_args(dir, listen, &[])
    }

    /// Starts the CA with extra command-line arguments (`--set k=v`, `--database-url`).
    pub fn start_args(dir: tempfile::TempDir, listen: &str, args: &[&str]) -> Ca {
        let (proc, line) = Proc::spawn(
            Command::new(ca_binary())
                .args(["--listen", listen])
                .args(args)
                .current_dir(dir.path()),
        );
        let port = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap()
            .to_owned();
        let url = format!("https://localhost:{port}");
        let admin_dir = dir.path().join("data/admin");
        let chain =
            tessera_core::pem::certs(&std::fs::read(admin_dir.join("cert.pem")).unwrap()).unwrap();
        let key =
            tessera_core::pem::private_key(&std::fs::read(admin_dir.join("key.pem")).unwrap())
                .unwrap();
        let bundle =
            tessera_core::pem::certs(&std::fs::read(admin_dir.join("bundle.pem")).unwrap())
                .unwrap();
        let tls = tessera_core::tls::api_client_config(&bundle, Some((chain, key)), false).unwrap();
        let admin = Client::new(&url, tls, None).unwrap();
        Ca {
            proc: Some(proc),
            dir,
            url,
            admin,
        }
    }

    pub fn bundle_path(&self) -> PathBuf {
        self.dir.path().join("data/admin/bundle.pem")
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let r = self
            .admin
            .call(method, path, body.map(|b| serde_json::to_vec(&b).unwrap()))
            .await
            .unwrap();
        assert!(
            r.status.is_success(),
            "{path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null)
    }

    /// An entry and a join token for `spiffe://example.org/<name>`.
    pub async fn token(&self, name: &str) -> String {
        let id = format!("spiffe://example.org/{name}");
        self.call(
            Method::POST,
            "/v1/entries",
            Some(serde_json::json!({"spiffe_id": id, "selectors": [format!("test:{name}")]})),
        )
        .await;
        let t = self
            .call(
                Method::POST,
                "/v1/tokens",
                Some(serde_json::json!({"spiffe_id": id})),
            )
            .await;
        t["token"].as_str().unwrap().to_owned()
    }
}

pub struct Sidecar {
    pub proc: Proc,
    pub addrs: serde_json::Value,
    pub _dir: tempfile::TempDir,
}

impl Sidecar {
    pub fn start(ca: &Ca, token: &str, listeners: &str) -> Sidecar {
        Self::start_args(ca, token, listeners, &[])
    }

    pub fn start_args(ca: &Ca, token: &str, listeners: &str, args: &[&str]) -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "ca_url = \"{}\"\nca_bundle = \"{}\"\nadmin_listen = \"127.0.0.1:0\"\n[denials]\nflush_ms = 200\n{listeners}",
            ca.url,
            ca.bundle_path().display()
        );
        std::fs::write(dir.path().join("sidecar.toml"), cfg).unwrap();
        let (mut proc, line) = Proc::spawn(
            Command::new(env!("CARGO_BIN_EXE_tessera-sidecar"))
                .arg("--config")
                .arg(dir.path().join("sidecar.toml"))
                .args(args)
                .env("TESSERA_JOIN_TOKEN", token)
                .env("TESSERA_LOG", "info"),
        );
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("first line {line:?}: {e}"));
        proc.await_log("ready");
        Sidecar {
            proc,
            addrs: v["tessera_sidecar"].clone(),
            _dir: dir,
        }
    }

    pub fn addr(&self, kind: &str, name: &str) -> String {
        self.addrs[kind][name].as_str().unwrap().to_owned()
    }

    pub async fn admin_get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(self.addrs["admin"].as_str().unwrap())
            .await
            .unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }
}

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

/// Awaits the peer closing `s` (EOF or reset), failing after `within`.
pub async fn await_closed(s: &mut TcpStream, within: Duration, what: &str) {
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(r.is_ok(), "{what}: still open after {within:?}");
}

/// A fresh PostgreSQL database for one test, dropped afterwards. `.ci/run`
/// starts the server; a missing server fails the test.
pub struct PgDb {
    pub url: String,
    admin: String,
    name: String,
}

impl PgDb {
    pub fn create() -> PgDb {
        let admin = std::env::var("TESSERA_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://tessera:tessera@127.0.0.1:5432/postgres".into());
        let name = format!(
            "tessera_sidecar_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let out = Command::new("psql")
            .arg(&admin)
            .args(["-qtAc", &format!("CREATE DATABASE {name}")])
            .output()
            .expect("psql must be installed (.ci/run installs PostgreSQL)");
        assert!(
            out.status.success(),
            "creating a database: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        PgDb {
            url: format!("{base}/{name}"),
            admin,
            name,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(&self.admin)
            .args([
                "-qtAc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// Drains a sidecar's stderr into its log and counts lines containing `needle`.
pub fn count_log(s: &mut Sidecar, needle: &str) -> usize {
    while let Ok(l) = s.proc.stderr.try_recv() {
        s.proc.log.push(l);
    }
    s.proc.log.iter().filter(|l| l.contains(needle)).count()
}

/// The value of an unlabelled metric in a Prometheus text page.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
