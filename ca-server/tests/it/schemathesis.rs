//! schemathesis (PyPI, pinned in `.ci/requirements.txt`) against the real
//! `tessera-ca` binary: every operation of `docs/openapi.json`, with every
//! check but `ignored_auth` (see `tests/schemathesis.toml`, which also says
//! why some operations may refuse schema-valid data), in all its phases
//! (coverage, fuzzing, stateful). A 5xx, a dropped connection, an answer off
//! the document (status, content type, headers, body schema) or a refusal of
//! what the document allows fails the test.
//!
//! The routes for node agents and workloads run again with a node's and a
//! workload's certificate (the admin is refused there). The destructive
//! operations (`/v1/ca/*`: prepare, rotate, activate,
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

/// The routes for a node agent's certificate.
const NODE: [&str; 6] = [
    "--include-operation-id",
    "agentSvids",
    "--include-operation-id",
    "agentEntries",
    "--include-operation-id",
    "agentJwtSvids",
];

/// The routes for a workload's certificate.
const WORKLOAD: [&str; 6] = [
    "--include-operation-id",
    "renewCertificate",
    "--include-operation-id",
    "reportDenials",
    "--include-operation-id",
    "issueJwtSvid",
];

/// Who the tool is.
enum As {
    /// The admin's certificate and an admin API token.
    Admin,
    /// A certificate (`<name>.pem`, `<name>.key` in the CA's work directory)
    /// and no token: on these routes only the certificate counts.
    Peer(&'static str),
}

/// Longest a run may take (they take about 15 s here).
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

/// Runs schemathesis against `ca` on the operations `filter` selects, as
/// `who`, and fails the test with the tool's report unless it exits 0.
///
/// The admin's token goes in a header on every request: the document lists
/// `bearerAuth` first, and a bearer token the tool made up would be tried
/// (and refused) before the client certificate. `verify` is the bundle file,
/// or `false` where the run itself replaces the CA (and so the server's
/// certificate) under the tool, which read the bundle once.
async fn run(ca: &Ca, who: As, filter: &[&str], verify: &str) {
    let mut cmd = std::process::Command::new(python::venv_tool("schemathesis"));
    cmd.current_dir(ca.work_dir())
        .args(["--config-file", CONFIG, "run", DOCUMENT, "-u", ca.url()])
        .args(["--tls-verify", verify]);
    match who {
        As::Admin => {
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
            cmd.arg("--request-cert")
                .arg(admin.join("cert.pem"))
                .arg("--request-cert-key")
                .arg(admin.join("key.pem"))
                .arg("-H")
                .arg(format!("Authorization: Bearer {token}"));
        }
        As::Peer(name) => {
            cmd.args(["--request-cert", &format!("{name}.pem")])
                .args(["--request-cert-key", &format!("{name}.key")]);
        }
    }
    cmd
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

/// Redeems a join token for `spiffe_id` (creating its entry) and writes the
/// certificate and key to `<name>.pem`, `<name>.key` in the CA's work directory.
async fn peer(ca: &Ca, spiffe_id: &str, name: &str) {
    ca.entry(spiffe_id, &["test:schemathesis"], None).await;
    let token = ca.join_token(spiffe_id).await;
    let (key, csr) = tessera_test_support::csr();
    let r = ca
        .call(
            Method::POST,
            "/v1/certs/redeem",
            Some(json!({"token": token, "csr": csr})),
        )
        .await;
    let dir = ca.work_dir();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    std::fs::write(
        dir.join(format!("{name}.pem")),
        r["certificate"].as_str().unwrap(),
    )
    .unwrap();
}

async fn whole_document(db: Db) {
    let db = TestDb::new(db).await;
    let ca = CaBuilder::new().database(&db).start("tessera-ca");
    let bundle = ca.bundle_path().display().to_string();
    // The peers first: the admin's run may revoke any certificate, its own too.
    let node = "spiffe://example.org/tessera/agent/schemathesis";
    peer(&ca, node, "node").await;
    run(&ca, As::Peer("node"), &NODE, &bundle).await;
    peer(&ca, "spiffe://example.org/schemathesis", "workload").await;
    run(&ca, As::Peer("workload"), &WORKLOAD, &bundle).await;
    run(&ca, As::Admin, &REST, &bundle).await;
    let second = TestDb::new(db.kind()).await;
    let other = CaBuilder::new()
        .database(&second)
        .start("tessera-ca-destructive");
    run(&other, As::Admin, &DESTRUCTIVE, "false").await;
    assert!(
        ca.process().output().stderr_line("panicked").is_none()
            && other.process().output().stderr_line("panicked").is_none(),
        "a handler panicked:\n{}\n{}",
        ca.process().describe(),
        other.process().describe()
    );
}
both_backends!(whole_document);
