//! Certificate and key files replaced atomically, with the certificate last.
//!
//! Every file is written to a temporary file of its own in its directory
//! (unique to this write, created with its final mode: a key's is 0600 from
//! the start, never wider, and the umask can only narrow it), flushed to
//! disk, and renamed over the old one, so a reader never sees half a file.
//! A [`PemSet`] writes all its temporary files before the first rename,
//! then renames them in the order bundle, chain, key, **certificate last**:
//! the certificate file is the commit point. A reader that reloads when told
//! (after the last rename) or when the certificate file changes always sees
//! a matching pair; only a reader that reads both files within the
//! microseconds between the key and certificate renames can pair the new
//! key with the old certificate, which a TLS library refuses and the next
//! reload fixes. The directories are flushed last, so the renames are
//! durable too.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Writing a file failed.
#[derive(Debug, thiserror::Error)]
#[error("writing {}: {source}", path.display())]
pub struct WriteError {
    /// The file being written.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// One file to write: where, what, and with which mode.
#[derive(Debug, Clone, Copy)]
pub struct PemFile<'a> {
    path: &'a Path,
    contents: &'a [u8],
    mode: u32,
}

impl<'a> PemFile<'a> {
    /// A file others may read (certificates, bundles): mode 0644.
    pub fn public(path: &'a Path, contents: &'a [u8]) -> Self {
        Self {
            path,
            contents,
            mode: 0o644,
        }
    }

    /// A file only its owner may read (keys): mode 0600.
    pub fn private(path: &'a Path, contents: &'a [u8]) -> Self {
        Self {
            path,
            contents,
            mode: 0o600,
        }
    }

    /// Replaces this one file atomically (temporary file, flush, rename,
    /// directory flush).
    pub fn write(&self) -> Result<(), WriteError> {
        PemSet {
            cert: Some(*self),
            ..PemSet::default()
        }
        .write()
    }
}

/// The files of one identity, each optional, written in the order that
/// makes the certificate the commit point (see the module documentation).
#[derive(Debug, Default, Clone, Copy)]
pub struct PemSet<'a> {
    /// The trust bundle.
    pub bundle: Option<PemFile<'a>>,
    /// The intermediates alone.
    pub chain: Option<PemFile<'a>>,
    /// The private key.
    pub key: Option<PemFile<'a>>,
    /// The certificate (leaf, possibly followed by its chain).
    pub cert: Option<PemFile<'a>>,
}

impl PemSet<'_> {
    /// Writes every file (see the module documentation). On a write failure
    /// nothing has been replaced.
    pub fn write(&self) -> Result<(), WriteError> {
        let files: Vec<&PemFile<'_>> = [&self.bundle, &self.chain, &self.key, &self.cert]
            .into_iter()
            .flatten()
            .collect();
        let mut written: Vec<(PathBuf, &Path)> = Vec::with_capacity(files.len());
        for f in &files {
            let tmp = temp_path(f.path);
            match write_temp(&tmp, f) {
                Ok(()) => written.push((tmp, f.path)),
                Err(source) => {
                    let _ = std::fs::remove_file(&tmp);
                    for (t, _) in &written {
                        let _ = std::fs::remove_file(t);
                    }
                    return Err(WriteError {
                        path: f.path.to_owned(),
                        source,
                    });
                }
            }
        }
        for (i, (tmp, path)) in written.iter().enumerate() {
            if let Err(source) = std::fs::rename(tmp, path) {
                for (t, _) in &written[i..] {
                    let _ = std::fs::remove_file(t);
                }
                return Err(WriteError {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        let mut dirs: Vec<&Path> = files.iter().map(|f| parent(f.path)).collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs {
            if let Ok(dir) = std::fs::File::open(d) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A temporary sibling unique to this write: concurrent writers (threads or
/// processes) never share one.
fn temp_path(path: &Path) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

fn write_temp(tmp: &Path, f: &PemFile<'_>) -> std::io::Result<()> {
    // A file left by a crashed process that had the same PID.
    let _ = std::fs::remove_file(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(f.mode)
        .open(tmp)?;
    file.write_all(f.contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn set_is_written_with_modes_and_no_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let (b, c, k, cert) = (p("bundle.pem"), p("chain.pem"), p("key.pem"), p("cert.pem"));
        std::fs::write(&k, b"old key").unwrap();
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
        PemSet {
            bundle: Some(PemFile::public(&b, b"bundle")),
            chain: Some(PemFile::public(&c, b"chain")),
            key: Some(PemFile::private(&k, b"key")),
            cert: Some(PemFile::public(&cert, b"cert")),
        }
        .write()
        .unwrap();
        assert_eq!(std::fs::read(&k).unwrap(), b"key");
        assert_eq!(std::fs::read(&cert).unwrap(), b"cert");
        assert_eq!(mode(&k), 0o600);
        assert_eq!(mode(&cert) & 0o600, 0o600);
        assert_eq!(
            names(dir.path()),
            ["bundle.pem", "cert.pem", "chain.pem", "key.pem"]
        );
        PemFile::private(&b, b"again").write().unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"again");
    }

    #[test]
    fn a_failure_leaves_the_old_certificate_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let (bundle, cert) = (dir.path().join("bundle.pem"), dir.path().join("cert.pem"));
        // A key that cannot be written (no such directory), then one that
        // cannot be renamed (a directory is in the way).
        let unwritable = dir.path().join("no/such/dir/key.pem");
        let unrenamable = dir.path().join("key.pem");
        std::fs::create_dir(&unrenamable).unwrap();
        std::fs::write(unrenamable.join("x"), b"").unwrap();
        for (key, bundle_written) in [(&unwritable, false), (&unrenamable, true)] {
            std::fs::write(&cert, b"old cert").unwrap();
            let _ = std::fs::remove_file(&bundle);
            let e = PemSet {
                bundle: Some(PemFile::public(&bundle, b"new bundle")),
                key: Some(PemFile::private(key, b"new key")),
                cert: Some(PemFile::public(&cert, b"new cert")),
                ..PemSet::default()
            }
            .write()
            .unwrap_err();
            assert_eq!(&e.path, key);
            // Renamed in order: the bundle before the key, the certificate last.
            assert_eq!(bundle.exists(), bundle_written, "{key:?}");
            assert_eq!(std::fs::read(&cert).unwrap(), b"old cert", "{key:?}");
            let left: Vec<_> = names(dir.path())
                .into_iter()
                .filter(|n| n.ends_with(".tmp"))
                .collect();
            assert!(left.is_empty(), "{key:?}: {left:?}");
        }
    }
}
