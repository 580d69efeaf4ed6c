//! Shared by the CLI's process tests: where the binaries are, and a fresh
//! `tessera-ca` build so no test runs a stale one.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory holding the `tessera` binary under test (and `tessera-ca`).
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_tessera"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `tessera-ca` binary beside ours; built first so this test never runs a stale one.
pub fn ca_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "-p",
            "tessera-ca-server",
            "--bin",
            "tessera-ca",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "building tessera-ca");
    bin_dir().join("tessera-ca")
}
