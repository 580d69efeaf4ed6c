//! The agent's state on disk (opt-in, `data_dir`): the node certificate
//! chain, its private key and the last trust bundle, so a restarted agent
//! resumes its node identity instead of needing a new join token (join
//! tokens are single-use). Without `data_dir` nothing is written and a
//! restart needs a new token.
//!
//! The directory is created 0700 and every file is written 0600 through a
//! temporary file and a rename (`tessera_workload::PemFile`), so a crash
//! never leaves a torn key or a key readable by others. The bundle is kept because the `ca_bundle` file given
//! at first start goes stale once the CA rotates.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use tessera_workload::{PemFile, PrivateKey};

/// The node's PKCS#8 private key and its certificate chain (leaf first),
/// PEM, in one file so that one rename replaces both: a crash can never
/// leave a key beside another key's certificate.
const IDENTITY: &str = "node.pem";
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
    /// The private key.
    pub key: PrivateKey,
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
    PemFile::private(&dir.join(name), contents)
        .write()
        .map_err(|e| DataDirError::Io {
            path: e.path,
            source: e.source,
        })
}

/// Makes sure `dir` can hold the node key before anything is spent on it
/// (a join token is single-use): created 0700 if missing; an existing
/// directory must not be open to group or others (it is never chmod-ed, so
/// pointing `data_dir` at a shared directory is an error, not a surprise);
/// and a test file must be writable there.
pub fn prepare(dir: &Path) -> Result<(), DataDirError> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(DataDirError::Corrupt {
                path: dir.to_owned(),
                reason: "not a directory".into(),
            });
        }
        Ok(m) if m.permissions().mode() & 0o077 != 0 => {
            return Err(DataDirError::Corrupt {
                path: dir.to_owned(),
                reason: format!(
                    "mode {:o} lets group or others in; it will hold the node's key: use a \
                     directory of its own with mode 0700",
                    m.permissions().mode() & 0o777
                ),
            });
        }
        Ok(_) => {}
        Err(_) => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io(dir))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io(dir))?;
        }
    }
    write_private(dir, ".probe", b"")?;
    let probe = dir.join(".probe");
    std::fs::remove_file(&probe).map_err(io(&probe))
}

/// Saves the node identity in `dir` (see [`prepare`]).
pub fn save(
    dir: &Path,
    chain: &[CertificateDer<'static>],
    key: &PrivateKey,
    bundle: &[CertificateDer<'static>],
) -> Result<(), DataDirError> {
    prepare(dir)?;
    let mut identity = key.to_pem();
    identity.push_str(&tessera_core::pem::encode_certs(
        chain.iter().map(|c| c.as_ref()),
    ));
    write_private(dir, IDENTITY, identity.as_bytes())?;
    save_bundle(dir, bundle)
}

/// Saves only the trust bundle (after it changed).
pub fn save_bundle(dir: &Path, bundle: &[CertificateDer<'static>]) -> Result<(), DataDirError> {
    let pem = tessera_core::pem::encode_certs(bundle.iter().map(|c| c.as_ref()));
    write_private(dir, BUNDLE, pem.as_bytes())
}

/// Loads the stored identity: `None` if nothing was stored; an error if the
/// directory holds a partial or unreadable set, or files others can read.
pub fn load(dir: &Path) -> Result<Option<Stored>, DataDirError> {
    let present = [IDENTITY, BUNDLE].map(|n| dir.join(n).exists());
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
    let identity = zeroize::Zeroizing::new(read(IDENTITY)?);
    let chain =
        tessera_core::pem::certs(&identity).map_err(|e| corrupt(IDENTITY, e.to_string()))?;
    let key = match tessera_core::pem::private_key(&identity) {
        Ok(rustls::pki_types::PrivateKeyDer::Pkcs8(k)) => {
            PrivateKey::from_pkcs8_der(k.secret_pkcs8_der().to_vec())
        }
        Ok(_) => return Err(corrupt(IDENTITY, "not a PKCS#8 key".into())),
        Err(e) => return Err(corrupt(IDENTITY, e.to_string())),
    };
    let bundle =
        tessera_core::pem::certs(&read(BUNDLE)?).map_err(|e| corrupt(BUNDLE, e.to_string()))?;
    Ok(Some(Stored { chain, key, bundle }))
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
            &PrivateKey::from_pkcs8_der(key.clone()),
            std::slice::from_ref(&root),
        )
        .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for f in [IDENTITY, BUNDLE] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "no temp or probe file left: {names:?}");
        let s = load(&dir).unwrap().unwrap();
        assert_eq!(s.chain, vec![leaf.clone()]);
        assert_eq!(s.bundle, vec![root]);
        assert_eq!(s.key.pkcs8_der(), Some(&key[..]));
        // A newer bundle replaces the old one.
        let (root2, _) = cert();
        save_bundle(&dir, std::slice::from_ref(&root2)).unwrap();
        assert_eq!(load(&dir).unwrap().unwrap().bundle, vec![root2]);

        // A key others can read is refused, not used.
        let id = dir.join(IDENTITY);
        std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(e.contains("0600"), "{e}");
        std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o600)).unwrap();
        // Garbage or a missing file is an error, not "nothing stored".
        std::fs::write(&id, b"garbage").unwrap();
        assert!(load(&dir).is_err());
        std::fs::remove_file(&id).unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(e.contains(IDENTITY), "{e}");

        // A shared directory is refused, not chmod-ed.
        let shared = base.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = prepare(&shared).unwrap_err().to_string();
        assert!(e.contains("0700"), "{e}");
        assert_eq!(mode(&shared), 0o755);
    }
}
