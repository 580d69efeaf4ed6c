//! The agent's state on disk (opt-in, `data_dir`): the node certificate
//! chain, its private key and the last trust bundle, so a restarted agent
//! resumes its node identity instead of needing a new join token (join
//! tokens are single-use). Without `data_dir` nothing is written and a
//! restart needs a new token.
//!
//! The directory is created 0700 and every file is written 0600 through a
//! temporary file and a rename, so a crash never leaves a torn key or a key
//! readable by others. The bundle is kept because the `ca_bundle` file given
//! at first start goes stale once the CA rotates.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;

/// The node certificate chain (leaf first), PEM.
const CHAIN: &str = "node-chain.pem";
/// The node's PKCS#8 private key, PEM.
const KEY: &str = "node-key.pem";
/// The last trust bundle, PEM.
const BUNDLE: &str = "bundle.pem";

/// Errors reading or writing the data directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// A file could not be read, written or created.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not what the agent wrote (partial set, bad PEM, no key).
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A node identity as stored.
pub struct Stored {
    /// Leaf then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 DER private key.
    pub key_pkcs8: Vec<u8>,
    /// Trust anchors as last seen.
    pub bundle: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("chain", &self.chain.len())
            .field("bundle", &self.bundle.len())
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `contents` to `dir/name` with mode 0600, atomically.
fn write_private(dir: &Path, name: &str, contents: &[u8]) -> Result<(), DataDirError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(contents).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// Saves the node identity in `dir` (created 0700 if missing).
pub fn save(
    dir: &Path,
    chain: &[CertificateDer<'static>],
    key_pkcs8: &[u8],
    bundle: &[CertificateDer<'static>],
) -> Result<(), DataDirError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    let pem = |certs: &[CertificateDer<'static>]| {
        tessera_core::pem::encode_certs(certs.iter().map(|c| c.as_ref()))
    };
    // Key first: a chain on disk always has its key next to it.
    let key = zeroize::Zeroizing::new(tessera_core::pem::encode("PRIVATE KEY", key_pkcs8));
    write_private(dir, KEY, key.as_bytes())?;
    write_private(dir, CHAIN, pem(chain).as_bytes())?;
    write_private(dir, BUNDLE, pem(bundle).as_bytes())
}

/// Saves only the trust bundle (after it changed).
pub fn save_bundle(dir: &Path, bundle: &[CertificateDer<'static>]) -> Result<(), DataDirError> {
    let pem = tessera_core::pem::encode_certs(bundle.iter().map(|c| c.as_ref()));
    write_private(dir, BUNDLE, pem.as_bytes())
}

/// Loads the stored identity: `None` if nothing was stored; an error if the
/// directory holds a partial or unreadable set, or files others can read.
pub fn load(dir: &Path) -> Result<Option<Stored>, DataDirError> {
    let present = [CHAIN, KEY, BUNDLE].map(|n| dir.join(n).exists());
    if present.iter().all(|p| !p) {
        return Ok(None);
    }
    let read = |name: &str| -> Result<Vec<u8>, DataDirError> {
        let path = dir.join(name);
        let meta = std::fs::metadata(&path).map_err(io(&path))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(DataDirError::Corrupt {
                path,
                reason: "readable by group or others; expected mode 0600 (refusing to use it)"
                    .into(),
            });
        }
        std::fs::read(&path).map_err(io(&path))
    };
    let corrupt = |name: &str, reason: String| DataDirError::Corrupt {
        path: dir.join(name),
        reason,
    };
    let certs = |name: &str| -> Result<Vec<CertificateDer<'static>>, DataDirError> {
        let c = tessera_core::pem::certs(&read(name)?).map_err(|e| corrupt(name, e.to_string()))?;
        if c.is_empty() {
            return Err(corrupt(name, "no certificate".into()));
        }
        Ok(c)
    };
    let chain = certs(CHAIN)?;
    let bundle = certs(BUNDLE)?;
    let key_pem = zeroize::Zeroizing::new(read(KEY)?);
    let key_pkcs8 = match tessera_core::pem::private_key(&key_pem) {
        Ok(rustls::pki_types::PrivateKeyDer::Pkcs8(k)) => k.secret_pkcs8_der().to_vec(),
        Ok(_) => return Err(corrupt(KEY, "not a PKCS#8 key".into())),
        Err(e) => return Err(corrupt(KEY, e.to_string())),
    };
    Ok(Some(Stored {
        chain,
        key_pkcs8,
        bundle,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> (CertificateDer<'static>, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let c = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (c.der().clone(), key.serialize_der())
    }

    #[test]
    fn round_trip_modes_and_refusals() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("agent");
        assert!(load(&dir).unwrap().is_none(), "nothing stored yet");
        let (leaf, key) = cert();
        let (root, _) = cert();
        save(
            &dir,
            std::slice::from_ref(&leaf),
            &key,
            std::slice::from_ref(&root),
        )
        .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for f in [CHAIN, KEY, BUNDLE] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        let s = load(&dir).unwrap().unwrap();
        assert_eq!(s.chain, vec![leaf.clone()]);
        assert_eq!(s.bundle, vec![root]);
        assert_eq!(s.key_pkcs8, key);
        // A newer bundle replaces the old one.
        let (root2, _) = cert();
        save_bundle(&dir, std::slice::from_ref(&root2)).unwrap();
        assert_eq!(load(&dir).unwrap().unwrap().bundle, vec![root2]);

        // A key others can read is refused, not used.
        std::fs::set_permissions(dir.join(KEY), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(e.contains("0600"), "{e}");
        std::fs::set_permissions(dir.join(KEY), std::fs::Permissions::from_mode(0o600)).unwrap();
        // A partial set or garbage is an error, not "nothing stored".
        std::fs::write(dir.join(CHAIN), b"garbage").unwrap();
        std::fs::set_permissions(dir.join(CHAIN), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load(&dir).is_err());
        std::fs::remove_file(dir.join(CHAIN)).unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(e.contains(CHAIN), "{e}");
    }
}
