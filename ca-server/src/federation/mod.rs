//! Federation between trust domains and OIDC discovery.
//!
//! - `config`: the `[federation]` and `[oidc_discovery]` options;
//! - `endpoint`: the public listeners: the SPIFFE bundle endpoint (profiles
//!   `https_spiffe` and `https_web`) and the OIDC discovery document with
//!   its JWKS. No client authentication, GET only;
//! - `fetch`: fetching a foreign bundle endpoint.
//!
//! Parsing a foreign bundle is `tessera_core::bundle`'s job, the one parser.

pub mod config;
mod endpoint;
pub mod fetch;

pub use endpoint::{Listeners, endpoint_spiffe_id, start_listeners};
