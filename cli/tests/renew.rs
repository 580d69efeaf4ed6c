//! `tessera cert renew` against a real `tessera-ca` process: one-shot renewal,
//! `--watch` with `--exec` and `--signal`, and the refusals.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tessera_test_support::{Process, openssl_output, wait_until};

mod common;

use common::Ca;

/// Registers `name` (certificate lifetime `ttl`) and issues a certificate
/// for it into `<dir>/<name>/` through a join token, as a workload would.
fn issue(ca: &Ca, name: &str, ttl: &str) -> PathBuf {
    let id = format!("spiffe://example.org/{name}");
    ca.ok(&[
        "entry",
        "create",
        "--spiffe-id",
        &id,
        "--selector",
        &format!("unix:uid:{}", 1000 + name.len()),
        "--ttl",
        ttl,
    ]);
    let token = ca.ok(&["token", "create", "--spiffe-id", &id]);
    ca.ok(&["cert", "issue", "--token", token.trim(), "--out-dir", name]);
    ca.path(name)
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
    let o = openssl_output(dir, &["verify", "-CAfile", "bundle.pem", "cert.pem"]);
    assert!(
        o.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let cert_pub = openssl_output(dir, &["x509", "-noout", "-pubkey", "-in", "cert.pem"]);
    let key_pub = openssl_output(dir, &["pkey", "-pubout", "-in", "key.pem"]);
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

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn one_shot_renew_replaces_cert_and_key() {
    let ca = Ca::start();
    let dir = issue(&ca, "web", "1h");
    let (old_serial, old_key) = (
        serial(&dir.join("cert.pem")),
        std::fs::read(dir.join("key.pem")).unwrap(),
    );
    let mut args = vec!["cert", "renew", "--output", "json"];
    let files = files(&dir);
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
    let dir = issue(&ca, "batch", "60");
    let first_serial = serial(&dir.join("cert.pem"));
    let hups = ca.path("hups");
    let execs = ca.path("execs");
    // The "app": counts the SIGHUPs it receives.
    let app = Process::spawn(
        "app",
        Command::new("sh").arg("-c").arg(format!(
            "trap 'echo hup >> {}' HUP; while :; do sleep 0.1; done",
            hups.display()
        )),
    );
    let signal = format!("{}:HUP", app.id());
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
    let files = files(&dir);
    args.extend(files.iter().map(String::as_str));
    // 60 s certificates renewed at 5 % of their lifetime: every ~3 s.
    let mut watcher = Process::spawn("tessera cert renew --watch", &mut ca.command(&args));
    wait_until(
        Duration::from_secs(40),
        "two renewals, execs and signals",
        || lines(&execs) >= 2 && lines(&hups) >= 2,
    );
    assert_ne!(serial(&dir.join("cert.pem")), first_serial);
    assert_consistent(&dir);

    // SIGTERM stops it cleanly.
    watcher.signal("TERM");
    let status = watcher.wait_exit(Duration::from_secs(10));
    let stderr = watcher.stderr();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let stdout = watcher.stdout_lines().join("\n");
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
    let dir = issue(&ca, "gone", "60");
    let before = std::fs::read(dir.join("cert.pem")).unwrap();
    let s = serial(&dir.join("cert.pem"));
    ca.ok(&[
        "cert",
        "revoke",
        "--serial",
        s.trim_start_matches("serial="),
    ]);
    let mut args = vec!["cert", "renew"];
    let files = files(&dir);
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
    let mut watcher = Process::spawn("tessera cert renew --watch", &mut ca.command(&args));
    let status = watcher.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(4), "{}", watcher.describe());
}

#[test]
fn bad_inputs_are_usage_errors_before_contacting_the_ca() {
    let ca = Ca::start();
    let a = issue(&ca, "a", "1h");
    let b = issue(&ca, "b", "1h");
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
