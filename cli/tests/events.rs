//! `tessera events` and `tessera webhook` against a real `tessera-ca` process.

use std::process::Output;
use std::time::Duration;
use tessera_test_support::{Process, wait_until};

mod common;

use common::Ca;

#[test]
fn events_and_webhooks() {
    let ca = Ca::start();
    let code = |o: &Output| o.status.code().unwrap_or(-1);

    // Follow the stream in the background (JSON lines) while things happen.
    let mut follower = Process::spawn(
        "tessera events --follow",
        &mut ca.command(&[
            "events",
            "--follow",
            "--kinds",
            "certificate.issued,certificate.revoked",
            "--output",
            "json",
        ]),
    );

    // Refused registrations: exit 2 with the reason.
    let refused =
        |url: &str, kind: &str| ca.exits(&["webhook", "add", "--url", url, "--kind", kind], 2);
    assert!(refused("http://localhost/h", "certificate.issued").contains("https"));
    assert!(refused("https://localhost/h", "certificate.bogus").contains("certificate.bogus"));

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

    let line = follower
        .first_stdout_line(Duration::from_secs(15))
        .expect("the follower printed the issuance");
    let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ev["kind"], "certificate.issued");
    assert_eq!(ev["target"], serial.as_str());
    follower.kill();

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
    wait_until(Duration::from_secs(10), "a delivery attempt", || {
        attempts = ca.json(&["webhook", "deliveries", &id]);
        !attempts["items"].as_array().unwrap().is_empty()
    });
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
