//! What a workload starts from before it has an identity: the trust anchors
//! that reach the CA the first time (`ca_bundle`) and a join token.

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use zeroize::Zeroizing;

/// A bootstrap file is unreadable or malformed.
#[derive(Debug, thiserror::Error)]
#[error("{option} {}: {reason}", path.display())]
pub struct BootstrapError {
    /// The option that named the file.
    pub option: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// The CA certificates in the PEM file `path` (the `ca_bundle` option).
pub fn read_anchors(path: &Path) -> Result<Vec<CertificateDer<'static>>, BootstrapError> {
    let err = |reason: String| BootstrapError {
        option: "ca_bundle",
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    tessera_core::pem::certs(&pem).map_err(|e| err(e.to_string()))
}

/// The join token given directly (a flag or the environment), else the
/// contents of `file` (the `join_token_file` option) without surrounding
/// whitespace; `None` when neither is given. The token is wiped from memory
/// when dropped (so is what was read from the file).
pub fn join_token(
    given: Option<String>,
    file: Option<&Path>,
) -> Result<Option<Zeroizing<String>>, BootstrapError> {
    match (given, file) {
        (Some(t), _) => Ok(Some(Zeroizing::new(t))),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map(Zeroizing::new)
            .map(|t| Some(Zeroizing::new(t.trim().to_owned())))
            .map_err(|e| BootstrapError {
                option: "join_token_file",
                path: f.to_owned(),
                reason: e.to_string(),
            }),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_token_and_anchors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  secret\n").unwrap();
        assert_eq!(
            join_token(Some("flag".into()), Some(&file))
                .unwrap()
                .as_deref()
                .map(String::as_str),
            Some("flag")
        );
        assert_eq!(
            join_token(None, Some(&file))
                .unwrap()
                .as_deref()
                .map(String::as_str),
            Some("secret")
        );
        assert_eq!(join_token(None, None).unwrap(), None);
        let e = join_token(None, Some(&dir.path().join("none"))).unwrap_err();
        assert!(e.to_string().starts_with("join_token_file "), "{e}");
        let e = read_anchors(&file).unwrap_err();
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
    }
}
