//! Federation between trust domains and OIDC discovery.
//!
//! - `config`: the `[federation]` and `[oidc_discovery]` options;
//! - `endpoint`: the public listeners: the SPIFFE bundle endpoint (profiles
//!   `https_spiffe` and `https_web`) and the OIDC discovery document with
//!   its JWKS. No client authentication, GET only;
//! - `fetch`: fetching a foreign bundle endpoint;
//! - `relationships`: federation relationships (CRUD, one poll, health);
//! - `poller`: polls each relationship on one replica (lease).
//!
//! Parsing a foreign bundle is `tessera_core::bundle`'s job, the one parser.

pub mod config;
mod endpoint;
pub mod fetch;
mod poller;
mod relationships;

pub use endpoint::{Listeners, endpoint_spiffe_id, start_listeners};
pub use poller::run_poller;
pub use relationships::MAX_RELATIONSHIPS;
