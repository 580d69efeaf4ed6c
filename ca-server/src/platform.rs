//! Platform-token (JWT) issuers: the configured trusted issuers, their JWKS
//! (from a file or an HTTPS URL), and the mapping of a verified token's
//! claims to selectors.
//!
//! Key refresh: a URL JWKS is fetched at start (a failure is logged, not
//! fatal: the issuer's tokens are refused until a fetch succeeds), every
//! `jwks_refresh_seconds`, and when a token names a `kid` the current set
//! lacks. The last is rate limited per issuer (`jwks_min_refresh_seconds`):
//! a burst of tokens with invented `kid`s costs the issuer at most one fetch
//! per window, and a failed fetch counts against the window too. A file JWKS
//! is re-read under the same rule, so rotating the file needs no restart.
//! Token verification itself is [`tessera_core::platform_jwt`].

use crate::config::JwtIssuerConfig;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tessera_core::client::Client;
use tessera_core::platform_jwt::{
    self, KeySet, MAX_JWKS_BYTES, PlatformJwtError, Policy, VerifiedToken,
};

/// How long one JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest selector value taken from a claim, bytes.
const MAX_SELECTOR_VALUE_BYTES: usize = 480;
/// Most `jwt:claim:` selectors one array claim may yield.
const MAX_VALUES_PER_CLAIM: usize = 32;

/// Why a platform token (or an issuer's configuration) was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// The token failed verification.
    #[error("{0}")]
    Token(#[from] PlatformJwtError),
    /// No configured issuer has the token's `iss`.
    #[error("issuer is not trusted (no [[attestation.jwt_issuers]] has this iss)")]
    UnknownIssuer,
    /// The claims do not yield the selectors this issuer's kind needs.
    #[error("claims: {0}")]
    Claims(String),
    /// The issuer's configuration could not be loaded (start-up only).
    #[error("attestation.jwt_issuers {0}: {1}")]
    Config(String, String),
}

enum Source {
    File(String),
    Url { client: Client, path: String },
}

/// One trusted issuer and its current keys.
pub struct Issuer {
    /// Its configuration.
    pub cfg: JwtIssuerConfig,
    source: Source,
    keys: RwLock<Arc<KeySet>>,
    /// When the last refreshes were attempted (the lock serialises them).
    refreshed: tokio::sync::Mutex<Refreshed>,
    fetches: AtomicU64,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("name", &self.cfg.name)
            .finish_non_exhaustive()
    }
}

/// When an issuer's keys were last (re)loaded, by cause. The two are kept
/// apart so a periodic fetch does not hold back the refresh a genuine key
/// rotation needs, and a flood of invented kids does not add to the periodic
/// load.
#[derive(Debug, Default)]
struct Refreshed {
    periodic: Option<Instant>,
    on_unknown_kid: Option<Instant>,
}

/// Every configured issuer.
#[derive(Debug, Default)]
pub struct Issuers {
    list: Vec<Arc<Issuer>>,
}

fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    match rest.find('/') {
        Some(i) => (format!("https://{}", &rest[..i]), rest[i..].to_owned()),
        None => (format!("https://{rest}"), "/".into()),
    }
}

impl Issuers {
    /// Builds the issuers from configuration. A JWKS file must load now; a
    /// URL's trust anchors must load now (its keys are fetched by
    /// [`Issuers::refresh_all`]).
    pub fn new(cfgs: &[JwtIssuerConfig]) -> Result<Issuers, PlatformError> {
        let mut list = Vec::with_capacity(cfgs.len());
        for cfg in cfgs {
            let bad = |why: String| PlatformError::Config(cfg.name.clone(), why);
            let (source, keys) = if !cfg.jwks_file.is_empty() {
                let doc = std::fs::read(&cfg.jwks_file)
                    .map_err(|e| bad(format!("jwks_file {}: {e}", cfg.jwks_file)))?;
                let keys = KeySet::parse(&doc)
                    .map_err(|e| bad(format!("jwks_file {}: {e}", cfg.jwks_file)))?;
                (Source::File(cfg.jwks_file.clone()), keys)
            } else {
                let pem = std::fs::read(&cfg.jwks_ca_file)
                    .map_err(|e| bad(format!("jwks_ca_file {}: {e}", cfg.jwks_ca_file)))?;
                let anchors = tessera_core::pem::certs(&pem)
                    .map_err(|e| bad(format!("jwks_ca_file {}: {e}", cfg.jwks_ca_file)))?;
                let tls = tessera_core::tls::webpki_client_config(&anchors, None, false)
                    .map_err(|e| bad(format!("jwks_ca_file {}: {e}", cfg.jwks_ca_file)))?;
                let (origin, path) = split_url(&cfg.jwks_url);
                let client =
                    Client::new(&origin, tls, None).map_err(|e| bad(format!("jwks_url: {e}")))?;
                (Source::Url { client, path }, KeySet::default())
            };
            list.push(Arc::new(Issuer {
                cfg: cfg.clone(),
                source,
                keys: RwLock::new(Arc::new(keys)),
                refreshed: tokio::sync::Mutex::new(Refreshed::default()),
                fetches: AtomicU64::new(0),
            }));
        }
        Ok(Issuers { list })
    }

    /// The issuer whose `iss` is `iss`.
    pub fn by_issuer(&self, iss: &str) -> Option<&Arc<Issuer>> {
        self.list.iter().find(|i| i.cfg.issuer == iss)
    }

    /// The issuer named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Issuer>> {
        self.list.iter().find(|i| i.cfg.name == name)
    }

    /// Every issuer.
    pub fn all(&self) -> &[Arc<Issuer>] {
        &self.list
    }

    /// Fetches every URL JWKS whose periodic refresh is due (all of them at
    /// start); failures are logged and leave the previous keys in place.
    pub async fn refresh_all(&self, force: bool) {
        for i in &self.list {
            if !matches!(i.source, Source::Url { .. }) {
                continue;
            }
            let mut last = i.refreshed.lock().await;
            let period = Duration::from_secs(i.cfg.jwks_refresh_seconds);
            if force || last.periodic.is_none_or(|t| t.elapsed() >= period) {
                last.periodic = Some(Instant::now());
                if let Err(e) = i.load().await {
                    tracing::warn!(issuer = %i.cfg.name, error = %e, "JWKS refresh failed");
                }
            }
        }
    }
}

impl Issuer {
    /// How many times its JWKS was fetched or re-read (a metric and a test hook).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The parent ID of entries its tokens may claim in direct mode:
    /// `spiffe://<td>/tessera/issuer/<name>`.
    pub fn parent_id(&self, td: &tessera_core::TrustDomain) -> String {
        format!(
            "spiffe://{td}{}{}",
            tessera_core::spiffe::ISSUER_PATH_PREFIX,
            self.cfg.name
        )
    }

    fn policy(&self) -> Policy {
        Policy {
            issuer: self.cfg.issuer.clone(),
            audiences: self.cfg.audiences.clone(),
            leeway_seconds: self.cfg.leeway_seconds,
            require_jti: self.cfg.require_jti,
        }
    }

    /// Reads or fetches the JWKS and installs it.
    async fn load(&self) -> Result<(), String> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let doc = match &self.source {
            Source::File(p) => std::fs::read(p).map_err(|e| format!("{p}: {e}"))?,
            Source::Url { client, path } => {
                let r = tokio::time::timeout(
                    FETCH_TIMEOUT,
                    client.get_limited(path, MAX_JWKS_BYTES + 1),
                )
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| e.to_string())?;
                if !r.status.is_success() {
                    return Err(format!("HTTP {}", r.status));
                }
                r.body.to_vec()
            }
        };
        let keys = KeySet::parse(&doc).map_err(|e| e.to_string())?;
        if let Ok(mut k) = self.keys.write() {
            *k = Arc::new(keys);
        }
        Ok(())
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Verifies a token from this issuer at `now`, refreshing the keys once
    /// (rate limited) if its `kid` is unknown.
    pub async fn verify(&self, token: &str, now: i64) -> Result<VerifiedToken, PlatformError> {
        let head = platform_jwt::peek(token)?;
        // Refresh only for tokens that could verify: an allowed algorithm
        // with a kid we lack. `none`, HMAC and the like never cost a fetch.
        if platform_jwt::Alg::parse(&head.alg).is_some() && !self.current().has(head.kid.as_deref())
        {
            let mut last = self.refreshed.lock().await;
            // Another request may have refreshed while we waited.
            if !self.current().has(head.kid.as_deref()) {
                let window = Duration::from_secs(self.cfg.jwks_min_refresh_seconds);
                if last.on_unknown_kid.is_none_or(|t| t.elapsed() >= window) {
                    last.on_unknown_kid = Some(Instant::now());
                    if let Err(e) = self.load().await {
                        tracing::warn!(issuer = %self.cfg.name, error = %e, "JWKS refresh on unknown kid failed");
                    }
                }
            }
        }
        Ok(platform_jwt::verify(
            token,
            &self.current(),
            &self.policy(),
            now,
        )?)
    }
}

/// The value at a `/`-separated path into the claims, if it is a string.
pub fn claim_str<'a>(claims: &'a serde_json::Value, path: &str) -> Option<&'a str> {
    path.split('/')
        .try_fold(claims, |v, seg| v.get(seg))
        .and_then(serde_json::Value::as_str)
}

fn value_ok(v: &str) -> bool {
    !v.is_empty() && v.len() <= MAX_SELECTOR_VALUE_BYTES && !v.chars().any(char::is_control)
}

/// The selectors a verified token grants, sorted: always
/// `jwt:issuer-name:<name>`, `jwt:iss:` and `jwt:sub:` (if any); for
/// `kubernetes`, `k8s:ns:`, `k8s:sa:` and, when the token is bound to a pod
/// (and node), `k8s:pod-name:`, `k8s:pod-uid:`, `k8s:node-name:`; for `oidc`,
/// `jwt:claim:<name>:<value>` for each configured selector claim.
pub fn selectors(cfg: &JwtIssuerConfig, t: &VerifiedToken) -> Result<Vec<String>, PlatformError> {
    let mut out = vec![
        format!("jwt:issuer-name:{}", cfg.name),
        format!("jwt:iss:{}", t.issuer),
    ];
    let mut push = |prefix: &str, v: &str, what: &str| -> Result<(), PlatformError> {
        if !value_ok(v) {
            return Err(PlatformError::Claims(format!(
                "{what} is empty, too long or has control characters"
            )));
        }
        out.push(format!("{prefix}{v}"));
        Ok(())
    };
    if let Some(sub) = &t.subject {
        push("jwt:sub:", sub, "sub")?;
    }
    let c = &t.claims;
    match cfg.kind.as_str() {
        "kubernetes" => {
            let ns = claim_str(c, "kubernetes.io/namespace");
            let sa = claim_str(c, "kubernetes.io/serviceaccount/name");
            let (Some(ns), Some(sa)) = (ns, sa) else {
                return Err(PlatformError::Claims(
                    "not a Kubernetes service-account token (no kubernetes.io namespace and \
                     serviceaccount.name)"
                        .into(),
                ));
            };
            // The API server writes sub from the same two facts; a token
            // where they disagree was not minted by it.
            if t.subject.as_deref() != Some(&format!("system:serviceaccount:{ns}:{sa}")) {
                return Err(PlatformError::Claims(
                    "sub does not match the service account in kubernetes.io".into(),
                ));
            }
            push("k8s:ns:", ns, "kubernetes.io.namespace")?;
            push("k8s:sa:", sa, "kubernetes.io.serviceaccount.name")?;
            for (path, prefix) in [
                ("kubernetes.io/pod/name", "k8s:pod-name:"),
                ("kubernetes.io/pod/uid", "k8s:pod-uid:"),
                ("kubernetes.io/node/name", "k8s:node-name:"),
            ] {
                if let Some(v) = claim_str(c, path) {
                    push(prefix, v, path)?;
                }
            }
        }
        _ => {
            for name in &cfg.selector_claims {
                let values: Vec<&str> = match c.get(name) {
                    Some(serde_json::Value::String(s)) => vec![s.as_str()],
                    Some(serde_json::Value::Array(a)) => a
                        .iter()
                        .filter_map(serde_json::Value::as_str)
                        .take(MAX_VALUES_PER_CLAIM)
                        .collect(),
                    _ => vec![],
                };
                for v in values {
                    push(&format!("jwt:claim:{name}:"), v, name)?;
                }
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Whether `s` may be a SPIFFE ID path segment (letters, digits, `.-_`),
/// at most 200 bytes, and not `.` or `..`.
pub fn path_segment_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn verified(claims: serde_json::Value) -> VerifiedToken {
        VerifiedToken {
            issuer: "https://k8s".into(),
            subject: claims["sub"].as_str().map(str::to_owned),
            audiences: vec!["tessera".into()],
            expires_at: 0,
            issued_at: None,
            jti: None,
            alg: platform_jwt::Alg::Es256,
            kid: None,
            claims,
        }
    }

    fn k8s() -> JwtIssuerConfig {
        JwtIssuerConfig {
            name: "k8s".into(),
            kind: "kubernetes".into(),
            ..Default::default()
        }
    }

    #[test]
    fn kubernetes_selectors() {
        let t = verified(json!({
            "sub": "system:serviceaccount:shop:web",
            "kubernetes.io": {
                "namespace": "shop",
                "serviceaccount": {"name": "web", "uid": "u1"},
                "pod": {"name": "web-7d9", "uid": "p-uid"},
                "node": {"name": "node-1", "uid": "n-uid"},
            }
        }));
        assert_eq!(
            selectors(&k8s(), &t).unwrap(),
            [
                "jwt:iss:https://k8s",
                "jwt:issuer-name:k8s",
                "jwt:sub:system:serviceaccount:shop:web",
                "k8s:node-name:node-1",
                "k8s:ns:shop",
                "k8s:pod-name:web-7d9",
                "k8s:pod-uid:p-uid",
                "k8s:sa:web",
            ]
        );
        // sub inconsistent with the kubernetes.io claims.
        let t = verified(json!({"sub": "system:serviceaccount:kube-system:admin",
            "kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "web"}}}));
        assert!(selectors(&k8s(), &t).is_err());
        // Not a service-account token.
        assert!(selectors(&k8s(), &verified(json!({"sub": "x"}))).is_err());
    }

    #[test]
    fn oidc_selectors_and_claims() {
        let cfg = JwtIssuerConfig {
            name: "ci".into(),
            selector_claims: vec!["repository".into(), "groups".into()],
            ..Default::default()
        };
        let t = verified(json!({"sub": "repo:acme/app", "repository": "acme/app",
            "groups": ["a", "b"], "kubernetes.io": {"namespace": "ignored"}}));
        let s = selectors(&cfg, &t).unwrap();
        assert!(s.contains(&"jwt:claim:repository:acme/app".to_string()));
        assert!(s.contains(&"jwt:claim:groups:b".to_string()));
        assert!(!s.iter().any(|x| x.starts_with("k8s:")));
        assert_eq!(
            claim_str(&t.claims, "kubernetes.io/namespace"),
            Some("ignored")
        );
        assert!(path_segment_ok("node-1.example") && !path_segment_ok("a/b"));
        assert!(!path_segment_ok("system:serviceaccount:x"));
    }
}
