//! The path of a binary of this workspace, fresh for the test that runs it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

/// The path of binary `bin` of workspace package `package`.
///
/// Cargo names the binaries of the package under test in `CARGO_BIN_EXE_<bin>`;
/// any other is built (`cargo build -p package --bin bin`, same target
/// directory and profile as this test) so a test never runs a stale one.
/// That build runs once per test process: a later call, even a concurrent
/// one, waits for it instead of queueing on cargo's lock again (other
/// builds may hold it). A failed build fails the test and is tried again by
/// the next caller.
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(format!("CARGO_BIN_EXE_{bin}")) {
        return p.into();
    }
    static BUILDS: Mutex<BTreeMap<(String, String), Build>> = Mutex::new(BTreeMap::new());
    let cell = BUILDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry((package.to_owned(), bin.to_owned()))
        .or_default()
        .clone();
    cell.get_or_init(|| build(package, bin)).clone()
}

/// One binary's build, shared by every caller of this test process.
type Build = Arc<OnceLock<PathBuf>>;

fn build(package: &str, bin: &str) -> PathBuf {
    // A test binary lives in <target>/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("no target directory above {}", exe.display()));
    let target = profile_dir.parent().unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", package, "--bin", bin])
        .arg("--target-dir")
        .arg(target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
        None => {}
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo: {e}"));
    assert!(status.success(), "building {bin} ({package})");
    let path = profile_dir.join(bin);
    assert!(path.is_file(), "{} missing after the build", path.display());
    path
}
