//! Shared Tessera library: SPIFFE identities, X.509-SVID checks, API types,
//! PEM helpers, metrics, and the single module that configures rustls.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod bundle;
pub mod client;
pub mod config;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod idle;
pub mod jwt;
pub mod limit;
pub mod metrics;
pub mod pem;
pub mod platform_jwt;
pub mod spiffe;
pub mod sse;
pub mod svid;
pub mod time;
pub mod tls;

pub use spiffe::{SpiffeId, SpiffeIdError, SpiffeIdPattern, TrustDomain};
pub use time::now_unix;
