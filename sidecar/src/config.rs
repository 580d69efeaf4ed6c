//! Sidecar configuration: `config/sidecar.toml` documents every option;
//! environment variables (`TESSERA_SIDECAR__SECTION__KEY`) and then `--set`
//! flags override the file (one implementation for every binary:
//! `tessera_core::config`); the
//! options are validated at start and errors name the option. SPIFFE IDs
//! and patterns are parsed as the file is read, so nothing re-parses them.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use tessera_core::{SpiffeId, SpiffeIdPattern};

/// The sidecar's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The CA's URL.
    pub ca_url: String,
    /// Trust anchors (PEM) for reaching the CA the first time.
    pub ca_bundle: PathBuf,
    /// File holding the join token (read once, never written). The token may
    /// also come from `TESSERA_JOIN_TOKEN` or `--join-token`.
    pub join_token_file: Option<PathBuf>,
    /// File holding a platform token (a Kubernetes projected service-account
    /// token or an OIDC ID token) for direct mode without an agent: read
    /// again for every issuance, since the platform rotates it. The CA issues
    /// for the entry parented to `spiffe://<td>/tessera/issuer/<issuer>`
    /// whose selectors the token carries. Not with a join token.
    pub platform_token_file: Option<PathBuf>,
    /// With a platform token: the SPIFFE ID wanted when several entries match.
    pub platform_token_spiffe_id: Option<SpiffeId>,
    /// The node agent's Workload API socket (`unix:///path`). Used when no
    /// join token is given; `SPIFFE_ENDPOINT_SOCKET` is used when this is
    /// unset. Either a join token or the Workload API must be configured.
    pub workload_api_socket: Option<String>,
    /// With the Workload API: the SPIFFE ID to use when the agent returns
    /// several; unset means the first (the Workload API's default).
    pub workload_api_spiffe_id: Option<SpiffeId>,
    /// Admin endpoint (`/healthz`, `/readyz`, `/metrics`, `/identity`); loopback only.
    pub admin_listen: SocketAddr,
    /// Allow TLS 1.2 besides 1.3.
    pub tls12: bool,
    /// Seconds to let connections finish after SIGTERM.
    pub drain_seconds: u64,
    /// Per-connection metrics (opened, closed, active, bytes by listener).
    /// `false` skips those updates on the relay path; denial, certificate and
    /// feed metrics are kept.
    pub metrics: bool,
    /// Fetch the trust bundle (conditional GET) at least this often, seconds.
    /// Changes normally arrive within seconds through the revocation feed,
    /// which also reports the bundle's sequence.
    pub bundle_refresh_seconds: u64,
    /// Inbound listeners: mTLS from peers to the app.
    pub inbound: Vec<Inbound>,
    /// Outbound listeners: plaintext from the app to mTLS upstreams.
    pub outbound: Vec<Outbound>,
    /// Limits.
    pub limits: Limits,
    /// Certificate renewal.
    pub renew: Renew,
    /// Revocation-feed following.
    pub revocation: Revocation,
    /// Denial reporting.
    pub denials: Denials,
    /// Optional certificate files for apps that do their own TLS.
    pub svid_files: SvidFiles,
}

/// Certificate files for apps that terminate TLS themselves: `svid.pem` (leaf
/// and chain), `svid_key.pem` (0600) and `bundle.pem`, written atomically on
/// every rotation.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SvidFiles {
    /// Directory to write into; empty disables the files.
    pub dir: Option<PathBuf>,
    /// Command run (by `sh -c`) after each write, e.g. to reload the app.
    pub command: Option<String>,
    /// PID to signal after each write.
    pub signal_pid: Option<u32>,
    /// Signal name for `signal_pid` (default HUP).
    pub signal: Option<String>,
}

/// One inbound listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inbound {
    /// Name used in logs, metrics and denial records.
    pub name: String,
    /// Public address to accept mTLS on.
    pub listen: SocketAddr,
    /// The app's plaintext address (loopback).
    pub forward: SocketAddr,
    /// Peers allowed: exact SPIFFE IDs, `spiffe://td/path/*` prefixes, or `spiffe://td/*`.
    pub allow: Vec<SpiffeIdPattern>,
    /// Send a PROXY protocol v2 header to the app first, carrying the peer's
    /// address and its SPIFFE ID (TLV type 0xE0).
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// One outbound listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    /// Name used in logs, metrics and denial records.
    pub name: String,
    /// Loopback address the app connects to.
    pub listen: SocketAddr,
    /// The upstream's address, `host:port`.
    pub upstream: String,
    /// The SPIFFE ID (or pattern) the upstream must present.
    pub server_id: SpiffeIdPattern,
}

/// Limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// TLS handshake deadline, milliseconds.
    pub handshake_timeout_ms: u64,
    /// Close a proxied connection idle in both directions this long, milliseconds.
    pub idle_timeout_ms: u64,
    /// Most concurrent connections across the inbound listeners, handshakes
    /// included. Separate from the outbound cap so that peers filling it
    /// cannot stop the app's own outbound connections.
    pub max_inbound_connections: usize,
    /// Most concurrent connections across the outbound listeners (the app's
    /// side), handshakes included; separate from the inbound cap.
    pub max_outbound_connections: usize,
}

/// Renewal timing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Renew {
    /// Renew at this fraction of the lifetime.
    pub at_fraction: f64,
    /// ± this fraction of the lifetime, at random.
    pub jitter_fraction: f64,
    /// First retry delay after a failure, milliseconds (doubles up to the max).
    pub retry_min_ms: u64,
    /// Longest retry delay, milliseconds.
    pub retry_max_ms: u64,
}

/// Revocation following.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Revocation {
    /// Follow the CA's revocation feed.
    pub follow: bool,
    /// Close established connections whose peer gets revoked.
    pub close_established: bool,
    /// Long-poll wait, seconds.
    pub wait_seconds: u64,
}

/// Denial reporting.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Denials {
    /// Report denials to the CA.
    pub report: bool,
    /// Send a batch at least this often, milliseconds.
    pub flush_ms: u64,
    /// Keep at most this many unsent denials (older ones are dropped and counted).
    pub max_buffered: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ca_url: "https://localhost:8443".into(),
            ca_bundle: PathBuf::from("bundle.pem"),
            join_token_file: None,
            platform_token_file: None,
            platform_token_spiffe_id: None,
            workload_api_socket: None,
            workload_api_spiffe_id: None,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 15000)),
            tls12: false,
            drain_seconds: 10,
            metrics: true,
            bundle_refresh_seconds: 300,
            inbound: vec![],
            outbound: vec![],
            limits: Limits::default(),
            renew: Renew::default(),
            revocation: Revocation::default(),
            denials: Denials::default(),
            svid_files: SvidFiles::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout_ms: 5000,
            idle_timeout_ms: 300_000,
            max_inbound_connections: 10_000,
            max_outbound_connections: 10_000,
        }
    }
}

impl Default for Renew {
    fn default() -> Self {
        Self {
            at_fraction: 0.5,
            jitter_fraction: 0.1,
            retry_min_ms: 500,
            retry_max_ms: 30_000,
        }
    }
}

impl Default for Revocation {
    fn default() -> Self {
        Self {
            follow: true,
            close_established: true,
            wait_seconds: 30,
        }
    }
}

impl Default for Denials {
    fn default() -> Self {
        Self {
            report: true,
            flush_ms: 2000,
            max_buffered: 10_000,
        }
    }
}

pub use tessera_core::config::{ConfigError, Options};

/// Overridden by `TESSERA_SIDECAR__SECTION__KEY` (`TESSERA_SIDECAR__LIMITS__MAX_INBOUND_CONNECTIONS=512`).
impl Options for Config {
    const ENV_PREFIX: &'static str = "TESSERA_SIDECAR__";

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.ca_url.starts_with("https://") {
            return Err(ConfigError("ca_url: must start with https://".into()));
        }
        if self.platform_token_file.is_some() && self.join_token_file.is_some() {
            return Err(ConfigError(
                "platform_token_file: not together with join_token_file".into(),
            ));
        }
        if !self.admin_listen.ip().is_loopback() {
            return Err(ConfigError(
                "admin_listen: must be a loopback address".into(),
            ));
        }
        if self.bundle_refresh_seconds == 0 {
            return Err(ConfigError("bundle_refresh_seconds: at least 1".into()));
        }
        if self.inbound.is_empty() && self.outbound.is_empty() {
            return Err(ConfigError(
                "inbound/outbound: configure at least one listener".into(),
            ));
        }
        let names = self
            .inbound
            .iter()
            .map(|l| &l.name)
            .chain(self.outbound.iter().map(|o| &o.name));
        for n in names {
            if n.is_empty() || n.len() > 128 || n.chars().any(char::is_control) {
                return Err(ConfigError(format!(
                    "inbound/outbound name {n:?}: 1 to 128 printable characters"
                )));
            }
        }
        for (i, l) in self.inbound.iter().enumerate() {
            if l.allow.is_empty() {
                return Err(ConfigError(format!(
                    "inbound[{i}].allow: at least one SPIFFE ID or pattern"
                )));
            }
        }
        for (i, o) in self.outbound.iter().enumerate() {
            if !o.listen.ip().is_loopback() {
                return Err(ConfigError(format!(
                    "outbound[{i}].listen: must be a loopback address"
                )));
            }
            if o.upstream
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(ConfigError(format!(
                    "outbound[{i}].upstream: expected host:port"
                )));
            }
        }
        if !(0.1..=0.9).contains(&self.renew.at_fraction)
            || !(0.0..=0.3).contains(&self.renew.jitter_fraction)
        {
            return Err(ConfigError(
                "renew.at_fraction (0.1..0.9) / renew.jitter_fraction (0..0.3)".into(),
            ));
        }
        let l = &self.limits;
        if l.max_inbound_connections == 0
            || l.max_outbound_connections == 0
            || l.handshake_timeout_ms == 0
        {
            return Err(ConfigError(
                "limits: max_inbound_connections, max_outbound_connections and handshake_timeout_ms must be positive".into(),
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
    fn shipped_example_loads_and_errors_name_the_option() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sidecar.toml");
        let cfg = Config::load(Some(&p), NO_ENV, &[]).unwrap();
        assert_eq!(cfg.inbound.len(), 1);
        assert!(cfg.metrics);
        assert!(
            !Config::load(Some(&p), NO_ENV, &["metrics=false".into()])
                .unwrap()
                .metrics
        );
        let e =
            Config::load(Some(&p), NO_ENV, &["admin_listen=\"0.0.0.0:15000\"".into()]).unwrap_err();
        assert!(e.0.contains("admin_listen"), "{e}");
        let e = Config::load(Some(&p), NO_ENV, &["limits.bogus=1".into()]).unwrap_err();
        assert!(e.0.contains("bogus"), "{e}");
        let e = Config::load(Some(&p), NO_ENV, &["ca_url=\"http://x\"".into()]).unwrap_err();
        assert!(e.0.contains("ca_url"), "{e}");
        let e = Config::load(Some(&p), NO_ENV, &["inbound=[{name=\"a\", listen=\"127.0.0.1:1\", forward=\"127.0.0.1:2\", allow=[\"spiffe://td/*\", \"web\"]}]".into()]).unwrap_err();
        assert!(
            e.0.contains("inbound.allow") && e.0.contains("\"web\""),
            "{e}"
        );
        let e = Config::load(
            Some(&p),
            NO_ENV,
            &["workload_api_spiffe_id=\"spiffe://td\"".into()],
        )
        .unwrap_err();
        assert!(e.0.contains("workload_api_spiffe_id"), "{e}");
        // Environment overrides: over the file, under --set.
        let env = [
            ("TESSERA_SIDECAR__LIMITS__MAX_INBOUND_CONNECTIONS", "512"),
            ("TESSERA_SIDECAR__METRICS", "false"),
            ("TESSERA__METRICS", "true"),
        ];
        let cfg = Config::load(Some(&p), env, &[]).unwrap();
        assert_eq!(cfg.limits.max_inbound_connections, 512);
        assert!(!cfg.metrics);
        let cfg =
            Config::load(Some(&p), env, &["limits.max_inbound_connections=9".into()]).unwrap();
        assert_eq!(cfg.limits.max_inbound_connections, 9);
        let e = Config::load(Some(&p), [("TESSERA_SIDECAR__LIMITS__BOGUS", "1")], &[]).unwrap_err();
        assert!(e.0.contains("bogus"), "{e}");
        let e = Config::load(
            Some(&p),
            [("TESSERA_SIDECAR__ADMIN_LISTEN", "0.0.0.0:1")],
            &[],
        )
        .unwrap_err();
        assert!(e.0.contains("admin_listen"), "{e}");
    }
}
