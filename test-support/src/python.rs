//! The Python virtual environments `.ci/run` creates for the PyPI tools the
//! suite runs: `.ci/venv` (py-spiffe, pkilint, ...; `.ci/requirements.txt`)
//! and `.ci/venv-sslyze` (sslyze alone, `.ci/requirements-sslyze.txt`: it
//! pins a `cryptography` the others refuse).

use std::path::PathBuf;

/// The environment variable naming another virtual environment to use.
pub const VENV_ENV: &str = "TESSERA_TEST_VENV";

/// The environment variable naming another virtual environment for sslyze.
pub const SSLYZE_VENV_ENV: &str = "TESSERA_TEST_SSLYZE_VENV";

/// `$<var>` if set and not empty, else `<repo>/<default>`.
fn dir_from(var: &str, default: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("test-support lives in the workspace")
            .join(default),
    }
}

/// The virtual environment's directory: `$TESSERA_TEST_VENV`, else `<repo>/.ci/venv`.
pub fn venv_dir() -> PathBuf {
    dir_from(VENV_ENV, ".ci/venv")
}

/// sslyze's virtual environment: `$TESSERA_TEST_SSLYZE_VENV`, else
/// `<repo>/.ci/venv-sslyze`.
pub fn sslyze_venv_dir() -> PathBuf {
    dir_from(SSLYZE_VENV_ENV, ".ci/venv-sslyze")
}

/// `bin/<tool>` of the environment `dir` (made from `requirements`, named by
/// `var`); fails the test, saying how to make it, when it is not there (a
/// missing tool never skips).
fn tool_in(dir: PathBuf, tool: &str, requirements: &str, var: &str) -> PathBuf {
    let path = dir.join("bin").join(tool);
    assert!(
        path.is_file(),
        "{} is missing: the suite's PyPI tools live in the virtual environment {} \
         (run .ci/run, or `python3 -m venv {1} && {1}/bin/pip install -r {requirements}`, \
         or point {var} at one that has them)",
        path.display(),
        dir.display(),
    );
    path
}

/// The path of `bin/<tool>` in the virtual environment; fails the test,
/// saying how to make it, when it is not there (a missing tool never skips).
pub fn venv_tool(tool: &str) -> PathBuf {
    tool_in(venv_dir(), tool, ".ci/requirements.txt", VENV_ENV)
}

/// The `sslyze` command of its own virtual environment (see [`sslyze_venv_dir`]).
pub fn sslyze_tool() -> PathBuf {
    tool_in(
        sslyze_venv_dir(),
        "sslyze",
        ".ci/requirements-sslyze.txt",
        SSLYZE_VENV_ENV,
    )
}

/// The virtual environment's Python interpreter.
pub fn venv_python() -> PathBuf {
    venv_tool("python")
}
