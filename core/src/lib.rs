//! Shared Tessera library: SPIFFE identities, X.509-SVID checks, API types,
//! PEM helpers, metrics, and the single module that configures rustls.
#![forbid(unsafe_code)]

pub mod api;
pub mod client;
pub mod config;
pub mod idle;
pub mod jwt;
pub mod metrics;
pub mod pem;
pub mod platform_jwt;
pub mod spiffe;
pub mod sse;
pub mod svid;
pub mod tls;

pub use spiffe::{SpiffeId, SpiffeIdError, SpiffeIdPattern, TrustDomain};

/// Current time in unix seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
