//! The agent's link to the CA: its node identity and the calls it makes with it.
//!
//! The agent attests itself once, redeeming a join token for its node entry
//! (`spiffe://<td>/tessera/agent/<node-name>`), and renews that certificate
//! at half its lifetime ([`RENEWAL`]) over mTLS like any workload. With it the agent asks
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
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tessera_core::api;
use tessera_core::spiffe;
use tessera_core::{SpiffeId, TrustDomain};
use tessera_workload::{
    CaClient, CaError, Identity, KeyAlgorithm, PrivateKey, RenewalPolicy, Svid, bad_certificate,
    new_key_and_csr,
};

use crate::attest::Attestation;

/// When the agent renews its node certificate and workloads' SVIDs: at half
/// their lifetime, without jitter (streams push at a time one can count
/// on); a failed node renewal is retried every 5 s.
pub const RENEWAL: RenewalPolicy =
    RenewalPolicy::at(0.5).retry(Duration::from_secs(5), Duration::from_secs(5));

/// Errors talking to the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The call failed: the CA is unreachable, refused, or answered
    /// something unusable.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// Local key, CSR, identity or storage failure.
    #[error("local: {0}")]
    Local(String),
}

impl NodeError {
    /// Whether the CA refused the node itself (banned, unknown, revoked):
    /// a 401, or a 403 `node_refused`.
    pub fn node_refused(&self) -> bool {
        match self {
            NodeError::Ca(e) => e
                .refusal()
                .is_some_and(|r| r.status == 401 || r.code() == "node_refused"),
            NodeError::Local(_) => false,
        }
    }
}

fn local(e: impl std::fmt::Display) -> NodeError {
    NodeError::Local(e.to_string())
}

/// The node's own identity and the client that presents it.
struct NodeState {
    svid: Svid,
    client: CaClient,
}

impl NodeState {
    /// `svid`, reaching the CA at `ca_url` with `anchors`.
    fn new(
        ca_url: &str,
        svid: Svid,
        anchors: &[CertificateDer<'static>],
    ) -> Result<Self, NodeError> {
        let client = CaClient::new(ca_url, anchors, Some(&svid))?;
        Ok(Self { svid, client })
    }

    /// The identity the CA just issued, checked to be a node identity
    /// (`what` names the step for the error), reaching the CA with its bundle.
    fn issued(ca_url: &str, identity: Identity, what: &str) -> Result<Self, NodeError> {
        if spiffe::node_name(identity.svid.spiffe_id().path()).is_none() {
            return Err(NodeError::Local(format!(
                "{what} granted {}, not a node identity (spiffe://<td>{}<name>)",
                identity.svid.spiffe_id(),
                spiffe::NODE_PATH_PREFIX
            )));
        }
        Self::new(ca_url, identity.svid, &identity.bundle)
    }
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

/// Foreign X.509 authorities by trust domain ID (`spiffe://<td>`, as the
/// Workload API keys `federated_bundles`).
pub type Federated = std::collections::BTreeMap<String, Vec<CertificateDer<'static>>>;

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

/// A fresh key and CSR, as the agent's errors report them.
fn key_and_csr() -> Result<(PrivateKey, String), NodeError> {
    new_key_and_csr(KeyAlgorithm::EcdsaP256).map_err(local)
}

/// A workload's SVID with its entry's Workload API hint (empty: none).
#[derive(Debug, Clone)]
pub struct WorkloadSvid {
    /// The SVID.
    pub svid: Svid,
    /// The entry's hint.
    pub hint: String,
}

impl NodeLink {
    fn with_state(
        ca_url: &str,
        platform_token_file: Option<PathBuf>,
        state: NodeState,
        bundle: Vec<CertificateDer<'static>>,
    ) -> Self {
        Self {
            ca_url: ca_url.to_owned(),
            platform_token_file,
            state: RwLock::new(Arc::new(state)),
            bundle: RwLock::new(Arc::new(bundle)),
            jwt_bundle: RwLock::new(Arc::default()),
            data_dir: None,
        }
    }

    /// Attests the node: redeems `join_token` at `ca_url` (trusting
    /// `bootstrap` to reach it). The token is consumed and not kept.
    pub async fn attest(
        ca_url: &str,
        bootstrap: &[CertificateDer<'static>],
        join_token: zeroize::Zeroizing<String>,
    ) -> Result<Self, NodeError> {
        let client = CaClient::new(ca_url, bootstrap, None)?;
        let (key, csr) = key_and_csr()?;
        let body = api::RedeemRequest {
            token: join_token.to_string(),
            csr,
        };
        let issued = client.issue("/v1/certs/redeem", &body, key).await?;
        let bundle = issued.identity.bundle.clone();
        let state = NodeState::issued(ca_url, issued.identity, "the join token")?;
        Ok(Self::with_state(ca_url, None, state, bundle))
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
        Ok(Self::with_state(ca_url, Some(token_file), state, bundle))
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
        let svid = Svid::new(stored.chain, Arc::new(stored.key), tessera_core::now_unix())
            .map_err(|e| NodeError::Local(format!("node certificate: {e}")))?;
        // A minute of margin: the renewal must reach the CA before expiry.
        if svid.not_after() <= tessera_core::now_unix() + 60 {
            tracing::warn!(
                dir = %dir.display(),
                not_after = svid.not_after(),
                "the stored node certificate has expired; a new join token is needed"
            );
            return Ok(None);
        }
        if spiffe::node_name(svid.spiffe_id().path()).is_none() {
            return Err(NodeError::Local(format!(
                "{}: the stored certificate is for {}, not a node identity",
                dir.display(),
                svid.spiffe_id()
            )));
        }
        let state = NodeState::new(ca_url, svid, &anchors)?;
        let mut link = Self::with_state(ca_url, None, state, stored.bundle);
        link.data_dir = Some(dir.to_owned());
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
        let svid = &self.state().svid;
        crate::data_dir::save(dir, svid.chain(), svid.key(), &self.bundle()).map_err(local)
    }

    fn state(&self) -> Arc<NodeState> {
        self.state
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set_state(&self, state: NodeState) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
    }

    /// The node's SPIFFE ID.
    pub fn spiffe_id(&self) -> SpiffeId {
        self.state().svid.spiffe_id().clone()
    }

    /// The node's trust domain.
    pub fn trust_domain(&self) -> TrustDomain {
        self.state().svid.spiffe_id().trust_domain()
    }

    /// When the node certificate should be renewed ([`RENEWAL`]), unix seconds.
    pub fn renew_at(&self) -> i64 {
        RENEWAL.renew_at_secs(self.lifetime())
    }

    /// The node certificate's lifetime, from receipt.
    pub fn lifetime(&self) -> tessera_workload::Lifetime {
        self.state().svid.lifetime()
    }

    /// The node certificate's notAfter, unix seconds.
    pub fn not_after(&self) -> i64 {
        self.state().svid.not_after()
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
        let (state, bundle) = match &self.platform_token_file {
            Some(file) => platform_attest(&self.ca_url, &self.bundle(), file).await?,
            None => {
                let (key, csr) = key_and_csr()?;
                let issued = current
                    .client
                    .issue("/v1/certs/renew", &api::RenewRequest { csr }, key)
                    .await?;
                let bundle = issued.identity.bundle.clone();
                (
                    NodeState::issued(&self.ca_url, issued.identity, "renewal")?,
                    bundle,
                )
            }
        };
        if state.svid.spiffe_id() != current.svid.spiffe_id() {
            let what = if self.platform_token_file.is_some() {
                "re-attestation"
            } else {
                "renewal"
            };
            return Err(NodeError::Local(format!(
                "{what} returned {}, not {}",
                state.svid.spiffe_id(),
                current.svid.spiffe_id()
            )));
        }
        self.set_bundle(bundle);
        self.set_state(state);
        if let Err(e) = self.persist() {
            // The renewal itself worked; only a restart would suffer.
            tracing::warn!(error = %e, "saving the renewed node identity in data_dir");
        }
        Ok(())
    }

    /// The entries parented to this node (to notice changes).
    pub async fn entries(&self) -> Result<Vec<api::Entry>, NodeError> {
        let list: api::EntryList = self.state().client.get_json("/v1/agent/entries").await?;
        Ok(list.items)
    }

    /// Fetches the foreign bundles this node's workloads may receive (their
    /// entries' `federates_with`), X.509 authorities by trust domain; each
    /// is parsed by the one bundle parser for the domain it is filed under,
    /// and one that does not parse is left out (logged).
    pub async fn federated_bundles(&self) -> Result<Federated, NodeError> {
        let got: api::AgentFederatedBundles = self
            .state()
            .client
            .get_json("/v1/agent/federated-bundles")
            .await?;
        let mut out = Federated::new();
        for (td, doc) in got.bundles {
            let parsed = TrustDomain::new(&td)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    tessera_core::bundle::SpiffeBundle::parse(&t, doc.as_bytes())
                        .map_err(|e| e.to_string())
                });
            match parsed {
                Ok(b) => {
                    out.insert(b.trust_domain.id_string(), b.x509_authorities);
                }
                Err(e) => {
                    tracing::warn!(trust_domain = %td, error = %e, "federated bundle refused")
                }
            }
        }
        Ok(out)
    }

    /// Fetches the trust bundle (X.509 anchors and JWT-SVID keys); true if
    /// either changed.
    pub async fn refresh_bundle(&self) -> Result<bool, NodeError> {
        let state = self.state();
        let client = &state.client;
        let pem = client.get_ok("/v1/bundle").await?;
        let anchors = tessera_core::pem::certs(&pem).map_err(local)?;
        if anchors.is_empty() {
            return Err(NodeError::Local("empty trust bundle".into()));
        }
        // The X.509 anchors count even if the JWT keys cannot be fetched.
        let anchors_changed = self.set_bundle(anchors);
        let doc = client.get_ok("/v1/bundle?format=jwks").await?;
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
        let body = api::AgentJwtSvidRequest {
            audience,
            spiffe_id,
            ttl_seconds: None,
            attestation: evidence(attestation),
        };
        let resp: api::AgentJwtSvidResponse = self.ask("/v1/agent/jwt-svids", &body).await?;
        Ok(resp.svids)
    }

    /// Asks the CA for every SVID the attested workload may have, for one
    /// key generated here (shared by the SVIDs of this answer, which all go
    /// to the same process), in the CA's order (the default first), each
    /// with its entry's hint.
    pub async fn workload_svids(
        &self,
        attestation: &Attestation,
    ) -> Result<Vec<WorkloadSvid>, NodeError> {
        let (key, csr) = key_and_csr()?;
        let body = api::AgentSvidRequest {
            csr,
            spiffe_id: None,
            attestation: evidence(attestation),
        };
        let resp: api::AgentSvidResponse = self.ask("/v1/agent/svids", &body).await?;
        let key = Arc::new(key);
        let mut out = Vec::with_capacity(resp.svids.len());
        for issued in &resp.svids {
            let identity = Identity::from_issued(issued, key.clone()).map_err(bad_certificate)?;
            self.set_bundle(identity.bundle);
            out.push(WorkloadSvid {
                svid: identity.svid,
                hint: issued.hint.clone().unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// A POST as the node, its JSON answer parsed.
    async fn ask<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, NodeError> {
        Ok(self.state().client.post_json(path, body).await?)
    }

    /// The node certificate chain (for diagnostics; never the key).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.state().svid.chain().to_vec()
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
    let client = CaClient::new(ca_url, anchors, None)?;
    let (key, csr) = key_and_csr()?;
    let body = api::PlatformAttestRequest {
        token,
        csr,
        spiffe_id: None,
    };
    let issued = client.issue("/v1/nodes/attest", &body, key).await?;
    let bundle = issued.identity.bundle.clone();
    Ok((
        NodeState::issued(ca_url, issued.identity, "the CA")?,
        bundle,
    ))
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
