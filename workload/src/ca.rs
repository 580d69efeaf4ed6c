//! The workload's client for the CA: one kept connection, deadlines on
//! every call, bounded answers.
//!
//! Built on [`tessera_core::client`]: the client offers HTTP/2 (ALPN) and
//! keeps the connection the CA accepts, so concurrent calls (a revocation
//! long-poll, a renewal, a denial report) share one TLS session instead of
//! a handshake each. When that connection has closed (the CA drops idle
//! connections; a restart) the next call opens another; a call that fails
//! on a kept connection before its answer began is tried once more on a
//! fresh one (the CA closes only connections with nothing in flight, so
//! such a request was never processed). A server that answers HTTP/1.1
//! gets one connection per call.
//!
//! Every call has a deadline covering connect, handshakes, request and the
//! whole answer ([`CALL_DEADLINE`]; a long-poll its wait plus
//! [`LONG_POLL_MARGIN`]), and an answer larger than [`MAX_ANSWER_BYTES`] is
//! an error, not read to the end.
//!
//! A client belongs to one identity and one trust bundle: when either
//! changes, make a new client (its first call opens a new connection with
//! the new certificate).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use rustls::pki_types::CertificateDer;
use tessera_core::api::{IssuedCertificate, Problem};
use tessera_core::client::{Client, ClientError, Connection, Reply};

use crate::key::PrivateKey;
use crate::svid::{Identity, Svid, SvidParseError};

/// Deadline of an ordinary call: connect, handshakes, request, whole answer.
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);
/// What a long-poll may take beyond the wait it asked for.
pub const LONG_POLL_MARGIN: Duration = Duration::from_secs(10);
/// The largest answer read from the CA.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Why a call to the CA failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The CA URL is unusable.
    #[error("server URL: {0}")]
    Url(String),
    /// The TLS configuration could not be built.
    #[error("TLS setup: {0}")]
    Tls(#[from] tessera_core::tls::TlsError),
    /// The CA could not be reached, or did not answer in time.
    #[error("CA unreachable: {0}")]
    Unreachable(String),
    /// The CA answered with an error status.
    #[error("CA refused ({} {}): {}", .0.status, .0.code(), .0.detail())]
    Refused(Box<Refusal>),
    /// The CA's answer is not what was asked for.
    #[error("{0}")]
    BadAnswer(String),
}

impl CaError {
    /// The refusal, if the CA answered with an error status.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Refused(r) => Some(r.as_ref()),
            _ => None,
        }
    }
}

/// An error answer from the CA.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// The RFC 9457 problem, when the body is one.
    pub problem: Option<Problem>,
    /// The body as sent.
    pub body: Bytes,
}

impl Refusal {
    fn of(reply: Reply) -> Self {
        Self {
            status: reply.status.as_u16(),
            problem: serde_json::from_slice(&reply.body).ok(),
            body: reply.body,
        }
    }

    /// The problem's stable code (empty if the answer is not a problem).
    pub fn code(&self) -> &str {
        self.problem.as_ref().map(|p| p.code.as_str()).unwrap_or("")
    }

    /// The problem's detail (empty if none).
    pub fn detail(&self) -> &str {
        self.problem
            .as_ref()
            .and_then(|p| p.detail.as_deref())
            .unwrap_or("")
    }
}

/// A certificate the CA issued, as an identity, with the CA's answer.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The SVID (for the key given) and the bundle.
    pub identity: Identity,
    /// The answer as the CA sent it (PEM texts, attestation hash).
    pub answer: IssuedCertificate,
}

/// The CA client (see the module documentation).
pub struct CaClient {
    http: Client,
    /// The kept connection and its generation (to forget only that one).
    kept: Mutex<(u64, Option<Connection>)>,
}

impl std::fmt::Debug for CaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaClient").finish_non_exhaustive()
    }
}

impl CaClient {
    /// A client for the CA at `url` (`https://host:port`), verified against
    /// `anchors` the web-PKI way (its DNS name or IP address), presenting
    /// `identity` (mTLS) if given.
    pub fn new(
        url: &str,
        anchors: &[CertificateDer<'static>],
        identity: Option<&Svid>,
    ) -> Result<Self, CaError> {
        let client_auth = identity.map(|s| (s.chain().to_vec(), s.key().to_der()));
        let tls = tessera_core::tls::api_client_config(anchors, client_auth, true)?;
        let http = Client::new(url, tls, None).map_err(|e| match e {
            ClientError::Url(u) => CaError::Url(u),
            other => CaError::Url(other.to_string()),
        })?;
        Ok(Self {
            http,
            kept: Mutex::new((0, None)),
        })
    }

    /// One call: `body` is JSON; `headers` are added; the whole exchange
    /// must finish within `deadline`. Any HTTP status is an answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, String)],
        deadline: Duration,
    ) -> Result<Reply, CaError> {
        let body = body.map(Bytes::from);
        let exchange = async {
            if let Some((generation, conn)) = self.kept() {
                match self.exchange(conn, &method, path, &body, headers).await {
                    Ok(reply) => return Ok(reply),
                    Err(Attempt::Unsent(_)) => self.forget(generation),
                    Err(Attempt::Failed(e)) => {
                        self.forget(generation);
                        return Err(e);
                    }
                }
            }
            let conn = self.http.connect().await?;
            if let Some(shared) = conn.share() {
                let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
                kept.0 += 1;
                kept.1 = Some(shared);
            }
            self.exchange(conn, &method, path, &body, headers)
                .await
                .map_err(|a| match a {
                    Attempt::Unsent(e) | Attempt::Failed(e) => e,
                })
        };
        match tokio::time::timeout(deadline, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(CaError::Unreachable(e.to_string())),
            Err(_) => {
                // A connection that let a call time out may be dead.
                let generation = self.kept.lock().map(|k| k.0).unwrap_or(0);
                self.forget(generation);
                Err(CaError::Unreachable(format!(
                    "no answer within {deadline:?}"
                )))
            }
        }
    }

    fn kept(&self) -> Option<(u64, Connection)> {
        let kept = self.kept.lock().ok()?;
        let conn = kept.1.as_ref()?.share()?;
        Some((kept.0, conn))
    }

    fn forget(&self, generation: u64) {
        if let Ok(mut kept) = self.kept.lock()
            && kept.0 == generation
        {
            kept.1 = None;
        }
    }

    async fn exchange(
        &self,
        conn: Connection,
        method: &Method,
        path: &str,
        body: &Option<Bytes>,
        headers: &[(&str, String)],
    ) -> Result<Reply, Attempt> {
        let req = self
            .http
            .request(
                method.clone(),
                path,
                body.as_ref().map(|b| b.to_vec()),
                "application/json",
                "application/json",
                headers,
            )
            .map_err(Attempt::Failed)?;
        let resp = conn.send(req).await.map_err(Attempt::Unsent)?;
        tessera_core::client::read_limited(resp, MAX_ANSWER_BYTES)
            .await
            .map_err(Attempt::Failed)
    }

    /// A GET within [`CALL_DEADLINE`]; any status is an answer.
    pub async fn get(&self, path: &str) -> Result<Reply, CaError> {
        self.call(Method::GET, path, None, &[], CALL_DEADLINE).await
    }

    /// A long-poll GET that the CA may hold for `wait`.
    pub async fn long_poll(&self, path: &str, wait: Duration) -> Result<Reply, CaError> {
        self.call(Method::GET, path, None, &[], wait + LONG_POLL_MARGIN)
            .await
    }

    /// A conditional GET: `304 Not Modified` (empty body) while the
    /// resource's ETag is still `etag`.
    pub async fn get_if_none_match(
        &self,
        path: &str,
        etag: Option<&str>,
    ) -> Result<Reply, CaError> {
        let headers: Vec<(&str, String)> = etag
            .map(|e| vec![("if-none-match", e.to_owned())])
            .unwrap_or_default();
        self.call(Method::GET, path, None, &headers, CALL_DEADLINE)
            .await
    }

    /// A GET that must succeed: its body.
    pub async fn get_ok(&self, path: &str) -> Result<Bytes, CaError> {
        success(self.get(path).await?)
    }

    /// A GET that must succeed, its JSON answer parsed.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, CaError> {
        parse(&self.get_ok(path).await?)
    }

    /// A POST of `body` as JSON that must succeed, its JSON answer parsed.
    pub async fn post_json<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CaError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| CaError::BadAnswer(format!("the request: {e}")))?;
        let reply = self
            .call(Method::POST, path, Some(body), &[], CALL_DEADLINE)
            .await?;
        parse(&success(reply)?)
    }

    /// An issuance (`/v1/certs/redeem`, `/v1/certs/renew`,
    /// `/v1/svids/platform`, `/v1/nodes/attest`): posts `body` (with the CSR
    /// for `key`) and returns the certificate as an identity for `key`.
    pub async fn issue<B: serde::Serialize>(
        &self,
        path: &str,
        body: &B,
        key: PrivateKey,
    ) -> Result<Issued, CaError> {
        let answer: IssuedCertificate = self.post_json(path, body).await?;
        let identity = Identity::from_issued(&answer, Arc::new(key)).map_err(bad_certificate)?;
        Ok(Issued { identity, answer })
    }
}

/// How one attempt on a connection failed.
enum Attempt {
    /// Before any answer: worth one more try on a fresh connection.
    Unsent(ClientError),
    /// After the answer began (or the request could not be built).
    Failed(ClientError),
}

impl From<ClientError> for CaError {
    fn from(e: ClientError) -> Self {
        CaError::Unreachable(e.to_string())
    }
}

/// The body of a successful answer; an error status is a [`Refusal`].
pub fn success(reply: Reply) -> Result<Bytes, CaError> {
    if reply.status.is_success() {
        Ok(reply.body)
    } else {
        Err(CaError::Refused(Box::new(Refusal::of(reply))))
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, CaError> {
    serde_json::from_slice(body).map_err(|e| CaError::BadAnswer(format!("the CA's answer: {e}")))
}

/// An issued certificate that is not a usable SVID for the key sent.
pub fn bad_certificate(e: SvidParseError) -> CaError {
    CaError::BadAnswer(format!("issued certificate: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A TLS server on loopback (HTTP/1.1 and HTTP/2, as the CA) that counts
    /// the connections it accepts and drops a connection idle for 300 ms.
    struct Server {
        url: String,
        anchors: Vec<CertificateDer<'static>>,
        accepted: Arc<AtomicUsize>,
    }

    async fn server() -> Server {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // The anchors name the trust domain, as a Tessera CA's do: clients
        // accept only its CA server's SPIFFE ID (core::tls::api_client_config).
        p.subject_alt_names = vec![SanType::URI("spiffe://example.org".try_into().unwrap())];
        let ca_key = KeyPair::generate().unwrap();
        let ca_der = p.self_signed(&ca_key).unwrap().der().clone();
        let issuer = Issuer::new(p, ca_key);
        let mut leaf = tessera_test_support::svid_params("spiffe://example.org/tessera/ca-server");
        leaf.subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let ck = tessera_core::tls::certified_key(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let resolver = Arc::new(tessera_core::tls::RotatingKey::new(ck));
        let cfg = tessera_core::tls::server_config_optional_client_auth(
            std::slice::from_ref(&ca_der),
            resolver,
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let busy = Arc::new(AtomicUsize::new(0));
                    let in_flight = busy.clone();
                    let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        let in_flight = in_flight.clone();
                        async move {
                            in_flight.fetch_add(1, Ordering::SeqCst);
                            let (status, body) = match req.uri().path() {
                                "/slow" => {
                                    tokio::time::sleep(Duration::from_secs(2)).await;
                                    (200, b"{}".to_vec())
                                }
                                "/big" => (200, vec![b' '; MAX_ANSWER_BYTES + 1]),
                                "/refuse" => (
                                    403,
                                    br#"{"type":"about:blank","title":"Forbidden","status":403,"code":"forbidden","detail":"not you"}"#.to_vec(),
                                ),
                                _ => (200, br#"{"items":[]}"#.to_vec()),
                            };
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
                    tokio::pin!(conn);
                    // As the CA: a connection with nothing in flight for a
                    // while is dropped, not shut down politely.
                    loop {
                        tokio::select! {
                            _ = conn.as_mut() => return,
                            _ = tokio::time::sleep(Duration::from_millis(300)) => {
                                if busy.load(Ordering::SeqCst) == 0 {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Server {
            url,
            anchors: vec![ca_der],
            accepted,
        }
    }

    #[tokio::test]
    async fn keeps_one_connection_for_sequential_and_concurrent_calls() {
        let s = server().await;
        let ca = CaClient::new(&s.url, &s.anchors, None).unwrap();
        for _ in 0..3 {
            let _: serde_json::Value = ca.get_json("/v1/x").await.unwrap();
        }
        let calls = (0..8).map(|_| ca.get_ok("/v1/x"));
        for r in futures_util::future::join_all(calls).await {
            r.unwrap();
        }
        assert_eq!(s.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_dropped_is_replaced() {
        let s = server().await;
        let ca = CaClient::new(&s.url, &s.anchors, None).unwrap();
        ca.get_ok("/v1/x").await.unwrap();
        // Past the server's idle deadline: it has dropped the connection.
        tokio::time::sleep(Duration::from_millis(700)).await;
        ca.get_ok("/v1/x").await.unwrap();
        assert_eq!(s.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn deadlines_limits_and_refusals() {
        let s = server().await;
        let ca = CaClient::new(&s.url, &s.anchors, None).unwrap();
        let e = ca
            .call(Method::GET, "/slow", None, &[], Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, CaError::Unreachable(m) if m.contains("no answer within 200ms")),
            "{e}"
        );
        // The connection that timed out is not reused.
        ca.get_ok("/v1/x").await.unwrap();
        assert_eq!(s.accepted.load(Ordering::SeqCst), 2);
        let e = ca.get("/big").await.unwrap_err();
        assert!(matches!(e, CaError::Unreachable(_)), "{e}");
        let e = ca.get_ok("/refuse").await.unwrap_err();
        let r = e.refusal().expect("a refusal");
        assert_eq!(
            (r.status, r.code(), r.detail()),
            (403, "forbidden", "not you")
        );
        assert_eq!(e.to_string(), "CA refused (403 forbidden): not you");
        // A bad URL is refused before any connection.
        assert!(matches!(
            CaClient::new("http://x", &s.anchors, None),
            Err(CaError::Url(_))
        ));
    }
}
