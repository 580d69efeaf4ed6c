//! End to end with real containers: a `tessera-ca` process and a
//! `tessera-agent` process on the host, Podman containers with the agent's
//! socket bind-mounted (read-only), and `tessera-sidecar` running *inside* a
//! container joined to an app's network namespace, getting its identity
//! through the Workload API.
//!
//! - the sidecar beside an app labelled `app=web` becomes ready as
//!   `spiffe://example.org/web` (entry selector `container:label:app:web`,
//!   parent the node);
//! - beside an app with another label it gets no identity (clear error);
//! - beside a `--privileged` app with the right label it is refused by the
//!   CA's minimum posture policy, which audits the refusal.
//!
//! The sidecar binary is dynamically linked against glibc: it and the
//! libraries `ldd` lists are bind-mounted read-only into a busybox image.
//! Containers, the Podman API service, the processes and temp directories
//! are removed by drop guards, pass or fail. Podman missing is a failure.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::Value;
use support::{Agent, Ca, Proc};

const IMAGE: &str = "localhost/tessera-test-base:1";

fn podman(args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("podman is required for this test (.ci/run installs it): {e}"));
    assert!(
        out.status.success(),
        "podman {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// podman's combined output and success, without panicking.
fn podman_try(args: &[&str]) -> (bool, String) {
    let out = Command::new("podman").args(args).output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn ensure_image() {
    let exists = Command::new("podman")
        .args(["image", "exists", IMAGE])
        .status()
        .unwrap_or_else(|e| panic!("podman is required for this test (.ci/run installs it): {e}"));
    if exists.success() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("/bin/busybox (busybox-static) is required");
    std::os::unix::fs::symlink("busybox", bin.join("sh")).unwrap();
    let tar = dir.path().join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(dir.path().join("rootfs"))
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    // Another test may import it concurrently; either import is fine.
    let _ = podman_try(&["import", tar.to_str().unwrap(), IMAGE]);
    podman(&["image", "exists", IMAGE]);
}

/// `podman system service` on a private socket.
struct Service {
    socket: PathBuf,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Service {
    fn start() -> Service {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("podman.sock");
        let child = Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("podman is required for this test (.ci/run installs it): {e}")
            });
        let s = Service {
            socket,
            _proc: Proc { child },
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "podman service socket never appeared"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Containers this test created; removed on drop, newest first.
#[derive(Default)]
struct Containers(Vec<String>);

impl Containers {
    fn run(&mut self, prefix: &str, options: &[String], cmd: &[&str]) -> String {
        let name = format!(
            "tessera-e2e-{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        self.0.push(name.clone());
        let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), name.clone()];
        args.extend_from_slice(options);
        args.push(IMAGE.into());
        args.extend(cmd.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        podman(&args);
        name
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        for name in self.0.iter().rev() {
            let _ = Command::new("podman")
                .args(["rm", "-f", "-t", "0", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `-v` options mounting the sidecar binary and the libraries it links
/// (from `ldd`) read-only at the same paths.
fn sidecar_mounts(sidecar: &Path) -> Vec<String> {
    let out = Command::new("ldd").arg(sidecar).output().expect("ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut mounts = vec![
        "-v".to_string(),
        format!("{}:/usr/local/bin/tessera-sidecar:ro", sidecar.display()),
    ];
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            mounts.push("-v".into());
            mounts.push(format!("{p}:{p}:ro"));
        }
    }
    mounts
}

/// The sidecar's configuration: one inbound listener, no CA traffic beyond
/// the Workload API (the CA on the host's loopback is out of the container's
/// reach; revocation following and denial reports are off here).
const SIDECAR_TOML: &str = r#"
ca_url = "https://localhost:1"
admin_listen = "127.0.0.1:15000"
[revocation]
follow = false
[denials]
report = false
[[inbound]]
name = "web"
listen = "0.0.0.0:8443"
forward = "127.0.0.1:8080"
allow = ["spiffe://example.org/*"]
"#;

/// Runs an app container with `labels`/`extra` options and a sidecar joined
/// to its network namespace; returns (app, sidecar) names.
fn app_with_sidecar(
    c: &mut Containers,
    prefix: &str,
    app_options: &[&str],
    sock_dir: &Path,
    cfg_dir: &Path,
    sidecar: &Path,
) -> (String, String) {
    let sock = format!("{}:/run/tessera:ro", sock_dir.display());
    let mut opts: Vec<String> = vec!["-v".into(), sock.clone()];
    opts.extend(app_options.iter().map(|s| s.to_string()));
    let app = c.run(prefix, &opts, &["/bin/busybox", "sleep", "600"]);
    let mut opts: Vec<String> = vec![
        "--network".into(),
        format!("container:{app}"),
        "-v".into(),
        sock,
        "-v".into(),
        format!("{}:/etc/tessera:ro", cfg_dir.display()),
        "-e".into(),
        "SPIFFE_ENDPOINT_SOCKET=unix:///run/tessera/agent.sock".into(),
    ];
    opts.extend(sidecar_mounts(sidecar));
    let side = c.run(
        &format!("{prefix}-sidecar"),
        &opts,
        &[
            "/usr/local/bin/tessera-sidecar",
            "--config",
            "/etc/tessera/sidecar.toml",
        ],
    );
    (app, side)
}

/// Polls `GET url` from inside `container` with busybox wget until it
/// answers, or the deadline passes.
fn wget_until_ok(container: &str, url: &str, deadline: Duration) -> Option<String> {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        let (ok, out) = podman_try(&[
            "exec",
            container,
            "/bin/busybox",
            "wget",
            "-q",
            "-O",
            "-",
            url,
        ]);
        if ok {
            return Some(out);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    None
}

/// Polls the container's logs until `needle` appears (or the deadline).
fn logs_until(container: &str, needle: &str, deadline: Duration) -> Option<String> {
    let end = Instant::now() + deadline;
    loop {
        let (_, out) = podman_try(&["logs", container]);
        if out.contains(needle) {
            return Some(out);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_in_a_container_gets_its_identity_from_the_agent() {
    ensure_image();
    let sidecar = support::workspace_binary("tessera-sidecar", "tessera-sidecar");
    let service = Service::start();
    let ca = Ca::start();
    let token = ca.node_token("e2e").await;
    let node = "spiffe://example.org/tessera/agent/e2e";
    ca.entry(
        "spiffe://example.org/web",
        &["container:label:app:web"],
        Some(node),
    )
    .await;
    let agent = Agent::start(&ca, "e2e", &token, Some(&service.socket));
    let sock_dir = agent.socket.parent().unwrap().to_owned();
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(cfg.path().join("sidecar.toml"), SIDECAR_TOML).unwrap();
    let mut c = Containers::default();

    // The app labelled web: its sidecar becomes ready as web.
    let (_app, side) = app_with_sidecar(
        &mut c,
        "web",
        &["--label", "app=web"],
        &sock_dir,
        cfg.path(),
        &sidecar,
    );
    let ready = wget_until_ok(
        &side,
        "http://127.0.0.1:15000/readyz",
        Duration::from_secs(60),
    );
    assert!(
        ready.is_some(),
        "sidecar never became ready:\n{}\nagent:\n{}",
        podman_try(&["logs", &side]).1,
        agent.log()
    );
    let identity = wget_until_ok(
        &side,
        "http://127.0.0.1:15000/identity",
        Duration::from_secs(5),
    )
    .expect("identity");
    let identity: Value = serde_json::from_str(&identity).unwrap();
    assert_eq!(
        identity["spiffe_id"], "spiffe://example.org/web",
        "{identity}"
    );
    // The CA recorded the container it attested (the app the sidecar serves).
    let serial = identity["serial"].as_str().unwrap();
    let rec = ca
        .call(Method::GET, &format!("/v1/certs/{serial}"), None, 200)
        .await;
    assert_eq!(rec["node"], node);
    let app_id = podman(&["inspect", "--format", "{{.Id}}", &_app]);
    let side_id = podman(&["inspect", "--format", "{{.Id}}", &side]);
    assert_eq!(rec["attestation"]["container_id"], app_id.as_str());
    assert_eq!(rec["attestation"]["caller_container_id"], side_id.as_str());

    // Another label: no identity, and the sidecar says why.
    let (_, other) = app_with_sidecar(
        &mut c,
        "other",
        &["--label", "app=other"],
        &sock_dir,
        cfg.path(),
        &sidecar,
    );
    let logs = logs_until(&other, "no_entry", Duration::from_secs(60));
    assert!(
        logs.is_some(),
        "no clear refusal in the sidecar's log:\n{}",
        podman_try(&["logs", &other]).1
    );
    let (ok, out) = podman_try(&[
        "exec",
        &other,
        "/bin/busybox",
        "wget",
        "-q",
        "-O",
        "-",
        "http://127.0.0.1:15000/readyz",
    ]);
    assert!(!ok, "a sidecar without identity must not be ready: {out}");

    // A privileged app with the right label: refused by the posture policy.
    let (priv_app, privileged) = app_with_sidecar(
        &mut c,
        "priv",
        &["--label", "app=web", "--privileged"],
        &sock_dir,
        cfg.path(),
        &sidecar,
    );
    let logs = logs_until(&privileged, "posture_refused", Duration::from_secs(60));
    assert!(
        logs.is_some(),
        "no posture refusal in the sidecar's log:\n{}\nagent:\n{}",
        podman_try(&["logs", &privileged]).1,
        agent.log()
    );
    let audit = ca
        .call(Method::GET, "/v1/audit?limit=1000", None, 200)
        .await;
    let priv_id = podman(&["inspect", "--format", "{{.Id}}", &priv_app]);
    let refusal = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "attestation.refuse" && r["target"] == priv_id.as_str())
        .unwrap_or_else(|| panic!("no audit record of the refusal: {audit}"));
    assert!(
        refusal["details"].as_str().unwrap().contains("privileged"),
        "{refusal}"
    );
    // No certificate was issued to it.
    let certs = ca
        .call(Method::GET, "/v1/certs?limit=1000", None, 200)
        .await;
    assert!(
        !certs["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["attestation"]["container_id"] == priv_id.as_str()),
        "a certificate was issued to the privileged container"
    );
    drop(c);
}
