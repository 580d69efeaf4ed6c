//! `tessera cert renew` against a real `tessera-ca` process: one-shot renewal,
//! `--watch` with `--exec` and `--signal`, and the refusals.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{bin_dir, ca_binary};

/// A child process killed (and reaped) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CA process on a loopback port, with a scratch directory as the working directory.
struct Ca {
    _child: Proc,
    dir: tempfile::TempDir,
}

impl Ca {
    fn start() -> Ca {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(ca_binary())
            .args(["--listen", "127.0.0.1:0"])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert!(
            line.starts_with("tessera-ca listening on 127.0.0.1:"),
            "unexpected first line: {line:?}"
        );
        Ca {
            _child: Proc(child),
            dir,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_dir().join("tessera"));
        c.args(args)
            .current_dir(self.dir.path())
            .env_remove("TESSERA_SERVER")
            .env_remove("TESSERA_TOKEN")
            .env_remove("TESSERA_CERT")
            .env_remove("TESSERA_KEY");
        c
    }

    fn tessera(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.tessera(args);
        assert!(
            o.status.success(),
            "tessera {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Registers `name` (certificate lifetime `ttl`) and issues a certificate
    /// for it into `<dir>/<name>/` through a join token, as a workload would.
    fn issue(&self, name: &str, ttl: &str) -> PathBuf {
        let id = format!("spiffe://example.org/{name}");
        self.ok(&[
            "entry",
            "create",
            "--spiffe-id",
            &id,
            "--selector",
            &format!("unix:uid:{}", 1000 + name.len()),
            "--ttl",
            ttl,
        ]);
        let token = self.ok(&["token", "create", "--spiffe-id", &id]);
        self.ok(&["cert", "issue", "--token", token.trim(), "--out-dir", name]);
        self.path(name)
    }

    /// `cert renew` arguments for the files in `dir`.
    fn files(dir: &Path) -> Vec<String> {
        let f = |n: &str| dir.join(n).display().to_string();
        vec![
            "--cert".into(),
            f("cert.pem"),
            "--key".into(),
            f("key.pem"),
            "--bundle".into(),
            f("bundle.pem"),
        ]
    }
}

fn serial(cert: &Path) -> String {
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    assert!(o.status.success());
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

/// The certificate verifies against the bundle and carries the key's public key.
fn assert_consistent(dir: &Path) {
    let o = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(dir.join("bundle.pem"))
        .arg(dir.join("cert.pem"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let cert_pub = Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(dir.join("cert.pem"))
        .output()
        .unwrap();
    let key_pub = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(dir.join("key.pem"))
        .output()
        .unwrap();
    assert!(cert_pub.status.success() && key_pub.status.success());
    assert_eq!(
        cert_pub.stdout, key_pub.stdout,
        "cert and key belong together"
    );
    let mode = std::fs::metadata(dir.join("key.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "key file mode");
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// Waits until `f` holds, polling; panics with `what` at the deadline.
fn wait_for(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn kill(pid: u32, sig: &str) {
    let s = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(s.success());
}

#[test]
fn one_shot_renew_replaces_cert_and_key() {
    let ca = Ca::start();
    let dir = ca.issue("web", "1h");
    let (old_serial, old_key) = (
        serial(&dir.join("cert.pem")),
        std::fs::read(dir.join("key.pem")).unwrap(),
    );
    let mut args = vec!["cert", "renew", "--output", "json"];
    let files = Ca::files(&dir);
    args.extend(files.iter().map(String::as_str));
    let out = ca.ok(&args);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["event"], "renewed");
    assert_eq!(v["spiffe_id"], "spiffe://example.org/web");
    let new_serial = serial(&dir.join("cert.pem"));
    assert_ne!(new_serial, old_serial, "a new certificate");
    let norm = |s: &str| {
        s.trim_start_matches("serial=")
            .trim_start_matches('0')
            .to_lowercase()
    };
    assert_eq!(
        norm(&new_serial),
        norm(v["serial"].as_str().unwrap()),
        "the line names the new serial"
    );
    assert_ne!(
        std::fs::read(dir.join("key.pem")).unwrap(),
        old_key,
        "a new key"
    );
    assert_consistent(&dir);

    // The renewed files renew again, here through --cert-dir.
    let out = ca.ok(&["cert", "renew", "--cert-dir", "web"]);
    assert!(
        out.starts_with("renewed spiffe_id=spiffe://example.org/web serial="),
        "{out}"
    );
    assert_ne!(serial(&dir.join("cert.pem")), new_serial);
    assert_consistent(&dir);
}

#[test]
fn watch_renews_and_runs_exec_and_signal() {
    let ca = Ca::start();
    let dir = ca.issue("batch", "60");
    let first_serial = serial(&dir.join("cert.pem"));
    let hups = ca.path("hups");
    let execs = ca.path("execs");
    // The "app": counts the SIGHUPs it receives.
    let app = Proc(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "trap 'echo hup >> {}' HUP; while :; do sleep 0.1; done",
                hups.display()
            ))
            .spawn()
            .unwrap(),
    );
    let signal = format!("{}:HUP", app.0.id());
    let exec = format!("echo renewed >> {}", execs.display());
    let mut args = vec![
        "cert",
        "renew",
        "--watch",
        "--renew-at",
        "0.05",
        "--exec",
        &exec,
        "--signal",
        &signal,
        "--output",
        "json",
    ];
    let files = Ca::files(&dir);
    args.extend(files.iter().map(String::as_str));
    // 60 s certificates renewed at 5 % of their lifetime: every ~3 s.
    let mut watcher = Proc(
        ca.command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for(
        "two renewals, execs and signals",
        Duration::from_secs(40),
        || lines(&execs) >= 2 && lines(&hups) >= 2,
    );
    assert_ne!(serial(&dir.join("cert.pem")), first_serial);
    assert_consistent(&dir);

    // SIGTERM stops it cleanly.
    kill(watcher.0.id(), "TERM");
    let mut status = None;
    wait_for("the watcher to exit", Duration::from_secs(10), || {
        status = watcher.0.try_wait().unwrap();
        status.is_some()
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(watcher.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.unwrap().code(), Some(0), "{stderr}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(watcher.0.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let renewals: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(renewals.len() >= 2, "{stdout}");
    let mut serials: Vec<&str> = renewals
        .iter()
        .map(|r| r["serial"].as_str().unwrap())
        .collect();
    serials.dedup();
    assert_eq!(serials.len(), renewals.len(), "each renewal a new serial");
    for r in &renewals {
        assert!(
            r["not_after"].is_string() && r["next_renewal"].is_string(),
            "{r}"
        );
    }
    assert!(!stdout.contains("PRIVATE KEY") && !stderr.contains("PRIVATE KEY"));
}

#[test]
fn revoked_certificate_is_refused() {
    let ca = Ca::start();
    let dir = ca.issue("gone", "60");
    let before = std::fs::read(dir.join("cert.pem")).unwrap();
    let s = serial(&dir.join("cert.pem"));
    ca.ok(&[
        "cert",
        "revoke",
        "--serial",
        s.trim_start_matches("serial="),
    ]);
    let mut args = vec!["cert", "renew"];
    let files = Ca::files(&dir);
    args.extend(files.iter().map(String::as_str));
    let o = ca.tessera(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("renewal refused") && stderr.contains("revoked"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(dir.join("cert.pem")).unwrap(),
        before,
        "files untouched"
    );

    // Watching does not retry a refusal that cannot change: it stops at the
    // first renewal (at 5 % of the 60 s lifetime).
    args.extend(["--watch", "--renew-at", "0.05"]);
    let mut watcher = Proc(ca.command(&args).stderr(Stdio::null()).spawn().unwrap());
    let mut status = None;
    wait_for("the watcher to give up", Duration::from_secs(30), || {
        status = watcher.0.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(4));
}

#[test]
fn bad_inputs_are_usage_errors_before_contacting_the_ca() {
    let ca = Ca::start();
    let a = ca.issue("a", "1h");
    let b = ca.issue("b", "1h");
    // An unreachable server: a usage error proves the CA was never asked.
    let run = |cert: &Path, key: &Path, bundle: &Path| {
        ca.command(&["--server", "https://127.0.0.1:1", "cert", "renew"])
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg("--bundle")
            .arg(bundle)
            .output()
            .unwrap()
    };
    let o = run(
        &a.join("cert.pem"),
        &b.join("key.pem"),
        &a.join("bundle.pem"),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("does not match"), "{stderr}");

    std::fs::write(ca.path("junk.pem"), "not PEM at all").unwrap();
    for (cert, key, bundle, named) in [
        (
            ca.path("junk.pem"),
            a.join("key.pem"),
            a.join("bundle.pem"),
            "--cert",
        ),
        (
            a.join("cert.pem"),
            ca.path("junk.pem"),
            a.join("bundle.pem"),
            "--key",
        ),
        (
            a.join("cert.pem"),
            a.join("key.pem"),
            ca.path("missing.pem"),
            "--bundle",
        ),
    ] {
        let o = run(&cert, &key, &bundle);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{named}: {stderr}");
        assert!(
            stderr.contains(named) && stderr.contains(".pem"),
            "{stderr}"
        );
    }

    // The same files, unmodified, renew fine: the refusals were about the inputs.
    let o = ca.tessera(&["cert", "renew", "--cert-dir", "a", "--exec", "true"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = ca.tessera(&["cert", "renew"]);
    assert_eq!(o.status.code(), Some(2), "no files named");
}
