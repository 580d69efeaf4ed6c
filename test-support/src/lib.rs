//! What the tests of every Tessera crate share, so each fixture exists once:
//!
//! - [`Process`]: a child process killed and reaped on drop, its output kept
//!   and printed when the test fails;
//! - [`CaBuilder`] / [`Ca`]: the real `tessera-ca` binary, started the way a
//!   test needs it and awaited by its listening line;
//! - [`TestDb`]: a SQLite file or a fresh PostgreSQL database per test
//!   ([`both_backends!`] runs a test on each);
//! - [`Metrics`]: a scraped Prometheus page, read by name and labels;
//! - [`workspace_binary`]: the path of a workspace binary, built once per
//!   test process when cargo does not provide it;
//! - platform tokens ([`SigningKey`], [`token`]) signed with keys the test holds;
//! - [`python::venv_python`]: the interpreter of the virtual environment
//!   holding the suite's PyPI tools (`.ci/requirements.txt`);
//! - [`pkilint`]: the RFC 5280 linter on certificates and CRLs;
//! - [`sslyze`]: a TLS server scan and the hardening every listener must show;
//! - [`tls_clients`]: curl, openssl, gnutls-cli and Python `ssl` as HTTPS clients;
//! - JSON calls to the CA API, CSRs, openssl, bounded polling and socket helpers.

mod api;
mod binary;
mod ca;
mod db;
mod json;
mod metrics;
mod net;
mod openssl;
mod pki;
pub mod pkilint;
mod platform;
mod poll;
mod process;
pub mod python;
pub mod sslyze;
pub mod tls_clients;

pub use api::{Clients, call, client, delete, get, issue, post, renew, revoke};
pub use binary::workspace_binary;
pub use ca::{Ca, CaBuilder, random_kek, wait_listening};
pub use db::{Db, TestDb};
pub use json::{array, ca_ids, field_strs, id, strs};
pub use metrics::Metrics;
pub use net::{await_closed, http_get, read_until_closed};
pub use openssl::{
    SPIFFE_INTERMEDIATE_EXT, openssl, openssl_csr, openssl_ec_key, openssl_foreign_leaf,
    openssl_output, openssl_pkcs8_key, openssl_self_signed_ca,
};
pub use pki::{csr, spiffe_root_params, svid_params};
pub use platform::{
    SigningKey, hs256, jwks, kubernetes_issuer_config, kubernetes_token, token, unsigned,
};
pub use poll::{poll_until, wait_until};
pub use process::{EXIT_TIMEOUT, Output, Process};
