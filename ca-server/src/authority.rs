//! The authority: Tessera's domain operations (issue, redeem, renew, revoke,
//! entries, tokens, credentials, bundle, CRL) over the CA engine and the store.
//! The HTTP layer is a thin shell over this.

use crate::ca::{self, KeyAlgorithm, LeafSpec, SigningCa};
use crate::cache::Recent;
use crate::config::Config;
use crate::csr::{self, CsrError, VerifiedCsr};
use crate::keystore::{Kek, KeystoreError};
use crate::metrics::Metrics;
use crate::store::ledger::Precondition;
use crate::store::{
    AuditEntry, CaRow, CertFilter, CredentialRow, DenialFilter, Store, StoreError, TokenRow,
};
use ring::digest::{SHA256, digest};
use rustls::pki_types::CertificateDer;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tessera_core::api::{self, CaState, IssuedCertificate, Role};
use tessera_core::spiffe;
use tessera_core::time::rfc3339;
use tessera_core::{SpiffeId, SpiffeIdError, TrustDomain, now_unix, pem};
use tokio::sync::watch;

mod lifecycle;
mod nodes;
mod platform;
pub use lifecycle::{CaHook, ScheduleStatus};
pub use nodes::{MAX_ATTESTED_SELECTORS, MAX_SVIDS_PER_WORKLOAD};

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
    WrongTrustDomain(&'static str, String),
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
    /// The request conflicts with current state.
    #[error("{0}")]
    Conflict(String),
    /// The caller's node is banned or unknown.
    #[error("node refused: {0}")]
    Forbidden(String),
    /// The workload's isolation posture violates the CA-wide minimum.
    #[error("attestation refused: {0}")]
    Posture(String),
    /// A platform token (JWT) was refused; the reason never holds the token.
    #[error("platform token refused: {0}")]
    PlatformToken(String),
    /// The store failed.
    #[error("storage: {0}")]
    Store(StoreError),
    /// The CA engine failed.
    #[error("ca: {0}")]
    Ca(#[from] ca::CaError),
    /// Key material could not be opened.
    #[error("keystore: {0}")]
    Keystore(#[from] KeystoreError),
}

impl From<StoreError> for AuthorityError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => AuthorityError::NotFound("resource"),
            StoreError::Precondition(why) => AuthorityError::Conflict(why),
            other => AuthorityError::Store(other),
        }
    }
}

type Result<T, E = AuthorityError> = std::result::Result<T, E>;

/// Most denials one report may carry.
pub const MAX_DENIALS_PER_REPORT: usize = 1000;
/// How far ahead of the CA's clock a denial's `at` may be, seconds (one day).
pub const MAX_DENIAL_FUTURE_SECONDS: i64 = 86400;
/// Longest `listener` in a denial, bytes.
pub const MAX_DENIAL_LISTENER_BYTES: usize = 128;
/// Longest `peer_addr` in a denial, bytes.
pub const MAX_DENIAL_PEER_ADDR_BYTES: usize = 64;

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
        spiffe_id: String,
        /// Its certificate serial.
        serial: String,
    },
    /// A node agent presenting its node certificate (node recorded, not banned).
    Node {
        /// The node's SPIFFE ID.
        spiffe_id: String,
        /// Its certificate serial.
        serial: String,
    },
    /// A workload whose certificate was revoked only because its issuing CA
    /// was (cACompromise): it may renew (re-issue) and do nothing else.
    Reissue {
        /// Its SPIFFE ID.
        spiffe_id: String,
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
                spiffe_id.clone()
            }
            Principal::Reissue { spiffe_id, .. } => format!("{spiffe_id} (re-issue)"),
            Principal::System => "system".into(),
            Principal::Anonymous => "anonymous".into(),
        }
    }
}

/// The trust bundle in the forms it is served.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Trust anchors.
    pub anchors: Vec<CertificateDer<'static>>,
    /// PEM of the anchors.
    pub pem: String,
    /// SPIFFE bundle (JWKS) JSON.
    pub jwks: String,
    /// Sequence number (changes when the anchors or JWT-SVID keys do).
    pub sequence: i64,
    /// The JWT-SVID keys of the published generations.
    pub jwt_keys: Vec<tessera_core::jwt::Jwk>,
}

/// A signed CRL in both encodings.
#[derive(Debug, Clone)]
pub struct Crl {
    /// DER.
    pub der: Vec<u8>,
    /// PEM.
    pub pem: String,
    /// When it was made.
    pub this_update: i64,
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
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest(&SHA256, data))
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, data).as_ref());
    out
}

/// Makes a secret of 256 random bits in URL-safe base64.
fn random_secret() -> String {
    use base64::Engine;
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 32];
    let _ = SystemRandom::new().fill(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Splits `prefix_<id>.<secret>` tokens.
fn split_token<'a>(token: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = token.trim().strip_prefix(prefix)?;
    let (id, secret) = rest.split_once('.')?;
    if id.len() != 32
        || !id.bytes().all(|b| b.is_ascii_hexdigit())
        || secret.is_empty()
        || secret.len() > 128
    {
        return None;
    }
    Some((id, secret))
}

/// Compares a presented secret with a stored SHA-256 hex in constant time.
fn secret_matches(secret: &str, stored_hash_hex: &str) -> bool {
    let presented = sha256_hex(secret.as_bytes());
    presented
        .as_bytes()
        .ct_eq(stored_hash_hex.as_bytes())
        .into()
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
                return Err(AuthorityError::Conflict(
                    "an intermediate CA is waiting for its upstream's signature: \
                     run `tessera-ca ca import-signed --cert SIGNED.pem --bundle ROOT.pem` first"
                        .into(),
                ));
            }
            Self::bootstrap_ca(&cfg, &td, &store, &kek).await?;
            cas = store.list_cas().await?;
        }
        let active = cas
            .iter()
            .find(|c| c.state == CaState::Active)
            .ok_or(AuthorityError::NotFound("active CA"))?;
        let signing = Arc::new(open_ca(&kek, active)?);
        let server_signer = lifecycle::server_signer(&kek, &cas, &signing);
        let bundle = build_bundle(&cas, &[])?;
        let version = store.revocation_version().await?;
        let (rev_version, _) = watch::channel(version);
        let (bundle_seq, _) = watch::channel(bundle.sequence);
        let states = cas.iter().map(|c| (c.id.clone(), c.state)).collect();
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
            replica_id: ca::random_id(),
            cred_epoch: AtomicU64::new(0),
            entry_epoch: AtomicU64::new(0),
            principals: Recent::new(Duration::from_secs(5), 4096),
            entries: Recent::new(Duration::from_secs(2), 4096),
            events,
            issuers,
        });
        // JWKS URLs: fetched once now (a failure is logged; the issuer's
        // tokens are refused until a later fetch succeeds).
        this.issuers.refresh_all(true).await;
        this.refresh_crls().await?;
        // JWT-SVID keys (created for published generations that lack one).
        this.reload_cas().await?;
        Ok(this)
    }

    async fn bootstrap_ca(cfg: &Config, td: &TrustDomain, store: &Store, kek: &Kek) -> Result<()> {
        let id = ca::random_id();
        let now = now_unix();
        let (row, what) = if !cfg.ca.import_cert.is_empty() {
            let cert_pem =
                std::fs::read(&cfg.ca.import_cert).map_err(|e| AuthorityError::Invalid {
                    field: "ca.import_cert",
                    reason: e.to_string(),
                })?;
            let key_pem = std::fs::read_to_string(&cfg.ca.import_key).map_err(|e| {
                AuthorityError::Invalid {
                    field: "ca.import_key",
                    reason: e.to_string(),
                }
            })?;
            let bundle_pem = if cfg.ca.import_bundle.is_empty() {
                String::new()
            } else {
                std::fs::read_to_string(&cfg.ca.import_bundle).map_err(|e| {
                    AuthorityError::Invalid {
                        field: "ca.import_bundle",
                        reason: e.to_string(),
                    }
                })?
            };
            let mut certs = pem::certs(&cert_pem).map_err(|e| AuthorityError::Invalid {
                field: "ca.import_cert",
                reason: e.to_string(),
            })?;
            let cert = certs.remove(0);
            let key = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| AuthorityError::Invalid {
                field: "ca.import_key",
                reason: e.to_string(),
            })?;
            let key_der = key.serialize_der();
            let loaded = SigningCa::load(&id, cert.clone(), certs.clone(), &key_der)?;
            let self_signed = bundle_pem.is_empty();
            (
                CaRow {
                    id: id.clone(),
                    state: CaState::Active,
                    kind: if self_signed { "root" } else { "intermediate" }.into(),
                    key_algorithm: loaded.algorithm.as_str().into(),
                    cert_pem: Some(pem::encode("CERTIFICATE", &cert)),
                    upstream_chain_pem: pem::encode_certs(certs.iter().map(|c| c.as_ref())),
                    bundle_pem,
                    key_sealed: kek.seal(&id, &key_der)?,
                    not_before: loaded.not_before,
                    not_after: loaded.not_after,
                    prepared_at: now,
                    activated_at: now,
                    retired_at: 0,
                    ended_at: 0,
                },
                "ca.import",
            )
        } else {
            let alg = KeyAlgorithm::parse(&cfg.ca.key_algorithm).unwrap_or_default();
            let (cert, key_der) = ca::new_root(td, &id, alg, now, cfg.ca.ttl_seconds)?;
            let loaded = SigningCa::load(&id, cert.clone(), vec![], &key_der)?;
            (
                CaRow {
                    id: id.clone(),
                    state: CaState::Active,
                    kind: "root".into(),
                    key_algorithm: alg.as_str().into(),
                    cert_pem: Some(pem::encode("CERTIFICATE", &cert)),
                    upstream_chain_pem: String::new(),
                    bundle_pem: String::new(),
                    key_sealed: kek.seal(&id, &key_der)?,
                    not_before: loaded.not_before,
                    not_after: loaded.not_after,
                    prepared_at: now,
                    activated_at: now,
                    retired_at: 0,
                    ended_at: 0,
                },
                "ca.create",
            )
        };
        let audit = AuditEntry {
            actor: "system".into(),
            action: what,
            target: id,
            details: json!({"kind": row.kind, "key_algorithm": row.key_algorithm, "not_after": row.not_after}),
        };
        match store.insert_ca(&row, audit).await {
            // Another replica bootstrapped the same database first; use its CA.
            Ok(()) | Err(StoreError::Precondition(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
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

    /// The current trust bundle.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.bundle
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The CRL of a CA (the active one if `ca_id` is None).
    pub fn crl(&self, ca_id: Option<&str>) -> Option<Arc<Crl>> {
        let id = ca_id
            .map(str::to_owned)
            .unwrap_or_else(|| self.signing_ca().id.clone());
        self.crls.read().ok()?.get(&id).cloned()
    }

    /// Watch channel of the revocation-feed version.
    pub fn revocation_watch(&self) -> watch::Receiver<i64> {
        self.rev_version.subscribe()
    }

    /// Picks up revocations written by other replicas: if the stored feed version
    /// moved, regenerate the CRLs first and only then wake feed followers, so a
    /// follower that saw a revocation never fetches a CRL without it.
    pub async fn sync_revocations(&self) -> Result<i64> {
        let v = self.store.revocation_version().await?;
        if v <= *self.rev_version.borrow() {
            return Ok(v);
        }
        self.refresh_crls().await?;
        self.rev_version.send_if_modified(|cur| {
            if v > *cur {
                *cur = v;
                true
            } else {
                false
            }
        });
        Ok(v)
    }

    /// Regenerates the CRL of every CA that can sign.
    pub async fn refresh_crls(&self) -> Result<()> {
        let ca = self.signing_ca();
        let now = now_unix();
        let entries = self.store.crl_entries(&ca.id, now).await?;
        let next = now + self.cfg.crl.interval_seconds * 2;
        // CRL numbers must increase; milliseconds since the epoch do, across replicas too.
        let number = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let der = ca.sign_crl(&entries, now, next, number)?;
        let crl = Crl {
            pem: pem::encode("X509 CRL", &der),
            der,
            this_update: now,
        };
        if let Ok(mut m) = self.crls.write() {
            m.insert(ca.id.clone(), Arc::new(crl));
        }
        Ok(())
    }

    fn check_td(&self, field: &'static str, s: &str) -> Result<SpiffeId> {
        let id = SpiffeId::new(s).map_err(|e| AuthorityError::SpiffeId(field, e))?;
        if !id.is_member_of(&self.td) {
            return Err(AuthorityError::WrongTrustDomain(field, self.td.to_string()));
        }
        Ok(id)
    }

    fn resolve_ttl(&self, requested: Option<u64>, cap: i64) -> Result<i64> {
        let i = &self.cfg.issuance;
        let cap = cap.min(i.max_ttl_seconds);
        match requested {
            None => Ok(cap),
            Some(t) => {
                let t = i64::try_from(t).unwrap_or(i64::MAX);
                if t < i.min_ttl_seconds || t > cap {
                    Err(AuthorityError::Invalid {
                        field: "ttl_seconds",
                        reason: format!("must be between {} and {cap}", i.min_ttl_seconds),
                    })
                } else {
                    Ok(t)
                }
            }
        }
    }

    fn verify_csr(&self, csr_text: &str) -> Result<VerifiedCsr> {
        Ok(csr::verify(
            csr_text.as_bytes(),
            self.cfg.limits.max_csr_bytes,
        )?)
    }

    /// Signs and durably records a certificate; the core of every issuance path.
    #[allow(clippy::too_many_arguments)]
    async fn issue(
        &self,
        entry: &api::Entry,
        spiffe_id: &SpiffeId,
        csr: &VerifiedCsr,
        ttl: i64,
        attestation: serde_json::Value,
        actor: &Principal,
        mut preconditions: Vec<Precondition>,
        action: &'static str,
        node: Option<&str>,
    ) -> Result<IssuedCertificate> {
        // The one choke point of issuance: a node set names a group of
        // nodes and is never anyone's identity.
        if spiffe::node_set_name(spiffe_id.path()).is_some()
            || spiffe_id.path().starts_with(spiffe::ISSUER_PATH_PREFIX)
        {
            return Err(AuthorityError::Invalid {
                field: "spiffe_id",
                reason: "node sets and platform-token issuers (spiffe://<td>/tessera/node-set/…, \
                         /tessera/issuer/…) are never issued"
                    .into(),
            });
        }
        let started = std::time::Instant::now();
        let canonical = attestation.to_string();
        let hash = sha256(canonical.as_bytes());
        let ca = self.signing_ca();
        preconditions.push(Precondition::IssuerUsable(ca.id.clone()));
        let now = now_unix();
        // A leaf never outlives its issuer; one that would live less than the
        // minimum TTL is refused rather than issued nearly expired.
        if ca.not_after - now < self.cfg.issuance.min_ttl_seconds {
            return Err(AuthorityError::Conflict(
                "the active CA expires too soon to issue from: rotate the CA (`tessera ca rotate`)"
                    .into(),
            ));
        }
        let leaf = ca.sign_leaf(
            &LeafSpec {
                spiffe_id,
                dns_names: &entry.dns_names,
                ip_addrs: &[],
                ttl_seconds: ttl,
                skew_seconds: self.cfg.issuance.clock_skew_seconds,
                attestation_hash: Some(hash),
            },
            &csr.public_key,
            now,
        )?;
        let hash_hex = hex::encode(hash);
        let audit = AuditEntry {
            actor: actor.audit_name(),
            action,
            target: leaf.serial.clone(),
            details: json!({
                "spiffe_id": spiffe_id.as_str(),
                "entry_id": entry.id,
                "not_after": leaf.not_after,
                "attestation_hash": hash_hex,
                "key_type": csr.key_type,
            }),
        };
        self.store
            .record_certificate(
                crate::store::NewCert {
                    serial: leaf.serial.clone(),
                    spiffe_id: spiffe_id.to_string(),
                    entry_id: entry.id.clone(),
                    ca_id: ca.id.clone(),
                    not_before: leaf.not_before,
                    not_after: leaf.not_after,
                    requested_by: actor.audit_name(),
                    attestation: canonical,
                    attestation_hash: hash_hex.clone(),
                    der: leaf.der.to_vec(),
                    node_spiffe_id: node.map(str::to_owned),
                },
                preconditions,
                audit,
            )
            .await?;
        self.metrics.issued.inc(&[if action == "cert.renew" {
            "renew"
        } else {
            "issue"
        }]);
        self.metrics
            .issue_latency
            .observe(&[action], started.elapsed().as_secs_f64());
        Ok(IssuedCertificate {
            serial: leaf.serial,
            spiffe_id: spiffe_id.to_string(),
            not_before: rfc3339(leaf.not_before),
            not_after: rfc3339(leaf.not_after),
            certificate: pem::encode("CERTIFICATE", &leaf.der),
            chain: pem::encode_certs(ca.upstream_chain_if_intermediate()),
            bundle: self.bundle().pem.clone(),
            attestation_hash: hash_hex,
        })
    }

    fn single_entry(entries: Vec<api::Entry>, spiffe_id: &str) -> Result<api::Entry> {
        // Several entries may grant one ID (different parents); direct issuance uses the oldest.
        entries
            .into_iter()
            .min_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)))
            .ok_or_else(|| AuthorityError::NoEntry(spiffe_id.to_owned()))
    }

    /// The entries granting `id` (cached briefly; see [`crate::cache`]).
    async fn entries_for(&self, id: &SpiffeId) -> Result<Vec<api::Entry>> {
        let epoch = self.entry_epoch.load(Ordering::Acquire);
        if let Some(v) = self.entries.get(&id.to_string(), epoch) {
            return Ok(v);
        }
        let v = self.store.list_entries(Some(id.as_str())).await?;
        self.entries.put(id.to_string(), v.clone(), epoch);
        Ok(v)
    }

    /// Issues for a SPIFFE ID that has an entry (operator path).
    pub async fn issue_direct(
        &self,
        req: &api::IssueRequest,
        actor: &Principal,
    ) -> Result<IssuedCertificate> {
        let id = self.check_td("spiffe_id", &req.spiffe_id)?;
        if spiffe::node_name(id.path()).is_some() {
            return Err(AuthorityError::Invalid {
                field: "spiffe_id",
                reason: "node identities are attested with a join token, not issued directly"
                    .into(),
            });
        }
        let csr = self.verify_csr(&req.csr)?;
        let entry = Self::single_entry(self.entries_for(&id).await?, id.as_str())?;
        let ttl = self.resolve_ttl(req.ttl_seconds, entry.ttl_seconds as i64)?;
        let att = json!({
            "method": "api",
            "entry_id": entry.id,
            "spiffe_id": id.as_str(),
            "requested_by": actor.audit_name(),
        });
        let pre = vec![Precondition::EntryExists(entry.id.clone())];
        self.issue(&entry, &id, &csr, ttl, att, actor, pre, "cert.issue", None)
            .await
    }

    /// Redeems a join token with a CSR.
    pub async fn redeem(&self, req: &api::RedeemRequest) -> Result<IssuedCertificate> {
        let (tid, secret) =
            split_token(&req.token, "tsj_").ok_or(AuthorityError::Token("is malformed"))?;
        let csr = self.verify_csr(&req.csr)?;
        let row = match self.store.get_token(tid).await {
            Ok(r) => r,
            Err(StoreError::NotFound) => return Err(AuthorityError::Token("is unknown")),
            Err(e) => return Err(e.into()),
        };
        if !secret_matches(secret, &row.token_hash) {
            return Err(AuthorityError::Token("is unknown"));
        }
        let now = now_unix();
        if row.used_at.is_some() {
            return Err(AuthorityError::Token("was already used"));
        }
        if row.expires_at <= now {
            return Err(AuthorityError::Token("has expired"));
        }
        let entry = match self.store.get_entry(&row.entry_id).await {
            Ok(e) => e,
            Err(StoreError::NotFound) => {
                return Err(AuthorityError::Token("refers to a deleted entry"));
            }
            Err(e) => return Err(e.into()),
        };
        let id = self.check_td("spiffe_id", &entry.spiffe_id)?;
        let ttl = self.resolve_ttl(None, entry.ttl_seconds as i64)?;
        let att = json!({
            "method": "join_token",
            "token_id": row.id,
            "entry_id": entry.id,
            "spiffe_id": id.as_str(),
            "selectors": entry.selectors,
        });
        let actor = Principal::Workload {
            spiffe_id: id.to_string(),
            serial: String::new(),
        };
        let mut pre = vec![
            Precondition::ConsumeToken {
                id: row.id.clone(),
                now,
            },
            Precondition::EntryExists(entry.id.clone()),
        ];
        // A node entry: redeeming attests the node and records it (a banned
        // node cannot come back with a new token until it is unbanned).
        let node = spiffe::node_name(id.path()).map(str::to_owned);
        if let Some(name) = &node {
            pre.push(Precondition::NodeNotBanned {
                spiffe_id: id.to_string(),
                must_exist: false,
            });
            pre.push(Precondition::RecordNode {
                id: name.clone(),
                spiffe_id: id.to_string(),
                attestation_type: "join_token".into(),
                selectors: None,
                now,
            });
        }
        let action = if node.is_some() {
            "node.attest"
        } else {
            "cert.redeem"
        };
        match self
            .issue(&entry, &id, &csr, ttl, att, &actor, pre, action, None)
            .await
        {
            Err(AuthorityError::Conflict(why)) if why.contains("join token") => {
                Err(AuthorityError::Token("was already used"))
            }
            Err(AuthorityError::Conflict(why)) if why.contains("node") => {
                Err(AuthorityError::Forbidden(why))
            }
            other => other,
        }
    }

    /// Renews for a workload authenticated by its current certificate.
    pub async fn renew(
        &self,
        peer_der: &[u8],
        req: &api::RenewRequest,
    ) -> Result<IssuedCertificate> {
        let info = tessera_core::svid::check_leaf(peer_der)
            .map_err(|e| AuthorityError::Renewal(format!("client certificate: {e}")))?;
        let csr = self.verify_csr(&req.csr)?;
        let row = match self.store.get_cert(&info.serial).await {
            Ok(r) => r,
            Err(StoreError::NotFound) => {
                return Err(AuthorityError::Renewal(
                    "certificate is not in the ledger".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        if row.der != peer_der {
            return Err(AuthorityError::Renewal(
                "certificate was not issued by this CA".into(),
            ));
        }
        let now = now_unix();
        // A certificate revoked because its CA was (not because of anything
        // about the holder) may re-issue under the new CA.
        let reissue = row.revocation_reason == Some(crate::store::REASON_CA_COMPROMISE)
            && self.issuer_revoked(&row.ca_id);
        if row.revoked_at.is_some() && !reissue {
            return Err(AuthorityError::Renewal("certificate is revoked".into()));
        }
        if row.not_after <= now {
            return Err(AuthorityError::Renewal("certificate has expired".into()));
        }
        if row.entry_id.is_empty() {
            return Err(AuthorityError::Renewal(
                "operator certificates are not renewed here".into(),
            ));
        }
        // Platform-token certificates re-attest: each one needs a fresh token.
        if serde_json::from_str::<serde_json::Value>(&row.attestation)
            .is_ok_and(|a| a["method"] == "platform_token")
        {
            return Err(AuthorityError::Renewal(
                "certificates from a platform token are renewed by presenting a fresh token \
                 (POST /v1/nodes/attest or POST /v1/svids/platform)"
                    .into(),
            ));
        }
        if row.node_spiffe_id.is_some() {
            return Err(AuthorityError::Renewal(
                "certificates issued through a node agent are renewed only through the agent, \
                 with fresh attestation"
                    .into(),
            ));
        }
        let node = self.node_usable(&row.spiffe_id).await?;
        if node == Some(false) {
            return Err(AuthorityError::Renewal("the node is banned".into()));
        }
        let entry = match self.store.get_entry(&row.entry_id).await {
            Ok(e) => e,
            Err(StoreError::NotFound) => {
                return Err(AuthorityError::Renewal(
                    "registration entry was deleted".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        if entry.spiffe_id != row.spiffe_id {
            return Err(AuthorityError::Renewal(
                "registration entry now grants another SPIFFE ID".into(),
            ));
        }
        let id = self.check_td("spiffe_id", &entry.spiffe_id)?;
        let ttl = self.resolve_ttl(None, entry.ttl_seconds as i64)?;
        let att = json!({
            "method": "renewal",
            "previous_serial": row.serial,
            "previous_attestation_hash": row.attestation_hash,
            "entry_id": entry.id,
            "spiffe_id": id.as_str(),
        });
        let actor = Principal::Workload {
            spiffe_id: id.to_string(),
            serial: row.serial.clone(),
        };
        let mut pre = vec![
            Precondition::NotRevoked {
                serial: row.serial.clone(),
                unless_ca_compromise: reissue,
            },
            Precondition::EntryExists(entry.id.clone()),
        ];
        if node.is_some()
            && let Some(name) = spiffe::node_name(id.path())
        {
            pre.push(Precondition::NodeNotBanned {
                spiffe_id: id.to_string(),
                must_exist: true,
            });
            pre.push(Precondition::RecordNode {
                id: name.to_owned(),
                spiffe_id: id.to_string(),
                attestation_type: "join_token".into(),
                selectors: None,
                now,
            });
        }
        match self
            .issue(&entry, &id, &csr, ttl, att, &actor, pre, "cert.renew", None)
            .await
        {
            Err(AuthorityError::Conflict(why)) if why.contains("node") => {
                Err(AuthorityError::Renewal(why))
            }
            other => other,
        }
    }

    /// Revokes by exactly one selector; regenerates the CRL and wakes the feed.
    pub async fn revoke(
        &self,
        req: &api::RevokeRequest,
        actor: &Principal,
    ) -> Result<api::RevokeResponse> {
        let given = [
            req.serial.is_some(),
            req.spiffe_id.is_some(),
            req.entry_id.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            return Err(AuthorityError::Invalid {
                field: "serial|spiffe_id|entry_id",
                reason: "give exactly one".into(),
            });
        }
        if let Some(s) = &req.serial
            && (s.is_empty() || s.len() > 40 || !s.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(AuthorityError::Invalid {
                field: "serial",
                reason: "must be hex, at most 20 octets".into(),
            });
        }
        if let Some(s) = &req.spiffe_id {
            self.check_td("spiffe_id", s)?;
        }
        let serial = req.serial.as_ref().map(|s| s.to_ascii_lowercase());
        if let Some(s) = &serial {
            match self.store.get_cert(s).await {
                Ok(_) => {}
                Err(StoreError::NotFound) => return Err(AuthorityError::NotFound("certificate")),
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(e) = &req.entry_id {
            match self.store.get_entry(e).await {
                Ok(_) => {}
                Err(StoreError::NotFound) => return Err(AuthorityError::NotFound("entry")),
                Err(e) => return Err(e.into()),
            }
        }
        let (revoked, version) = self
            .store
            .revoke(
                serial,
                req.spiffe_id.clone(),
                req.entry_id.clone(),
                req.reason.code(),
                now_unix(),
                &actor.audit_name(),
            )
            .await?;
        self.metrics
            .revoked
            .add(&[req.reason.as_str()], revoked.len() as u64);
        if !revoked.is_empty() {
            self.refresh_crls().await?;
            self.rev_version.send_if_modified(|cur| {
                if version > *cur {
                    *cur = version;
                    true
                } else {
                    false
                }
            });
        }
        let version = if revoked.is_empty() {
            *self.rev_version.borrow()
        } else {
            version
        };
        Ok(api::RevokeResponse { revoked, version })
    }

    fn validate_entry(&self, req: &api::EntryRequest) -> Result<SpiffeId> {
        let id = self.check_td("spiffe_id", &req.spiffe_id)?;
        if req.selectors.is_empty() {
            return Err(AuthorityError::Invalid {
                field: "selectors",
                reason: "at least one selector is required".into(),
            });
        }
        if req.selectors.len() > 64 {
            return Err(AuthorityError::Invalid {
                field: "selectors",
                reason: "at most 64".into(),
            });
        }
        for s in &req.selectors {
            let ok = s.len() <= 512
                && s.split_once(':').is_some_and(|(t, v)| {
                    !t.is_empty()
                        && !v.is_empty()
                        && t.bytes().all(|b| {
                            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                        })
                })
                && !s.chars().any(char::is_control);
            if !ok {
                return Err(AuthorityError::Invalid {
                    field: "selectors",
                    reason: format!("{s:?} is not type:value (lowercase type, non-empty value)"),
                });
            }
        }
        // Parent IDs of platform-token issuers name no one: no entry grants them.
        if id.path().starts_with(spiffe::ISSUER_PATH_PREFIX)
            || id.path() == spiffe::ISSUER_PATH_PREFIX.trim_end_matches('/')
        {
            return Err(AuthorityError::Invalid {
                field: "spiffe_id",
                reason: "spiffe://<td>/tessera/issuer/<name> is the parent of direct-mode \
                         platform-token entries, never an identity"
                    .into(),
            });
        }
        let node_set_like = id.path().starts_with(spiffe::NODE_SET_PATH_PREFIX)
            || id.path() == spiffe::NODE_SET_PATH_PREFIX.trim_end_matches('/');
        // Claim selectors mean nothing without their issuer: two clusters
        // can both have a node "gpu-1". A set that matches on them must name
        // the issuer too.
        if node_set_like
            && req
                .selectors
                .iter()
                .any(|s| s.starts_with("k8s:") || s.starts_with("jwt:"))
            && !req
                .selectors
                .iter()
                .any(|s| s.starts_with("jwt:issuer-name:"))
        {
            return Err(AuthorityError::Invalid {
                field: "selectors",
                reason: "a node set matching platform-token claims (k8s:, jwt:) must also \
                         require jwt:issuer-name:<issuer>"
                    .into(),
            });
        }
        if node_set_like
            && (spiffe::node_set_name(id.path()).is_none()
                || req.parent_id.is_some()
                || !req.dns_names.is_empty())
        {
            return Err(AuthorityError::Invalid {
                field: "spiffe_id",
                reason: "a node set is spiffe://<td>/tessera/node-set/<name> with node \
                         selectors only: no parent_id, no dns_names"
                    .into(),
            });
        }
        // Node names `<issuer-name>.<node>` belong to platform-token issuers.
        if let Some(name) = spiffe::node_name(id.path())
            && let Some(i) = self.issuers.all().iter().find(|i| {
                name.strip_prefix(i.cfg.name.as_str())
                    .is_some_and(|r| r.starts_with('.'))
            })
        {
            return Err(AuthorityError::Invalid {
                field: "spiffe_id",
                reason: format!(
                    "node names {}.* are attested with platform tokens from issuer {}",
                    i.cfg.name, i.cfg.name
                ),
            });
        }
        if let Some(p) = &req.parent_id {
            SpiffeId::new(p).map_err(|e| AuthorityError::SpiffeId("parent_id", e))?;
            if spiffe::node_name(id.path()).is_some() {
                return Err(AuthorityError::Invalid {
                    field: "parent_id",
                    reason: "a node entry (spiffe://<td>/tessera/agent/<name>) is claimed with a \
                             join token and has no parent"
                        .into(),
                });
            }
        }
        if let Some(t) = req.ttl_seconds {
            let i = &self.cfg.issuance;
            if (t as i64) < i.min_ttl_seconds || (t as i64) > i.max_ttl_seconds {
                return Err(AuthorityError::Invalid {
                    field: "ttl_seconds",
                    reason: format!(
                        "must be between {} and {}",
                        i.min_ttl_seconds, i.max_ttl_seconds
                    ),
                });
            }
        }
        if req.dns_names.len() > 32 {
            return Err(AuthorityError::Invalid {
                field: "dns_names",
                reason: "at most 32".into(),
            });
        }
        for d in &req.dns_names {
            if rustls::pki_types::DnsName::try_from(d.as_str()).is_err() || d.len() > 253 {
                return Err(AuthorityError::Invalid {
                    field: "dns_names",
                    reason: format!("{d:?} is not a DNS name"),
                });
            }
        }
        if req.note.as_ref().is_some_and(|n| n.len() > 1024) {
            return Err(AuthorityError::Invalid {
                field: "note",
                reason: "at most 1024 bytes".into(),
            });
        }
        Ok(id)
    }

    fn entry_from(
        &self,
        id: String,
        req: &api::EntryRequest,
        created_at: String,
        now: i64,
    ) -> api::Entry {
        let mut selectors = req.selectors.clone();
        selectors.sort();
        selectors.dedup();
        api::Entry {
            id,
            spiffe_id: req.spiffe_id.clone(),
            selectors,
            parent_id: req.parent_id.clone(),
            ttl_seconds: req
                .ttl_seconds
                .unwrap_or(self.cfg.issuance.default_ttl_seconds as u64),
            dns_names: req.dns_names.clone(),
            note: req.note.clone(),
            created_at,
            updated_at: rfc3339(now),
        }
    }

    /// Creates a registration entry.
    pub async fn create_entry(
        &self,
        req: &api::EntryRequest,
        actor: &Principal,
    ) -> Result<api::Entry> {
        self.validate_entry(req)?;
        let now = now_unix();
        let e = self.entry_from(ca::random_id(), req, rfc3339(now), now);
        let audit = AuditEntry {
            actor: actor.audit_name(),
            action: "entry.create",
            target: e.id.clone(),
            details: serde_json::to_value(&e).unwrap_or_default(),
        };
        let r = self.store.create_entry(&e, audit).await;
        self.entry_epoch.fetch_add(1, Ordering::AcqRel);
        r?;
        Ok(e)
    }

    /// Replaces a registration entry's fields.
    pub async fn update_entry(
        &self,
        id: &str,
        req: &api::EntryRequest,
        actor: &Principal,
    ) -> Result<api::Entry> {
        self.validate_entry(req)?;
        let old = self.get_entry(id).await?;
        let e = self.entry_from(old.id.clone(), req, old.created_at.clone(), now_unix());
        let audit = AuditEntry {
            actor: actor.audit_name(),
            action: "entry.update",
            target: e.id.clone(),
            details: json!({"before": old, "after": e}),
        };
        let r = self.store.update_entry(&e, audit).await;
        self.entry_epoch.fetch_add(1, Ordering::AcqRel);
        r?;
        Ok(e)
    }

    /// Deletes a registration entry (renewals under it stop at once).
    pub async fn delete_entry(&self, id: &str, actor: &Principal) -> Result<()> {
        let old = self.get_entry(id).await?;
        let audit = AuditEntry {
            actor: actor.audit_name(),
            action: "entry.delete",
            target: id.to_owned(),
            details: serde_json::to_value(&old).unwrap_or_default(),
        };
        let r = self.store.delete_entry(id, audit).await;
        self.entry_epoch.fetch_add(1, Ordering::AcqRel);
        r.map_err(|e| match e {
            StoreError::NotFound => AuthorityError::NotFound("entry"),
            e => e.into(),
        })
    }

    /// Reads one entry.
    pub async fn get_entry(&self, id: &str) -> Result<api::Entry> {
        self.store.get_entry(id).await.map_err(|e| match e {
            StoreError::NotFound => AuthorityError::NotFound("entry"),
            e => e.into(),
        })
    }

    /// Creates a join token for an entry (by ID, or the entry of a SPIFFE ID).
    pub async fn create_token(
        &self,
        req: &api::TokenCreateRequest,
        actor: &Principal,
    ) -> Result<api::TokenCreated> {
        let entry = match (&req.entry_id, &req.spiffe_id) {
            (Some(id), None) => self.get_entry(id).await?,
            (None, Some(sid)) => {
                let id = self.check_td("spiffe_id", sid)?;
                Self::single_entry(self.entries_for(&id).await?, sid)?
            }
            _ => {
                return Err(AuthorityError::Invalid {
                    field: "entry_id|spiffe_id",
                    reason: "give exactly one".into(),
                });
            }
        };
        if SpiffeId::new(&entry.spiffe_id).is_ok_and(|i| spiffe::node_set_name(i.path()).is_some())
        {
            return Err(AuthorityError::Invalid {
                field: "spiffe_id",
                reason: "a node set is never issued, so it has no join token".into(),
            });
        }
        let ttl = req
            .ttl_seconds
            .unwrap_or(self.cfg.issuance.join_token_ttl_seconds as u64);
        if !(30..=7 * 86400).contains(&ttl) {
            return Err(AuthorityError::Invalid {
                field: "ttl_seconds",
                reason: "between 30 and 604800".into(),
            });
        }
        let now = now_unix();
        let id = ca::random_id();
        let secret = random_secret();
        let row = TokenRow {
            id: id.clone(),
            token_hash: sha256_hex(secret.as_bytes()),
            entry_id: entry.id.clone(),
            expires_at: now + ttl as i64,
            used_at: None,
            created_at: now,
        };
        let audit = AuditEntry {
            actor: actor.audit_name(),
            action: "token.create",
            target: id.clone(),
            details: json!({"entry_id": entry.id, "spiffe_id": entry.spiffe_id, "expires_at": row.expires_at}),
        };
        self.store
            .create_token(&row, &actor.audit_name(), audit)
            .await?;
        Ok(api::TokenCreated {
            token: format!("tsj_{id}.{secret}"),
            id,
            entry_id: entry.id,
            expires_at: rfc3339(row.expires_at),
        })
    }

    /// Deletes a join token.
    pub async fn delete_token(&self, id: &str, actor: &Principal) -> Result<()> {
        let audit = AuditEntry {
            actor: actor.audit_name(),
            action: "token.delete",
            target: id.to_owned(),
            details: json!({}),
        };
        self.store
            .delete_token(id, audit)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => AuthorityError::NotFound("token"),
                e => e.into(),
            })
    }

    /// Creates a scoped API token.
    pub async fn create_api_token(
        &self,
        req: &api::ApiTokenCreateRequest,
        actor: &Principal,
    ) -> Result<api::ApiTokenCreated> {
        if req.name.is_empty() || req.name.len() > 128 || req.name.chars().any(char::is_control) {
            return Err(AuthorityError::Invalid {
                field: "name",
                reason: "1 to 128 printable characters".into(),
            });
        }
        let ttl = req.ttl_seconds.unwrap_or(30 * 86400);
        if !(60..=366 * 86400).contains(&ttl) {
            return Err(AuthorityError::Invalid {
                field: "ttl_seconds",
                reason: "between 60 and 31622400".into(),
            });
        }
        let id = ca::random_id();
        let secret = random_secret();
        let expires_at = now_unix() + ttl as i64;
        let row = CredentialRow {
            id: id.clone(),
            kind: "token".into(),
            name: req.name.clone(),
            role: req.role,
            spiffe_id: None,
            token_hash: Some(sha256_hex(secret.as_bytes())),
            expires_at,
            disabled: false,
        };
        let audit = AuditEntry {
            actor: actor.audit_name(),
            action: "credential.create",
            target: id.clone(),
            details: json!({"kind": "token", "name": req.name, "role": req.role.as_str(), "expires_at": expires_at}),
        };
        self.store.insert_credential(&row, audit).await?;
        Ok(api::ApiTokenCreated {
            token: format!("tsa_{id}.{secret}"),
            id,
            role: req.role,
            expires_at: rfc3339(expires_at),
        })
    }

    /// Disables an API credential.
    pub async fn disable_credential(&self, id: &str, actor: &Principal) -> Result<()> {
        let audit = AuditEntry {
            actor: actor.audit_name(),
            action: "credential.disable",
            target: id.to_owned(),
            details: json!({}),
        };
        let r = self.store.disable_credential(id, audit).await;
        self.cred_epoch.fetch_add(1, Ordering::AcqRel);
        r.map_err(|e| match e {
            StoreError::NotFound => AuthorityError::NotFound("credential"),
            e => e.into(),
        })
    }

    /// Resolves a bearer token to a principal, or None if it is not valid now.
    pub async fn principal_from_token(&self, token: &str) -> Result<Option<Principal>> {
        let Some((id, secret)) = split_token(token, "tsa_") else {
            return Ok(None);
        };
        let Some(c) = self.store.credential(id).await? else {
            return Ok(None);
        };
        let hash = c.token_hash.as_deref().unwrap_or("");
        if c.kind != "token"
            || !secret_matches(secret, hash)
            || c.disabled
            || c.expires_at <= now_unix()
        {
            return Ok(None);
        }
        Ok(Some(Principal::Credential {
            id: c.id,
            name: c.name,
            role: c.role,
        }))
    }

    /// Resolves a verified client certificate to a principal, or None if it is
    /// unknown to the ledger, revoked, or a disabled credential.
    pub async fn principal_from_cert(&self, der: &[u8]) -> Result<Option<Principal>> {
        let epoch = (
            *self.rev_version.borrow(),
            self.cred_epoch.load(Ordering::Acquire),
        );
        if let Some(p) = self.principals.get(&der.to_vec(), epoch) {
            return Ok(p);
        }
        let p = self.principal_from_cert_uncached(der).await?;
        self.principals.put(der.to_vec(), p.clone(), epoch);
        Ok(p)
    }

    async fn principal_from_cert_uncached(&self, der: &[u8]) -> Result<Option<Principal>> {
        let Ok(info) = tessera_core::svid::check_leaf(der) else {
            return Ok(None);
        };
        let row = match self.store.get_cert(&info.serial).await {
            Ok(r) => r,
            Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // The serial is public: only the exact certificate we issued counts (in
        // intermediate mode the TLS layer also accepts other children of the root).
        if row.der != der || row.not_after <= now_unix() {
            return Ok(None);
        }
        if row.revoked_at.is_some() {
            if row.revocation_reason == Some(crate::store::REASON_CA_COMPROMISE)
                && !row.entry_id.is_empty()
                && self.issuer_revoked(&row.ca_id)
            {
                return Ok(Some(Principal::Reissue {
                    spiffe_id: row.spiffe_id,
                    serial: row.serial,
                }));
            }
            return Ok(None);
        }
        if row.entry_id.is_empty() {
            let Some(c) = self
                .store
                .credential_by_spiffe_id(info.spiffe_id.as_str())
                .await?
            else {
                return Ok(None);
            };
            if c.disabled || c.expires_at <= now_unix() {
                return Ok(None);
            }
            return Ok(Some(Principal::Credential {
                id: c.id,
                name: c.name,
                role: c.role,
            }));
        }
        match self.node_usable(&row.spiffe_id).await? {
            Some(true) => Ok(Some(Principal::Node {
                spiffe_id: row.spiffe_id,
                serial: row.serial,
            })),
            // A banned (or never recorded) node's certificate counts for nothing.
            Some(false) => Ok(None),
            None => Ok(Some(Principal::Workload {
                spiffe_id: row.spiffe_id,
                serial: row.serial,
            })),
        }
    }

    /// Issues an operator client certificate (admin or another role) with a key
    /// generated here, for `tessera-ca init`. Returns (key PEM, certificate
    /// chain PEM: the leaf, then any intermediates).
    pub async fn issue_operator_cert(&self, name: &str, role: Role) -> Result<(String, String)> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(AuthorityError::Invalid {
                field: "name",
                reason: "letters, digits, '-' and '_'".into(),
            });
        }
        let id = self
            .td
            .workload_id(&format!("/tessera/operator/{name}"))
            .map_err(|e| AuthorityError::SpiffeId("name", e))?;
        let key = KeyAlgorithm::EcdsaP256.generate()?;
        let ca = self.signing_ca();
        let now = now_unix();
        let ttl = self.cfg.admin.cert_ttl_seconds;
        let leaf = ca.sign_leaf(
            &LeafSpec {
                spiffe_id: &id,
                dns_names: &[],
                ip_addrs: &[],
                ttl_seconds: ttl,
                skew_seconds: self.cfg.issuance.clock_skew_seconds,
                attestation_hash: None,
            },
            &key,
            now,
        )?;
        {
            let row = CredentialRow {
                id: ca::random_id(),
                kind: "certificate".into(),
                name: name.to_owned(),
                role,
                spiffe_id: Some(id.to_string()),
                token_hash: None,
                expires_at: i64::MAX / 2,
                disabled: false,
            };
            let audit = AuditEntry {
                actor: "system".into(),
                action: "credential.create",
                target: row.id.clone(),
                details: json!({"kind": "certificate", "name": name, "role": role.as_str(), "spiffe_id": id.as_str()}),
            };
            match self.store.insert_credential(&row, audit).await {
                // Already registered (an earlier init, or another replica just now).
                Ok(()) | Err(StoreError::Precondition(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let att = json!({"method": "operator_init", "name": name, "role": role.as_str()});
        let canonical = att.to_string();
        let audit = AuditEntry {
            actor: "system".into(),
            action: "cert.issue_operator",
            target: leaf.serial.clone(),
            details: json!({"spiffe_id": id.as_str(), "role": role.as_str(), "not_after": leaf.not_after}),
        };
        self.store
            .record_certificate(
                crate::store::NewCert {
                    serial: leaf.serial.clone(),
                    spiffe_id: id.to_string(),
                    entry_id: String::new(),
                    ca_id: ca.id.clone(),
                    not_before: leaf.not_before,
                    not_after: leaf.not_after,
                    requested_by: "system".into(),
                    attestation_hash: sha256_hex(canonical.as_bytes()),
                    attestation: canonical,
                    der: leaf.der.to_vec(),
                    node_spiffe_id: None,
                },
                vec![],
                audit,
            )
            .await?;
        // The certificate file carries the chain, so TLS peers that trust only
        // the root (an operator's, in intermediate mode) can build the path.
        let mut cert_pem = pem::encode("CERTIFICATE", &leaf.der);
        cert_pem.push_str(&pem::encode_certs(ca.upstream_chain_if_intermediate()));
        Ok((key.serialize_pem(), cert_pem))
    }

    /// Issues the API server's own certificate: key made here, never stored.
    pub fn server_certified_key(&self) -> Result<rustls::sign::CertifiedKey> {
        let id = self
            .td
            .workload_id("/tessera/ca-server")
            .map_err(|e| AuthorityError::SpiffeId("trust_domain", e))?;
        let key = KeyAlgorithm::EcdsaP256.generate()?;
        let ca = self
            .server_signer
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let leaf = ca.sign_leaf(
            &LeafSpec {
                spiffe_id: &id,
                dns_names: &self.cfg.server_dns_names,
                ip_addrs: &self.cfg.server_ips,
                ttl_seconds: self.cfg.issuance.max_ttl_seconds,
                skew_seconds: self.cfg.issuance.clock_skew_seconds,
                attestation_hash: None,
            },
            &key,
            now_unix(),
        )?;
        let mut chain = vec![leaf.der];
        chain.extend(
            ca.upstream_chain_if_intermediate()
                .map(|c| CertificateDer::from(c.to_vec())),
        );
        let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        tessera_core::tls::certified_key(chain, key_der).map_err(|e| AuthorityError::Invalid {
            field: "server certificate",
            reason: e.to_string(),
        })
    }

    /// Lists certificates.
    pub async fn list_certs(&self, f: &CertFilter) -> Result<Vec<api::CertificateRecord>> {
        Ok(self
            .store
            .list_certs(f, now_unix())
            .await?
            .iter()
            .map(|r| r.to_api(false))
            .collect())
    }

    /// Stores a sidecar's report of refused connections. `reporter` is the
    /// sidecar's own SPIFFE ID, from its credentials (the report cannot name
    /// it). The whole report is refused if any denial is invalid: more than
    /// [`MAX_DENIALS_PER_REPORT`], `at` more than a day ahead or older than
    /// `retention.keep_denials_seconds`, an over-long or non-printable
    /// `listener` or `peer_addr`, or a `peer_spiffe_id` that is not a SPIFFE ID
    /// (of any trust domain). Returns how many were stored.
    pub async fn report_denials(&self, reporter: &str, denials: &[api::Denial]) -> Result<u64> {
        if denials.len() > MAX_DENIALS_PER_REPORT {
            return Err(AuthorityError::Invalid {
                field: "denials",
                reason: format!(
                    "{} denials; at most {MAX_DENIALS_PER_REPORT} per report",
                    denials.len()
                ),
            });
        }
        let now = now_unix();
        let oldest = now - self.cfg.retention.keep_denials_seconds;
        let newest = now + MAX_DENIAL_FUTURE_SECONDS;
        for (i, d) in denials.iter().enumerate() {
            let invalid = |field: &'static str, why: String| AuthorityError::Invalid {
                field,
                reason: format!("denials[{i}]: {why}"),
            };
            if d.at > newest {
                return Err(invalid(
                    "at",
                    format!("{} is more than a day in the future", d.at),
                ));
            }
            if d.at < oldest {
                return Err(invalid(
                    "at",
                    format!(
                        "{} is older than the retention period ({} s)",
                        d.at, self.cfg.retention.keep_denials_seconds
                    ),
                ));
            }
            for (field, value, max) in [
                ("listener", &d.listener, MAX_DENIAL_LISTENER_BYTES),
                ("peer_addr", &d.peer_addr, MAX_DENIAL_PEER_ADDR_BYTES),
            ] {
                if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
                    return Err(invalid(
                        field,
                        format!("1 to {max} bytes without control characters"),
                    ));
                }
            }
            if let Some(p) = &d.peer_spiffe_id {
                SpiffeId::new(p)
                    .map_err(|e| invalid("peer_spiffe_id", format!("not a SPIFFE ID: {e}")))?;
            }
        }
        let stored = self.store.record_denials(reporter, denials, now).await?;
        let mut by_reason: HashMap<api::DenialReason, u64> = HashMap::new();
        for d in denials {
            *by_reason.entry(d.reason).or_default() += 1;
        }
        for (reason, n) in by_reason {
            self.metrics.denials.add(&[reason.as_str()], n);
        }
        Ok(stored)
    }

    /// Lists stored denials, newest first.
    pub async fn list_denials(&self, f: &DenialFilter) -> Result<Vec<api::DenialRecord>> {
        Ok(self.store.list_denials(f).await?)
    }
}

/// Creates a directory readable only by its owner (0700), or tightens an existing one.
pub fn create_private_dir(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// Validates the trust domain, prepares the data directory, loads the KEK and
/// opens the store (checking it belongs to this trust domain).
async fn open_parts(cfg: &Config) -> Result<(TrustDomain, Store, Kek)> {
    let td = TrustDomain::new(&cfg.trust_domain).map_err(|e| AuthorityError::Invalid {
        field: "trust_domain",
        reason: e.to_string(),
    })?;
    create_private_dir(&cfg.data_dir).map_err(|e| AuthorityError::Invalid {
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

/// Intermediate mode, step 1: creates a key (sealed in the store) and returns a
/// CSR for the operator's root to sign. The CA stays `pending` until
/// [`import_signed_intermediate`]. Returns (CA ID, CSR PEM).
///
/// Used for the first intermediate and for every rotation of it, also while
/// the server runs (it only writes the store). Refused while another
/// generation is pending or prepared: one successor at a time.
pub async fn prepare_intermediate(cfg: &Config) -> Result<(String, String)> {
    let (td, store, kek) = open_parts(cfg).await?;
    let alg = KeyAlgorithm::parse(&cfg.ca.key_algorithm).unwrap_or_default();
    let id = ca::random_id();
    let (csr, key_der) = ca::intermediate_csr(&td, &id, alg)?;
    let row = CaRow {
        id: id.clone(),
        state: CaState::Pending,
        kind: "intermediate".into(),
        key_algorithm: alg.as_str().into(),
        cert_pem: None,
        upstream_chain_pem: String::new(),
        bundle_pem: String::new(),
        key_sealed: kek.seal(&id, &key_der)?,
        not_before: 0,
        not_after: 0,
        prepared_at: 0,
        activated_at: 0,
        retired_at: 0,
        ended_at: 0,
    };
    let audit = AuditEntry {
        actor: "system".into(),
        action: "ca.prepare_intermediate",
        target: id.clone(),
        details: json!({"key_algorithm": alg.as_str()}),
    };
    store.prepare_ca(&row, audit).await?;
    tracing::info!(ca = %id, "pending intermediate CA created; CSR written for the operator's root");
    Ok((id, csr))
}

/// What [`import_signed_intermediate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedIntermediate {
    /// The CA's ID.
    pub id: String,
    /// `active` on first start, `prepared` when another generation is active
    /// (a rotation: published now, activated after the minimum overlap).
    pub state: CaState,
    /// Whether the signed certificate carries a NameConstraints extension.
    pub name_constrained: bool,
}

/// Refuses certificates whose URI name constraints rustls-webpki would reject.
fn refuse_uri_name_constraints(
    field: &'static str,
    certs: &[CertificateDer<'static>],
) -> Result<bool> {
    let mut present = false;
    for c in certs {
        let nc = ca::name_constraints(c).map_err(|e| AuthorityError::Invalid {
            field,
            reason: e.to_string(),
        })?;
        if nc.uri {
            return Err(AuthorityError::Invalid {
                field,
                reason: "carries URI name constraints, which rustls-webpki (Tessera's sidecars, \
                         CLI and API) rejects unconditionally: every certificate under it would \
                         be refused. Sign without URI name constraints (DNS and IP constraints \
                         are fine)"
                    .into(),
            });
        }
        present |= nc.present;
    }
    Ok(present)
}

/// Intermediate mode, step 2: takes the certificate the operator's root signed
/// for the pending CA, checks that it is a signing certificate for the pending
/// key, in this trust domain, signed by a certificate of `chain` or `bundle`,
/// outliving a maximum-lifetime leaf and free of URI name constraints, then
/// makes it the active CA (first start) or a prepared one (rotation; a running
/// server picks it up within a second). Nothing changes when it is refused.
pub async fn import_signed_intermediate(
    cfg: &Config,
    cert_pem: &[u8],
    bundle_pem: &[u8],
    chain_pem: Option<&[u8]>,
) -> Result<ImportedIntermediate> {
    let (td, store, kek) = open_parts(cfg).await?;
    let invalid = |field: &'static str, reason: String| AuthorityError::Invalid { field, reason };
    let cert = pem::certs(cert_pem)
        .map_err(|e| invalid("--cert", e.to_string()))?
        .remove(0);
    let anchors = pem::certs(bundle_pem).map_err(|e| invalid("--bundle", e.to_string()))?;
    let chain = match chain_pem {
        Some(p) => pem::certs(p).map_err(|e| invalid("--chain", e.to_string()))?,
        None => vec![],
    };
    let pending = store
        .list_cas()
        .await?
        .into_iter()
        .find(|c| c.state == CaState::Pending)
        .ok_or(AuthorityError::NotFound(
            "pending CA (run `tessera-ca ca csr` first)",
        ))?;
    let key = kek.open(&pending.id, &pending.key_sealed)?;
    let loaded = SigningCa::load(&pending.id, cert.clone(), chain.clone(), &key)
        .map_err(|e| invalid("--cert", e.to_string()))?;
    let parsed = tessera_core::svid::parse(&cert).map_err(|e| invalid("--cert", e.to_string()))?;
    let in_td = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value.general_names.iter().all(|g| match g {
                x509_parser::extensions::GeneralName::URI(u) => *u == td.id_string(),
                _ => true,
            })
        })
        .unwrap_or(true);
    if !in_td {
        return Err(invalid(
            "--cert",
            format!("URI SAN is not {}", td.id_string()),
        ));
    }
    let signed_by_upstream = chain.iter().chain(anchors.iter()).any(|issuer| {
        tessera_core::svid::parse(issuer)
            .ok()
            .is_some_and(|i| parsed.verify_signature(Some(i.public_key())).is_ok())
    });
    if !signed_by_upstream {
        return Err(invalid(
            "--cert",
            "not signed by any certificate in --chain or --bundle".into(),
        ));
    }
    let now = now_unix();
    if loaded.not_after <= now + cfg.issuance.max_ttl_seconds {
        return Err(invalid(
            "--cert",
            "expires before a maximum-lifetime leaf would (see issuance.max_ttl_seconds)".into(),
        ));
    }
    let name_constrained = refuse_uri_name_constraints("--cert", std::slice::from_ref(&cert))?;
    refuse_uri_name_constraints("--chain", &chain)?;
    refuse_uri_name_constraints("--bundle", &anchors)?;
    let audit = AuditEntry {
        actor: "system".into(),
        action: "ca.import_signed",
        target: pending.id.clone(),
        details: json!({"subject": loaded.subject, "not_after": loaded.not_after,
                        "name_constrained": name_constrained,
                        "fingerprint": sha256_hex(&cert)}),
    };
    let state = store
        .complete_pending_ca(
            &pending.id,
            &pem::encode("CERTIFICATE", &cert),
            &pem::encode_certs(chain.iter().map(|c| c.as_ref())),
            &pem::encode_certs(anchors.iter().map(|c| c.as_ref())),
            loaded.not_before,
            loaded.not_after,
            audit,
        )
        .await?;
    tracing::info!(ca = %pending.id, state = %state, name_constrained, not_after = loaded.not_after,
                   "signed intermediate CA imported");
    Ok(ImportedIntermediate {
        id: pending.id,
        state,
        name_constrained,
    })
}

/// Opens a CA row's sealed key and loads it for signing.
fn open_ca(kek: &Kek, row: &CaRow) -> Result<SigningCa> {
    let cert_pem = row
        .cert_pem
        .as_deref()
        .ok_or(AuthorityError::NotFound("CA certificate"))?;
    let mut certs = pem::certs(cert_pem.as_bytes()).map_err(|e| AuthorityError::Invalid {
        field: "ca certificate",
        reason: e.to_string(),
    })?;
    let cert = certs.remove(0);
    let chain = if row.upstream_chain_pem.is_empty() {
        vec![]
    } else {
        pem::certs(row.upstream_chain_pem.as_bytes()).map_err(|e| AuthorityError::Invalid {
            field: "ca chain",
            reason: e.to_string(),
        })?
    };
    let key = kek.open(&row.id, &row.key_sealed)?;
    Ok(SigningCa::load(&row.id, cert, chain, &key)?)
}

/// Builds the trust bundle: the published self-signed CAs, plus the upstream
/// anchors of published intermediates.
fn build_bundle(cas: &[CaRow], jwt_keys: &[tessera_core::jwt::Jwk]) -> Result<Bundle> {
    let mut anchors: Vec<CertificateDer<'static>> = Vec::new();
    // The active generation first, then the prepared one, then retired ones:
    // a stable order for followers that read the first anchor.
    let rank = |s: CaState| match s {
        CaState::Active => 0,
        CaState::Prepared => 1,
        _ => 2,
    };
    let mut published: Vec<&CaRow> = cas.iter().filter(|c| c.state.is_published()).collect();
    published.sort_by_key(|c| rank(c.state));
    for c in published {
        let source = if c.kind == "root" {
            c.cert_pem.clone().unwrap_or_default()
        } else {
            c.bundle_pem.clone()
        };
        if let Ok(certs) = pem::certs(source.as_bytes()) {
            for cert in certs {
                if !anchors.contains(&cert) {
                    anchors.push(cert);
                }
            }
        }
    }
    if anchors.is_empty() {
        return Err(AuthorityError::NotFound("trust anchor"));
    }
    let pem = pem::encode_certs(anchors.iter().map(|c| c.as_ref()));
    // The sequence covers the JWT-SVID keys too: a new one must reach followers.
    let keys_json = serde_json::to_string(jwt_keys).unwrap_or_default();
    let sequence = i64::from_be_bytes(
        sha256(format!("{pem}{keys_json}").as_bytes())[..8]
            .try_into()
            .unwrap_or([0; 8]),
    ) & i64::MAX;
    let jwks = crate::jwks::spiffe_bundle(&anchors, jwt_keys, sequence);
    Ok(Bundle {
        anchors,
        pem,
        jwks,
        sequence,
        jwt_keys: jwt_keys.to_vec(),
    })
}
