//! The workload side of a Tessera identity, shared by the sidecar, the node
//! agent and `tessera cert renew`:
//!
//! - [`new_key_and_csr`]: a key generated here, in memory ([`PrivateKey`]:
//!   erased on drop, never shown by `Debug`), and a CSR carrying only its
//!   public key;
//! - [`Svid`]: certificate chain, key, SPIFFE ID, validity and receipt time
//!   (from the CA's answer, from the Workload API's DER, or from files), and
//!   [`Identity`], an SVID with its trust bundle;
//! - [`RenewalPolicy`]: the one renewal policy (a fraction of the lifetime
//!   from receipt, jitter, capped backoff), of which each holder is a
//!   parametrisation;
//! - [`PemSet`] / [`PemFile`]: atomic replacement of certificate and key
//!   files, the certificate last;
//! - [`CaClient`]: the CA client that keeps its connection, with deadlines
//!   on every call and bounded answers;
//! - [`read_anchors`] and [`join_token`]: what a workload starts from.
//!
//! It depends on `tessera-core` only (never on the agent, the sidecar, the
//! CLI or the CA server).
#![forbid(unsafe_code)]

mod bootstrap;
mod ca;
mod der;
mod files;
mod key;
mod renewal;
mod svid;

pub use bootstrap::{BootstrapError, join_token, read_anchors};
pub use ca::{
    CALL_DEADLINE, CaClient, CaError, Issued, LONG_POLL_MARGIN, MAX_ANSWER_BYTES, Refusal,
    bad_certificate, success,
};
pub use der::{DerListError, concat_der, split_der};
pub use files::{PemFile, PemSet, WriteError};
pub use key::{KeyAlgorithm, KeyError, PrivateKey, new_key_and_csr};
pub use renewal::{Backoff, RenewalPolicy};
pub use svid::{Identity, Lifetime, Svid, SvidParseError};
