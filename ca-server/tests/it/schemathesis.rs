//! schemathesis (PyPI, pinned in `.ci/requirements.txt`) against the real
//! `tessera-ca` binary: every operation of `docs/openapi.json`, with every
//! check but `ignored_auth` (see `tests/schemathesis.toml`, which also says
//! why some operations may refuse schema-valid data), in all its phases
//! (coverage, fuzzing, stateful). A 5xx, a dropped connection, an answer off
//! the document (status, content type, headers, body schema) or a refusal of
//! what the document allows fails the test.
//!
//! The destructive operations (`/v1/ca/*`: prepare, rotate, activate,
//! retire, revoke the CA; disabling a credential, which may be the admin's
//! own) run on a CA of their own, so they cannot cut the main run short.

use crate::both_backends;
use hyper::Method;
use serde_json::json;
use std::time::Duration;
use tessera_test_support::{Ca, CaBuilder, Db, Process, TestDb, python};

/// The tool's configuration file.
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");

/// The document the server serves (`GET /v1/openapi.json` is this file).
const DOCUMENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");

/// The operations that change the CA itself or disable credentials.
const DESTRUCTIVE: [&str; 4] = [
    "--include-path-regex",
    "^/v1/ca/",
    "--include-operation-id",
    "disableCredential",
];

/// Everything else.
const REST: [&str; 4] = [
    "--exclude-path-regex",
    "^/v1/ca/",
    "--exclude-operation-id",
    "disableCredential",
];

/// Longest a run may take (they take about 15 s here).
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

/// Runs schemathesis against `ca` on the operations `filter` selects, with
/// the admin's certificate and an admin API token, and fails the test with
/// the tool's report unless it exits 0.
///
/// The token goes in a header on every request: the document lists
/// `bearerAuth` first, and a bearer token the tool made up would be tried
/// (and refused) before the client certificate. `verify` is the bundle file,
/// or `false` where the run itself replaces the CA (and so the server's
/// certificate) under the tool, which read the bundle once.
async fn run(ca: &Ca, filter: &[&str], verify: &str) {
    let token = ca
        .call(
            Method::POST,
            "/v1/credentials",
            Some(json!({"name": "schemathesis", "role": "admin"})),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let admin = ca.admin_dir();
    let mut cmd = std::process::Command::new(python::venv_tool("schemathesis"));
    cmd.current_dir(ca.work_dir())
        .args(["--config-file", CONFIG, "run", DOCUMENT, "-u", ca.url()])
        .args(["--tls-verify", verify, "--request-cert"])
        .arg(admin.join("cert.pem"))
        .arg("--request-cert-key")
        .arg(admin.join("key.pem"))
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        // A fixed seed: the same cases on every run, so a failure reproduces.
        .args(["-n", "10", "--seed", "1", "--no-color"])
        .args(filter);
    let mut proc = Process::spawn("schemathesis", &mut cmd);
    let status = tokio::task::spawn_blocking(move || {
        let status = proc.wait_exit(RUN_TIMEOUT);
        (status, proc.describe())
    })
    .await
    .unwrap();
    assert!(status.0.success(), "{}", status.1);
}

async fn whole_document(db: Db) {
    let db = TestDb::new(db).await;
    let ca = CaBuilder::new().database(&db).start("tessera-ca");
    run(&ca, &REST, &ca.bundle_path().display().to_string()).await;
    let second = TestDb::new(db.kind()).await;
    let other = CaBuilder::new()
        .database(&second)
        .start("tessera-ca-destructive");
    run(&other, &DESTRUCTIVE, "false").await;
    assert!(
        ca.process().output().stderr_line("panicked").is_none()
            && other.process().output().stderr_line("panicked").is_none(),
        "a handler panicked:\n{}\n{}",
        ca.process().describe(),
        other.process().describe()
    );
}
both_backends!(whole_document);
