//! Integration tests of the CA server: real TLS on loopback, real SQLite and
//! PostgreSQL. Every database test runs on both backends.

mod common;

use tessera_test_support::both_backends;

mod bad_input;
mod crls;
mod denials;
mod events;
mod federation;
mod interop;
mod jwt;
mod key_import;
mod limits;
mod lint;
mod nodes;
mod platform_tokens;
mod processes;
mod receiver;
mod roles;
mod rotation;
mod schemathesis;
mod upstream;
mod walkthrough;
mod webhooks;
