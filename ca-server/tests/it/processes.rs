//! Process-level tests: the real `tessera-ca` binary, started as child
//! processes on loopback ports, talked to over HTTPS with the admin
//! credentials each process writes into its data directory.
//!
//! Nothing here sleeps to wait for an event: startup is the one stdout line the
//! binary prints once it listens, and exit is both of its pipes closing. Every
//! wait has a generous deadline that fails the test, and every child is killed
//! and reaped when its guard drops.

use crate::common::{Db, TestDb, call, csr};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tessera_core::api::AuditRecord;
use tessera_core::client::Client;
use x509_parser::prelude::FromDer;

/// Longest wait for a process to print its listening line (or to exit instead).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest wait for a process to exit once it should.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
const LISTENING: &str = "tessera-ca listening on ";

/// A fresh random key-encryption key, 64 hex characters.
fn random_kek() -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 32];
    SystemRandom::new().fill(&mut b).unwrap();
    hex::encode(b)
}

/// The SQLite URL of a data directory's database.
fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}/tessera.db?mode=rwc", dir.display())
}

/// How to start one `tessera-ca` process.
#[derive(Debug, Clone)]
struct Opts {
    data_dir: PathBuf,
    /// `--database-url`; None leaves the default (SQLite in the data dir).
    database_url: Option<String>,
    /// `TESSERA_KEK`; None makes the process use the KEK file of its data dir.
    kek: Option<String>,
    trust_domain: String,
    extra_args: Vec<String>,
}

impl Opts {
    fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            database_url: None,
            kek: None,
            trust_domain: "example.org".into(),
            extra_args: vec![],
        }
    }

    fn database_url(mut self, url: &str) -> Self {
        self.database_url = Some(url.to_owned());
        self
    }

    fn kek(mut self, kek: &str) -> Self {
        self.kek = Some(kek.to_owned());
        self
    }
}

/// What the reader threads report.
enum Event {
    Stdout(String),
    StdoutClosed,
    StderrClosed,
}

/// A `tessera-ca` child process. Dropping it kills and reaps the child.
struct CaProcess {
    name: String,
    child: Child,
    events: mpsc::Receiver<Event>,
    stdout: Vec<String>,
    stderr: Arc<Mutex<String>>,
    stdout_open: bool,
    stderr_open: bool,
    status: Option<ExitStatus>,
    started: Instant,
}

impl CaProcess {
    /// Starts the binary; returns at once (see [`CaProcess::wait_listening`]).
    fn spawn(name: &str, o: &Opts) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera-ca"));
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&o.data_dir)
            .arg("--trust-domain")
            .arg(&o.trust_domain);
        if let Some(url) = &o.database_url {
            cmd.arg("--database-url").arg(url);
        }
        cmd.args(&o.extra_args);
        // Nothing from the test runner's environment may steer the process.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TESSERA") {
                cmd.env_remove(k);
            }
        }
        if let Some(kek) = &o.kek {
            cmd.env("TESSERA_KEK", kek);
        }
        // Errors stay one readable message (no anyhow backtrace).
        cmd.env("RUST_LIB_BACKTRACE", "0")
            .env("TESSERA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawning tessera-ca");
        let (tx, events) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let tx_out = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx_out.send(Event::Stdout(line)).is_err() {
                    return;
                }
            }
            let _ = tx_out.send(Event::StdoutClosed);
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (mut err, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match err.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
            let _ = tx.send(Event::StderrClosed);
        });
        CaProcess {
            name: name.to_owned(),
            child,
            events,
            stdout: vec![],
            stderr,
            stdout_open: true,
            stderr_open: true,
            status: None,
            started,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn describe(&self) -> String {
        format!(
            "{} (status {:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.name,
            self.status,
            self.stdout.join("\n"),
            self.stderr()
        )
    }

    /// Takes the next event, failing the test at `deadline`.
    fn next_event(&mut self, deadline: Instant, waiting_for: &str) -> Event {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.events.recv_timeout(left) {
            Ok(e) => e,
            Err(_) => panic!(
                "{}: no {waiting_for} within the deadline\n{}",
                self.name,
                self.describe()
            ),
        }
    }

    fn note(&mut self, e: &Event) {
        match e {
            Event::Stdout(l) => self.stdout.push(l.clone()),
            Event::StdoutClosed => self.stdout_open = false,
            Event::StderrClosed => self.stderr_open = false,
        }
    }

    /// Reads stdout until the listening line (Some) or until the process has
    /// closed both pipes, i.e. exited (None, with the exit status recorded).
    fn wait_listening(&mut self) -> Option<(u16, PathBuf)> {
        let deadline = self.started + START_TIMEOUT;
        while self.stdout_open || self.stderr_open {
            let e = self.next_event(deadline, "listening line");
            self.note(&e);
            if let Event::Stdout(line) = e
                && let Some(rest) = line.strip_prefix(LISTENING)
            {
                let (addr, dir) = rest
                    .split_once(" (admin credentials in ")
                    .unwrap_or_else(|| panic!("{}: unexpected line {line:?}", self.name));
                let dir = dir
                    .strip_suffix(')')
                    .unwrap_or_else(|| panic!("{}: unexpected line {line:?}", self.name));
                let addr: std::net::SocketAddr = addr
                    .parse()
                    .unwrap_or_else(|e| panic!("{}: address in {line:?}: {e}", self.name));
                assert!(addr.ip().is_loopback(), "{line}");
                assert_ne!(addr.port(), 0, "{line}");
                return Some((addr.port(), PathBuf::from(dir)));
            }
        }
        self.reap();
        None
    }

    /// Waits for the process to close both pipes, then reaps it.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while self.stdout_open || self.stderr_open {
            let e = self.next_event(deadline, "exit");
            self.note(&e);
        }
        self.reap()
    }

    fn reap(&mut self) -> ExitStatus {
        // Both pipes are closed, so the process is exiting; wait() returns promptly.
        let s = self.child.wait().expect("waiting for tessera-ca");
        self.status = Some(s);
        s
    }

    /// SIGKILL (no shutdown of any kind) and waits for the process to exit.
    fn kill(&mut self) -> ExitStatus {
        self.child.kill().expect("SIGKILL");
        self.wait_exit()
    }

    /// Sends SIGTERM and waits for the process to exit.
    fn terminate(&mut self) -> ExitStatus {
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill")
            .success();
        assert!(ok, "kill -TERM {} failed", self.child.id());
        self.wait_exit()
    }
}

impl Drop for CaProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A process that is listening, with its URL and admin credentials.
struct Replica {
    proc: CaProcess,
    port: u16,
    url: String,
    admin_dir: PathBuf,
    startup: Duration,
}

impl Replica {
    fn start(name: &str, o: &Opts) -> Self {
        Self::ready(CaProcess::spawn(name, o), o)
    }

    /// Waits until `proc` listens, failing the test if it exits instead.
    fn ready(mut proc: CaProcess, o: &Opts) -> Self {
        let Some((port, admin_dir)) = proc.wait_listening() else {
            panic!("{} exited before listening\n{}", proc.name, proc.describe());
        };
        let startup = proc.started.elapsed();
        assert_eq!(admin_dir, o.data_dir.join("admin"), "{}", proc.name);
        for f in ["key.pem", "cert.pem", "bundle.pem", "cli.toml"] {
            assert!(admin_dir.join(f).is_file(), "{}: {f} missing", proc.name);
        }
        Replica {
            proc,
            port,
            url: format!("https://localhost:{port}"),
            admin_dir,
            startup,
        }
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.admin_dir.join(file)).unwrap()
    }

    fn anchors(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        tessera_core::pem::certs(self.read("bundle.pem").as_bytes()).unwrap()
    }

    /// A client presenting `cert_pem`/`key_pem`, or no certificate.
    fn client(&self, creds: Option<(&str, &str)>) -> Client {
        let creds = creds.map(|(c, k)| {
            (
                tessera_core::pem::certs(c.as_bytes()).unwrap(),
                tessera_core::pem::private_key(k.as_bytes()).unwrap(),
            )
        });
        let tls = tessera_core::tls::api_client_config(&self.anchors(), creds, false).unwrap();
        Client::new(&self.url, tls, None).unwrap()
    }

    /// A client holding the admin credentials this process wrote.
    fn admin(&self) -> Client {
        self.client(Some((&self.read("cert.pem"), &self.read("key.pem"))))
    }

    fn anonymous(&self) -> Client {
        self.client(None)
    }
}

/// `GET /v1/ca` as admin.
async fn ca_status(r: &Replica) -> Value {
    let (s, v) = call(&r.admin(), Method::GET, "/v1/ca", None).await;
    assert_eq!(s, StatusCode::OK, "{}: {v}", r.proc.name);
    v
}

/// The IDs of the active CAs in a `/v1/ca` answer.
fn active_ids(status: &Value) -> Vec<String> {
    status["cas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "active")
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Fetches and parses a replica's CRL (DER); returns the revoked serials, hex.
async fn crl_serials(r: &Replica) -> Vec<String> {
    let reply = r
        .anonymous()
        .call(Method::GET, "/v1/crl", None)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", r.proc.name);
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&reply.body).unwrap();
    let anchors = r.anchors();
    let ca = tessera_core::svid::parse(&anchors[0]).unwrap();
    crl.verify_signature(&ca.tbs_certificate.subject_pki)
        .expect("CRL signed by the CA");
    crl.iter_revoked_certificates()
        .map(|c| hex::encode(c.raw_serial()))
        .collect()
}

/// The whole audit log, in pages of 1000, alternating between replicas.
async fn whole_audit_log(replicas: &[&Replica]) -> Vec<AuditRecord> {
    let mut all: Vec<AuditRecord> = vec![];
    for page in 0.. {
        let r = replicas[page % replicas.len()];
        let after = all.last().map(|a| a.seq).unwrap_or(0);
        let (s, v) = call(
            &r.admin(),
            Method::GET,
            &format!("/v1/audit?after={after}&limit=1000"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let items: Vec<AuditRecord> = serde_json::from_value(v["items"].clone()).unwrap();
        let n = items.len();
        all.extend(items);
        if n < 1000 {
            break;
        }
    }
    all
}

fn count_actions(records: &[AuditRecord], action: &str) -> usize {
    records.iter().filter(|r| r.action == action).count()
}

/// Two replicas on one PostgreSQL database: one CA after racing the first-start
/// bootstrap; single-use join tokens, distinct serials, revocations, the CRL
/// and the audit chain all hold across replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_postgres() {
    let t0 = Instant::now();
    let db = TestDb::new(Db::Postgres).await;
    let kek = random_kek();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let opts_a = Opts::new(dir_a.path()).database_url(&db.url).kek(&kek);
    let opts_b = Opts::new(dir_b.path()).database_url(&db.url).kek(&kek);

    // Both start at once on the empty database and race the bootstrap.
    let (pa, pb) = (
        CaProcess::spawn("A", &opts_a),
        CaProcess::spawn("B", &opts_b),
    );
    let a = Replica::ready(pa, &opts_a);
    let b = Replica::ready(pb, &opts_b);
    eprintln!(
        "startup: A {:?}, B {:?} (racing one empty database)",
        a.startup, b.startup
    );
    let (sa, sb) = (ca_status(&a).await, ca_status(&b).await);
    assert_eq!(sa["storage"], "postgres");
    let (ids_a, ids_b) = (active_ids(&sa), active_ids(&sb));
    assert_eq!(ids_a.len(), 1, "A: {sa}");
    assert_eq!(ids_a, ids_b, "A: {sa}\nB: {sb}");
    assert_eq!(
        sa["cas"].as_array().unwrap().len(),
        1,
        "the loser stored a CA: {sa}"
    );
    let ca_id = ids_a[0].clone();
    assert_eq!(a.read("bundle.pem"), b.read("bundle.pem"));
    // Credentials are shared: A's admin works on B and B's on A.
    let (s, _) = call(&a.admin(), Method::GET, "/v1/ca", None).await;
    assert_eq!(s, StatusCode::OK);
    let cross = b.client(Some((&a.read("cert.pem"), &a.read("key.pem"))));
    let (s, v) = call(&cross, Method::GET, "/v1/ca", None).await;
    assert_eq!(s, StatusCode::OK, "A's admin on B: {v}");
    let cross = a.client(Some((&b.read("cert.pem"), &b.read("key.pem"))));
    let (s, v) = call(&cross, Method::GET, "/v1/ca", None).await;
    assert_eq!(s, StatusCode::OK, "B's admin on A: {v}");

    // (a) A join token made through A is redeemed at most once across both.
    let t = Instant::now();
    for (r, id) in [
        (&a, "spiffe://example.org/web"),
        (&b, "spiffe://example.org/batch"),
    ] {
        let (s, v) = call(
            &r.admin(),
            Method::POST,
            "/v1/entries",
            Some(json!({"spiffe_id": id, "selectors": ["unix:uid:1000"]})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = call(
        &a.admin(),
        Method::POST,
        "/v1/tokens",
        Some(json!({"spiffe_id": "spiffe://example.org/web"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    let gate = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = vec![];
    for i in 0..8 {
        let r = if i % 2 == 0 { &a } else { &b };
        let (name, client) = (r.proc.name.clone(), r.anonymous());
        let (key, csr) = csr();
        let (gate, token) = (gate.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            let (s, v) = call(
                &client,
                Method::POST,
                "/v1/certs/redeem",
                Some(json!({"token": token, "csr": csr})),
            )
            .await;
            (name, s, v, key.serialize_pem())
        }));
    }
    let mut winners = vec![];
    for task in tasks {
        let (name, s, v, key) = task.await.unwrap();
        if s == StatusCode::CREATED {
            winners.push((name, v, key));
        } else {
            assert_eq!(s, StatusCode::FORBIDDEN, "redeem via {name}: {v}");
            assert_eq!(v["code"], "join_token_refused", "redeem via {name}: {v}");
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "one token, {} certificates",
        winners.len()
    );
    let (won_via, issued, workload_key) = winners.remove(0);
    let workload_cert = issued["certificate"].as_str().unwrap().to_owned();
    let workload_serial = issued["serial"].as_str().unwrap().to_owned();
    // The certificate A or B issued is good for renewal on B.
    let workload_on_b = b.client(Some((&workload_cert, &workload_key)));
    let (s, v) = call(
        &workload_on_b,
        Method::POST,
        "/v1/certs/renew",
        Some(json!({"csr": csr().1})),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "renewal on B of a cert from {won_via}: {v}"
    );
    eprintln!(
        "(a) join-token race: 1 of 8 won (via {won_via}) in {:?}",
        t.elapsed()
    );

    // (b) 200 issuances through both replicas at once: distinct serials.
    const N: usize = 200;
    let t = Instant::now();
    let admins = [Arc::new(a.admin()), Arc::new(b.admin())];
    let gate = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = vec![];
    for i in 0..N {
        let (admin, gate) = (admins[i % 2].clone(), gate.clone());
        let csr = csr().1;
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            call(
                &admin,
                Method::POST,
                "/v1/certs",
                Some(json!({"spiffe_id": "spiffe://example.org/batch", "csr": csr})),
            )
            .await
        }));
    }
    let mut serials = HashSet::new();
    for task in tasks {
        let (s, v) = task.await.unwrap();
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert!(
            serials.insert(v["serial"].as_str().unwrap().to_owned()),
            "serial reused: {v}"
        );
    }
    assert_eq!(serials.len(), N);
    eprintln!(
        "(b) {N} concurrent issuances via A and B in {:?}",
        t.elapsed()
    );
    let (s, list) = call(
        &b.admin(),
        Method::GET,
        "/v1/certs?spiffe_id=spiffe%3A%2F%2Fexample.org%2Fbatch&limit=1000",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let items = list["items"].as_array().unwrap();
    let listed: HashSet<String> = items
        .iter()
        .map(|c| c["serial"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(items.len(), N);
    assert_eq!(listed, serials);
    assert!(items.iter().all(|c| c["ca_id"] == ca_id.as_str()));
    let (s, all) = call(&a.admin(), Method::GET, "/v1/certs?limit=1000", None).await;
    assert_eq!(s, StatusCode::OK);
    // Two admin certificates (one per replica), the redeemed one, its renewal, the batch.
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        2 + 1 + 1 + N,
        "{all}"
    );

    // (c) A revocation written through A reaches B's feed, B's CRL and B's renewal check.
    let t = Instant::now();
    let since = ca_status(&b).await["revocation_version"].as_i64().unwrap();
    let follower = b.admin();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let r = call(
            &follower,
            Method::GET,
            &format!("/v1/revocations?since={since}&wait=30"),
            None,
        )
        .await;
        (r, started.elapsed())
    });
    let (s, rv) = call(
        &a.admin(),
        Method::POST,
        "/v1/revocations",
        Some(json!({"serial": workload_serial, "reason": "key_compromise"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{rv}");
    assert_eq!(rv["revoked"], json!([workload_serial]));
    let revoked_at = Instant::now();
    let ((s, feed), polled_for) = poll.await.unwrap();
    let noticed = revoked_at.elapsed();
    assert_eq!(s, StatusCode::OK, "{feed}");
    let events = feed["revocations"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{feed}");
    assert_eq!(events[0]["serial"], workload_serial.as_str());
    assert_eq!(events[0]["reason"], "key_compromise");
    assert_eq!(feed["version"], rv["version"]);
    // B has noticed; its CRL must list the serial now.
    let on_b = crl_serials(&b).await;
    assert_eq!(
        on_b,
        vec![workload_serial.clone()],
        "B's feed showed the revocation but B's CRL does not list it yet"
    );
    assert_eq!(
        crl_serials(&a).await,
        vec![workload_serial.clone()],
        "A's CRL"
    );
    let (s, v) = call(
        &workload_on_b,
        Method::POST,
        "/v1/certs/renew",
        Some(json!({"csr": csr().1})),
    )
    .await;
    assert!(
        s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN,
        "B renewed a certificate revoked through A: {s} {v}"
    );
    eprintln!(
        "(c) B's long-poll answered {noticed:?} after A's revocation (polled {polled_for:?}); step {:?}",
        t.elapsed()
    );

    // (d) One audit chain across both replicas, and both serve the same one.
    let log = whole_audit_log(&[&a, &b]).await;
    tessera_core::audit::verify_chain([0; 32], &log)
        .unwrap_or_else(|seq| panic!("audit chain broken at seq {seq}"));
    let seqs: Vec<i64> = log.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=log.len() as i64).collect::<Vec<_>>());
    assert_eq!(count_actions(&log, "ca.create"), 1, "one CA created");
    assert_eq!(
        count_actions(&log, "credential.create"),
        1,
        "one admin credential"
    );
    assert_eq!(count_actions(&log, "cert.issue_operator"), 2);
    assert_eq!(count_actions(&log, "cert.redeem"), 1);
    assert_eq!(count_actions(&log, "cert.renew"), 1);
    assert_eq!(count_actions(&log, "cert.issue"), N);
    assert_eq!(count_actions(&log, "cert.revoke"), 1);
    let from_b = whole_audit_log(&[&b]).await;
    assert_eq!(
        log.iter().map(|r| &r.hash).collect::<Vec<_>>(),
        from_b.iter().map(|r| &r.hash).collect::<Vec<_>>()
    );
    eprintln!(
        "(d) audit chain of {} records verified; total {:?}",
        log.len(),
        t0.elapsed()
    );
}

/// The KEK file must be private, and a wrong KEK is refused without printing secrets.
#[test]
fn refuses_group_readable_kek_file() {
    use std::os::unix::fs::PermissionsExt;
    // A KEK file readable by the group.
    let dir = tempfile::tempdir().unwrap();
    let kek_path = dir.path().join("kek");
    let secret = random_kek();
    std::fs::write(&kek_path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&kek_path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let t = Instant::now();
    let mut p = CaProcess::spawn("group-readable", &Opts::new(dir.path()));
    assert!(p.wait_listening().is_none(), "started with a 0640 KEK file");
    let took = t.elapsed();
    let status = p.status.unwrap();
    let err = p.stderr();
    assert!(!status.success(), "{}", p.describe());
    assert!(
        err.contains(&kek_path.display().to_string()),
        "file not named: {err}"
    );
    assert!(err.contains("readable by group or others"), "{err}");
    assert!(err.contains("640"), "mode not named: {err}");
    assert!(!err.contains(&secret), "stderr shows the KEK: {err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        !dir.path().join("tessera.db").exists(),
        "opened the database anyway"
    );
    eprintln!("0640 KEK file refused in {took:?}");

    // A KEK given in the environment that does not open the stored CA key.
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (random_kek(), random_kek());
    let url = sqlite_url(dir.path());
    let mut first = Replica::start("kek-x", &Opts::new(dir.path()).database_url(&url).kek(&x));
    assert!(
        !dir.path().join("kek").exists(),
        "KEK file written although TESSERA_KEK is set"
    );
    // Only a means to free the database here; restart_keeps_ca_and_admin checks
    // that SIGTERM is a clean exit.
    first.proc.terminate();
    let t = Instant::now();
    let mut second = CaProcess::spawn("kek-y", &Opts::new(dir.path()).database_url(&url).kek(&y));
    assert!(
        second.wait_listening().is_none(),
        "started with the wrong KEK"
    );
    let took = t.elapsed();
    let err = second.stderr();
    assert!(!second.status.unwrap().success(), "{}", second.describe());
    assert!(err.contains("CA key could not be decrypted"), "{err}");
    for (name, k) in [("X", &x), ("Y", &y)] {
        let logs = format!("{}{}", first.proc.stderr(), err).to_ascii_lowercase();
        assert!(!logs.contains(k.as_str()), "KEK {name} printed: {logs}");
    }
    assert!(took < Duration::from_secs(10), "took {took:?}");
    eprintln!("wrong KEK refused in {took:?}");
}

/// Configuration errors exit non-zero and name the option at fault.
#[test]
fn config_errors_name_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let mut bogus = Opts::new(dir.path());
    bogus.extra_args = vec!["--set".into(), "issuance.bogus=1".into()];
    let mut bad_td = Opts::new(dir.path());
    bad_td.trust_domain = "Bad.Domain".into();
    for (o, needles) in [
        (bogus, &["bogus", "issuance"][..]),
        (bad_td, &["trust_domain"][..]),
    ] {
        let needle = needles[0];
        let mut p = CaProcess::spawn(needle, &o);
        assert!(p.wait_listening().is_none(), "started: {}", p.describe());
        let status = p.status.unwrap();
        assert!(!status.success(), "{}", p.describe());
        assert!(status.code().is_some_and(|c| c != 0), "{}", p.describe());
        let err = p.stderr();
        for n in needles {
            assert!(err.contains(n), "{n} not named: {err}");
        }
        assert!(p.stdout.is_empty(), "{}", p.describe());
        eprintln!("{needle}: {}", err.trim().replace('\n', " | "));
    }
    assert!(
        !dir.path().join("tessera.db").exists(),
        "a configuration error still opened the database"
    );
}

/// A restart on the same data dir keeps the CA, the admin credentials and the ledger;
/// SIGTERM is a clean exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_ca_and_admin() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // No TESSERA_KEK: the KEK file in the data dir is created, then reused.
    let opts = Opts::new(dir.path()).database_url(&sqlite_url(dir.path()));
    let mut first = Replica::start("first", &opts);
    let kek_mode = std::fs::metadata(dir.path().join("kek"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(kek_mode & 0o777, 0o600);
    let status = ca_status(&first).await;
    assert_eq!(status["storage"], "sqlite");
    let ids = active_ids(&status);
    assert_eq!(ids.len(), 1, "{status}");
    let (bundle, admin_cert) = (first.read("bundle.pem"), first.read("cert.pem"));
    let admin = first.admin();
    let (s, v) = call(
        &admin,
        Method::POST,
        "/v1/entries",
        Some(json!({"spiffe_id": "spiffe://example.org/db", "selectors": ["unix:uid:70"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, issued) = call(
        &admin,
        Method::POST,
        "/v1/certs",
        Some(json!({"spiffe_id": "spiffe://example.org/db", "csr": csr().1})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{issued}");
    let t = Instant::now();
    let exit = first.proc.terminate();
    eprintln!("SIGTERM: exited {exit:?} after {:?}", t.elapsed());
    assert_eq!(exit.code(), Some(0), "{}", first.proc.describe());

    let mut second = Replica::start("second", &opts);
    eprintln!(
        "startups: first {:?}, restart {:?}",
        first.startup, second.startup
    );
    let status = ca_status(&second).await;
    assert_eq!(
        active_ids(&status),
        ids,
        "CA changed across restart: {status}"
    );
    assert_eq!(status["cas"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(second.read("bundle.pem"), bundle);
    assert_eq!(
        second.read("cert.pem"),
        admin_cert,
        "admin certificate re-issued"
    );
    assert!(
        second
            .read("cli.toml")
            .contains(&format!("https://localhost:{}", second.port)),
        "{}",
        second.read("cli.toml")
    );
    // The credentials written by the first run, on the second.
    let (s, v) = call(&second.admin(), Method::GET, "/v1/ca", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let serial = issued["serial"].as_str().unwrap();
    let (s, v) = call(
        &second.admin(),
        Method::GET,
        &format!("/v1/certs/{serial}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "certificate of the first run lost: {v}");
    let log = whole_audit_log(&[&second]).await;
    tessera_core::audit::verify_chain([0; 32], &log)
        .unwrap_or_else(|seq| panic!("audit chain broken at seq {seq}"));
    assert_eq!(count_actions(&log, "ca.create"), 1);
    let exit = second.proc.terminate();
    assert_eq!(exit.code(), Some(0), "{}", second.proc.describe());

    // The listening line is what scripts and supervisors wait for: SIGTERM as
    // soon as it appears must be a clean exit too.
    for i in 0..5 {
        let mut quick = Replica::start(&format!("quick-{i}"), &opts);
        let exit = quick.proc.terminate();
        assert_eq!(
            exit.code(),
            Some(0),
            "SIGTERM right after the listening line\n{}",
            quick.proc.describe()
        );
    }
}

/// `(id, state)` of every CA generation, straight from the database.
async fn ca_rows(c: &mut sqlx::AnyConnection) -> Vec<(String, String)> {
    use sqlx::Row;
    sqlx::query("SELECT id, state FROM cas ORDER BY id")
        .fetch_all(c)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The holder of the rotation schedule's lease.
async fn schedule_holder(c: &mut sqlx::AnyConnection) -> Option<String> {
    use sqlx::Row;
    sqlx::query("SELECT holder FROM leases WHERE name = 'ca-schedule'")
        .fetch_optional(c)
        .await
        .unwrap()
        .map(|r| r.get(0))
}

fn in_state(rows: &[(String, String)], state: &str) -> Vec<String> {
    rows.iter()
        .filter(|(_, s)| s == state)
        .map(|(id, _)| id.clone())
        .collect()
}

/// Polls `f` every 100 ms until it returns Some, failing the test at `within`.
async fn poll_until<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "no {what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two replicas on one PostgreSQL with a fast rotation schedule. The one
/// holding the `ca-schedule` lease prepares the next generation and is
/// SIGKILLed before activating it; the other takes the lease once it expires
/// and activates that same prepared generation. Throughout, exactly one
/// generation is active at every observation, none is prepared twice, and the
/// audit chain stays single and valid. The killed replica, restarted, rejoins
/// without bootstrapping, taking the lease or changing the CA set.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_killed_mid_rotation() {
    let db = TestDb::new(Db::Postgres).await;
    let kek = random_kek();
    // A 120 s CA: prepare at 2 % of its life, activate at 15 % (18 s), so
    // there is time to kill the preparer before activation.
    let sets = [
        "ca.ttl_seconds=120",
        "issuance.max_ttl_seconds=60",
        "issuance.default_ttl_seconds=60",
        "rotation.prepare_at=0.02",
        "rotation.activate_at=0.15",
        "rotation.min_overlap_seconds=2",
        "rotation.check_interval_seconds=1",
        "rotation.lease_seconds=3",
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let opts = |dir: &Path| {
        let mut o = Opts::new(dir).database_url(&db.url).kek(&kek);
        o.extra_args = sets
            .iter()
            .flat_map(|s| ["--set".to_string(), s.to_string()])
            .collect();
        o
    };
    let (opts_a, opts_b) = (opts(dir_a.path()), opts(dir_b.path()));
    let (pa, pb) = (
        CaProcess::spawn("A", &opts_a),
        CaProcess::spawn("B", &opts_b),
    );
    let mut replicas = vec![Replica::ready(pa, &opts_a), Replica::ready(pb, &opts_b)];

    // An independent observer of the cas table, every 50 ms, until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let observer = {
        let (stop, mut c) = (stop.clone(), db.raw().await);
        tokio::spawn(async move {
            let mut seen = vec![];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.push(ca_rows(&mut c).await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        })
    };
    let mut c = db.raw().await;
    let first = poll_until(Duration::from_secs(30), "active CA", || async {
        in_state(&ca_rows(&mut db.raw().await).await, "active").pop()
    })
    .await;

    // The lease holder prepares the next generation.
    let prepared = poll_until(Duration::from_secs(30), "prepared generation", || async {
        in_state(&ca_rows(&mut db.raw().await).await, "prepared").pop()
    })
    .await;
    let holder = schedule_holder(&mut c).await.expect("a schedule lease");
    let victim = replicas
        .iter()
        .position(|r| r.proc.stderr().contains(&holder))
        .unwrap_or_else(|| panic!("no replica logged replica id {holder}"));
    let mut killed = replicas.remove(victim);
    let survivor = replicas.pop().unwrap();
    let survivor_id = {
        let err = survivor.proc.stderr();
        let at = err
            .find("replica=")
            .expect("replica id in the listening line")
            + 8;
        err[at..]
            .trim_start_matches('"')
            .chars()
            .take(32)
            .collect::<String>()
    };
    assert_ne!(survivor_id, holder);
    let status = killed.proc.kill();
    let killed_at = Instant::now();
    let rows = ca_rows(&mut c).await;
    assert_eq!(
        in_state(&rows, "prepared"),
        vec![prepared.clone()],
        "killed too late: the generation was already activated: {rows:?}"
    );
    assert_eq!(in_state(&rows, "active"), vec![first.clone()]);
    eprintln!(
        "{} (holder {holder}) prepared {prepared} and was SIGKILLed ({status:?}); {} survives",
        killed.proc.name, survivor.proc.name
    );

    // The survivor takes the lease once it expires, then activates the
    // generation the dead replica prepared (it does not prepare another).
    poll_until(Duration::from_secs(15), "lease takeover", || async {
        (schedule_holder(&mut db.raw().await).await.as_deref() == Some(survivor_id.as_str()))
            .then_some(())
    })
    .await;
    eprintln!("lease taken over {:?} after the kill", killed_at.elapsed());
    poll_until(
        Duration::from_secs(40),
        "activation of the prepared generation",
        || async {
            let rows = ca_rows(&mut db.raw().await).await;
            (in_state(&rows, "active") == vec![prepared.clone()]).then_some(())
        },
    )
    .await;
    let rows = ca_rows(&mut c).await;
    assert!(in_state(&rows, "retired").contains(&first), "{rows:?}");
    eprintln!(
        "{prepared} activated by the survivor {:?} after the kill",
        killed_at.elapsed()
    );

    // The killed replica restarts and rejoins: same CA set, no bootstrap, no
    // lease taken from a live holder, the same bundle as the survivor.
    let before = whole_audit_log(&[&survivor]).await;
    let victim_opts = if victim == 0 { &opts_a } else { &opts_b };
    let mut again = Replica::start(&format!("{}-restarted", killed.proc.name), victim_opts);
    poll_until(
        Duration::from_secs(10),
        "the same bundle on both",
        || async {
            let get = |r: &Replica| {
                let client = r.anonymous();
                async move {
                    client
                        .call(Method::GET, "/v1/bundle", None)
                        .await
                        .unwrap()
                        .body
                }
            };
            (get(&again).await == get(&survivor).await).then_some(())
        },
    )
    .await;
    // Three schedule ticks of the restarted replica: the lease stays put.
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        assert_eq!(
            schedule_holder(&mut c).await.as_deref(),
            Some(survivor_id.as_str())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Both serve the generation the database says is active (the schedule
    // keeps rotating meanwhile, so compare until they agree).
    poll_until(
        Duration::from_secs(10),
        "the same active CA on both",
        || async {
            let (sa, sb) = (ca_status(&again).await, ca_status(&survivor).await);
            (active_ids(&sa) == active_ids(&sb) && active_ids(&sa).len() == 1).then_some(())
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = observer.await.unwrap();

    // Invariants over the whole run.
    assert!(seen.len() > 100, "{} observations", seen.len());
    for rows in &seen {
        assert_eq!(in_state(rows, "active").len(), 1, "{rows:?}");
        assert!(in_state(rows, "prepared").len() <= 1, "{rows:?}");
    }
    let log = whole_audit_log(&[&again, &survivor]).await;
    tessera_core::audit::verify_chain([0; 32], &log)
        .unwrap_or_else(|seq| panic!("audit chain broken at seq {seq}"));
    let seqs: Vec<i64> = log.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=log.len() as i64).collect::<Vec<_>>());
    assert_eq!(count_actions(&log, "ca.create"), 1, "one CA bootstrapped");
    let prepares: Vec<&str> = log
        .iter()
        .filter(|r| r.action == "ca.prepare")
        .map(|r| r.target.as_str())
        .collect();
    let unique: HashSet<&str> = prepares.iter().copied().collect();
    assert_eq!(
        unique.len(),
        prepares.len(),
        "a generation prepared twice: {prepares:?}"
    );
    let activations: Vec<&str> = log
        .iter()
        .filter(|r| r.action == "ca.activate")
        .map(|r| r.target.as_str())
        .collect();
    assert_eq!(
        activations.iter().filter(|t| **t == prepared).count(),
        1,
        "{activations:?}"
    );
    // Whatever the restarted replica did is schedule work (none of it a bootstrap).
    for r in &log[before.len()..] {
        assert!(
            matches!(
                r.action.as_str(),
                "ca.prepare" | "ca.activate" | "ca.remove"
            ),
            "unexpected after the restart: {r:?}"
        );
    }
    let _ = again.proc.terminate();
}
