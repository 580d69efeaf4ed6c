//! The authority: Tessera's domain operations over the CA engine and the
//! store. The HTTP layer is a thin shell over this.
//!
//! One `impl Authority` per concern:
//! - `issuance`: the one signing-and-ledger path every SVID takes, and the
//!   operator (direct), join-token (redeem) and renewal routes into it;
//! - `revocation`: revoking, the CRLs, the revocation feed and the bundle;
//! - `registry`: registration entries and join tokens;
//! - `credentials`: API tokens, disabling credentials, and resolving a
//!   bearer token or client certificate to a [`Principal`];
//! - `denials`: sidecars' reports of refused connections;
//! - `operators`: operator client certificates and the server's own;
//! - `lifecycle`: CA generations over time and the rotation schedule;
//! - `nodes`: nodes and attested issuance through node agents;
//! - `platform`: platform-token (JWT) attestation.

use crate::ca::SigningCa;
use crate::cache::Recent;
use crate::config::Config;
use crate::csr::CsrError;
use crate::keystore::{Kek, KeystoreError};
use crate::metrics::Metrics;
use crate::store::{AuditEntry, Refusal, Store, StoreError};
use ring::digest::{SHA256, digest};
use rustls::pki_types::CertificateDer;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tessera_core::api::{self, CaState, Role};
use tessera_core::{SpiffeId, SpiffeIdError, TrustDomain, now_unix};
use tokio::sync::watch;

mod credentials;
mod denials;
mod issuance;
mod lifecycle;
mod nodes;
mod operators;
mod platform;
mod registry;
mod revocation;

pub use denials::{
    MAX_DENIAL_FUTURE_SECONDS, MAX_DENIAL_LISTENER_BYTES, MAX_DENIAL_PEER_ADDR_BYTES,
    MAX_DENIALS_PER_REPORT,
};
pub use lifecycle::{CaHook, ScheduleStatus};
pub use nodes::{MAX_ATTESTED_SELECTORS, MAX_SVIDS_PER_WORKLOAD};
pub use revocation::{Bundle, Crl};

/// Errors from domain operations; each maps to one HTTP status and stable code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// A request field is invalid.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A SPIFFE ID field is invalid.
    #[error("{0}: invalid SPIFFE ID: {1}")]
    SpiffeId(&'static str, SpiffeIdError),
    /// A SPIFFE ID is outside the CA's trust domain.
    #[error("{0}: SPIFFE ID is not in trust domain {1}")]
    WrongTrustDomain(&'static str, TrustDomain),
    /// The CSR was refused.
    #[error("csr: {0}")]
    Csr(#[from] CsrError),
    /// No registration entry grants this SPIFFE ID.
    #[error("no registration entry for {0}")]
    NoEntry(String),
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A join token was refused.
    #[error("join token {0}")]
    Token(&'static str),
    /// A renewal was refused.
    #[error("renewal refused: {0}")]
    Renewal(String),
    /// The store refused the write: a precondition no longer held.
    #[error(transparent)]
    Refused(Refusal),
    /// The active generation expires too soon to sign a leaf of the minimum TTL.
    #[error("the active CA expires too soon to issue from: rotate the CA (`tessera ca rotate`)")]
    IssuerExpiring,
    /// The active generation is an intermediate: only the operator's root
    /// can sign its successor.
    #[error(
        "this CA is an intermediate: prepare the next generation with `tessera-ca ca csr` and \
         `tessera-ca ca import-signed` (the operator's root signs it)"
    )]
    IntermediateSuccessor,
    /// No generation is active yet: the first intermediate awaits its signature.
    #[error(
        "an intermediate CA is waiting for its upstream's signature: run `tessera-ca ca \
         import-signed --cert SIGNED.pem --bundle ROOT.pem` first"
    )]
    AwaitingSignature,
    /// The caller's node is banned or unknown.
    #[error("node refused: {0}")]
    Forbidden(String),
    /// The workload's isolation posture violates the CA-wide minimum.
    #[error("attestation refused: {0}")]
    Posture(String),
    /// A platform token (JWT) was refused; the reason never holds the token.
    #[error("platform token refused: {0}")]
    PlatformToken(String),
    /// A foreign bundle endpoint could not be polled, or its bundle was refused.
    #[error("{reason}")]
    Upstream {
        /// The problem code (`bundle_endpoint_unreachable`, `foreign_bundle_refused`).
        code: &'static str,
        /// What failed.
        reason: String,
    },
    /// Over a rate limit: `who` (such as "reporter") may ask again after `retry`.
    #[error("too many requests from this {who}")]
    RateLimited {
        /// Whose rate (the word the answer uses).
        who: &'static str,
        /// Until the request would be admitted.
        retry: std::time::Duration,
    },
    /// The store failed.
    #[error("storage: {0}")]
    Store(StoreError),
    /// The CA engine failed.
    #[error("ca: {0}")]
    Ca(#[from] crate::ca::CaError),
    /// Key material could not be opened.
    #[error("keystore: {0}")]
    Keystore(#[from] KeystoreError),
}

impl AuthorityError {
    /// Maps any error to [`AuthorityError::Invalid`] for `field`, its text the reason.
    pub(crate) fn invalid_as<E: std::fmt::Display>(field: &'static str) -> impl FnOnce(E) -> Self {
        move |e| AuthorityError::Invalid {
            field,
            reason: e.to_string(),
        }
    }
}

impl From<StoreError> for AuthorityError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => AuthorityError::NotFound("resource"),
            StoreError::Refused(r) => AuthorityError::Refused(r),
            other => AuthorityError::Store(other),
        }
    }
}

/// Maps a store error, naming what a [`StoreError::NotFound`] was about.
pub(crate) fn not_found(what: &'static str) -> impl FnOnce(StoreError) -> AuthorityError {
    move |e| match e {
        StoreError::NotFound => AuthorityError::NotFound(what),
        e => e.into(),
    }
}

type Result<T, E = AuthorityError> = std::result::Result<T, E>;

/// Who is calling, as established by the API layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An operator credential (admin certificate or API token) with a role.
    Credential {
        /// Credential ID.
        id: String,
        /// Credential name (for audit).
        name: String,
        /// Role.
        role: Role,
    },
    /// A workload presenting a certificate this CA issued.
    Workload {
        /// Its SPIFFE ID.
        spiffe_id: SpiffeId,
        /// Its certificate serial.
        serial: String,
    },
    /// A node agent presenting its node certificate (node recorded, not banned).
    Node {
        /// The node's SPIFFE ID.
        spiffe_id: SpiffeId,
        /// Its certificate serial.
        serial: String,
    },
    /// A workload whose certificate was revoked only because its issuing CA
    /// was (cACompromise): it may renew (re-issue) and do nothing else.
    Reissue {
        /// Its SPIFFE ID.
        spiffe_id: SpiffeId,
        /// Its certificate serial.
        serial: String,
    },
    /// The server itself (scheduled CA transitions).
    System,
    /// No credentials.
    Anonymous,
}

impl Principal {
    /// How the principal is named in audit records.
    pub fn audit_name(&self) -> String {
        match self {
            Principal::Credential { name, role, .. } => format!("{}:{name}", role.as_str()),
            Principal::Workload { spiffe_id, .. } | Principal::Node { spiffe_id, .. } => {
                spiffe_id.to_string()
            }
            Principal::Reissue { spiffe_id, .. } => format!("{spiffe_id} (re-issue)"),
            Principal::System => "system".into(),
            Principal::Anonymous => "anonymous".into(),
        }
    }

    /// An audit record of `action` on `target` by this principal.
    pub fn audit(
        &self,
        action: &'static str,
        target: impl Into<String>,
        details: serde_json::Value,
    ) -> AuditEntry {
        AuditEntry {
            actor: self.audit_name(),
            action,
            target: target.into(),
            details,
        }
    }
}

/// The authority; shared by every request.
pub struct Authority {
    /// Configuration.
    pub cfg: Config,
    /// The trust domain.
    pub td: TrustDomain,
    /// The store.
    pub store: Store,
    /// Metrics.
    pub metrics: Metrics,
    signing: RwLock<Arc<SigningCa>>,
    /// Signs JWT-SVIDs: the active generation's JWT key.
    jwt_signer: RwLock<Option<Arc<tessera_core::jwt::JwtSigner>>>,
    /// Signs the server's own TLS certificate: the oldest generation still
    /// published and able to sign (see `lifecycle::server_signer`).
    server_signer: RwLock<Arc<SigningCa>>,
    /// Every published generation that still has its key (active first):
    /// each signs its own CRL while it can be trusted.
    crl_signers: RwLock<Arc<Vec<Arc<SigningCa>>>>,
    bundle: RwLock<Arc<Bundle>>,
    crls: RwLock<HashMap<String, Arc<Crl>>>,
    rev_version: watch::Sender<i64>,
    /// The bundle's sequence; changes wake feed followers.
    bundle_seq: watch::Sender<i64>,
    /// The TLS layer's reaction to CA changes, run before watchers wake.
    ca_hook: std::sync::OnceLock<lifecycle::CaHook>,
    /// Every generation as last loaded (id, state), to notice other replicas' transitions.
    ca_states: std::sync::Mutex<Vec<(String, CaState)>>,
    /// CA generations revoked recently: their leaves may still re-issue.
    reissue_anchors: RwLock<Arc<Vec<CertificateDer<'static>>>>,
    /// What the rotation schedule last did.
    pub(crate) schedule: std::sync::Mutex<lifecycle::ScheduleStatus>,
    /// This replica's name for leases.
    replica_id: String,
    /// Bumped when a credential is disabled (invalidates cached principals).
    cred_epoch: AtomicU64,
    /// Bumped on every local entry change (invalidates cached entries).
    entry_epoch: AtomicU64,
    principals: Recent<Vec<u8>, Option<Principal>, (i64, u64)>,
    entries: Recent<String, Vec<api::Entry>, u64>,
    /// The key-encryption key (CA keys, webhook secrets).
    pub(crate) kek: Kek,
    /// Event-stream bounds and shutdown.
    pub events: crate::events::EventHub,
    /// Trusted platform-token issuers and their keys.
    pub issuers: crate::platform::Issuers,
    /// Wakes the federation poller (a relationship was created or changed here).
    pub(crate) federation_poke: tokio::sync::Notify,
    /// Denials each reporter (SPIFFE ID) may still report
    /// (`limits.denials_per_second_per_reporter`).
    pub(crate) denial_rate: tessera_core::limit::Buckets<String>,
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest(&SHA256, data))
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, data).as_ref());
    out
}

impl Authority {
    /// Opens the store, loads or creates the CA, and prepares bundle and CRLs.
    pub async fn start(cfg: Config) -> Result<Arc<Self>> {
        let (td, store, kek) = open_parts(&cfg).await?;
        Self::load(cfg, td, store, kek).await
    }

    async fn load(cfg: Config, td: TrustDomain, store: Store, kek: Kek) -> Result<Arc<Self>> {
        let mut cas = store.list_cas().await?;
        if !cas.iter().any(|c| c.state == CaState::Active) {
            if cas.iter().any(|c| c.state == CaState::Pending) {
                return Err(AuthorityError::AwaitingSignature);
            }
            lifecycle::bootstrap_ca(&cfg, &td, &store, &kek).await?;
            cas = store.list_cas().await?;
        }
        let active = cas
            .iter()
            .find(|c| c.state == CaState::Active)
            .ok_or(AuthorityError::NotFound("active CA"))?;
        let signing = Arc::new(lifecycle::open_ca(&kek, active)?);
        let server_signer = lifecycle::server_signer(&kek, &cas, &signing);
        let crl_signers = lifecycle::crl_signers(&kek, &cas, &signing);
        let mut bundle = revocation::build_bundle(&cas, &[])?;
        // Not yet numbered: `reload_cas` below sees a change and numbers it.
        bundle.digest.clear();
        let version = store.revocation_version().await?;
        let (rev_version, _) = watch::channel(version);
        let (bundle_seq, _) = watch::channel(bundle.sequence);
        let states = cas.iter().map(|c| (c.id.clone(), c.state)).collect();
        // Bounded memory: at most this many reporters tracked at once.
        let denial_rate = tessera_core::limit::Buckets::new(
            f64::from(cfg.limits.denials_per_second_per_reporter),
            cfg.limits.denial_burst_per_reporter,
            65_536,
        );
        let reissue = lifecycle::reissue_anchors(&cas, &cfg, now_unix());
        let events = crate::events::EventHub::new(cfg.events.max_streams);
        let issuers = crate::platform::Issuers::new(&cfg.attestation.jwt_issuers).map_err(|e| {
            AuthorityError::Invalid {
                field: "attestation.jwt_issuers",
                reason: e.to_string(),
            }
        })?;
        let this = Arc::new(Self {
            metrics: Metrics::new(),
            cfg,
            td,
            store,
            signing: RwLock::new(signing),
            server_signer: RwLock::new(server_signer),
            crl_signers: RwLock::new(Arc::new(crl_signers)),
            jwt_signer: RwLock::new(None),
            bundle: RwLock::new(Arc::new(bundle)),
            crls: RwLock::new(HashMap::new()),
            rev_version,
            bundle_seq,
            ca_hook: std::sync::OnceLock::new(),
            kek,
            ca_states: std::sync::Mutex::new(states),
            reissue_anchors: RwLock::new(Arc::new(reissue)),
            schedule: Default::default(),
            replica_id: crate::ca::random_id()?,
            cred_epoch: AtomicU64::new(0),
            entry_epoch: AtomicU64::new(0),
            principals: Recent::new(Duration::from_secs(5), 4096),
            entries: Recent::new(Duration::from_secs(2), 4096),
            events,
            issuers,
            federation_poke: tokio::sync::Notify::new(),
            denial_rate,
        });
        // JWKS URLs: fetched once now (a failure is logged; the issuer's
        // tokens are refused until a later fetch succeeds).
        this.issuers.refresh_all(true).await;
        this.refresh_crls().await?;
        // JWT-SVID keys (created for published generations that lack one).
        this.reload_cas().await?;
        Ok(this)
    }

    /// This process's replica ID: the holder name in the `leases` table.
    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }

    /// The CA currently signing.
    pub fn signing_ca(&self) -> Arc<SigningCa> {
        self.signing
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn check_td(&self, field: &'static str, s: &str) -> Result<SpiffeId> {
        let id = SpiffeId::new(s).map_err(|e| AuthorityError::SpiffeId(field, e))?;
        if !id.is_member_of(&self.td) {
            return Err(AuthorityError::WrongTrustDomain(field, self.td.clone()));
        }
        Ok(id)
    }

    /// The SPIFFE ID a request's optional `spiffe_id` field asks for, parsed
    /// and checked to be in this trust domain.
    fn wanted_id(&self, requested: Option<&str>) -> Result<Option<SpiffeId>> {
        requested.map(|s| self.check_td("spiffe_id", s)).transpose()
    }
}

/// Validates the trust domain, prepares the data directory, loads the KEK and
/// opens the store (checking it belongs to this trust domain).
pub(crate) async fn open_parts(cfg: &Config) -> Result<(TrustDomain, Store, Kek)> {
    let td = cfg.trust_domain.clone();
    crate::keystore::create_private_dir(&cfg.data_dir).map_err(|e| AuthorityError::Invalid {
        field: "data_dir",
        reason: e.to_string(),
    })?;
    let kek = match std::env::var("TESSERA_KEK") {
        Ok(v) if !v.is_empty() => Kek::from_hex(&v)?,
        _ if cfg.ca.kek_file.is_empty() => Kek::load_or_create(&cfg.data_dir.join("kek"))?,
        _ => Kek::from_file(std::path::Path::new(&cfg.ca.kek_file))?,
    };
    let store = Store::open(&cfg.database_url(), cfg.database_max_connections).await?;
    let stored_td = store.meta_init("trust_domain", td.as_str()).await?;
    if stored_td != td.as_str() {
        return Err(AuthorityError::Invalid {
            field: "trust_domain",
            reason: format!("database belongs to trust domain {stored_td}"),
        });
    }
    Ok((td, store, kek))
}
