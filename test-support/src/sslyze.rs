//! sslyze (PyPI, in its own virtual environment, see
//! [`crate::python::sslyze_tool`]): a TLS server scan read from its JSON
//! report, and the hardening every Tessera TLS listener must show.

use crate::python::sslyze_tool;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// The key-exchange groups a Tessera listener may offer (rustls with ring).
const GROUPS: [&str; 3] = ["X25519", "secp256r1", "secp384r1"];

/// What sslyze found on one server: the `scan_result` of its JSON report and
/// its text report (for failure messages and the Mozilla verdict).
pub struct Scan {
    /// `server_scan_results[0].scan_result` of the JSON report.
    pub result: Value,
    /// What sslyze printed.
    pub report: String,
}

/// Scans `target` (`host:port`): protocols SSL 2.0 to TLS 1.3 and their
/// suites, compression, renegotiation, groups, Heartbleed, CCS injection,
/// ROBOT, fallback SCSV and the certificate against `ca_file`, presenting
/// `client` (certificate, key) if given, and checks the result against
/// Mozilla's `mozilla` configuration (`modern`, `intermediate`). Fails the
/// test unless sslyze ran and reached the server.
pub fn scan(target: &str, ca_file: &Path, client: Option<(&Path, &Path)>, mozilla: &str) -> Scan {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("scan.json");
    let mut cmd = Command::new(sslyze_tool());
    cmd.arg("--json_out")
        .arg(&json)
        .args([
            "--sslv2",
            "--sslv3",
            "--tlsv1",
            "--tlsv1_1",
            "--tlsv1_2",
            "--tlsv1_3",
        ])
        .args([
            "--reneg",
            "--compression",
            "--elliptic_curves",
            "--heartbleed",
        ])
        .args(["--openssl_ccs", "--robot", "--fallback", "--certinfo"])
        .arg("--certinfo_ca_file")
        .arg(ca_file)
        .args(["--mozilla_config", mozilla]);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd.arg(target).output().expect("running sslyze");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = std::fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("sslyze wrote no JSON report:\n{report}"));
    let server = &doc["server_scan_results"][0];
    assert_eq!(
        server["connectivity_status"], "COMPLETED",
        "sslyze could not reach {target}:\n{report}"
    );
    Scan {
        result: server["scan_result"].clone(),
        report,
    }
}

impl Scan {
    /// The result of scan command `name` (e.g. `tls_1_2_cipher_suites`),
    /// which must have completed.
    pub fn get(&self, name: &str) -> &Value {
        let r = &self.result[name];
        assert_eq!(r["status"], "COMPLETED", "{name}:\n{}", self.report);
        &r["result"]
    }

    /// Whether the server speaks `version` (`ssl_2_0` ... `tls_1_3`).
    pub fn supports(&self, version: &str) -> bool {
        self.get(&format!("{version}_cipher_suites"))["is_tls_version_supported"] == true
    }

    /// The names of the suites the server accepted with `version`.
    pub fn suites(&self, version: &str) -> Vec<String> {
        self.get(&format!("{version}_cipher_suites"))["accepted_cipher_suites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["cipher_suite"]["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The first certificate deployment (the server's chain as received).
    pub fn deployment(&self) -> &Value {
        &self.get("certificate_info")["certificate_deployments"][0]
    }

    /// The chain the server sent, leaf first (each with `as_pem`,
    /// `serial_number`, `subject_alternative_name`).
    pub fn received_chain(&self) -> Vec<Value> {
        self.deployment()["received_certificate_chain"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// The chain verified against the supplied CA file, leaf first; fails
    /// the test if it did not verify, or if the server sent the anchor.
    /// sslyze also matches the leaf to the host name it connected to, so
    /// this is for servers named by DNS name or IP address, not SPIFFE peers.
    pub fn verified_chain(&self) -> Vec<Value> {
        let results = self.deployment()["path_validation_results"]
            .as_array()
            .unwrap();
        let supplied = results
            .iter()
            .find(|r| r["trust_store"]["name"] == "Supplied CA file")
            .unwrap_or_else(|| panic!("no supplied-CA validation:\n{}", self.report));
        assert_eq!(
            supplied["was_validation_successful"], true,
            "the chain does not verify against the bundle: {}\n{}",
            supplied["validation_error"], self.report
        );
        assert_eq!(
            self.deployment()["received_chain_contains_anchor_certificate"],
            false,
            "the server sends its anchor:\n{}",
            self.report
        );
        supplied["verified_certificate_chain"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Fails the test unless the server shows what every Tessera listener
    /// must: TLS 1.3, and TLS 1.2 at most besides (no SSL, no TLS 1.0/1.1);
    /// TLS 1.2 suites only ECDHE with an AEAD (forward secrecy, no CBC, RC4,
    /// 3DES or RSA key exchange); only the groups of [`GROUPS`]; no
    /// compression; no client-initiated renegotiation; not vulnerable to
    /// Heartbleed, CCS injection or ROBOT; the received chain in order;
    /// compliant with the Mozilla configuration scanned for but for the
    /// findings named in `waived` (e.g. `certificate_path_validation` for a
    /// SPIFFE peer, whose certificate names no host). `what` names the
    /// server in the failure.
    #[track_caller]
    pub fn assert_hardened(&self, what: &str, waived: &[&str]) {
        let r = &self.report;
        for old in ["ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"] {
            assert!(!self.supports(old), "{what} speaks {old}:\n{r}");
        }
        assert!(self.supports("tls_1_3"), "{what}: no TLS 1.3:\n{r}");
        for suite in self.suites("tls_1_2") {
            assert!(
                suite.starts_with("TLS_ECDHE_")
                    && (suite.contains("_GCM_") || suite.contains("CHACHA20_POLY1305")),
                "{what}: weak TLS 1.2 suite {suite}:\n{r}"
            );
        }
        let curves = &self.get("elliptic_curves")["supported_curves"];
        for c in curves.as_array().unwrap() {
            let name = c["name"].as_str().unwrap();
            assert!(GROUPS.contains(&name), "{what}: offers group {name}:\n{r}");
        }
        assert_eq!(
            self.get("tls_compression")["supports_compression"],
            false,
            "{what}: compression:\n{r}"
        );
        let reneg = self.get("session_renegotiation");
        assert_eq!(
            (
                &reneg["is_vulnerable_to_client_renegotiation_dos"],
                &reneg["client_renegotiations_success_count"]
            ),
            (&Value::Bool(false), &Value::from(0)),
            "{what}: client renegotiation:\n{r}"
        );
        assert_eq!(
            self.get("heartbleed")["is_vulnerable_to_heartbleed"],
            false,
            "{r}"
        );
        assert_eq!(
            self.get("openssl_ccs_injection")["is_vulnerable_to_ccs_injection"],
            false,
            "{r}"
        );
        let robot = self.get("robot")["robot_result"].as_str().unwrap_or("");
        assert!(
            robot.starts_with("NOT_VULNERABLE"),
            "{what}: ROBOT {robot}:\n{r}"
        );
        let d = self.deployment();
        assert_eq!(d["received_chain_has_valid_order"], true, "{what}:\n{r}");
        if !r.contains("OK - Compliant.") {
            let (_, verdict) = r
                .split_once("FAILED - Not compliant.")
                .unwrap_or_else(|| panic!("{what}: no Mozilla verdict:\n{r}"));
            for finding in verdict.lines().filter_map(|l| l.trim().strip_prefix("* ")) {
                let name = finding.split(':').next().unwrap_or(finding);
                assert!(
                    waived.contains(&name),
                    "{what}: not Mozilla-compliant: {finding}\n{r}"
                );
            }
        }
    }
}
