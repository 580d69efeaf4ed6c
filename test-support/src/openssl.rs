//! openssl, the independent implementation tests check Tessera against.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `openssl args` in `dir`; returns its output whatever the outcome.
pub fn openssl_output(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed (.ci/run installs it)")
}

/// Runs `openssl args` in `dir`, failing the test with its stderr unless it succeeds.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = openssl_output(dir, args);
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new EC P-256 key in `dir/<file>` (SEC1 PEM, as `openssl ecparam` writes it).
pub fn openssl_ec_key(dir: &Path, file: &str) {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            file,
        ],
    );
}
