//! Where the sidecar's identity comes from, behind one small interface so the
//! node agent's Workload API can slot in later. Keys are generated here, in
//! memory, and never written anywhere.

use std::sync::Arc;
use tessera_core::api::{IssuedCertificate, RedeemRequest, RenewRequest};
use tessera_core::client::Client;

/// Errors getting or renewing an identity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The CA could not be reached.
    #[error("CA unreachable: {0}")]
    Unreachable(String),
    /// The CA refused (status, problem text).
    #[error("CA refused ({0}): {1}")]
    Refused(u16, String),
    /// Local key, CSR or TLS setup failed.
    #[error("local: {0}")]
    Local(String),
}

/// An identity the sidecar holds: certificate chain, key, trust bundle.
#[derive(Clone)]
pub struct Svid {
    /// Leaf then intermediates (DER).
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// PKCS#8 key (DER), in memory only.
    key_der: Arc<Vec<u8>>,
    /// Trust anchors.
    pub bundle: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The SPIFFE ID.
    pub spiffe_id: String,
    /// Serial, hex.
    pub serial: String,
    /// notBefore, unix seconds.
    pub not_before: i64,
    /// notAfter, unix seconds.
    pub not_after: i64,
    /// When it arrived, unix seconds (renewal timing counts from here, not from
    /// the back-dated notBefore).
    pub received_at: i64,
}

impl std::fmt::Debug for Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl Svid {
    /// The key for rustls.
    pub fn key(&self) -> rustls::pki_types::PrivateKeyDer<'static> {
        rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.as_ref().clone().into())
    }

    /// A rustls signing key for this identity.
    pub fn certified_key(&self) -> Result<rustls::sign::CertifiedKey, IdentityError> {
        tessera_core::tls::certified_key(self.chain.clone(), self.key())
            .map_err(|e| IdentityError::Local(e.to_string()))
    }

    /// A CA API client authenticating with this identity.
    pub fn client(&self, ca_url: &str) -> Result<Client, IdentityError> {
        let tls = tessera_core::tls::api_client_config(
            &self.bundle,
            Some((self.chain.clone(), self.key())),
            false,
        )
        .map_err(|e| IdentityError::Local(e.to_string()))?;
        Client::new(ca_url, tls, None).map_err(|e| IdentityError::Local(e.to_string()))
    }
}

/// Something that can produce the first identity and renew it.
pub trait IdentitySource: Send + Sync {
    /// Gets the first identity.
    fn fetch(&self) -> impl std::future::Future<Output = Result<Svid, IdentityError>> + Send;
    /// Renews `current` (with a new key).
    fn renew(
        &self,
        current: &Svid,
    ) -> impl std::future::Future<Output = Result<Svid, IdentityError>> + Send;
}

/// Direct mode: a single-use join token for the first certificate, mTLS
/// renewal with the current one after that.
pub struct JoinTokenSource {
    ca_url: String,
    bootstrap: Vec<rustls::pki_types::CertificateDer<'static>>,
    token: std::sync::Mutex<Option<String>>,
}

impl JoinTokenSource {
    /// A source that redeems `token` at `ca_url`, trusting `bootstrap` to reach it.
    pub fn new(
        ca_url: String,
        bootstrap: Vec<rustls::pki_types::CertificateDer<'static>>,
        token: String,
    ) -> Self {
        Self {
            ca_url,
            bootstrap,
            token: std::sync::Mutex::new(Some(token)),
        }
    }
}

fn new_key_and_csr() -> Result<(Vec<u8>, String), IdentityError> {
    let key = rcgen::KeyPair::generate().map_err(|e| IdentityError::Local(e.to_string()))?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| IdentityError::Local(e.to_string()))?;
    Ok((key.serialize_der(), csr))
}

async fn post_for_cert(
    client: &Client,
    path: &str,
    body: Vec<u8>,
    key_der: Vec<u8>,
) -> Result<Svid, IdentityError> {
    let reply = client
        .call(hyper::Method::POST, path, Some(body))
        .await
        .map_err(|e| IdentityError::Unreachable(e.to_string()))?;
    if reply.status.as_u16() != 201 {
        return Err(IdentityError::Refused(
            reply.status.as_u16(),
            String::from_utf8_lossy(&reply.body).into_owned(),
        ));
    }
    let issued: IssuedCertificate = serde_json::from_slice(&reply.body)
        .map_err(|e| IdentityError::Local(format!("CA answer: {e}")))?;
    let mut chain = tessera_core::pem::certs(issued.certificate.as_bytes())
        .map_err(|e| IdentityError::Local(e.to_string()))?;
    if !issued.chain.is_empty() {
        chain.extend(
            tessera_core::pem::certs(issued.chain.as_bytes())
                .map_err(|e| IdentityError::Local(e.to_string()))?,
        );
    }
    let bundle = tessera_core::pem::certs(issued.bundle.as_bytes())
        .map_err(|e| IdentityError::Local(e.to_string()))?;
    let info = tessera_core::svid::check_leaf(&chain[0])
        .map_err(|e| IdentityError::Local(format!("issued certificate: {e}")))?;
    Ok(Svid {
        chain,
        key_der: Arc::new(key_der),
        bundle,
        spiffe_id: info.spiffe_id.to_string(),
        serial: info.serial,
        not_before: info.not_before,
        not_after: info.not_after,
        received_at: tessera_core::now_unix(),
    })
}

impl IdentitySource for JoinTokenSource {
    async fn fetch(&self) -> Result<Svid, IdentityError> {
        let token = self
            .token
            .lock()
            .ok()
            .and_then(|t| t.clone())
            .ok_or_else(|| IdentityError::Local("join token already redeemed".into()))?;
        let tls = tessera_core::tls::api_client_config(&self.bootstrap, None, false)
            .map_err(|e| IdentityError::Local(e.to_string()))?;
        let client = Client::new(&self.ca_url, tls, None)
            .map_err(|e| IdentityError::Local(e.to_string()))?;
        let (key, csr) = new_key_and_csr()?;
        let body = serde_json::to_vec(&RedeemRequest { token, csr })
            .map_err(|e| IdentityError::Local(e.to_string()))?;
        let svid = post_for_cert(&client, "/v1/certs/redeem", body, key).await?;
        // Single use: forget the token once it has worked.
        if let Ok(mut t) = self.token.lock() {
            *t = None;
        }
        Ok(svid)
    }

    async fn renew(&self, current: &Svid) -> Result<Svid, IdentityError> {
        let client = current.client(&self.ca_url)?;
        let (key, csr) = new_key_and_csr()?;
        let body = serde_json::to_vec(&RenewRequest { csr })
            .map_err(|e| IdentityError::Local(e.to_string()))?;
        post_for_cert(&client, "/v1/certs/renew", body, key).await
    }
}
