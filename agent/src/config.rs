//! Agent configuration: `config/agent.toml` documents every option;
//! environment variables (`TESSERA_AGENT__KEY`) and then `--set key=value`
//! flags override the file (one implementation for every binary:
//! `tessera_core::config`); options are validated at start and errors name
//! the option. The join token is never part of the file: it
//! comes from `join_token_file`, `TESSERA_JOIN_TOKEN` or `--join-token`, is
//! used once and is written nowhere (with `data_dir`, the node certificate
//! and key it bought are).

use serde::Deserialize;
use std::path::PathBuf;

/// The agent's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The CA's URL (`https://host:port`).
    pub ca_url: String,
    /// Trust anchors (PEM) for reaching the CA the first time.
    pub ca_bundle: PathBuf,
    /// File holding the join token for this node's entry (read once).
    pub join_token_file: Option<PathBuf>,
    /// Instead of a join token: a file holding a platform token (Kubernetes
    /// projected service-account token, OIDC token) from an issuer the CA
    /// trusts for nodes. Read again for every re-attestation (each renewal
    /// of the node certificate), since the platform rotates it.
    pub platform_token_file: Option<PathBuf>,
    /// The node's name: the join token must grant
    /// `spiffe://<td>/tessera/agent/<node_name>` (checked after redeeming);
    /// with a platform token, `<issuer-name>.<node_name>` or `<node_name>`.
    pub node_name: String,
    /// The Workload API socket. Its directory is created 0755 and the socket
    /// made 0777, so containers it is bind-mounted into can connect; callers
    /// are told apart by `SO_PEERCRED` attestation, not by permissions.
    pub socket_path: PathBuf,
    /// The container runtime's Engine API socket (Docker or Podman); empty
    /// means the first of `/run/podman/podman.sock` and `/var/run/docker.sock`
    /// that exists.
    pub runtime_socket: Option<PathBuf>,
    /// How often the agent polls the CA for its entries and the bundle and
    /// re-attests every connected workload, seconds. An entry, label or bundle
    /// change reaches a streaming workload within this bound (plus one issuance).
    pub sync_interval_seconds: u64,
    /// Runtime (Engine API) call deadline, milliseconds.
    pub runtime_timeout_ms: u64,
    /// Most Workload API streams (X.509-SVID and bundle streams) one process
    /// may hold open at once; a further one is refused with
    /// `ResourceExhausted`. Bounds what one caller makes the agent re-attest
    /// and re-issue every sync.
    pub max_streams_per_process: usize,
    /// Where the node identity (certificate chain, key, bundle) is saved, so
    /// a restart resumes it instead of needing a new join token. Unset: no
    /// credential is written anywhere.
    pub data_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ca_url: "https://localhost:8443".into(),
            ca_bundle: PathBuf::from("bundle.pem"),
            join_token_file: None,
            platform_token_file: None,
            node_name: String::new(),
            socket_path: PathBuf::from("/run/tessera/agent.sock"),
            runtime_socket: None,
            sync_interval_seconds: 5,
            runtime_timeout_ms: 5000,
            max_streams_per_process: 64,
            data_dir: None,
        }
    }
}

pub use tessera_core::config::{ConfigError, Options};

/// Overridden by `TESSERA_AGENT__KEY` (`TESSERA_AGENT__SYNC_INTERVAL_SECONDS=10`).
impl Options for Config {
    const ENV_PREFIX: &'static str = "TESSERA_AGENT__";

    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10_000).contains(&self.max_streams_per_process) {
            return Err(ConfigError(
                "max_streams_per_process: between 1 and 10000".into(),
            ));
        }
        if !self.ca_url.starts_with("https://") {
            return Err(ConfigError("ca_url: must start with https://".into()));
        }
        let name_ok = !self.node_name.is_empty()
            && self.node_name.len() <= 255
            && self
                .node_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !name_ok {
            return Err(ConfigError(
                "node_name: required; letters, digits, '-', '.', '_' (a SPIFFE ID path segment)"
                    .into(),
            ));
        }
        if self.platform_token_file.is_some() && self.join_token_file.is_some() {
            return Err(ConfigError(
                "platform_token_file: not together with join_token_file".into(),
            ));
        }
        if !self.socket_path.is_absolute() || self.socket_path.parent().is_none() {
            return Err(ConfigError("socket_path: must be an absolute path".into()));
        }
        if !(1..=3600).contains(&self.sync_interval_seconds) {
            return Err(ConfigError(
                "sync_interval_seconds: between 1 and 3600".into(),
            ));
        }
        if self.data_dir.as_ref().is_some_and(|d| !d.is_absolute()) {
            return Err(ConfigError("data_dir: must be an absolute path".into()));
        }
        if self.data_dir.is_some() && self.platform_token_file.is_some() {
            return Err(ConfigError(
                "data_dir: not with platform_token_file (a platform-token node re-attests \
                 with its current token at start; nothing needs keeping)"
                    .into(),
            ));
        }
        if !(100..=60_000).contains(&self.runtime_timeout_ms) {
            return Err(ConfigError(
                "runtime_timeout_ms: between 100 and 60000".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::config::NO_ENV;

    #[test]
    fn documented_file_loads_and_overrides_apply() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/agent.toml");
        let cfg = Config::load(Some(&p), NO_ENV, &[]).unwrap();
        assert_eq!(cfg.node_name, "node-1");
        assert_eq!(cfg.sync_interval_seconds, 5);
        let e = Config::load(Some(&p), NO_ENV, &["sync_interval_seconds=0".into()]).unwrap_err();
        assert!(e.0.contains("sync_interval_seconds"), "{e}");
        let e = Config::load(Some(&p), NO_ENV, &["node_name=\"a/b\"".into()]).unwrap_err();
        assert!(e.0.contains("node_name"), "{e}");
        let e = Config::load(
            Some(&p),
            NO_ENV,
            &[
                "data_dir=\"/var/lib/x\"".into(),
                "platform_token_file=\"/t\"".into(),
            ],
        )
        .unwrap_err();
        assert!(e.0.contains("data_dir"), "{e}");
        let e = Config::load(Some(&p), NO_ENV, &["data_dir=\"relative\"".into()]).unwrap_err();
        assert!(e.0.contains("absolute"), "{e}");
        let e = Config::load(Some(&p), NO_ENV, &["bogus=1".into()]).unwrap_err();
        assert!(e.0.contains("bogus"), "{e}");
        // Environment overrides: over the file, under --set.
        let env = [
            ("TESSERA_AGENT__SYNC_INTERVAL_SECONDS", "11"),
            ("TESSERA_AGENT__NODE_NAME", "node-env"),
            ("TESSERA_SIDECAR__NODE_NAME", "not-ours"),
        ];
        let cfg = Config::load(Some(&p), env, &[]).unwrap();
        assert_eq!(
            (cfg.sync_interval_seconds, cfg.node_name.as_str()),
            (11, "node-env")
        );
        let cfg = Config::load(Some(&p), env, &["node_name=\"node-set\"".into()]).unwrap();
        assert_eq!(cfg.node_name, "node-set");
        let e = Config::load(
            Some(&p),
            [("TESSERA_AGENT__SYNC_INTERVAL_SECONDS", "0")],
            &[],
        )
        .unwrap_err();
        assert!(e.0.contains("sync_interval_seconds"), "{e}");
        let e = Config::load(Some(&p), [("TESSERA_AGENT__BOGUS", "1")], &[]).unwrap_err();
        assert!(e.0.contains("bogus"), "{e}");
    }
}
