//! Where the sidecar's identity comes from, behind one small interface:
//! directly from the CA with a join token ([`JoinTokenSource`]; keys are
//! generated here, in memory), or from the node agent's SPIFFE Workload API
//! ([`WorkloadApiSource`]; the agent generates the key in memory and hands it
//! only to this process over the unix socket), or directly from the CA with
//! a platform token ([`PlatformTokenSource`]: a Kubernetes projected
//! service-account token or an OIDC token, re-read from its file for every
//! issuance). Keys are never written anywhere (unless `[svid_files]` asks
//! for them).

use std::sync::Arc;
use tessera_core::api::{IssuedCertificate, PlatformAttestRequest, RedeemRequest, RenewRequest};
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
    /// The node agent's Workload API refused or failed (gRPC status and message).
    #[error("node agent: {0}")]
    Agent(String),
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

/// Direct mode with a platform token: every issuance (the first and each
/// renewal) reads the token file again and presents it with a CSR for a new
/// key to `POST /v1/svids/platform`, so each certificate rests on a fresh
/// attestation (and a token the platform has stopped renewing stops the
/// identity at the next renewal).
pub struct PlatformTokenSource {
    ca_url: String,
    bootstrap: Vec<rustls::pki_types::CertificateDer<'static>>,
    token_file: std::path::PathBuf,
    spiffe_id: Option<String>,
}

impl PlatformTokenSource {
    /// A source presenting the token in `token_file` at `ca_url`, trusting
    /// `bootstrap` to reach the CA the first time (then the current bundle).
    pub fn new(
        ca_url: String,
        bootstrap: Vec<rustls::pki_types::CertificateDer<'static>>,
        token_file: std::path::PathBuf,
        spiffe_id: Option<String>,
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
    ) -> Result<Svid, IdentityError> {
        let token = tessera_core::platform_jwt::read_token_file(&self.token_file)
            .map_err(IdentityError::Local)?;
        let tls = tessera_core::tls::api_client_config(anchors, None, false)
            .map_err(|e| IdentityError::Local(e.to_string()))?;
        let client = Client::new(&self.ca_url, tls, None)
            .map_err(|e| IdentityError::Local(e.to_string()))?;
        let (key, csr) = new_key_and_csr()?;
        let body = serde_json::to_vec(&PlatformAttestRequest {
            token,
            csr,
            spiffe_id: self.spiffe_id.clone(),
        })
        .map_err(|e| IdentityError::Local(e.to_string()))?;
        post_for_cert(&client, "/v1/svids/platform", body, key).await
    }
}

impl IdentitySource for PlatformTokenSource {
    async fn fetch(&self) -> Result<Svid, IdentityError> {
        self.issue(&self.bootstrap).await
    }

    async fn renew(&self, current: &Svid) -> Result<Svid, IdentityError> {
        // The current bundle, not the bootstrap file: it follows CA rotations.
        self.issue(&current.bundle).await
    }
}

/// Identity from the node agent's SPIFFE Workload API (`FetchX509SVID`): the
/// first message of the stream is the first identity; each later message
/// carrying a different certificate is a renewal. When the stream ends (agent
/// restart, refusal) the next call re-opens it.
pub struct WorkloadApiSource {
    client: tessera_agent::workload_api::Client,
    spiffe_id: Option<String>,
    stream: tokio::sync::Mutex<
        Option<tonic::codec::Streaming<tessera_agent::workload_api::X509SvidResponse>>,
    >,
}

impl WorkloadApiSource {
    /// A source reading the socket at `socket` (`unix:///path`), or
    /// `SPIFFE_ENDPOINT_SOCKET` when `socket` is None; `spiffe_id` picks one
    /// of several SVIDs (default: the first).
    pub fn new(socket: Option<&str>, spiffe_id: Option<String>) -> Result<Self, IdentityError> {
        let path = tessera_agent::workload_api::socket_path(socket)
            .map_err(|e| IdentityError::Local(e.to_string()))?;
        let client = tessera_agent::workload_api::Client::new(&path)
            .map_err(|e| IdentityError::Local(e.to_string()))?;
        Ok(Self {
            client,
            spiffe_id,
            stream: tokio::sync::Mutex::new(None),
        })
    }

    /// The next message of the stream (opening it if needed), as an identity.
    async fn next(&self) -> Result<Svid, IdentityError> {
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
            Some(id) => msg.svids.iter().find(|s| &s.spiffe_id == id),
            None => msg.svids.first(),
        }
        .ok_or_else(|| {
            IdentityError::Agent(format!(
                "the agent returned no SVID for {}",
                self.spiffe_id.as_deref().unwrap_or("this workload")
            ))
        })?;
        let chain = split_der(&chosen.x509_svid)?;
        let bundle = split_der(&chosen.bundle)?;
        let info = tessera_core::svid::check_leaf(&chain[0])
            .map_err(|e| IdentityError::Local(format!("SVID from the agent: {e}")))?;
        if info.spiffe_id.as_str() != chosen.spiffe_id {
            return Err(IdentityError::Local(
                "the agent's SVID does not carry the SPIFFE ID it was announced with".into(),
            ));
        }
        Ok(Svid {
            chain,
            key_der: Arc::new(chosen.x509_svid_key.to_vec()),
            bundle,
            spiffe_id: info.spiffe_id.to_string(),
            serial: info.serial,
            not_before: info.not_before,
            not_after: info.not_after,
            received_at: tessera_core::now_unix(),
        })
    }
}

/// Splits concatenated DER certificates (the Workload API's encoding).
fn split_der(
    mut der: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, IdentityError> {
    let bad = || IdentityError::Local("malformed DER certificate list from the agent".into());
    let mut out = Vec::new();
    while !der.is_empty() {
        if der.len() < 2 || der[0] != 0x30 {
            return Err(bad());
        }
        let (len, header) = match der[1] {
            n if n < 0x80 => (n as usize, 2),
            0x81 if der.len() >= 3 => (der[2] as usize, 3),
            0x82 if der.len() >= 4 => (((der[2] as usize) << 8) | der[3] as usize, 4),
            0x83 if der.len() >= 5 => (
                ((der[2] as usize) << 16) | ((der[3] as usize) << 8) | der[4] as usize,
                5,
            ),
            _ => return Err(bad()),
        };
        let total = header + len;
        if total > der.len() {
            return Err(bad());
        }
        out.push(rustls::pki_types::CertificateDer::from(
            der[..total].to_vec(),
        ));
        der = &der[total..];
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

impl IdentitySource for WorkloadApiSource {
    async fn fetch(&self) -> Result<Svid, IdentityError> {
        self.next().await
    }

    async fn renew(&self, current: &Svid) -> Result<Svid, IdentityError> {
        // Bundle-only pushes repeat the certificate: wait for a new one.
        loop {
            let next = self.next().await?;
            if next.serial != current.serial || next.bundle != current.bundle {
                return Ok(next);
            }
        }
    }

    fn pushes_updates(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_concatenated_der() {
        let a = [0x30, 0x03, 1, 2, 3];
        let mut b = vec![0x30, 0x81, 0x80];
        b.extend(std::iter::repeat_n(7u8, 0x80));
        let joined: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        let out = split_der(&joined).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ref(), &a[..]);
        assert_eq!(out[1].as_ref(), &b[..]);
        assert!(split_der(&[0x30, 0x05, 1]).is_err());
        assert!(split_der(&[]).is_err());
        assert!(split_der(&[0x31, 0x00]).is_err());
    }
}
