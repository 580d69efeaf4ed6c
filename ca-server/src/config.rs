//! Server configuration: a TOML file (see `config/ca-server.toml`), overridden by
//! environment variables `TESSERA__SECTION__KEY` and `--set section.key=value` flags.
//! Unknown options are errors that name the option.

use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use tessera_core::TrustDomain;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The trust domain served, such as `example.org`.
    pub trust_domain: TrustDomain,
    /// Directory for the SQLite database, the KEK file and admin credentials.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://...`; empty means `sqlite://<data_dir>/tessera.db`.
    pub database_url: String,
    /// Most database connections.
    pub database_max_connections: u32,
    /// HTTPS listen address.
    pub listen: SocketAddr,
    /// DNS names in the API server certificate.
    pub server_dns_names: Vec<String>,
    /// IP addresses in the API server certificate.
    pub server_ips: Vec<IpAddr>,
    /// `text` or `json`.
    pub log_format: String,
    /// CA options.
    pub ca: CaConfig,
    /// Issuance policy.
    pub issuance: IssuanceConfig,
    /// Input and connection limits.
    pub limits: LimitsConfig,
    /// CRL options.
    pub crl: CrlConfig,
    /// Pruning of expired history.
    pub retention: RetentionConfig,
    /// Admin credentials created at init.
    pub admin: AdminConfig,
    /// The event stream and the expiring-certificate scan.
    pub events: EventsConfig,
    /// Webhook deliveries.
    pub webhooks: WebhooksConfig,
    /// CA rotation schedule.
    pub rotation: RotationConfig,
    /// Minimum isolation posture for workloads attested by node agents.
    pub attestation: AttestationConfig,
    /// Federation: the bundle endpoint and the polling of foreign ones.
    pub federation: FederationConfig,
    /// The OIDC discovery document for JWT-SVIDs.
    pub oidc_discovery: OidcDiscoveryConfig,
}

pub use crate::federation::config::{BundleEndpointConfig, FederationConfig, OidcDiscoveryConfig};

/// The CA-wide minimum isolation posture: a container attested by a node
/// agent that violates it gets no identity, whatever its entries say. Each
/// rule reads the agent's `posture:` selectors; a container whose evidence
/// lacks the selector a rule needs is refused (unknown is never safe).
/// Callers outside any container (no container ID) have no posture and are
/// not subject to these rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttestationConfig {
    /// Refuse privileged containers (`posture:privileged:true`).
    pub refuse_privileged: bool,
    /// Refuse containers in the host's PID namespace (`posture:host-ns-pid:true`).
    pub refuse_host_pid: bool,
    /// Refuse containers in the host's network namespace (`posture:host-ns-net:true`).
    pub refuse_host_net: bool,
    /// Refuse containers without a memory limit (`posture:memory-limit:false`).
    pub require_memory_limit: bool,
    /// Trusted platform-token (JWT) issuers (`[[attestation.jwt_issuers]]`):
    /// Kubernetes projected service-account tokens or any OIDC issuer. See
    /// `crate::platform`.
    pub jwt_issuers: Vec<JwtIssuerConfig>,
}

// ---- platform-token (JWT) attestation -------------------------------------

/// One trusted platform-token issuer.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct JwtIssuerConfig {
    /// Short name (`[a-z0-9-]`, 1 to 63): the `jwt:issuer-name:` selector,
    /// the workload parent `spiffe://<td>/tessera/issuer/<name>` and the
    /// prefix of node names (`<name>.<node>`).
    pub name: String,
    /// The exact `iss` claim.
    pub issuer: String,
    /// Accepted audiences; a token must name at least one.
    pub audiences: Vec<String>,
    /// `kubernetes` (projected service-account tokens: `k8s:` selectors) or `oidc`.
    pub kind: String,
    /// JWKS file (re-read when a token names an unknown `kid`). Exactly one
    /// of `jwks_file` and `jwks_url`.
    pub jwks_file: String,
    /// JWKS HTTPS URL: fetched at start, every `jwks_refresh_seconds`, and
    /// when a token names an unknown `kid` (at most once per
    /// `jwks_min_refresh_seconds`).
    pub jwks_url: String,
    /// PEM trust anchors for `jwks_url`'s server (required with `jwks_url`:
    /// no implicit system trust store).
    pub jwks_ca_file: String,
    /// Periodic refresh of `jwks_url`, seconds.
    pub jwks_refresh_seconds: u64,
    /// At most one refresh on an unknown `kid` per this many seconds (per issuer).
    pub jwks_min_refresh_seconds: u64,
    /// Clock leeway for `exp`/`nbf`/`iat`, seconds (at most 300).
    pub leeway_seconds: u64,
    /// Refuse tokens without `jti`; every `jti` is single-use either way.
    pub require_jti: bool,
    /// Selectors a token must carry to attest a *node* (e.g.
    /// `["k8s:ns:tessera", "k8s:sa:tessera-agent"]`). Empty: this issuer
    /// cannot attest nodes (only sidecars in direct mode).
    pub node_selectors: Vec<String>,
    /// The claim naming the node (a `/`-separated path into the claims).
    /// Empty: `kubernetes.io/node/name` for `kubernetes`, `sub` for `oidc`.
    pub node_name_claim: String,
    /// Lifetime of node certificates from this issuer, seconds (within
    /// `issuance.min_ttl_seconds..max_ttl_seconds`).
    pub node_ttl_seconds: i64,
    /// `oidc` only: extra string (or string-array) claims turned into
    /// `jwt:claim:<name>:<value>` selectors.
    pub selector_claims: Vec<String>,
}

impl Default for JwtIssuerConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            issuer: String::new(),
            audiences: vec![],
            kind: "oidc".into(),
            jwks_file: String::new(),
            jwks_url: String::new(),
            jwks_ca_file: String::new(),
            jwks_refresh_seconds: 300,
            jwks_min_refresh_seconds: 30,
            leeway_seconds: 60,
            require_jti: false,
            node_selectors: vec![],
            node_name_claim: String::new(),
            node_ttl_seconds: 3600,
            selector_claims: vec![],
        }
    }
}

impl JwtIssuerConfig {
    /// The claim path naming the node.
    pub fn node_claim(&self) -> &str {
        match (self.node_name_claim.as_str(), self.kind.as_str()) {
            ("", "kubernetes") => "kubernetes.io/node/name",
            ("", _) => "sub",
            (c, _) => c,
        }
    }

    fn validate(&self, at: usize, i: &IssuanceConfig) -> Result<(), ConfigError> {
        let err = |field: &str, why: &str| {
            Err(ConfigError(format!(
                "attestation.jwt_issuers[{at}].{field}: {why}"
            )))
        };
        let n = &self.name;
        if n.is_empty()
            || n.len() > 63
            || !n
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return err("name", "1 to 63 of a-z, 0-9, '-'");
        }
        if self.issuer.is_empty() || self.issuer.len() > 1024 {
            return err("issuer", "required (the exact iss claim)");
        }
        if self.audiences.is_empty() || self.audiences.iter().any(|a| a.is_empty()) {
            return err("audiences", "at least one non-empty audience");
        }
        if !matches!(self.kind.as_str(), "kubernetes" | "oidc") {
            return err("kind", "kubernetes or oidc");
        }
        match (self.jwks_file.is_empty(), self.jwks_url.is_empty()) {
            (false, true) => {}
            (true, false) => {
                if !self.jwks_url.starts_with("https://") {
                    return err("jwks_url", "must be https://");
                }
                if self.jwks_ca_file.is_empty() {
                    return err(
                        "jwks_ca_file",
                        "required with jwks_url (PEM trust anchors for the JWKS server)",
                    );
                }
            }
            _ => return err("jwks_file", "give exactly one of jwks_file and jwks_url"),
        }
        if self.jwks_refresh_seconds < 10 {
            return err("jwks_refresh_seconds", "at least 10");
        }
        if self.jwks_min_refresh_seconds < 1 {
            return err("jwks_min_refresh_seconds", "at least 1");
        }
        if self.leeway_seconds > tessera_core::platform_jwt::MAX_LEEWAY_SECONDS {
            return err("leeway_seconds", "at most 300");
        }
        if self.node_ttl_seconds < i.min_ttl_seconds || self.node_ttl_seconds > i.max_ttl_seconds {
            return err(
                "node_ttl_seconds",
                "outside issuance.min_ttl_seconds..max_ttl_seconds",
            );
        }
        if self.node_claim().split('/').any(str::is_empty) {
            return err("node_name_claim", "a claim path such as sub or a/b/c");
        }
        if !self.selector_claims.is_empty() && self.kind != "oidc" {
            return err("selector_claims", "only for kind = \"oidc\"");
        }
        Ok(())
    }
}

impl Default for AttestationConfig {
    fn default() -> Self {
        Self {
            refuse_privileged: true,
            refuse_host_pid: true,
            refuse_host_net: true,
            require_memory_limit: false,
            jwt_issuers: vec![],
        }
    }
}

/// CA rotation: when the schedule prepares and activates the next generation
/// (fractions of the active CA's lifetime, as SPIRE does), and the minimum
/// time a prepared CA must be published before any leaf is signed by it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RotationConfig {
    /// Run the schedule (one replica at a time, by lease).
    pub enabled: bool,
    /// Keep a prepared (published) generation at all times: prepare the next
    /// one right after each activation, not at `prepare_at`. An emergency
    /// revocation then promotes a CA every follower already trusts.
    pub standby: bool,
    /// Prepare the next generation at this fraction of the active one's lifetime.
    pub prepare_at: f64,
    /// Activate it at this fraction (and not before `min_overlap_seconds`).
    pub activate_at: f64,
    /// A prepared CA is published at least this long before activation
    /// (manual or scheduled), so every follower trusts it first.
    pub min_overlap_seconds: i64,
    /// How often the schedule looks, seconds.
    pub check_interval_seconds: u64,
    /// The schedule lease's lifetime, seconds (a dead holder is replaced after it).
    pub lease_seconds: i64,
}

/// CA options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaConfig {
    /// `ecdsa-p256`, `ecdsa-p384` or `ed25519`.
    pub key_algorithm: String,
    /// Lifetime of a self-created root, seconds.
    pub ttl_seconds: i64,
    /// KEK file (hex); empty means `<data_dir>/kek`, created 0600 if absent.
    /// The environment variable `TESSERA_KEK` takes precedence.
    pub kek_file: String,
    /// Import this CA certificate (PEM) at first start instead of creating a root.
    pub import_cert: String,
    /// The key (PEM) for `import_cert`.
    pub import_key: String,
    /// Trust anchors (PEM) above an imported intermediate.
    pub import_bundle: String,
}

/// Issuance policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IssuanceConfig {
    /// Default leaf lifetime, seconds.
    pub default_ttl_seconds: i64,
    /// Shortest lifetime an entry or request may ask for.
    pub min_ttl_seconds: i64,
    /// Longest lifetime an entry or request may ask for.
    pub max_ttl_seconds: i64,
    /// notBefore back-dating for clock skew, seconds.
    pub clock_skew_seconds: i64,
    /// Default join-token lifetime, seconds.
    pub join_token_ttl_seconds: i64,
}

/// Limits on every input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Largest body of a denial report (`POST /v1/denials`, up to 1000
    /// denials), bytes; never less than `max_body_bytes`, which every other
    /// route has.
    pub max_denial_report_bytes: usize,
    /// Largest CSR, bytes.
    pub max_csr_bytes: usize,
    /// TLS handshake deadline, milliseconds.
    pub handshake_timeout_ms: u64,
    /// Whole-request deadline, milliseconds (long-polls are capped below it).
    pub request_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed,
    /// milliseconds. Only requests count as activity: bytes that are not a
    /// request (an HTTP/2 PING, a trickle of headers) never keep it open.
    pub idle_timeout_ms: u64,
    /// The idle deadline of a connection none of whose requests has yet
    /// authenticated (no valid client certificate or API token), also the
    /// deadline for its first request after the handshake, milliseconds
    /// (`idle_timeout_ms` if that is shorter).
    pub unauthenticated_idle_timeout_ms: u64,
    /// Most concurrent connections.
    pub max_connections: usize,
    /// Most concurrent connections from one source address; further ones
    /// are closed at once (`connection_limit_source`).
    pub max_connections_per_source: usize,
    /// Requests a second one source address may make to the public routes
    /// (`GET /healthz`, `POST /v1/nodes/attest`, ...); more answer
    /// `429 rate_limited`. 0: no limit.
    pub public_requests_per_second_per_source: u32,
    /// Public-route requests one source may make at once before its rate applies.
    pub public_burst_per_source: u32,
    /// Requests a second one node agent may make to `/v1/agent/*`; more
    /// answer `429 rate_limited`. 0: no limit.
    pub agent_requests_per_second_per_node: u32,
    /// `/v1/agent/*` requests one node may make at once before its rate applies.
    pub agent_burst_per_node: u32,
    /// Denials a second one sidecar (the reporter's SPIFFE ID) may report in
    /// `POST /v1/denials`; a report past it answers `429 rate_limited` and
    /// stores nothing. 0: no limit.
    pub denials_per_second_per_reporter: u32,
    /// Denials one reporter may report at once before its rate applies (a
    /// report larger than this costs the whole burst).
    pub denial_burst_per_reporter: u32,
    /// Most request headers.
    pub max_headers: usize,
    /// Longest revocation-feed long-poll, seconds.
    pub max_wait_seconds: u64,
}

/// CRL options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrlConfig {
    /// Regenerate at least this often, seconds (also on every revocation).
    pub interval_seconds: i64,
}

/// Pruning options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Keep expired certificates and used tokens this long, seconds.
    pub keep_expired_seconds: i64,
    /// Run the pruner this often, seconds.
    pub prune_interval_seconds: u64,
    /// Rows deleted per table per run.
    pub prune_batch: i64,
    /// Keep reported denials this long after they happened, seconds; older
    /// ones are pruned, and reports of older ones are refused.
    pub keep_denials_seconds: i64,
    /// Keep webhook delivery attempts this long, seconds.
    pub keep_deliveries_seconds: i64,
}

/// The event stream (`GET /v1/events`) and the expiring-certificate scan.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// How often the database is polled for audit records written by other
    /// replicas, milliseconds (local writes wake streams at once).
    pub poll_interval_ms: u64,
    /// Comment heartbeat on an idle stream, seconds.
    pub heartbeat_seconds: u64,
    /// Most concurrent event streams; more are refused with 503.
    pub max_streams: usize,
    /// Most events read from the database at a time per stream.
    pub page_size: i64,
    /// Run the expiring-certificate scan this often, seconds.
    pub expiring_scan_seconds: u64,
    /// A certificate is expiring in its last this-many seconds; 0 means in the
    /// last sixth of its lifetime.
    pub expiring_window_seconds: i64,
}

/// Webhook deliveries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Most registered webhooks.
    pub max_webhooks: i64,
    /// TCP connect plus TLS handshake deadline, milliseconds.
    pub connect_timeout_ms: u64,
    /// Deadline for the receiver's response status after the request is
    /// sent, milliseconds.
    pub response_timeout_ms: u64,
    /// Attempts per event before it is recorded `failed` and skipped.
    pub max_attempts: i64,
    /// Delay after the first failed attempt, milliseconds; doubled after each
    /// further one.
    pub retry_base_ms: i64,
    /// Longest delay between attempts, milliseconds.
    pub retry_max_ms: i64,
    /// Lease of the replica that delivers, seconds; renewed every third of
    /// it, taken over by another replica once it lapses.
    pub lease_seconds: i64,
    /// Trust anchors (PEM) for receivers registered without `ca_pem`.
    pub system_roots_file: String,
}

/// Admin-credential options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Lifetime of admin client certificates, seconds.
    pub cert_ttl_seconds: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            trust_domain: TrustDomain::new("example.org").expect("a valid trust domain"),
            data_dir: PathBuf::from("./data"),
            database_url: String::new(),
            database_max_connections: 8,
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            server_dns_names: vec!["localhost".into()],
            server_ips: vec![IpAddr::from([127, 0, 0, 1])],
            log_format: "text".into(),
            ca: CaConfig::default(),
            issuance: IssuanceConfig::default(),
            limits: LimitsConfig::default(),
            crl: CrlConfig::default(),
            retention: RetentionConfig::default(),
            admin: AdminConfig::default(),
            rotation: RotationConfig::default(),
            attestation: AttestationConfig::default(),
            events: EventsConfig::default(),
            webhooks: WebhooksConfig::default(),
            federation: FederationConfig::default(),
            oidc_discovery: OidcDiscoveryConfig::default(),
        }
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: 500,
            heartbeat_seconds: 15,
            max_streams: 64,
            page_size: 100,
            expiring_scan_seconds: 60,
            expiring_window_seconds: 0,
        }
    }
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            max_webhooks: 100,
            connect_timeout_ms: 5_000,
            response_timeout_ms: 10_000,
            max_attempts: 8,
            retry_base_ms: 1_000,
            retry_max_ms: 300_000,
            lease_seconds: 15,
            system_roots_file: "/etc/ssl/certs/ca-certificates.crt".into(),
        }
    }
}

impl Default for CaConfig {
    fn default() -> Self {
        Self {
            key_algorithm: "ecdsa-p256".into(),
            ttl_seconds: 365 * 86400,
            kek_file: String::new(),
            import_cert: String::new(),
            import_key: String::new(),
            import_bundle: String::new(),
        }
    }
}

impl Default for IssuanceConfig {
    fn default() -> Self {
        Self {
            default_ttl_seconds: 3600,
            min_ttl_seconds: 60,
            max_ttl_seconds: 86400,
            clock_skew_seconds: 30,
            join_token_ttl_seconds: 600,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_denial_report_bytes: 1024 * 1024,
            max_csr_bytes: 16 * 1024,
            handshake_timeout_ms: 10_000,
            request_timeout_ms: 90_000,
            idle_timeout_ms: 30_000,
            unauthenticated_idle_timeout_ms: 10_000,
            max_connections: 1024,
            max_connections_per_source: 256,
            public_requests_per_second_per_source: 50,
            public_burst_per_source: 200,
            agent_requests_per_second_per_node: 50,
            agent_burst_per_node: 500,
            denials_per_second_per_reporter: 100,
            denial_burst_per_reporter: 2000,
            max_headers: 64,
            max_wait_seconds: 60,
        }
    }
}

impl Default for CrlConfig {
    fn default() -> Self {
        Self {
            interval_seconds: 300,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            keep_expired_seconds: 86400,
            prune_interval_seconds: 60,
            prune_batch: 1000,
            keep_denials_seconds: 7 * 86400,
            keep_deliveries_seconds: 7 * 86400,
        }
    }
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            standby: false,
            prepare_at: 0.5,
            activate_at: 5.0 / 6.0,
            min_overlap_seconds: 3600,
            check_interval_seconds: 30,
            lease_seconds: 90,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            cert_ttl_seconds: 90 * 86400,
        }
    }
}

pub use tessera_core::config::{ConfigError, Options};

/// Overridden by `TESSERA__SECTION__KEY` (`TESSERA__ISSUANCE__DEFAULT_TTL_SECONDS=120`).
impl Options for Config {
    const ENV_PREFIX: &'static str = "TESSERA__";

    fn validate(&self) -> Result<(), ConfigError> {
        crate::federation::config::validate(
            &self.federation,
            &self.oidc_discovery,
            self.rotation.min_overlap_seconds,
        )
        .map_err(ConfigError)?;
        let issuers = &self.attestation.jwt_issuers;
        for (at, j) in issuers.iter().enumerate() {
            j.validate(at, &self.issuance)?;
            if issuers[..at]
                .iter()
                .any(|o| o.name == j.name || o.issuer == j.issuer)
            {
                return Err(ConfigError(format!(
                    "attestation.jwt_issuers[{at}]: name and issuer must be unique"
                )));
            }
        }
        if crate::ca::KeyAlgorithm::parse(&self.ca.key_algorithm).is_none() {
            return Err(ConfigError(
                "ca.key_algorithm: must be ecdsa-p256, ecdsa-p384 or ed25519".into(),
            ));
        }
        let i = &self.issuance;
        if i.min_ttl_seconds < 60 {
            return Err(ConfigError("issuance.min_ttl_seconds: at least 60".into()));
        }
        if i.max_ttl_seconds < i.min_ttl_seconds {
            return Err(ConfigError(
                "issuance.max_ttl_seconds: below min_ttl_seconds".into(),
            ));
        }
        if i.default_ttl_seconds < i.min_ttl_seconds || i.default_ttl_seconds > i.max_ttl_seconds {
            return Err(ConfigError(
                "issuance.default_ttl_seconds: outside min_ttl_seconds..max_ttl_seconds".into(),
            ));
        }
        if !(0..=600).contains(&i.clock_skew_seconds) {
            return Err(ConfigError("issuance.clock_skew_seconds: 0 to 600".into()));
        }
        if self.ca.ttl_seconds <= i.max_ttl_seconds {
            return Err(ConfigError(
                "ca.ttl_seconds: must exceed issuance.max_ttl_seconds".into(),
            ));
        }
        let r = &self.rotation;
        if !(0.0 < r.prepare_at && r.prepare_at < r.activate_at && r.activate_at < 1.0) {
            return Err(ConfigError(
                "rotation.prepare_at, rotation.activate_at: need 0 < prepare_at < activate_at < 1"
                    .into(),
            ));
        }
        if r.min_overlap_seconds < 1 {
            return Err(ConfigError(
                "rotation.min_overlap_seconds: at least 1".into(),
            ));
        }
        if r.check_interval_seconds < 1 || r.lease_seconds <= r.check_interval_seconds as i64 {
            return Err(ConfigError(
                "rotation.lease_seconds: must exceed rotation.check_interval_seconds (>= 1)".into(),
            ));
        }
        if self.limits.max_body_bytes < 1024 || self.limits.max_csr_bytes < 256 {
            return Err(ConfigError(
                "limits.max_body_bytes / max_csr_bytes: too small".into(),
            ));
        }
        if self.retention.keep_denials_seconds < 3600 {
            return Err(ConfigError(
                "retention.keep_denials_seconds: at least 3600".into(),
            ));
        }
        if self.retention.prune_batch < 1 {
            return Err(ConfigError("retention.prune_batch: at least 1".into()));
        }
        if self.limits.idle_timeout_ms < 100 {
            return Err(ConfigError("limits.idle_timeout_ms: at least 100".into()));
        }
        if self.limits.max_connections == 0 || self.limits.max_connections_per_source == 0 {
            return Err(ConfigError(
                "limits.max_connections / max_connections_per_source: at least 1".into(),
            ));
        }
        if self.limits.unauthenticated_idle_timeout_ms < 100 {
            return Err(ConfigError(
                "limits.unauthenticated_idle_timeout_ms: at least 100".into(),
            ));
        }
        let (e, w) = (&self.events, &self.webhooks);
        if !(10..=60_000).contains(&e.poll_interval_ms) {
            return Err(ConfigError("events.poll_interval_ms: 10 to 60000".into()));
        }
        if !(1..=300).contains(&e.heartbeat_seconds) {
            return Err(ConfigError("events.heartbeat_seconds: 1 to 300".into()));
        }
        if e.max_streams == 0 {
            return Err(ConfigError("events.max_streams: at least 1".into()));
        }
        if !(1..=1000).contains(&e.page_size) {
            return Err(ConfigError("events.page_size: 1 to 1000".into()));
        }
        if e.expiring_scan_seconds == 0 {
            return Err(ConfigError(
                "events.expiring_scan_seconds: at least 1".into(),
            ));
        }
        if e.expiring_window_seconds < 0 {
            return Err(ConfigError(
                "events.expiring_window_seconds: 0 (a sixth of the lifetime) or more".into(),
            ));
        }
        if w.max_webhooks < 0 {
            return Err(ConfigError("webhooks.max_webhooks: not negative".into()));
        }
        if w.connect_timeout_ms < 10 || w.response_timeout_ms < 10 {
            return Err(ConfigError(
                "webhooks.connect_timeout_ms / response_timeout_ms: at least 10".into(),
            ));
        }
        if !(1..=100).contains(&w.max_attempts) {
            return Err(ConfigError("webhooks.max_attempts: 1 to 100".into()));
        }
        if w.retry_base_ms < 1 || w.retry_max_ms < w.retry_base_ms {
            return Err(ConfigError(
                "webhooks.retry_base_ms: at least 1, and retry_max_ms at least retry_base_ms"
                    .into(),
            ));
        }
        if w.lease_seconds < 3 {
            return Err(ConfigError("webhooks.lease_seconds: at least 3".into()));
        }
        if self.retention.keep_deliveries_seconds < 60 {
            return Err(ConfigError(
                "retention.keep_deliveries_seconds: at least 60".into(),
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError("log_format: text or json".into()));
        }
        if self.ca.import_cert.is_empty() != self.ca.import_key.is_empty() {
            return Err(ConfigError(
                "ca.import_cert and ca.import_key go together".into(),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// The database URL, defaulting to SQLite in the data directory.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}/tessera.db?mode=rwc", self.data_dir.display())
        } else {
            self.database_url.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::config::NO_ENV;

    #[test]
    fn overrides_and_errors_name_the_option() {
        let cfg = Config::load(
            None,
            [("TESSERA__ISSUANCE__DEFAULT_TTL_SECONDS", "120")],
            &["trust_domain=prod.example".into()],
        )
        .unwrap();
        assert_eq!(cfg.issuance.default_ttl_seconds, 120);
        assert_eq!(cfg.trust_domain.as_str(), "prod.example");
        let e = Config::load(None, NO_ENV, &["issuance.bogus=1".into()]).unwrap_err();
        assert!(e.0.contains("bogus"), "{e}");
        let e = Config::load(None, NO_ENV, &["trust_domain=Bad.Domain".into()]).unwrap_err();
        assert!(e.0.contains("trust_domain"), "{e}");
        let e = Config::load(None, NO_ENV, &["issuance.min_ttl_seconds=5".into()]).unwrap_err();
        assert!(e.0.contains("min_ttl_seconds"), "{e}");
    }

    #[test]
    fn shipped_example_config_loads() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/ca-server.toml");
        Config::load(Some(&p), NO_ENV, &[]).unwrap();
    }

    /// The commented-out examples of the shipped configuration from the line
    /// `from` up to the line `to` (or the end), uncommented.
    fn shipped_example(from: &str, to: Option<&str>) -> String {
        let shipped = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/ca-server.toml"),
        )
        .unwrap();
        let tail = &shipped[shipped.find(from).unwrap()..];
        let part = to.map_or(tail, |to| &tail[..tail.find(to).unwrap()]);
        // Option lines and table headers only; "# # ..." and prose are comments.
        part.lines()
            .filter(|l| !l.starts_with("# #"))
            .map(|l| l.trim_start_matches("# "))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn shipped_federation_examples_load() {
        // The commented [federation] and [oidc_discovery] examples, uncommented,
        // are valid options (files are only read when the server starts).
        let text = shipped_example("# [federation]", Some("# ---- Platform-token"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.toml");
        std::fs::write(&f, &text).unwrap();
        let cfg = Config::load(Some(&f), NO_ENV, &[]).unwrap();
        assert_eq!(cfg.federation.endpoint.profile, "https_spiffe");
        assert!(cfg.federation.endpoint.listen.is_some());
        assert_eq!(
            cfg.oidc_discovery.issuer(),
            Some("https://oidc.example.org/tessera")
        );
    }

    #[test]
    fn jwt_issuers_are_validated() {
        // The shipped, commented-out issuer examples, uncommented, load.
        let uncommented = shipped_example("# [[attestation.jwt_issuers]]", None);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.toml");
        std::fs::write(&f, &uncommented).unwrap();
        let cfg = Config::load(Some(&f), NO_ENV, &[]).unwrap();
        let i = &cfg.attestation.jwt_issuers;
        assert_eq!(i.len(), 2);
        assert_eq!(i[0].node_claim(), "kubernetes.io/node/name");
        assert_eq!(i[1].node_claim(), "sub");
        let bad = |extra: &str, field: &str| {
            let text = format!(
                "[[attestation.jwt_issuers]]\nname = \"k8s\"\nissuer = \"https://i\"\n\
                 audiences = [\"a\"]\njwks_file = \"/x\"\n{extra}"
            );
            std::fs::write(&f, text).unwrap();
            let e = Config::load(Some(&f), NO_ENV, &[]).unwrap_err();
            assert!(e.0.contains(field), "{extra}: {e}");
        };
        bad("leeway_seconds = 301", "leeway_seconds");
        bad("kind = \"saml\"", "kind");
        bad("jwks_url = \"https://x/keys\"", "jwks_file");
        bad(
            "selector_claims = [\"x\"]\nkind = \"kubernetes\"",
            "selector_claims",
        );
        bad("node_ttl_seconds = 10", "node_ttl_seconds");
        std::fs::write(
            &f,
            "[[attestation.jwt_issuers]]\nname = \"a\"\nissuer = \"https://i\"\naudiences = [\"a\"]\n\
             jwks_url = \"https://x/keys\"\n",
        )
        .unwrap();
        let e = Config::load(Some(&f), NO_ENV, &[]).unwrap_err();
        assert!(e.0.contains("jwks_ca_file"), "{e}");
    }
}
