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

use crate::SpiffeId;

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

/// Server configuration without client authentication (the SPIFFE bundle
/// endpoint and the OIDC discovery document: public by design).
pub fn server_config_no_client_auth(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<ServerConfig, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The handshake-signature methods of a verifier that wraps a webpki
/// verifier in `self.inner` (the same for the client and server traits).
macro_rules! inner_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    };
}

/// Client configuration for an ordinary HTTPS server (a webhook receiver, a
/// JWKS URL): verified the web-PKI way (DNS name or IP) against `anchors`;
/// `client` is an optional client certificate and key. Never for the CA: use
/// [`api_client_config`].
pub fn webpki_client_config(
    anchors: &[CertificateDer<'static>],
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    http2: bool,
) -> Result<ClientConfig, TlsError> {
    let verifier = webpki_server_verifier(anchors)?;
    client_config(verifier, client, http2)
}

/// Client configuration for the CA API (CLI, sidecar, agent, `tessera cert
/// renew`): the server must present a certificate that chains to `anchors`,
/// is valid for the name dialled (web-PKI, as before) and, what authenticates
/// it, is an X.509-SVID for the CA server's own SPIFFE ID
/// (`spiffe://<td>/tessera/ca-server`, see [`CaServerIdentity::for_client`]
/// for where `<td>` comes from). A workload certificate carrying the same DNS
/// name is refused with [`SpiffeRefusal::NotTheCa`].
pub fn api_client_config(
    anchors: &[CertificateDer<'static>],
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    http2: bool,
) -> Result<ClientConfig, TlsError> {
    let ca = CaServerIdentity::for_client(anchors, client.as_ref().and_then(|(c, _)| c.first()));
    let verifier = Arc::new(CaServerVerifier {
        inner: webpki_server_verifier(anchors)?,
        ca,
    });
    client_config(verifier, client, http2)
}

fn webpki_server_verifier(
    anchors: &[CertificateDer<'static>],
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let roots = Arc::new(root_store(anchors)?);
    WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))
}

fn client_config(
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    http2: bool,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
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

/// Which SPIFFE ID a CA client accepts on the server certificate: the CA
/// server's path, [`crate::spiffe::CA_SERVER_PATH`], in a known trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaServerIdentity {
    /// `spiffe://<td>/tessera/ca-server` in one of these trust domains.
    In(Vec<crate::TrustDomain>),
    /// The CA server's path in any trust domain: only when neither the
    /// client's own certificate nor the anchors name a trust domain (an
    /// operator root without a URI SAN, before the client has an identity).
    AnyTrustDomain,
}

impl CaServerIdentity {
    /// The trust domain of the client's own certificate if it is an
    /// X.509-SVID (a client talks to its own trust domain's CA), else those
    /// the anchors name by their `spiffe://<td>` URI SAN (Tessera's CA
    /// certificates always carry one), else any.
    pub fn for_client(
        anchors: &[CertificateDer<'_>],
        client_leaf: Option<&CertificateDer<'_>>,
    ) -> Self {
        if let Some(id) = client_leaf.and_then(|c| crate::svid::peer_spiffe_id(c).ok()) {
            return Self::In(vec![id.trust_domain()]);
        }
        let mut tds: Vec<_> = anchors
            .iter()
            .filter_map(|a| crate::svid::signing_trust_domain(a))
            .collect();
        tds.sort();
        tds.dedup();
        if tds.is_empty() {
            Self::AnyTrustDomain
        } else {
            Self::In(tds)
        }
    }

    /// Whether `id` is the CA server.
    pub fn accepts(&self, id: &SpiffeId) -> bool {
        id.path() == crate::spiffe::CA_SERVER_PATH
            && match self {
                Self::In(tds) => tds.iter().any(|td| id.is_member_of(td)),
                Self::AnyTrustDomain => true,
            }
    }
}

impl std::fmt::Display for CaServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = crate::spiffe::CA_SERVER_PATH;
        match self {
            Self::In(tds) => {
                let ids: Vec<_> = tds
                    .iter()
                    .map(|td| format!("spiffe://{td}{path}"))
                    .collect();
                f.write_str(&ids.join(" or "))
            }
            Self::AnyTrustDomain => write!(f, "spiffe://<trust domain>{path}"),
        }
    }
}

/// The CA client's verifier: rustls's web-PKI check (chain, validity, the
/// name dialled), then the SPIFFE ID, which is what authenticates the CA:
/// any workload of the trust domain can hold a certificate for a DNS name.
#[derive(Debug)]
struct CaServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    ca: CaServerIdentity,
}

impl rustls::client::danger::ServerCertVerifier for CaServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let ok =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        match crate::svid::peer_spiffe_id(end_entity) {
            Ok(id) if self.ca.accepts(&id) => Ok(ok),
            other => Err(SpiffeRefusal::NotTheCa {
                peer: other.ok(),
                expected: self.ca.to_string(),
            }
            .into()),
        }
    }

    inner_signatures!();
}

/// Serials (lowercase hex) of revoked certificates with their notAfter (unix
/// seconds), shared by every verifier of a process and updated by the
/// revocation-feed follower. A serial is kept only while its certificate is
/// valid: once expired the chain check refuses it anyway, so the set stays
/// the size of the live revocations, not of all history.
#[derive(Debug, Default)]
pub struct RevokedSerials(std::sync::RwLock<std::collections::HashMap<String, i64>>);

impl RevokedSerials {
    /// Whether `serial` is revoked.
    pub fn contains(&self, serial: &str) -> bool {
        self.0
            .read()
            .map(|s| s.contains_key(serial))
            .unwrap_or(false)
    }

    /// Adds revoked `(serial, not_after)` pairs and drops every serial whose
    /// certificate has expired by `now` (unix seconds), new ones included.
    pub fn extend(&self, serials: impl IntoIterator<Item = (String, i64)>, now: i64) {
        if let Ok(mut s) = self.0.write() {
            s.extend(serials);
            s.retain(|_, not_after| *not_after >= now);
        }
    }

    /// Drops every serial whose certificate has expired by `now`.
    pub fn prune(&self, now: i64) {
        self.extend([], now);
    }

    /// How many serials are held.
    pub fn len(&self) -> usize {
        self.0.read().map(|s| s.len()).unwrap_or(0)
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a SPIFFE verifier refused a peer's certificate. It travels through
/// rustls as `Error::InvalidCertificate(CertificateError::Other(..))` (the
/// peer receives a `certificate_unknown` alert) and is read back on this side
/// with [`SpiffeRefusal::of`] / [`SpiffeRefusal::of_io`], so whoever logs the
/// refusal knows the reason and, where the certificate parsed, the SPIFFE
/// ID it names.
///
/// The ID is authenticated only where the chain verified ([`Self::Revoked`],
/// [`Self::WrongSpiffeId`]); elsewhere it is what the certificate claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeRefusal {
    /// The chain does not lead to a trust anchor of the bundle (unknown
    /// issuer, bad signature, malformed or unusable certificate).
    #[error("peer certificate not trusted: {reason}")]
    UntrustedChain {
        /// What the chain check said.
        reason: String,
        /// The SPIFFE ID the certificate names, if it parsed.
        peer: Option<SpiffeId>,
    },
    /// The certificate has expired or is not valid yet.
    #[error("peer certificate expired or not yet valid")]
    Expired {
        /// The SPIFFE ID the certificate names, if it parsed.
        peer: Option<SpiffeId>,
    },
    /// The chain verified but the certificate is not an X.509-SVID.
    #[error("peer certificate is not an X.509-SVID: {0}")]
    NotAnSvid(crate::svid::SvidError),
    /// The certificate is on the revocation list.
    #[error("peer certificate {serial} ({peer}) is revoked")]
    Revoked {
        /// Its SPIFFE ID.
        peer: SpiffeId,
        /// Its serial (hex).
        serial: String,
    },
    /// A CA client reached a server whose certificate is not the CA
    /// server's (a workload's certificate for the same DNS name, say).
    #[error("server is {}, not the Tessera CA ({expected})", peer.as_ref().map_or("not an X.509-SVID".to_string(), |p| p.to_string()))]
    NotTheCa {
        /// The SPIFFE ID the server's certificate names, if it is an SVID.
        peer: Option<SpiffeId>,
        /// The CA server's SPIFFE ID the client required.
        expected: String,
    },
    /// A valid SVID, but not for the SPIFFE ID the connection requires.
    #[error("peer is {peer}, not {}", pattern_text(expected))]
    WrongSpiffeId {
        /// The SPIFFE ID seen.
        peer: SpiffeId,
        /// What was required.
        expected: crate::SpiffeIdPattern,
    },
}

impl SpiffeRefusal {
    /// The refusal a rustls error carries, if a SPIFFE verifier made it.
    pub fn of(e: &rustls::Error) -> Option<&SpiffeRefusal> {
        match e {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) => {
                o.0.downcast_ref::<SpiffeRefusal>()
            }
            _ => None,
        }
    }

    /// The refusal inside a failed TLS handshake's I/O error, if any.
    pub fn of_io(e: &std::io::Error) -> Option<&SpiffeRefusal> {
        e.get_ref()
            .and_then(|i| i.downcast_ref::<rustls::Error>())
            .and_then(Self::of)
    }

    /// The SPIFFE ID the refused certificate names, where it parsed.
    pub fn peer(&self) -> Option<&SpiffeId> {
        match self {
            Self::UntrustedChain { peer, .. }
            | Self::Expired { peer }
            | Self::NotTheCa { peer, .. } => peer.as_ref(),
            Self::NotAnSvid(_) => None,
            Self::Revoked { peer, .. } | Self::WrongSpiffeId { peer, .. } => Some(peer),
        }
    }

    /// A chain-check failure (ours through webpki, or rustls's own
    /// verifier's), with the ID the certificate claims.
    fn chain(e: rustls::Error, end_entity: &CertificateDer<'_>) -> rustls::Error {
        use rustls::CertificateError as C;
        let peer = crate::svid::peer_spiffe_id(end_entity).ok();
        let refusal = match e {
            rustls::Error::InvalidCertificate(
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. },
            ) => Self::Expired { peer },
            rustls::Error::InvalidCertificate(c) => Self::UntrustedChain {
                reason: c.to_string(),
                peer,
            },
            // Not about the certificate: rustls's own error says more.
            other => return other,
        };
        refusal.into()
    }
}

/// A pattern as written in configurations (`spiffe://td/path/*` for a prefix).
fn pattern_text(p: &crate::SpiffeIdPattern) -> String {
    match p {
        crate::SpiffeIdPattern::Exact(id) => id.to_string(),
        crate::SpiffeIdPattern::Prefix {
            trust_domain,
            prefix,
        } => format!("spiffe://{trust_domain}{prefix}*"),
    }
}

impl From<SpiffeRefusal> for rustls::Error {
    fn from(r: SpiffeRefusal) -> Self {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            Arc::new(r),
        )))
    }
}

fn webpki_to_rustls(e: webpki::Error) -> rustls::Error {
    use rustls::CertificateError as C;
    rustls::Error::InvalidCertificate(match e {
        webpki::Error::CertExpired { .. } => C::Expired,
        webpki::Error::CertNotValidYet { .. } => C::NotValidYet,
        webpki::Error::UnknownIssuer => C::UnknownIssuer,
        webpki::Error::InvalidSignatureForPublicKey => C::BadSignature,
        _ => C::BadEncoding,
    })
}

/// Checks what every SPIFFE peer certificate must pass beyond the chain: it is
/// an X.509-SVID, and it is not revoked. Returns its SPIFFE ID.
fn spiffe_checks(
    end_entity: &CertificateDer<'_>,
    revoked: &RevokedSerials,
) -> Result<SpiffeId, SpiffeRefusal> {
    let info = crate::svid::check_leaf(end_entity).map_err(SpiffeRefusal::NotAnSvid)?;
    if revoked.contains(&info.serial) {
        return Err(SpiffeRefusal::Revoked {
            peer: info.spiffe_id,
            serial: info.serial,
        });
    }
    Ok(info.spiffe_id)
}

/// Client side of SPIFFE mTLS: verifies the server's chain against the bundle
/// with webpki and requires its SPIFFE ID to match `expected`. Identity is
/// never taken from DNS names (SPIFFE server certificates carry only a URI SAN).
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    anchors: Vec<rustls::pki_types::TrustAnchor<'static>>,
    expected: crate::SpiffeIdPattern,
    revoked: Arc<RevokedSerials>,
    provider: Arc<CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let chain = |e| SpiffeRefusal::chain(webpki_to_rustls(e), end_entity);
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(chain)?;
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &self.anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(chain)?;
        let id = spiffe_checks(end_entity, &self.revoked)?;
        if !self.expected.matches(&id) {
            return Err(SpiffeRefusal::WrongSpiffeId {
                peer: id,
                expected: self.expected.clone(),
            }
            .into());
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Server side of SPIFFE mTLS: a client certificate is required, must chain to
/// the bundle (webpki), be an X.509-SVID and not be revoked. The listener's
/// SPIFFE ID policy is applied after the handshake, where the peer ID is known
/// and a refusal can be logged with it.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    revoked: Arc<RevokedSerials>,
}

impl rustls::server::danger::ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        // SPIFFE peers pick their certificate by identity, not by issuer name.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| SpiffeRefusal::chain(e, end_entity))?;
        spiffe_checks(end_entity, &self.revoked)?;
        Ok(ok)
    }

    inner_signatures!();
}

fn versions(tls12: bool) -> &'static [&'static rustls::SupportedProtocolVersion] {
    if tls12 {
        rustls::ALL_VERSIONS
    } else {
        TLS13_ONLY
    }
}

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Inbound SPIFFE mTLS: serves the certificate `resolver` holds (rotated in
/// place) and requires a client X.509-SVID chaining to `anchors`. TLS 1.3 only
/// unless `tls12`.
pub fn spiffe_server_config(
    anchors: &[CertificateDer<'static>],
    resolver: Arc<dyn ResolvesServerCert>,
    revoked: Arc<RevokedSerials>,
    tls12: bool,
) -> Result<ServerConfig, TlsError> {
    let roots = Arc::new(root_store(anchors)?);
    let inner = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let verifier = Arc::new(SpiffeClientVerifier { inner, revoked });
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(tls12))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    // No session resumption across rotations: every connection proves its current identity.
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(cfg)
}

/// Outbound SPIFFE mTLS: presents the certificate `resolver` holds and requires
/// the server's SPIFFE ID to match `expected`.
pub fn spiffe_client_config(
    anchors: &[CertificateDer<'static>],
    resolver: Arc<dyn rustls::client::ResolvesClientCert>,
    expected: crate::SpiffeIdPattern,
    revoked: Arc<RevokedSerials>,
    tls12: bool,
) -> Result<ClientConfig, TlsError> {
    let verifier = spiffe_server_verifier(anchors, expected, revoked)?;
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(tls12))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(resolver);
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(cfg)
}

fn spiffe_server_verifier(
    anchors: &[CertificateDer<'static>],
    expected: crate::SpiffeIdPattern,
    revoked: Arc<RevokedSerials>,
) -> Result<Arc<SpiffeServerVerifier>, TlsError> {
    let anchors: Vec<_> = anchors
        .iter()
        .filter_map(|c| {
            webpki::anchor_from_trusted_cert(c)
                .ok()
                .map(|a| a.to_owned())
        })
        .collect();
    if anchors.is_empty() {
        return Err(TlsError::NoAnchors);
    }
    Ok(Arc::new(SpiffeServerVerifier {
        anchors,
        expected,
        revoked,
        provider: provider(),
    }))
}

/// Client configuration for a foreign SPIFFE bundle endpoint of profile
/// `https_spiffe`: the server's X.509-SVID must chain to `anchors` (that
/// trust domain's bundle, never ours) and carry exactly `expected`; no
/// client certificate is sent.
pub fn bundle_endpoint_client_config(
    anchors: &[CertificateDer<'static>],
    expected: SpiffeId,
) -> Result<ClientConfig, TlsError> {
    let verifier = spiffe_server_verifier(
        anchors,
        crate::SpiffeIdPattern::Exact(expected),
        Arc::new(RevokedSerials::default()),
    )?;
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A certificate and key holder that TLS configurations read on every
/// handshake; replacing its contents rotates the identity without touching
/// established connections or rebuilding configurations.
#[derive(Debug)]
pub struct RotatingKey(std::sync::RwLock<Arc<CertifiedKey>>);

impl RotatingKey {
    /// Starts with `key`.
    pub fn new(key: CertifiedKey) -> Self {
        Self(std::sync::RwLock::new(Arc::new(key)))
    }

    /// Replaces the key for new handshakes.
    pub fn set(&self, key: CertifiedKey) {
        if let Ok(mut g) = self.0.write() {
            *g = Arc::new(key);
        }
    }

    /// The current key.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.0
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

impl ResolvesServerCert for RotatingKey {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for RotatingKey {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{Issuer, KeyPair, SanType, SerialNumber};

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        der: CertificateDer<'static>,
    }

    fn ca() -> Ca {
        let p = tessera_test_support::spiffe_root_params("Test CA");
        let key = KeyPair::generate().unwrap();
        let der = p.self_signed(&key).unwrap().der().clone();
        Ca {
            issuer: Issuer::new(p, key),
            der,
        }
    }

    /// A leaf for `uri` (None: a DNS name only, not an SVID), valid from
    /// `from` to `to` hours from now.
    fn leaf(ca: &Ca, uri: Option<&str>, serial: u8, from: i64, to: i64) -> CertifiedKey {
        let mut p = tessera_test_support::svid_params(uri.unwrap_or("spiffe://example.org"));
        if uri.is_none() {
            p.subject_alt_names = vec![SanType::DnsName("web".try_into().unwrap())];
        }
        p.serial_number = Some(SerialNumber::from_slice(&[0x40, serial, 1, 2, 3, 4, 5, 6]));
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now + time::Duration::hours(from);
        p.not_after = now + time::Duration::hours(to);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        certified_key(vec![cert.der().clone()], key).unwrap()
    }

    /// One handshake: what the client's and the server's verifiers say.
    async fn handshake(
        anchors: &CertificateDer<'static>,
        client: CertifiedKey,
        server: CertifiedKey,
        expected: &str,
        revoked: &[&str],
    ) -> (Option<SpiffeRefusal>, Option<SpiffeRefusal>) {
        let list = Arc::new(RevokedSerials::default());
        list.extend(revoked.iter().map(|s| (s.to_string(), i64::MAX)), 0);
        let anchors = std::slice::from_ref(anchors);
        let scfg = spiffe_server_config(
            anchors,
            Arc::new(RotatingKey::new(server)),
            list.clone(),
            false,
        )
        .unwrap();
        let ccfg = spiffe_client_config(
            anchors,
            Arc::new(RotatingKey::new(client)),
            crate::SpiffeIdPattern::new(expected).unwrap(),
            list,
            false,
        )
        .unwrap();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            tokio_rustls::TlsAcceptor::from(Arc::new(scfg))
                .accept(b)
                .await
                .err()
        });
        let client = tokio_rustls::TlsConnector::from(Arc::new(ccfg))
            .connect(ServerName::try_from("localhost").unwrap(), a)
            .await
            .err();
        let server = server.await.unwrap();
        let of = |e: Option<std::io::Error>| e.as_ref().and_then(SpiffeRefusal::of_io).cloned();
        (of(client), of(server))
    }

    use rustls::pki_types::ServerName;

    /// Issue 11 item 9: a revoked serial is forgotten once its certificate
    /// has expired (the chain check refuses it then), so the set does not
    /// grow with all of history.
    #[test]
    fn revoked_serials_drop_expired_certificates() {
        let set = RevokedSerials::default();
        set.extend([("live".into(), 2_000), ("expired".into(), 999)], 1_000);
        assert!(set.contains("live"));
        assert!(
            !set.contains("expired"),
            "an expired certificate's serial was kept"
        );
        assert_eq!(set.len(), 1);
        set.extend([("later".into(), 5_000)], 1_500);
        assert_eq!(set.len(), 2);
        set.prune(2_001);
        assert!(!set.contains("live") && set.contains("later"));
        assert_eq!(set.len(), 1);
    }

    #[tokio::test]
    async fn refusals_carry_their_reason_and_the_peer_id() {
        let other = ca();
        let ca = ca();
        let id = |p: &str| crate::SpiffeId::new(&format!("spiffe://example.org/{p}")).unwrap();
        let web = leaf(&ca, Some("spiffe://example.org/web"), 1, -1, 1);
        let api = leaf(&ca, Some("spiffe://example.org/api"), 2, -1, 1);
        let old = leaf(&ca, Some("spiffe://example.org/old"), 3, -3, -2);
        let soon = leaf(&ca, Some("spiffe://example.org/soon"), 4, 2, 3);
        let stranger = leaf(&other, Some("spiffe://example.org/api"), 5, -1, 1);
        let plain = leaf(&ca, None, 6, -1, 1);
        let api_id = "spiffe://example.org/api";
        let wrong = |expected: &str| SpiffeRefusal::WrongSpiffeId {
            peer: id("api"),
            expected: crate::SpiffeIdPattern::new(expected).unwrap(),
        };
        let revoked = |p: &str, serial: &str| SpiffeRefusal::Revoked {
            peer: id(p),
            serial: serial.into(),
        };
        let expired = |p: &str| SpiffeRefusal::Expired { peer: Some(id(p)) };
        let not_svid = SpiffeRefusal::NotAnSvid(crate::svid::SvidError::UriSanCount(0));
        // (what, client cert, server cert, server ID required, revoked
        // serials, the client's refusal, the server's refusal)
        type Case<'a> = (
            &'a str,
            &'a CertifiedKey,
            &'a CertifiedKey,
            &'a str,
            &'a [&'a str],
            Option<SpiffeRefusal>,
            Option<SpiffeRefusal>,
        );
        let cases: Vec<Case<'_>> = vec![
            ("both fine", &web, &api, api_id, &[], None, None),
            (
                "wrong server",
                &web,
                &api,
                "spiffe://example.org/db",
                &[],
                Some(wrong("spiffe://example.org/db")),
                None,
            ),
            (
                "outside the prefix",
                &web,
                &api,
                "spiffe://example.org/x/*",
                &[],
                Some(wrong("spiffe://example.org/x/*")),
                None,
            ),
            (
                "server revoked",
                &web,
                &api,
                api_id,
                &["4002010203040506"],
                Some(revoked("api", "4002010203040506")),
                None,
            ),
            (
                "client revoked",
                &web,
                &api,
                api_id,
                &["4001010203040506"],
                None,
                Some(revoked("web", "4001010203040506")),
            ),
            (
                "server expired",
                &web,
                &old,
                "spiffe://example.org/old",
                &[],
                Some(expired("old")),
                None,
            ),
            (
                "client expired",
                &old,
                &api,
                api_id,
                &[],
                None,
                Some(expired("old")),
            ),
            (
                "server not yet valid",
                &web,
                &soon,
                "spiffe://example.org/soon",
                &[],
                Some(expired("soon")),
                None,
            ),
            (
                "server not an SVID",
                &web,
                &plain,
                api_id,
                &[],
                Some(not_svid.clone()),
                None,
            ),
            (
                "client not an SVID",
                &plain,
                &api,
                api_id,
                &[],
                None,
                Some(not_svid.clone()),
            ),
        ];
        for (what, client, server, expected, serials, want_c, want_s) in cases {
            let (c, s) =
                handshake(&ca.der, client.clone(), server.clone(), expected, serials).await;
            // A refused side may see only the other's alert: check the refusing side.
            if want_c.is_some() {
                assert_eq!(c, want_c, "{what}: client");
            } else if want_s.is_some() {
                assert_eq!(s, want_s, "{what}: server");
            } else {
                assert_eq!((c, s), (None, None), "{what}");
            }
        }
        assert_eq!(
            wrong("spiffe://example.org/x/*").to_string(),
            "peer is spiffe://example.org/api, not spiffe://example.org/x/*"
        );
        assert_eq!(not_svid.peer(), None);

        // Another CA's certificate: untrusted, with the ID it claims.
        let (c, _) = handshake(&ca.der, web.clone(), stranger.clone(), api_id, &[]).await;
        let (_, s) = handshake(&ca.der, stranger, api, api_id, &[]).await;
        for r in [c, s] {
            assert!(
                matches!(&r, Some(SpiffeRefusal::UntrustedChain { peer: Some(p), .. }) if *p == id("api")),
                "{r:?}"
            );
        }
    }
}
