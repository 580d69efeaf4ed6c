//! The one place that chooses the crypto provider and builds rustls configurations.
//!
//! Architecture invariant: no other module calls a rustls `builder()`; everything
//! goes through `builder_with_provider(provider())` here, so exactly one provider
//! (ring) is ever in use and rustls cannot panic at run time over provider choice.

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::sync::{Arc, OnceLock};

/// Errors while building TLS configurations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls refused the configuration or key.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built (usually: no trust anchors).
    #[error("client verifier: {0}")]
    Verifier(String),
    /// No usable trust anchors were given.
    #[error("no usable trust anchors")]
    NoAnchors,
}

/// The crypto provider every Tessera TLS configuration uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Builds a root store from DER certificates, failing if none is usable.
pub fn root_store(anchors: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(anchors.iter().cloned());
    if added == 0 {
        return Err(TlsError::NoAnchors);
    }
    Ok(roots)
}

/// Loads a certificate chain and private key into a rustls signing key.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    Ok(CertifiedKey::from_der(chain, key, &provider())?)
}

/// Server configuration that asks for, but does not require, a client certificate
/// chaining to `client_anchors` (the CA API: tokens and join tokens need no cert).
pub fn server_config_optional_client_auth(
    client_anchors: &[CertificateDer<'static>],
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<ServerConfig, TlsError> {
    let roots = Arc::new(root_store(client_anchors)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Client configuration for talking to the CA API over HTTPS: the server is
/// verified the ordinary web-PKI way (DNS name or IP) against `anchors`;
/// `client` is an optional client certificate and key.
pub fn api_client_config(
    anchors: &[CertificateDer<'static>],
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    http2: bool,
) -> Result<ClientConfig, TlsError> {
    let roots = Arc::new(root_store(anchors)?);
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_webpki_verifier(verifier);
    let mut cfg = match client {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(cfg)
}
