//! Tessera CA server library: the CA engine, the store, the REST API and the server.
//!
//! Public: [`authority`] (the domain operations), [`store`] (every SQL
//! statement), [`ca`] (the CA engine and CA import), [`api`] and [`server`]
//! (HTTP), [`config`], [`csr`], [`keystore`] and [`events`]. The rest
//! (caches, JWKS rendering, metrics, platform-token issuers, webhooks) is
//! reached through [`authority::Authority`].
#![forbid(unsafe_code)]

pub mod api;
pub mod authority;
pub mod ca;
mod cache;
pub mod config;
pub mod csr;
pub mod events;
pub mod federation;
mod jwks;
pub mod keystore;
mod metrics;
mod platform;
pub mod server;
pub mod store;
mod webhooks;
