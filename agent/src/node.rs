//! The agent's link to the CA: its node identity and the calls it makes with it.
//!
//! The agent attests itself once, redeeming a join token for its node entry
//! (`spiffe://<td>/tessera/agent/<node-name>`), and renews that certificate
//! at half its lifetime over mTLS like any workload. With it the agent asks
//! for workloads' SVIDs (`POST /v1/agent/svids`, a CSR for a key generated
//! here in memory plus fresh evidence) and polls the entries parented to it
//! (`GET /v1/agent/entries`) and the trust bundle. Keys (the node's and the
//! workloads') live only in memory; the join token is used once and dropped.
//!
//! Or the agent attests with a platform token (a Kubernetes projected
//! service-account token, an OIDC token) read from a file
//! (`POST /v1/nodes/attest`). Such a node certificate is not renewed over
//! mTLS: each "renewal" reads the file again (the platform rotates it) and
//! re-attests, so the node identity never outlives the platform's word.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tessera_core::spiffe;

use rustls::pki_types::CertificateDer;
use tessera_core::api::{self, IssuedCertificate};
use tessera_core::client::Client;

use crate::attest::Attestation;

/// Errors talking to the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The CA could not be reached.
    #[error("CA unreachable: {0}")]
    Unreachable(String),
    /// The CA refused.
    #[error("CA refused ({status} {code}): {detail}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The problem's stable code.
        code: String,
        /// The problem's detail.
        detail: String,
    },
    /// Local key, CSR, TLS or parsing failure.
    #[error("local: {0}")]
    Local(String),
}

impl NodeError {
    /// Whether the CA refused the node itself (banned, unknown, revoked):
    /// a 401, or a 403 `node_refused`.
    pub fn node_refused(&self) -> bool {
        matches!(self, NodeError::Refused { status: 401, .. })
            || matches!(self, NodeError::Refused { code, .. } if code == "node_refused")
    }
}

fn local(e: impl std::fmt::Display) -> NodeError {
    NodeError::Local(e.to_string())
}

/// An SVID the CA issued for a workload, with the key the agent generated.
#[derive(Clone)]
pub struct WorkloadSvid {
    /// The SPIFFE ID.
    pub spiffe_id: String,
    /// Leaf then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 DER key, in memory only, handed only to the attested caller.
    pub key_pkcs8: Arc<Vec<u8>>,
    /// Serial, hex.
    pub serial: String,
    /// notAfter, unix seconds.
    pub not_after: i64,
    /// When it arrived, unix seconds.
    pub received_at: i64,
}

impl std::fmt::Debug for WorkloadSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl WorkloadSvid {
    /// Half-way between arrival and expiry: when the agent renews it.
    pub fn renew_at(&self) -> i64 {
        self.received_at + (self.not_after - self.received_at).max(0) / 2
    }
}

/// The node's own identity.
struct NodeState {
    chain: Vec<CertificateDer<'static>>,
    /// Kept only to be saved in `data_dir` (when configured).
    key_pkcs8: zeroize::Zeroizing<Vec<u8>>,
    spiffe_id: String,
    not_after: i64,
    received_at: i64,
    client: Client,
}

/// The CA link with the node identity; cheap to share.
pub struct NodeLink {
    ca_url: String,
    /// Platform-token mode: the token file, read for every (re-)attestation.
    platform_token_file: Option<std::path::PathBuf>,
    state: RwLock<Arc<NodeState>>,
    bundle: RwLock<Arc<Vec<CertificateDer<'static>>>>,
    jwt_bundle: RwLock<Arc<JwtBundle>>,
    /// Where the identity is saved after every change (opt-in).
    data_dir: Option<PathBuf>,
}

/// The trust domain's JWT-SVID keys (the `jwt-svid` keys of the CA's bundle).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwtBundle {
    /// The keys, for validating tokens here.
    pub keys: Vec<tessera_core::jwt::Jwk>,
    /// The same keys as a JWKS document (`{"keys": [...]}`), as the
    /// Workload API's `FetchJWTBundles` sends it.
    pub jwks: bytes::Bytes,
}

impl JwtBundle {
    /// The `jwt-svid` keys of a SPIFFE bundle document.
    pub fn from_spiffe_bundle(doc: &str) -> Self {
        let keys = tessera_core::jwt::bundle_keys(doc);
        let jwks = serde_json::to_vec(&serde_json::json!({ "keys": keys }))
            .unwrap_or_default()
            .into();
        JwtBundle { keys, jwks }
    }
}

/// A fresh P-256 key (PKCS#8 DER) and a CSR for it (PEM).
pub fn new_key_and_csr() -> Result<(Vec<u8>, String), NodeError> {
    let key = rcgen::KeyPair::generate().map_err(local)?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(local)?;
    Ok((key.serialize_der(), csr))
}

async fn call(
    client: &Client,
    method: hyper::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<bytes::Bytes, NodeError> {
    let reply = client
        .call(method, path, body)
        .await
        .map_err(|e| NodeError::Unreachable(e.to_string()))?;
    if !reply.status.is_success() {
        let p: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        return Err(NodeError::Refused {
            status: reply.status.as_u16(),
            code: p["code"].as_str().unwrap_or("").to_owned(),
            detail: p["detail"].as_str().unwrap_or("").to_owned(),
        });
    }
    Ok(reply.body)
}

fn parse_issued(
    issued: &IssuedCertificate,
) -> Result<
    (
        Vec<CertificateDer<'static>>,
        Vec<CertificateDer<'static>>,
        tessera_core::svid::LeafInfo,
    ),
    NodeError,
> {
    let mut chain = tessera_core::pem::certs(issued.certificate.as_bytes()).map_err(local)?;
    if !issued.chain.is_empty() {
        chain.extend(tessera_core::pem::certs(issued.chain.as_bytes()).map_err(local)?);
    }
    let bundle = tessera_core::pem::certs(issued.bundle.as_bytes()).map_err(local)?;
    let info = tessera_core::svid::check_leaf(&chain[0])
        .map_err(|e| NodeError::Local(format!("issued certificate: {e}")))?;
    Ok((chain, bundle, info))
}

fn node_state(
    ca_url: &str,
    issued: &IssuedCertificate,
    key_pkcs8: Vec<u8>,
) -> Result<(NodeState, Vec<CertificateDer<'static>>), NodeError> {
    let (chain, bundle, _) = parse_issued(issued)?;
    let state = state_from(ca_url, chain, key_pkcs8, &bundle)?;
    Ok((state, bundle))
}

/// A node state for `chain` and its key, reaching the CA with `anchors`.
fn state_from(
    ca_url: &str,
    chain: Vec<CertificateDer<'static>>,
    key_pkcs8: Vec<u8>,
    anchors: &[CertificateDer<'static>],
) -> Result<NodeState, NodeError> {
    let info = tessera_core::svid::check_leaf(&chain[0])
        .map_err(|e| NodeError::Local(format!("node certificate: {e}")))?;
    let key_pkcs8 = zeroize::Zeroizing::new(key_pkcs8);
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key_pkcs8.to_vec().into());
    let tls = tessera_core::tls::api_client_config(anchors, Some((chain.clone(), key)), false)
        .map_err(local)?;
    let client = Client::new(ca_url, tls, None).map_err(local)?;
    Ok(NodeState {
        chain,
        key_pkcs8,
        spiffe_id: info.spiffe_id.to_string(),
        not_after: info.not_after,
        received_at: tessera_core::now_unix(),
        client,
    })
}

impl NodeLink {
    /// Attests the node: redeems `join_token` at `ca_url` (trusting
    /// `bootstrap` to reach it). The token is consumed and not kept.
    pub async fn attest(
        ca_url: &str,
        bootstrap: &[CertificateDer<'static>],
        join_token: String,
    ) -> Result<Self, NodeError> {
        let tls = tessera_core::tls::api_client_config(bootstrap, None, false).map_err(local)?;
        let client = Client::new(ca_url, tls, None).map_err(local)?;
        let (key, csr) = new_key_and_csr()?;
        let body = serde_json::to_vec(&api::RedeemRequest {
            token: join_token,
            csr,
        })
        .map_err(local)?;
        let reply = call(&client, hyper::Method::POST, "/v1/certs/redeem", Some(body)).await?;
        let issued: IssuedCertificate = serde_json::from_slice(&reply).map_err(local)?;
        let (state, bundle) = node_state(ca_url, &issued, key)?;
        let id = tessera_core::SpiffeId::new(&state.spiffe_id).map_err(local)?;
        if spiffe::node_name(id.path()).is_none() {
            return Err(NodeError::Local(format!(
                "the join token granted {}, not a node identity (spiffe://<td>{}<name>)",
                state.spiffe_id,
                spiffe::NODE_PATH_PREFIX
            )));
        }
        Ok(Self {
            ca_url: ca_url.to_owned(),
            platform_token_file: None,
            state: RwLock::new(Arc::new(state)),
            bundle: RwLock::new(Arc::new(bundle)),
            jwt_bundle: RwLock::new(Arc::default()),
            data_dir: None,
        })
    }

    /// Attests the node with the platform token in `token_file` at `ca_url`
    /// (trusting `bootstrap` to reach it); later renewals re-attest with the
    /// token the file then holds.
    pub async fn attest_platform(
        ca_url: &str,
        bootstrap: &[CertificateDer<'static>],
        token_file: std::path::PathBuf,
    ) -> Result<Self, NodeError> {
        let (state, bundle) = platform_attest(ca_url, bootstrap, &token_file).await?;
        Ok(Self {
            ca_url: ca_url.to_owned(),
            platform_token_file: Some(token_file),
            state: RwLock::new(Arc::new(state)),
            bundle: RwLock::new(Arc::new(bundle)),
            jwt_bundle: RwLock::new(Arc::default()),
            data_dir: None,
        })
    }

    /// Resumes the node identity saved in `dir` by an earlier run (see
    /// [`crate::data_dir`]): `None` if nothing is stored or it has expired
    /// (a join token is needed then). A stored identity is renewed at once,
    /// which proves the CA still accepts it: a banned node is refused here
    /// ([`NodeError::node_refused`]). The CA is reached with the stored
    /// bundle plus `bootstrap`.
    pub async fn resume(
        ca_url: &str,
        bootstrap: &[CertificateDer<'static>],
        dir: &Path,
    ) -> Result<Option<Self>, NodeError> {
        let Some(stored) = crate::data_dir::load(dir).map_err(local)? else {
            return Ok(None);
        };
        let mut anchors = stored.bundle.clone();
        anchors.extend(
            bootstrap
                .iter()
                .filter(|c| !stored.bundle.contains(c))
                .cloned(),
        );
        let state = state_from(ca_url, stored.chain, stored.key_pkcs8, &anchors)?;
        // A minute of margin: the renewal must reach the CA before expiry.
        if state.not_after <= tessera_core::now_unix() + 60 {
            tracing::warn!(
                dir = %dir.display(),
                not_after = state.not_after,
                "the stored node certificate has expired; a new join token is needed"
            );
            return Ok(None);
        }
        let id = tessera_core::SpiffeId::new(&state.spiffe_id).map_err(local)?;
        if spiffe::node_name(id.path()).is_none() {
            return Err(NodeError::Local(format!(
                "{}: the stored certificate is for {}, not a node identity",
                dir.display(),
                state.spiffe_id
            )));
        }
        let link = Self {
            ca_url: ca_url.to_owned(),
            platform_token_file: None,
            state: RwLock::new(Arc::new(state)),
            bundle: RwLock::new(Arc::new(stored.bundle)),
            jwt_bundle: RwLock::new(Arc::default()),
            data_dir: Some(dir.to_owned()),
        };
        link.renew().await?;
        Ok(Some(link))
    }

    /// Saves the identity in `dir` now and after every renewal and bundle
    /// change, so a restart can [`Self::resume`] it.
    pub fn with_data_dir(mut self, dir: PathBuf) -> Result<Self, NodeError> {
        self.data_dir = Some(dir);
        self.persist()?;
        Ok(self)
    }

    /// Writes the current identity and bundle to `data_dir`, if configured.
    fn persist(&self) -> Result<(), NodeError> {
        let Some(dir) = &self.data_dir else {
            return Ok(());
        };
        let s = self.state();
        crate::data_dir::save(dir, &s.chain, &s.key_pkcs8, &self.bundle()).map_err(local)
    }

    fn state(&self) -> Arc<NodeState> {
        self.state
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The node's SPIFFE ID.
    pub fn spiffe_id(&self) -> String {
        self.state().spiffe_id.clone()
    }

    /// The trust domain's SPIFFE ID (`spiffe://<td>`).
    pub fn trust_domain_id(&self) -> String {
        tessera_core::SpiffeId::new(&self.spiffe_id())
            .map(|id| format!("spiffe://{}", id.trust_domain_name()))
            .unwrap_or_default()
    }

    /// When the node certificate should be renewed (half its lifetime), unix seconds.
    pub fn renew_at(&self) -> i64 {
        let s = self.state();
        s.received_at + (s.not_after - s.received_at).max(0) / 2
    }

    /// The node certificate's notAfter, unix seconds.
    pub fn not_after(&self) -> i64 {
        self.state().not_after
    }

    /// The current trust bundle.
    pub fn bundle(&self) -> Arc<Vec<CertificateDer<'static>>> {
        self.bundle
            .read()
            .map(|b| b.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set_bundle(&self, anchors: Vec<CertificateDer<'static>>) -> bool {
        let mut b = self.bundle.write().unwrap_or_else(|p| p.into_inner());
        if **b == anchors {
            return false;
        }
        if let Some(dir) = &self.data_dir
            && let Err(e) = crate::data_dir::save_bundle(dir, &anchors)
        {
            tracing::warn!(error = %e, "saving the trust bundle in data_dir");
        }
        *b = Arc::new(anchors);
        true
    }

    /// Renews the node certificate (new key) over mTLS; in platform-token
    /// mode, re-attests with the token the file holds now.
    pub async fn renew(&self) -> Result<(), NodeError> {
        let current = self.state();
        if let Some(file) = &self.platform_token_file {
            let (state, bundle) = platform_attest(&self.ca_url, &self.bundle(), file).await?;
            if state.spiffe_id != current.spiffe_id {
                return Err(NodeError::Local(format!(
                    "re-attestation returned {}, not {}",
                    state.spiffe_id, current.spiffe_id
                )));
            }
            self.set_bundle(bundle);
            *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
            return Ok(());
        }
        let (key, csr) = new_key_and_csr()?;
        let body = serde_json::to_vec(&api::RenewRequest { csr }).map_err(local)?;
        let reply = call(
            &current.client,
            hyper::Method::POST,
            "/v1/certs/renew",
            Some(body),
        )
        .await?;
        let issued: IssuedCertificate = serde_json::from_slice(&reply).map_err(local)?;
        let (state, bundle) = node_state(&self.ca_url, &issued, key)?;
        if state.spiffe_id != current.spiffe_id {
            return Err(NodeError::Local(format!(
                "renewal returned {}, not {}",
                state.spiffe_id, current.spiffe_id
            )));
        }
        self.set_bundle(bundle);
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
        if let Err(e) = self.persist() {
            // The renewal itself worked; only a restart would suffer.
            tracing::warn!(error = %e, "saving the renewed node identity in data_dir");
        }
        Ok(())
    }

    /// The entries parented to this node (to notice changes).
    pub async fn entries(&self) -> Result<Vec<api::Entry>, NodeError> {
        let reply = call(
            &self.state().client,
            hyper::Method::GET,
            "/v1/agent/entries",
            None,
        )
        .await?;
        let list: api::EntryList = serde_json::from_slice(&reply).map_err(local)?;
        Ok(list.items)
    }

    /// Fetches the trust bundle (X.509 anchors and JWT-SVID keys); true if
    /// either changed.
    pub async fn refresh_bundle(&self) -> Result<bool, NodeError> {
        let state = self.state();
        let client = &state.client;
        let reply = call(client, hyper::Method::GET, "/v1/bundle", None).await?;
        let anchors = tessera_core::pem::certs(&reply).map_err(local)?;
        if anchors.is_empty() {
            return Err(NodeError::Local("empty trust bundle".into()));
        }
        // The X.509 anchors count even if the JWT keys cannot be fetched.
        let anchors_changed = self.set_bundle(anchors);
        let doc = call(client, hyper::Method::GET, "/v1/bundle?format=jwks", None).await?;
        let jwt = JwtBundle::from_spiffe_bundle(std::str::from_utf8(&doc).map_err(local)?);
        let jwt_changed = {
            let mut b = self.jwt_bundle.write().unwrap_or_else(|p| p.into_inner());
            let changed = **b != jwt;
            if changed {
                *b = Arc::new(jwt);
            }
            changed
        };
        Ok(anchors_changed | jwt_changed)
    }

    /// The trust domain's JWT-SVID keys, as last fetched.
    pub fn jwt_bundle(&self) -> Arc<JwtBundle> {
        self.jwt_bundle
            .read()
            .map(|b| b.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Asks the CA for JWT-SVIDs (for `audience`) for every entry the
    /// attested workload matches, or only `spiffe_id`.
    pub async fn workload_jwt_svids(
        &self,
        attestation: &Attestation,
        audience: Vec<String>,
        spiffe_id: Option<String>,
    ) -> Result<Vec<api::JwtSvid>, NodeError> {
        let body = serde_json::to_vec(&api::AgentJwtSvidRequest {
            audience,
            spiffe_id,
            ttl_seconds: None,
            attestation: evidence(attestation),
        })
        .map_err(local)?;
        let reply = call(
            &self.state().client,
            hyper::Method::POST,
            "/v1/agent/jwt-svids",
            Some(body),
        )
        .await?;
        let resp: api::AgentJwtSvidResponse = serde_json::from_slice(&reply).map_err(local)?;
        Ok(resp.svids)
    }

    /// Asks the CA for every SVID the attested workload may have, for one
    /// key generated here.
    pub async fn workload_svids(
        &self,
        attestation: &Attestation,
    ) -> Result<Vec<WorkloadSvid>, NodeError> {
        let (key, csr) = new_key_and_csr()?;
        let body = serde_json::to_vec(&api::AgentSvidRequest {
            csr,
            spiffe_id: None,
            attestation: evidence(attestation),
        })
        .map_err(local)?;
        let reply = call(
            &self.state().client,
            hyper::Method::POST,
            "/v1/agent/svids",
            Some(body),
        )
        .await?;
        let resp: api::AgentSvidResponse = serde_json::from_slice(&reply).map_err(local)?;
        let key = Arc::new(key);
        let now = tessera_core::now_unix();
        let mut out = Vec::with_capacity(resp.svids.len());
        for issued in &resp.svids {
            let (chain, bundle, info) = parse_issued(issued)?;
            self.set_bundle(bundle);
            out.push(WorkloadSvid {
                spiffe_id: info.spiffe_id.to_string(),
                chain,
                key_pkcs8: key.clone(),
                serial: info.serial,
                not_after: info.not_after,
                received_at: now,
            });
        }
        Ok(out)
    }

    /// The node certificate chain (for diagnostics; never the key).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.state().chain.clone()
    }
}

/// One platform-token attestation: reads the token file, presents it with a
/// CSR for a new key, and checks the CA granted a node identity.
async fn platform_attest(
    ca_url: &str,
    anchors: &[CertificateDer<'static>],
    token_file: &std::path::Path,
) -> Result<(NodeState, Vec<CertificateDer<'static>>), NodeError> {
    let token =
        tessera_core::platform_jwt::read_token_file(token_file).map_err(NodeError::Local)?;
    let tls = tessera_core::tls::api_client_config(anchors, None, false).map_err(local)?;
    let client = Client::new(ca_url, tls, None).map_err(local)?;
    let (key, csr) = new_key_and_csr()?;
    let body = serde_json::to_vec(&api::PlatformAttestRequest {
        token,
        csr,
        spiffe_id: None,
    })
    .map_err(local)?;
    let reply = call(&client, hyper::Method::POST, "/v1/nodes/attest", Some(body)).await?;
    let issued: IssuedCertificate = serde_json::from_slice(&reply).map_err(local)?;
    let (state, bundle) = node_state(ca_url, &issued, key)?;
    let id = tessera_core::SpiffeId::new(&state.spiffe_id).map_err(local)?;
    if spiffe::node_name(id.path()).is_none() {
        return Err(NodeError::Local(format!(
            "the CA granted {}, not a node identity",
            state.spiffe_id
        )));
    }
    Ok((state, bundle))
}

/// The evidence the CA records, from an attestation.
pub fn evidence(a: &Attestation) -> api::WorkloadAttestation {
    let container = a.container.as_ref();
    let identity = container.map(|c| c.identity());
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    api::WorkloadAttestation {
        selectors: a.selectors.clone(),
        container_id: identity.map(|c| c.id.clone()),
        caller_container_id: container
            .filter(|c| c.serves.is_some())
            .map(|c| c.caller.id.clone()),
        image: identity.and_then(|c| non_empty(&c.image)),
        image_digest: identity.and_then(|c| non_empty(&c.image_id)),
        pod: identity.and_then(|c| c.pod.as_ref().map(|p| p.name.clone())),
    }
}
