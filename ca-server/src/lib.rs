//! Tessera CA server library: the CA engine, the store, the REST API and the server.
#![forbid(unsafe_code)]

pub mod api;
pub mod authority;
pub mod ca;
pub mod cache;
pub mod config;
pub mod csr;
pub mod events;
pub mod jwks;
pub mod keystore;
pub mod metrics;
pub mod platform;
pub mod server;
pub mod store;
pub mod webhooks;
