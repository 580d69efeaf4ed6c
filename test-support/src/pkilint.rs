//! pkilint (PyPI, an RFC 5280 / PKIX linter no one here wrote) on
//! certificates and CRLs, from the virtual environment `.ci/run` creates.
//!
//! Two findings are tolerated, both pkilint false positives matched exactly:
//! its URI grammar check refuses the `spiffe://` scheme of a SAN
//! (`pkix.invalid_uri_syntax` from `GeneralNameUriSyntaxValidator` on a
//! `uniformResourceIdentifier`, quoting a `spiffe://` URI), and its domain
//! check (the `validators` package, which wants a dot) refuses the
//! single-label DNS SAN `localhost` of the API server's default certificate,
//! although RFC 1034's preferred name syntax, which RFC 5280 4.2.1.6 cites,
//! allows it. Everything else, down to WARNING, fails the test.

use crate::python::venv_tool;
use serde_json::Value;
use std::process::Command;

/// One finding pkilint reported: where, which validator, severity, code, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The ASN.1 node the finding is about.
    pub node_path: String,
    /// The pkilint validator that reported it.
    pub validator: String,
    /// FATAL, ERROR, WARNING.
    pub severity: String,
    /// pkilint's finding code (e.g. `pkix.invalid_uri_syntax`).
    pub code: String,
    /// Its message.
    pub message: String,
}

impl Finding {
    /// pkilint's known false positive: a SAN's `spiffe://` URI reported as bad URI syntax.
    pub fn is_spiffe_uri_false_positive(&self) -> bool {
        self.code == "pkix.invalid_uri_syntax"
            && self.validator == "GeneralNameUriSyntaxValidator"
            && self.node_path.ends_with(".uniformResourceIdentifier")
            && self.node_path.contains(".subjectAltName.")
            && self.message.starts_with("Invalid URI syntax: \"spiffe://")
    }

    /// pkilint's false positive on the single-label DNS SAN `localhost`.
    pub fn is_localhost_false_positive(&self) -> bool {
        self.code == "pkix.invalid_domain_name_syntax"
            && self.validator == "GeneralNameDnsNameSyntaxValidator"
            && self.node_path.ends_with(".dNSName")
            && self.node_path.contains(".subjectAltName.")
            && self.message == "Invalid domain name syntax: \"localhost\""
    }
}

/// Runs pkilint's `tool` (`lint_pkix_cert`, `lint_crl`, ...) with `options`
/// on the DER documents `docs`; returns every finding of severity WARNING or
/// above.
pub fn findings(tool: &str, options: &[&str], docs: &[&[u8]]) -> Vec<Finding> {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = docs
        .iter()
        .enumerate()
        .map(|(n, der)| {
            let file = dir.path().join(format!("doc{n}.der"));
            std::fs::write(&file, der).unwrap();
            file
        })
        .collect();
    let out = Command::new(venv_tool(tool))
        .arg("lint")
        .args(options)
        .args(["-s", "WARNING", "-f", "JSON", "--document-format", "DER"])
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{tool} did not answer JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mut all = vec![];
    for r in doc["results"].as_array().expect("pkilint results") {
        for d in r["finding_descriptions"].as_array().expect("findings") {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            all.push(Finding {
                node_path: s(&r["node_path"]),
                validator: s(&r["validator"]),
                severity: s(&d["severity"]),
                code: s(&d["code"]),
                message: s(&d["message"]),
            });
        }
    }
    // pkilint's exit status is the number of findings: the JSON was read whole.
    assert_eq!(
        out.status.code(),
        Some(all.len() as i32),
        "{tool}: exit status and findings disagree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    all
}

/// Fails the test unless pkilint finds nothing in certificate `der` but its
/// false positives on `spiffe://` URIs and `localhost`; `what` names it in
/// the failure.
#[track_caller]
pub fn assert_cert_clean(what: &str, der: &[u8]) {
    let bad: Vec<_> = findings("lint_pkix_cert", &[], &[der])
        .into_iter()
        .filter(|f| !f.is_spiffe_uri_false_positive() && !f.is_localhost_false_positive())
        .collect();
    assert!(bad.is_empty(), "pkilint on {what}: {bad:#?}");
}

/// Fails the test unless pkilint finds nothing wrong between certificate
/// `subject` and its `issuer` (names, key identifiers, signature algorithm).
#[track_caller]
pub fn assert_chain_clean(what: &str, issuer: &[u8], subject: &[u8]) {
    let bad = findings(
        "lint_pkix_signer_signee_cert_chain",
        &[],
        &[issuer, subject],
    );
    assert!(bad.is_empty(), "pkilint on {what} and its issuer: {bad:#?}");
}

/// Fails the test unless pkilint's `lint_crl` (a CRL, not an ARL, PKIX
/// profile) finds nothing in CRL `der`.
#[track_caller]
pub fn assert_crl_clean(what: &str, der: &[u8]) {
    let bad = findings("lint_crl", &["-t", "CRL", "-p", "PKIX"], &[der]);
    assert!(bad.is_empty(), "pkilint on {what}: {bad:#?}");
}
