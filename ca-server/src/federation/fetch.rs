//! Fetching a foreign SPIFFE bundle endpoint: one GET, answers capped at
//! [`MAX_BUNDLE_BYTES`], redirects followed (at most three, `https://`
//! only, never remembered), the document parsed by the one bundle parser.

use std::time::Duration;
use tessera_core::TrustDomain;
use tessera_core::bundle::{BundleError, MAX_BUNDLE_BYTES, SpiffeBundle};
use tessera_core::client::{Client, ClientError};

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL is not `https://host[:port][/path]`.
    #[error("bad URL: {0}")]
    Url(String),
    /// Connection, TLS (including an endpoint identity refused) or HTTP failure.
    #[error("fetch failed: {0}")]
    Transport(String),
    /// The endpoint answered something other than 200.
    #[error("endpoint answered HTTP {0}")]
    Status(u16),
    /// Too many redirects.
    #[error("more than 3 redirects")]
    Redirects,
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The document is not a valid SPIFFE bundle.
    #[error("invalid bundle: {0}")]
    Bundle(#[from] BundleError),
}

/// Splits `https://host:port/path` into the server and the path.
pub(crate) fn split(url: &str) -> Result<(String, String), FetchError> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| FetchError::Url(format!("{url:?} is not https://")))?;
    let (host, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    if host.is_empty() || url.len() > 2048 || url.contains(['#', ' ']) {
        return Err(FetchError::Url(url.into()));
    }
    Ok((format!("https://{host}"), path.to_owned()))
}

/// Fetches and parses the bundle of `trust_domain` at `url`, over `tls`
/// (the profile's verification), within `timeout` overall.
pub async fn fetch_bundle(
    url: &str,
    trust_domain: &TrustDomain,
    tls: rustls::ClientConfig,
    timeout: Duration,
) -> Result<SpiffeBundle, FetchError> {
    tokio::time::timeout(timeout, fetch(url, trust_domain, tls))
        .await
        .map_err(|_| FetchError::Timeout(timeout))?
}

async fn fetch(
    url: &str,
    trust_domain: &TrustDomain,
    tls: rustls::ClientConfig,
) -> Result<SpiffeBundle, FetchError> {
    let (mut server, mut path) = split(url)?;
    for _ in 0..4 {
        let client =
            Client::new(&server, tls.clone(), None).map_err(|e| FetchError::Url(e.to_string()))?;
        let reply = client
            .get_limited(&path, MAX_BUNDLE_BYTES)
            .await
            .map_err(|e| match e {
                ClientError::TooLarge(_) => FetchError::Bundle(BundleError::TooLarge),
                e => FetchError::Transport(e.to_string()),
            })?;
        match reply.status.as_u16() {
            200 => return Ok(SpiffeBundle::parse(trust_domain, &reply.body)?),
            301 | 302 | 307 | 308 => {
                let to = reply.location().unwrap_or_default();
                (server, path) = if to.starts_with('/') {
                    (server, to)
                } else {
                    split(&to)?
                };
            }
            s => return Err(FetchError::Status(s)),
        }
    }
    Err(FetchError::Redirects)
}
