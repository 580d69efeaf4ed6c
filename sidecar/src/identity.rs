//! Where the sidecar's identity comes from, behind one small interface:
//! directly from the CA with a join token ([`JoinTokenSource`]; keys are
//! generated here, in memory), or from the node agent's SPIFFE Workload API
//! ([`WorkloadApiSource`]; the agent generates the key in memory and hands it
//! only to this process over the unix socket), or directly from the CA with
//! a platform token ([`PlatformTokenSource`]: a Kubernetes projected
//! service-account token or an OIDC token, re-read from its file for every
//! issuance). Keys are never written anywhere (unless `[svid_files]` asks
//! for them). Keys, SVIDs and the CA client are `tessera-workload`'s.

use std::sync::Arc;
use tessera_core::SpiffeId;
use tessera_core::api::{PlatformAttestRequest, RedeemRequest, RenewRequest};
use tessera_workload::{
    CaClient, CaError, Identity, KeyAlgorithm, PrivateKey, Svid, new_key_and_csr, split_der,
};
use zeroize::Zeroizing;

/// Errors getting or renewing an identity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A call to the CA failed (unreachable, refused, unusable answer).
    #[error(transparent)]
    Ca(#[from] CaError),
    /// Local key, CSR or TLS setup failed.
    #[error("local: {0}")]
    Local(String),
    /// The node agent's Workload API refused or failed (gRPC status and message).
    #[error("node agent: {0}")]
    Agent(String),
}

/// Something that can produce the first identity and renew it.
pub trait IdentitySource: Send + Sync {
    /// Gets the first identity.
    fn fetch(&self) -> impl std::future::Future<Output = Result<Identity, IdentityError>> + Send;
    /// Renews `current` (with a new key).
    fn renew(
        &self,
        current: &Identity,
    ) -> impl std::future::Future<Output = Result<Identity, IdentityError>> + Send;
    /// True if the source pushes new identities itself: the renewal loop
    /// then calls [`IdentitySource::renew`] at once, and `renew` waits for
    /// the next push (the Workload API stream).
    fn pushes_updates(&self) -> bool {
        false
    }
}

/// Direct mode: a single-use join token for the first certificate, mTLS
/// renewal with the current one after that.
pub struct JoinTokenSource {
    ca_url: String,
    bootstrap: Vec<rustls::pki_types::CertificateDer<'static>>,
    token: std::sync::Mutex<Option<Zeroizing<String>>>,
}

impl JoinTokenSource {
    /// A source that redeems `token` at `ca_url`, trusting `bootstrap` to reach it.
    pub fn new(
        ca_url: String,
        bootstrap: Vec<rustls::pki_types::CertificateDer<'static>>,
        token: Zeroizing<String>,
    ) -> Self {
        Self {
            ca_url,
            bootstrap,
            token: std::sync::Mutex::new(Some(token)),
        }
    }
}

fn key_and_csr() -> Result<(PrivateKey, String), IdentityError> {
    new_key_and_csr(KeyAlgorithm::EcdsaP256).map_err(|e| IdentityError::Local(e.to_string()))
}

impl IdentitySource for JoinTokenSource {
    async fn fetch(&self) -> Result<Identity, IdentityError> {
        let token = self
            .token
            .lock()
            .ok()
            .and_then(|t| t.as_ref().map(|t| t.to_string()))
            .ok_or_else(|| IdentityError::Local("join token already redeemed".into()))?;
        let client = CaClient::new(&self.ca_url, &self.bootstrap, None)?;
        let (key, csr) = key_and_csr()?;
        let issued = client
            .issue("/v1/certs/redeem", &RedeemRequest { token, csr }, key)
            .await?;
        // Single use: forget the token once it has worked.
        if let Ok(mut t) = self.token.lock() {
            *t = None;
        }
        Ok(issued.identity)
    }

    async fn renew(&self, current: &Identity) -> Result<Identity, IdentityError> {
        let client = CaClient::new(&self.ca_url, &current.bundle, Some(&current.svid))?;
        let (key, csr) = key_and_csr()?;
        let issued = client
            .issue("/v1/certs/renew", &RenewRequest { csr }, key)
            .await?;
        Ok(issued.identity)
    }
}

/// Direct mode with a platform token: every issuance (the first and each
/// renewal) reads the token file again and presents it with a CSR for a new
/// key to `POST /v1/svids/platform`, so each certificate rests on a fresh
/// attestation (and a token the platform has stopped renewing stops the
/// identity at the next renewal).
pub struct PlatformTokenSource {
    ca_url: String,
    bootstrap: Vec<rustls::pki_types::CertificateDer<'static>>,
    token_file: std::path::PathBuf,
    spiffe_id: Option<SpiffeId>,
}

impl PlatformTokenSource {
    /// A source presenting the token in `token_file` at `ca_url`, trusting
    /// `bootstrap` to reach the CA the first time (then the current bundle).
    pub fn new(
        ca_url: String,
        bootstrap: Vec<rustls::pki_types::CertificateDer<'static>>,
        token_file: std::path::PathBuf,
        spiffe_id: Option<SpiffeId>,
    ) -> Self {
        Self {
            ca_url,
            bootstrap,
            token_file,
            spiffe_id,
        }
    }

    async fn issue(
        &self,
        anchors: &[rustls::pki_types::CertificateDer<'static>],
    ) -> Result<Identity, IdentityError> {
        let token = tessera_core::platform_jwt::read_token_file(&self.token_file)
            .map_err(IdentityError::Local)?;
        let client = CaClient::new(&self.ca_url, anchors, None)?;
        let (key, csr) = key_and_csr()?;
        let body = PlatformAttestRequest {
            token,
            csr,
            spiffe_id: self.spiffe_id.as_ref().map(SpiffeId::to_string),
        };
        Ok(client
            .issue("/v1/svids/platform", &body, key)
            .await?
            .identity)
    }
}

impl IdentitySource for PlatformTokenSource {
    async fn fetch(&self) -> Result<Identity, IdentityError> {
        self.issue(&self.bootstrap).await
    }

    async fn renew(&self, current: &Identity) -> Result<Identity, IdentityError> {
        // The current bundle, not the bootstrap file: it follows CA rotations.
        self.issue(&current.bundle).await
    }
}

/// Identity from the node agent's SPIFFE Workload API (`FetchX509SVID`): the
/// first message of the stream is the first identity; each later message
/// carrying a different certificate is a renewal. When the stream ends (agent
/// restart, refusal) the next call re-opens it.
pub struct WorkloadApiSource {
    client: tessera_workload_api::Client,
    spiffe_id: Option<SpiffeId>,
    stream:
        tokio::sync::Mutex<Option<tonic::codec::Streaming<tessera_workload_api::X509SvidResponse>>>,
}

impl WorkloadApiSource {
    /// A source reading the socket at `socket` (`unix:///path`), or
    /// `SPIFFE_ENDPOINT_SOCKET` when `socket` is None; `spiffe_id` picks one
    /// of several SVIDs (default: the first).
    pub fn new(socket: Option<&str>, spiffe_id: Option<SpiffeId>) -> Result<Self, IdentityError> {
        let path = tessera_workload_api::socket_path(socket)
            .map_err(|e| IdentityError::Local(e.to_string()))?;
        let client = tessera_workload_api::Client::new(&path)
            .map_err(|e| IdentityError::Local(e.to_string()))?;
        Ok(Self {
            client,
            spiffe_id,
            stream: tokio::sync::Mutex::new(None),
        })
    }

    /// The next message of the stream (opening it if needed), as an identity.
    async fn next(&self) -> Result<Identity, IdentityError> {
        let mut guard = self.stream.lock().await;
        if guard.is_none() {
            let mut client = self.client.clone();
            let s = client
                .fetch_x509_svid()
                .await
                .map_err(|e| IdentityError::Agent(e.to_string()))?;
            *guard = Some(s);
        }
        let Some(stream) = guard.as_mut() else {
            return Err(IdentityError::Local("no stream".into()));
        };
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                *guard = None;
                return Err(IdentityError::Agent("the Workload API stream ended".into()));
            }
            Err(status) => {
                *guard = None;
                return Err(IdentityError::Agent(format!(
                    "{:?}: {}",
                    status.code(),
                    status.message()
                )));
            }
        };
        let chosen = match &self.spiffe_id {
            Some(id) => msg.svids.iter().find(|s| s.spiffe_id == id.as_str()),
            None => msg.svids.first(),
        }
        .ok_or_else(|| {
            IdentityError::Agent(format!(
                "the agent returned no SVID for {}",
                self.spiffe_id
                    .as_ref()
                    .map_or("this workload", SpiffeId::as_str)
            ))
        })?;
        let bad = |what: String| IdentityError::Local(format!("SVID from the agent: {what}"));
        let key = Arc::new(PrivateKey::from_pkcs8_der(chosen.x509_svid_key.to_vec()));
        let svid = Svid::from_der(&chosen.x509_svid, key).map_err(|e| bad(e.to_string()))?;
        let bundle = split_der(&chosen.bundle).map_err(|e| bad(format!("bundle: {e}")))?;
        if svid.spiffe_id().as_str() != chosen.spiffe_id {
            return Err(IdentityError::Local(
                "the agent's SVID does not carry the SPIFFE ID it was announced with".into(),
            ));
        }
        Ok(Identity { svid, bundle })
    }
}

impl IdentitySource for WorkloadApiSource {
    async fn fetch(&self) -> Result<Identity, IdentityError> {
        self.next().await
    }

    async fn renew(&self, current: &Identity) -> Result<Identity, IdentityError> {
        // Bundle-only pushes repeat the certificate: wait for a new one.
        loop {
            let next = self.next().await?;
            if next.svid.serial() != current.svid.serial() || next.bundle != current.bundle {
                return Ok(next);
            }
        }
    }

    fn pushes_updates(&self) -> bool {
        true
    }
}
