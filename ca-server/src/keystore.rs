//! CA private keys at rest: sealed with AES-256-GCM under a key-encryption key (KEK).
//!
//! The KEK comes from `TESSERA_KEK` (64 hex characters) or a key file that must not
//! be readable by group or others. Sealed keys are bound to their CA's ID through
//! the AEAD's associated data, so a sealed key cannot be swapped between CAs.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;

/// Errors loading the KEK or sealing/opening a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    /// The KEK text is not 32 bytes of hex.
    #[error("key-encryption key must be 64 hex characters (32 bytes)")]
    BadKek,
    /// The key file's permissions let group or others read it.
    #[error("key file {0} is readable by group or others (mode {1:o}); chmod 600 it")]
    Permissions(String, u32),
    /// Reading or writing the key file failed.
    #[error("key file {0}: {1}")]
    Io(String, std::io::Error),
    /// A sealed key did not open: wrong KEK, or tampered data.
    #[error("CA key could not be decrypted: wrong key-encryption key or corrupted data")]
    Open,
    /// Randomness or sealing failed.
    #[error("sealing failed")]
    Seal,
}

/// The key-encryption key.
pub struct Kek(LessSafeKey);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(..)")
    }
}

impl Kek {
    /// Parses a KEK from hex text.
    pub fn from_hex(text: &str) -> Result<Self, KeystoreError> {
        let bytes = hex::decode(text.trim()).map_err(|_| KeystoreError::BadKek)?;
        if bytes.len() != 32 {
            return Err(KeystoreError::BadKek);
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| KeystoreError::BadKek)?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// Loads a KEK from a file, refusing files readable by group or others.
    pub fn from_file(path: &Path) -> Result<Self, KeystoreError> {
        let name = path.display().to_string();
        check_private_file(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| KeystoreError::Io(name, e))?;
        Self::from_hex(&text)
    }

    /// Creates a new random KEK file (0600) if it does not exist, then loads it.
    pub fn load_or_create(path: &Path) -> Result<Self, KeystoreError> {
        if !path.exists() {
            let mut bytes = [0u8; 32];
            SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| KeystoreError::Seal)?;
            write_private_file(path, format!("{}\n", hex::encode(bytes)).as_bytes())
                .map_err(|e| KeystoreError::Io(path.display().to_string(), e))?;
        }
        Self::from_file(path)
    }

    /// Seals `plaintext` (a PKCS#8 key) for the CA `ca_id`: nonce || ciphertext || tag.
    pub fn seal(&self, ca_id: &str, plaintext: &[u8]) -> Result<Vec<u8>, KeystoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| KeystoreError::Seal)?;
        let mut buf = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(ca_id)),
                &mut buf,
            )
            .map_err(|_| KeystoreError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Opens a sealed key for the CA `ca_id`; the plaintext is wiped from
    /// memory when dropped.
    pub fn open(
        &self,
        ca_id: &str,
        sealed: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, KeystoreError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(KeystoreError::Open);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeystoreError::Open)?;
        // Decrypted in place: the buffer holds the plaintext key, so it is
        // wiped when dropped, and so is the copy returned.
        let mut buf = zeroize::Zeroizing::new(ct.to_vec());
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(aad(ca_id)), &mut buf)
            .map_err(|_| KeystoreError::Open)?;
        Ok(zeroize::Zeroizing::new(plain.to_vec()))
    }
}

fn aad(ca_id: &str) -> Vec<u8> {
    format!("tessera-ca-key-v1:{ca_id}").into_bytes()
}

/// Refuses a file whose mode gives group or others any access.
pub fn check_private_file(path: &Path) -> Result<(), KeystoreError> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| KeystoreError::Io(path.display().to_string(), e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeystoreError::Permissions(path.display().to_string(), mode));
    }
    Ok(())
}

/// Creates a directory readable only by its owner (0700), or tightens an existing one.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// Writes a file created with mode 0600 (never briefly wider), replacing any old one.
pub fn write_private_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_binding() {
        let kek = Kek::from_hex(&"11".repeat(32)).unwrap();
        let sealed = kek.seal("ca-1", b"secret key").unwrap();
        // The plaintext comes wrapped so that it is wiped when dropped.
        let opened: zeroize::Zeroizing<Vec<u8>> = kek.open("ca-1", &sealed).unwrap();
        assert_eq!(*opened, b"secret key");
        assert!(matches!(
            kek.open("ca-2", &sealed),
            Err(KeystoreError::Open)
        ));
        let other = Kek::from_hex(&"22".repeat(32)).unwrap();
        assert!(matches!(
            other.open("ca-1", &sealed),
            Err(KeystoreError::Open)
        ));
        assert!(matches!(Kek::from_hex("abcd"), Err(KeystoreError::BadKek)));
    }

    #[test]
    fn key_file_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        Kek::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            Kek::from_file(&path),
            Err(KeystoreError::Permissions(..))
        ));
    }
}
