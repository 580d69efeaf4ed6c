//! The real `tessera-ca` binary as a child process: one builder for every
//! way a test starts it, and the running server with its admin credentials.

use crate::api::{self, Clients};
use crate::binary::workspace_binary;
use crate::db::TestDb;
use crate::process::{EXIT_TIMEOUT, Process};
use hyper::Method;
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::Duration;
use tessera_core::client::Client;

/// Longest wait for a process to print its listening line (or to exit instead).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// What `tessera-ca run` prints on stdout once it listens: the one stable line
/// scripts and tests wait for.
const LISTENING: &str = "tessera-ca listening on ";

/// The files the CA writes into `<data_dir>/admin` before it says it listens.
const ADMIN_FILES: [&str; 4] = ["key.pem", "cert.pem", "bundle.pem", "cli.toml"];

/// A fresh random key-encryption key, 64 hex characters.
pub fn random_kek() -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 32];
    SystemRandom::new().fill(&mut b).unwrap();
    hex::encode(b)
}

/// How to run `tessera-ca`: its working and data directories, database, KEK,
/// options and environment. Cloning keeps the same directories (they live as
/// long as any clone or [`Ca`] made from it).
///
/// Nothing from the test runner's environment that starts with `TESSERA`
/// reaches the process; errors are one readable line (`RUST_LIB_BACKTRACE=0`).
#[derive(Clone)]
pub struct CaBuilder {
    work: Arc<tempfile::TempDir>,
    data_dir: PathBuf,
    database_url: Option<String>,
    kek: Option<String>,
    trust_domain: Option<String>,
    listen: String,
    config: Option<PathBuf>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: String,
}

impl Default for CaBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl CaBuilder {
    /// A CA in a fresh temporary working directory with its data (and its
    /// SQLite database) in `data/` below it, listening on 127.0.0.1, port 0.
    pub fn new() -> Self {
        let work = tempfile::tempdir().unwrap();
        let data_dir = work.path().join("data");
        Self {
            work: Arc::new(work),
            data_dir,
            database_url: None,
            kek: None,
            trust_domain: None,
            listen: "127.0.0.1:0".into(),
            config: None,
            args: vec![],
            env: vec![],
            log: "info".into(),
        }
    }

    /// `--data-dir` (default: `data/` in the working directory).
    pub fn data_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.data_dir = dir.as_ref().to_owned();
        self
    }

    /// `--database-url`; unset, the CA uses SQLite in its data directory.
    pub fn database_url(mut self, url: &str) -> Self {
        self.database_url = Some(url.to_owned());
        self
    }

    /// The database of `db` (`--database-url`).
    pub fn database(self, db: &TestDb) -> Self {
        self.database_url(&db.url)
    }

    /// `TESSERA_KEK`; unset, the process uses (or creates) the KEK file of its data dir.
    pub fn kek(mut self, kek: &str) -> Self {
        self.kek = Some(kek.to_owned());
        self
    }

    /// `--trust-domain`; unset, the configuration's (`example.org` by default).
    pub fn trust_domain(mut self, td: &str) -> Self {
        self.trust_domain = Some(td.to_owned());
        self
    }

    /// `--listen` (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = addr.into();
        self
    }

    /// `--config`: a TOML file.
    pub fn config(mut self, path: impl AsRef<Path>) -> Self {
        self.config = Some(path.as_ref().to_owned());
        self
    }

    /// One `--set section.key=value` override.
    pub fn set(self, kv: impl Into<String>) -> Self {
        self.arg("--set").arg(kv)
    }

    /// Several `--set` overrides.
    pub fn sets<S: Into<String>>(self, kvs: impl IntoIterator<Item = S>) -> Self {
        kvs.into_iter().fold(self, |b, kv| b.set(kv))
    }

    /// One more command-line argument (before any subcommand).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// More command-line arguments (before any subcommand).
    pub fn args<S: Into<String>>(self, args: impl IntoIterator<Item = S>) -> Self {
        args.into_iter().fold(self, |b, a| b.arg(a))
    }

    /// An environment variable for the process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// `TESSERA_LOG` (default `info`).
    pub fn log(mut self, filter: &str) -> Self {
        self.log = filter.to_owned();
        self
    }

    /// The working directory (a temporary directory removed with the last clone).
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// The data directory the process is given.
    pub fn data_path(&self) -> &Path {
        &self.data_dir
    }

    /// `tessera-ca` with every option of this builder except `--listen`, for
    /// one-shot subcommands (`ca csr`, `init`): append the subcommand.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(workspace_binary("tessera-ca-server", "tessera-ca"));
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.arg("--data-dir").arg(&self.data_dir);
        if let Some(url) = &self.database_url {
            cmd.arg("--database-url").arg(url);
        }
        if let Some(td) = &self.trust_domain {
            cmd.arg("--trust-domain").arg(td);
        }
        cmd.args(&self.args).current_dir(self.work.path());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TESSERA") {
                cmd.env_remove(k);
            }
        }
        if let Some(kek) = &self.kek {
            cmd.env("TESSERA_KEK", kek);
        }
        cmd.env("RUST_LIB_BACKTRACE", "0")
            .env("TESSERA_LOG", &self.log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts the server and returns at once (see [`CaBuilder::ready`]).
    pub fn spawn(&self, name: &str) -> Process {
        Process::spawn(name, self.command().arg("--listen").arg(&self.listen))
    }

    /// Starts the server and waits until it listens.
    pub fn start(&self, name: &str) -> Ca {
        self.ready(self.spawn(name))
    }

    /// Waits until `proc` (from [`CaBuilder::spawn`]) listens, failing the
    /// test if it exits instead; checks the admin credentials are in place.
    pub fn ready(&self, mut proc: Process) -> Ca {
        let Some((addr, admin_dir)) = wait_listening(&mut proc) else {
            panic!(
                "{} exited before listening\n{}",
                proc.name(),
                proc.describe()
            );
        };
        let startup = proc.started().elapsed();
        if let Ok(want) = self.listen.parse::<SocketAddr>() {
            assert_eq!(addr.ip(), want.ip(), "{}: listening address", proc.name());
        }
        assert_eq!(admin_dir, self.data_dir.join("admin"), "{}", proc.name());
        for f in ADMIN_FILES {
            assert!(admin_dir.join(f).is_file(), "{}: {f} missing", proc.name());
        }
        let host = if addr.ip().is_loopback() {
            "localhost".to_owned()
        } else {
            addr.ip().to_string()
        };
        let url = format!("https://{host}:{}", addr.port());
        let read = |f: &str| std::fs::read(admin_dir.join(f)).unwrap();
        let admin = api::client(
            &url,
            &tessera_core::pem::certs(&read("bundle.pem")).unwrap(),
            Some((&read("cert.pem"), &read("key.pem"))),
            None,
        );
        Ca {
            proc,
            addr,
            url,
            admin,
            startup,
            builder: self.clone(),
        }
    }
}

/// Reads `proc`'s stdout until the listening line (its address and admin
/// directory) or until the process has closed both pipes, i.e. exited
/// (`None`, with the process reaped and its status recorded).
pub fn wait_listening(proc: &mut Process) -> Option<(SocketAddr, PathBuf)> {
    let name = proc.name().to_owned();
    let line = proc.wait_for("listening line", START_TIMEOUT, |o| {
        match o.stdout.iter().find(|l| l.starts_with(LISTENING)) {
            Some(l) => Some(Some(l.clone())),
            None => o.closed().then_some(None),
        }
    });
    let Some(line) = line else {
        proc.wait_exit(EXIT_TIMEOUT);
        return None;
    };
    let rest = &line[LISTENING.len()..];
    let (addr, dir) = rest
        .split_once(" (admin credentials in ")
        .and_then(|(a, d)| Some((a, d.strip_suffix(')')?)))
        .unwrap_or_else(|| panic!("{name}: unexpected line {line:?}"));
    let addr: SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("{name}: address in {line:?}: {e}"));
    assert_ne!(addr.port(), 0, "{name}: {line}");
    Some((addr, PathBuf::from(dir)))
}

impl Clients for Ca {
    fn url(&self) -> &str {
        Ca::url(self)
    }

    fn anchors(&self) -> Vec<CertificateDer<'static>> {
        Ca::anchors(self)
    }
}

/// A `tessera-ca` process that is listening, with its URL and the admin
/// credentials it wrote. Dropping it kills the process; the directories stay
/// while its [`CaBuilder`] (or a clone) lives.
pub struct Ca {
    // Declared first: the process dies before its directories are removed.
    proc: Process,
    addr: SocketAddr,
    url: String,
    admin: Client,
    startup: Duration,
    builder: CaBuilder,
}

impl Ca {
    /// A CA with default options (SQLite in a fresh temp directory).
    pub fn start() -> Ca {
        CaBuilder::new().start("tessera-ca")
    }

    /// The name it was started with.
    pub fn name(&self) -> &str {
        self.proc.name()
    }

    /// `https://localhost:<port>` (or the IP it listens on, off loopback).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How long it took from spawn to the listening line.
    pub fn startup(&self) -> Duration {
        self.startup
    }

    /// The options it was started with.
    pub fn builder(&self) -> &CaBuilder {
        &self.builder
    }

    /// Its working directory.
    pub fn work_dir(&self) -> &Path {
        self.builder.work_dir()
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        self.builder.data_path()
    }

    /// `<data_dir>/admin`: key.pem, cert.pem, bundle.pem, cli.toml.
    pub fn admin_dir(&self) -> PathBuf {
        self.data_dir().join("admin")
    }

    /// The trust bundle file the CA wrote.
    pub fn bundle_path(&self) -> PathBuf {
        self.admin_dir().join("bundle.pem")
    }

    /// A file of the admin directory, as text.
    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.admin_dir().join(file)).unwrap()
    }

    /// The trust bundle (DER) from the admin directory.
    pub fn anchors(&self) -> Vec<CertificateDer<'static>> {
        tessera_core::pem::certs(self.read("bundle.pem").as_bytes()).unwrap()
    }

    /// A client holding the admin credentials the process wrote at start.
    pub fn admin(&self) -> &Client {
        &self.admin
    }

    /// The child process (its output, its PID).
    pub fn process(&self) -> &Process {
        &self.proc
    }

    /// The child process, to signal or wait for it.
    pub fn process_mut(&mut self) -> &mut Process {
        &mut self.proc
    }

    /// SIGKILL, and waits for the exit; the data directory stays.
    pub fn kill(&mut self) -> ExitStatus {
        self.proc.kill()
    }

    /// SIGTERM, and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.proc.terminate()
    }

    /// Kills the process if it still runs, then starts it again with the same
    /// options on the same address, and waits until it listens.
    pub fn restart(&mut self) {
        self.proc.kill();
        let name = format!("{}-restarted", self.proc.name());
        let builder = self.builder.clone().listen(self.addr.to_string());
        *self = builder.start(&name);
    }

    /// One admin call; panics unless the status is a success. Returns the body
    /// (`Null` if it is not JSON).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (s, v) = api::call(&self.admin, method, path, body).await;
        assert!(s.is_success(), "{path}: {s} {v}");
        v
    }

    /// One admin call; panics unless the status is `want`.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        want: u16,
    ) -> Value {
        let (s, v) = api::call(&self.admin, method, path, body).await;
        assert_eq!(s.as_u16(), want, "{path}: {v}");
        v
    }

    /// Creates an entry (`201` expected) and returns it.
    pub async fn entry(&self, spiffe_id: &str, selectors: &[&str], parent: Option<&str>) -> Value {
        let mut body = json!({"spiffe_id": spiffe_id, "selectors": selectors});
        if let Some(p) = parent {
            body["parent_id"] = json!(p);
        }
        self.expect(Method::POST, "/v1/entries", Some(body), 201)
            .await
    }

    /// Creates a join token for `spiffe_id` (its entry must exist); returns the secret.
    pub async fn join_token(&self, spiffe_id: &str) -> String {
        let t = self
            .expect(
                Method::POST,
                "/v1/tokens",
                Some(json!({"spiffe_id": spiffe_id})),
                201,
            )
            .await;
        t["token"].as_str().unwrap().to_owned()
    }
}
