//! Shared by the CLI's process tests: a real `tessera-ca` (from the
//! test-support crate) with its working directory as the scratch directory
//! the `tessera` commands run in, so they find `data/admin/` as an operator's
//! shell would.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The directory holding the `tessera` binary under test.
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_tessera"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A CA process on a loopback port (killed when dropped) and the scratch
/// directory it runs in.
pub struct Ca {
    ca: tessera_test_support::Ca,
}

impl Ca {
    /// Starts a CA with default options.
    pub fn start() -> Ca {
        Ca {
            ca: tessera_test_support::Ca::start(),
        }
    }

    /// Starts a CA from `builder` (named `name`).
    pub fn start_with(builder: &tessera_test_support::CaBuilder, name: &str) -> Ca {
        Ca {
            ca: builder.start(name),
        }
    }

    /// The CA process and its files.
    pub fn inner(&self) -> &tessera_test_support::Ca {
        &self.ca
    }

    /// The scratch directory (the CA's data is in `data/` below it).
    pub fn dir(&self) -> &Path {
        self.ca.work_dir()
    }

    /// A path in the scratch directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir().join(rel)
    }

    /// `tessera args` in the scratch directory, with none of the
    /// environment's server or credential settings.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
        c.args(args)
            .current_dir(self.dir())
            .env_remove("TESSERA_SERVER")
            .env_remove("TESSERA_TOKEN")
            .env_remove("TESSERA_CERT")
            .env_remove("TESSERA_KEY");
        c
    }

    /// Runs `tessera args` to completion.
    pub fn tessera(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs `tessera args`, which must exit with `code`; returns its stderr.
    pub fn exits(&self, args: &[&str], code: i32) -> String {
        let o = self.tessera(args);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(code), "tessera {args:?}: {stderr}");
        stderr
    }

    /// Runs `tessera args`; panics with its stderr unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.tessera(args);
        assert!(
            o.status.success(),
            "tessera {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs `tessera args --output json`, which must succeed; returns the document.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }
}
