//! `tessera events` and `tessera webhook` against a real `tessera-ca` process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

mod common;

use common::{bin_dir, ca_binary};

/// A CA process on a loopback port, killed when dropped.
struct Ca {
    child: Child,
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
        Ca { child, dir }
    }

    fn tessera(&self, args: &[&str]) -> Output {
        Command::new(bin_dir().join("tessera"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("TESSERA_SERVER")
            .env_remove("TESSERA_TOKEN")
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let o = self.tessera(&all);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

impl Drop for Ca {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn events_and_webhooks() {
    let ca = Ca::start();
    let code = |o: &Output| o.status.code().unwrap_or(-1);

    // Follow the stream in the background (JSON lines) while things happen.
    let mut follower = Command::new(bin_dir().join("tessera"))
        .args([
            "events",
            "--follow",
            "--kinds",
            "certificate.issued,certificate.revoked",
            "--output",
            "json",
        ])
        .current_dir(ca.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });

    // Refused registrations: exit 2 with the reason.
    let o = ca.tessera(&[
        "webhook",
        "add",
        "--url",
        "http://localhost/h",
        "--kind",
        "certificate.issued",
    ]);
    assert_eq!(code(&o), 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("https"));
    let o = ca.tessera(&[
        "webhook",
        "add",
        "--url",
        "https://localhost/h",
        "--kind",
        "certificate.bogus",
    ]);
    assert_eq!(code(&o), 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("certificate.bogus"));

    let added = ca.json(&[
        "webhook",
        "add",
        "--url",
        "https://localhost:1/hook",
        "--kind",
        "certificate.issued",
        "--kind",
        "certificate.revoked",
        "--ca-file",
        "data/admin/bundle.pem",
        "--description",
        "nobody listens",
    ]);
    let id = added["id"].as_str().unwrap().to_owned();
    let secret = added["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64);
    let list = ca.json(&["webhook", "list"]);
    assert_eq!(list["items"][0]["id"], id.as_str());
    assert!(!list.to_string().contains(&secret));

    ca.json(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--selector",
        "unix:uid:1",
    ]);
    let o = ca.tessera(&["token", "create", "--spiffe-id", "spiffe://example.org/web"]);
    let token = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    let issued = ca.json(&["cert", "issue", "--token", &token, "--out-dir", "web"]);
    let serial = issued["serial"].as_str().unwrap().to_owned();

    let line = rx
        .recv_timeout(std::time::Duration::from_secs(15))
        .expect("the follower printed the issuance");
    let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ev["kind"], "certificate.issued");
    assert_eq!(ev["target"], serial.as_str());
    let _ = follower.kill();
    let _ = follower.wait();

    // The whole log, from the start, as one document; and as a table.
    let all = ca.json(&["events", "--after", "0"]);
    let items = all["items"].as_array().unwrap();
    assert_eq!(items[0]["kind"], "ca.state_changed");
    assert!(items.iter().any(|e| e["target"] == serial.as_str()));
    let o = ca.tessera(&["events", "--kinds", "certificate.issued"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains(&serial));

    // Nobody listens on port 1: the attempts are in the delivery log.
    let mut attempts = serde_json::Value::Null;
    for _ in 0..100 {
        attempts = ca.json(&["webhook", "deliveries", &id]);
        if !attempts["items"].as_array().unwrap().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let first = &attempts["items"][0];
    assert_eq!(first["outcome"], "retrying", "{attempts}");
    assert!(first["error"].as_str().unwrap().starts_with("connect:"));
    let o = ca.tessera(&["webhook", "deliveries", &id]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("retrying"));

    let o = ca.tessera(&["webhook", "remove", &id]);
    assert_eq!(code(&o), 0);
    let o = ca.tessera(&["webhook", "deliveries", &id]);
    assert_eq!(code(&o), 3, "gone");
}
