//! `[federation]` and `[oidc_discovery]`: the bundle endpoint Tessera serves,
//! how it polls foreign bundle endpoints, and the OIDC discovery document for
//! JWT-SVIDs. Re-exported by [`crate::config`].

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Federation with other trust domains.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// `spiffe_refresh_hint` of the bundle Tessera publishes, seconds.
    pub refresh_hint_seconds: u64,
    /// With the bundle endpoint on, `rotation.min_overlap_seconds` must be at
    /// least this many refresh hints: a new generation is in the published
    /// bundle that long before it signs, so a foreign poller that follows the
    /// hint has it in time.
    pub propagation_hints: u64,
    /// The bundle endpoint (`[federation.endpoint]`).
    pub endpoint: BundleEndpointConfig,
    /// Foreign bundles are polled at this fraction of their refresh hint ...
    pub poll_fraction: f64,
    /// ... but never more often than this, seconds ...
    pub poll_min_seconds: u64,
    /// ... nor less often than this, seconds.
    pub poll_max_seconds: u64,
    /// Poll period for a bundle without a refresh hint, seconds.
    pub poll_default_seconds: u64,
    /// A relationship whose last successful poll is older than this is stale
    /// (`tessera ca status` warns), seconds.
    pub stale_after_seconds: i64,
    /// Lease of the poller among replicas, seconds.
    pub lease_seconds: i64,
    /// Deadline of one fetch (connect, TLS, request, body), milliseconds.
    pub fetch_timeout_ms: u64,
    /// Trust anchors for `https_web` bundle endpoints (PEM; the system store by default).
    pub web_roots_file: String,
}

/// Where and how Tessera serves its own bundle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BundleEndpointConfig {
    /// Listen address; unset: no bundle endpoint.
    pub listen: Option<SocketAddr>,
    /// `https_spiffe` (an X.509-SVID for `spiffe_id`) or `https_web`
    /// (`cert_file` and `key_file`, reloaded when they change).
    pub profile: String,
    /// `https_spiffe`: the endpoint's SPIFFE ID (in this trust domain);
    /// empty: `spiffe://<td>/tessera/bundle-endpoint`.
    pub spiffe_id: String,
    /// `https_web`: PEM certificate chain.
    pub cert_file: PathBuf,
    /// `https_web`: PEM private key.
    pub key_file: PathBuf,
    /// `https_web`: how often the files are checked for changes, seconds.
    pub reload_seconds: u64,
}

/// The OIDC discovery document for JWT-SVIDs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcDiscoveryConfig {
    /// The issuer (`https://...`, no query or fragment); JWT-SVIDs carry it
    /// as `iss` whenever set. Never taken from a request's Host header.
    pub issuer: String,
    /// Listen address of the discovery document and its JWKS; unset: not
    /// served here (a proxy may serve them).
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain of the listener (web PKI).
    pub cert_file: PathBuf,
    /// PEM private key of the listener.
    pub key_file: PathBuf,
    /// How often the files are checked for changes, seconds.
    pub reload_seconds: u64,
}

impl OidcDiscoveryConfig {
    /// The configured issuer, if any.
    pub fn issuer(&self) -> Option<&str> {
        (!self.issuer.is_empty()).then_some(self.issuer.as_str())
    }

    /// The path below which the documents are served (the issuer's path).
    pub fn base_path(&self) -> &str {
        let rest = self.issuer.strip_prefix("https://").unwrap_or("");
        rest.find('/')
            .map_or("", |i| rest[i..].trim_end_matches('/'))
    }

    /// The `jwks_uri` the discovery document names.
    pub fn jwks_uri(&self) -> String {
        format!("{}/keys", self.issuer.trim_end_matches('/'))
    }
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            refresh_hint_seconds: 300,
            propagation_hints: 3,
            endpoint: BundleEndpointConfig::default(),
            poll_fraction: 0.5,
            poll_min_seconds: 10,
            poll_max_seconds: 3600,
            poll_default_seconds: 300,
            stale_after_seconds: 3600,
            lease_seconds: 30,
            fetch_timeout_ms: 10_000,
            web_roots_file: "/etc/ssl/certs/ca-certificates.crt".into(),
        }
    }
}

impl Default for OidcDiscoveryConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            listen: None,
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            reload_seconds: 5,
        }
    }
}

impl Default for BundleEndpointConfig {
    fn default() -> Self {
        Self {
            listen: None,
            profile: "https_spiffe".into(),
            spiffe_id: String::new(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            reload_seconds: 5,
        }
    }
}

/// Checks the federation and OIDC options (called from `Config::validate`).
pub(crate) fn validate(
    f: &FederationConfig,
    o: &OidcDiscoveryConfig,
    min_overlap_seconds: i64,
) -> Result<(), String> {
    if f.refresh_hint_seconds < 1 || f.refresh_hint_seconds > 86_400 {
        return Err("federation.refresh_hint_seconds: 1 to 86400".into());
    }
    let e = &f.endpoint;
    if e.listen.is_some() {
        match e.profile.as_str() {
            "https_spiffe" => {}
            "https_web" => {
                if e.cert_file.as_os_str().is_empty() || e.key_file.as_os_str().is_empty() {
                    return Err(
                        "federation.endpoint.cert_file, key_file: required for https_web".into(),
                    );
                }
            }
            _ => return Err("federation.endpoint.profile: https_spiffe or https_web".into()),
        }
        let need = f.propagation_hints.saturating_mul(f.refresh_hint_seconds);
        if (min_overlap_seconds as u64) < need {
            return Err(format!(
                "rotation.min_overlap_seconds: at least federation.propagation_hints × \
                 federation.refresh_hint_seconds ({need}) with the bundle endpoint on, so \
                 foreign pollers have a new CA before it signs"
            ));
        }
    }
    if !(f.poll_fraction > 0.0 && f.poll_fraction <= 1.0) {
        return Err("federation.poll_fraction: above 0, at most 1".into());
    }
    if f.poll_min_seconds < 1 || f.poll_max_seconds < f.poll_min_seconds {
        return Err("federation.poll_min_seconds, poll_max_seconds: 1 <= min <= max".into());
    }
    if f.lease_seconds < 2 || f.fetch_timeout_ms < 100 || f.stale_after_seconds < 1 {
        return Err(
            "federation.lease_seconds (>= 2), fetch_timeout_ms (>= 100), stale_after_seconds (>= 1)"
                .into(),
        );
    }
    if !o.issuer.is_empty() {
        let ok = o.issuer.len() <= 512
            && o.issuer.starts_with("https://")
            && o.issuer.len() > "https://".len()
            && !o.issuer.contains(['?', '#', ' ']);
        if !ok {
            return Err("oidc_discovery.issuer: an https:// URL without query or fragment".into());
        }
    }
    if o.listen.is_some()
        && (o.issuer.is_empty()
            || o.cert_file.as_os_str().is_empty()
            || o.key_file.as_os_str().is_empty())
    {
        return Err("oidc_discovery.listen: needs issuer, cert_file and key_file".into());
    }
    Ok(())
}
