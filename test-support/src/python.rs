//! The Python virtual environment `.ci/run` creates for the PyPI tools the
//! suite runs (py-spiffe, pkilint, ...; listed in `.ci/requirements.txt`).

use std::path::PathBuf;

/// The environment variable naming another virtual environment to use.
pub const VENV_ENV: &str = "TESSERA_TEST_VENV";

/// The virtual environment's directory: `$TESSERA_TEST_VENV`, else `<repo>/.ci/venv`.
pub fn venv_dir() -> PathBuf {
    match std::env::var_os(VENV_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("test-support lives in the workspace")
            .join(".ci/venv"),
    }
}

/// The path of `bin/<tool>` in the virtual environment; fails the test,
/// saying how to make it, when it is not there (a missing tool never skips).
pub fn venv_tool(tool: &str) -> PathBuf {
    let dir = venv_dir();
    let path = dir.join("bin").join(tool);
    assert!(
        path.is_file(),
        "{} is missing: the suite's PyPI tools live in the virtual environment {} \
         (run .ci/run, or `python3 -m venv {0} && {0}/bin/pip install -r .ci/requirements.txt`, \
         or point {VENV_ENV} at one that has them)",
        path.display(),
        dir.display(),
    );
    path
}

/// The virtual environment's Python interpreter.
pub fn venv_python() -> PathBuf {
    venv_tool("python")
}
