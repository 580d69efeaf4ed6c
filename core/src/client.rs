//! A small HTTPS client for the CA API (used by the CLI, the tests, the CA's
//! JWKS fetches and, through `tessera-workload`'s CA client, the sidecar and
//! the agent): rustls through [`crate::tls`] and hyper's client.
//!
//! [`Client`]'s calls open one connection each. [`Client::connect`] and
//! [`Client::request`] are the parts they are made of, for a caller that
//! keeps a [`Connection`] (HTTP/2 carries concurrent requests on one).
//!
//! Nothing waits forever on a silent peer: opening a connection has
//! [`CONNECT_DEADLINE`], each of [`Client`]'s whole calls (request and
//! body) [`CALL_DEADLINE`] and an answer of at most [`MAX_BODY_BYTES`];
//! streams ([`Client::stream`]) get their head within the call deadline.
//! Connections use TCP keep-alive ([`KEEPALIVE`]) and, over HTTP/2, PINGs
//! while a request is in flight: a peer (or a middlebox) that stops
//! forwarding without a reset fails the connection within
//! [`PING_INTERVAL`] + [`PING_TIMEOUT`] instead of hanging its requests.
//! No PING is sent on an idle connection (it would keep the CA's idle
//! deadline from closing it).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Longest time to open a connection: TCP connect, TLS handshake and HTTP
/// handshake together (the CA gives a client 10 s for its handshake too).
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(10);

/// Longest whole call of [`Client`] (request sent, answer read to its end).
pub const CALL_DEADLINE: Duration = Duration::from_secs(120);

/// Largest answer [`Client`]'s plain calls read (audit exports included).
pub const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// TCP keep-alive: first probe after this long without traffic, then one
/// per second (the kernel gives up after its probe count).
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// HTTP/2 PING interval while a request is in flight.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);

/// How long an HTTP/2 PING may go unanswered before the connection fails.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors reaching the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server URL is unusable.
    #[error("server URL: {0}")]
    Url(String),
    /// TCP connect failed.
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    /// The TLS handshake failed.
    #[error("TLS handshake with {0}: {1}")]
    Tls(String, std::io::Error),
    /// The server's certificate was refused by a SPIFFE check (for the CA
    /// API: it is not the CA's own identity), with the reason.
    #[error("TLS handshake with {0}: {1}")]
    Refused(String, crate::tls::SpiffeRefusal),
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(String),
    /// The answer's body is longer than the caller allows.
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    /// The connection closed before the answer arrived (or before the
    /// request could be sent on it).
    #[error("connection closed: {0}")]
    Closed(String),
    /// A deadline passed.
    #[error("{0} did not finish in time")]
    Timeout(&'static str),
}

fn http_error(e: hyper::Error) -> ClientError {
    // hyper's own text is only "http2 error"; the cause (an h2 GOAWAY reason,
    // an I/O error) is what an operator needs to see.
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    if e.is_canceled() || e.is_closed() || e.is_incomplete_message() {
        ClientError::Closed(text)
    } else {
        ClientError::Http(text)
    }
}

type Result<T> = std::result::Result<T, ClientError>;

/// Where and how to reach the CA.
pub struct Client {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    bearer: Option<String>,
}

/// A response: status and body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Body bytes.
    pub body: Bytes,
    /// Response headers (see [`Reply::etag`], [`Reply::location`]).
    pub headers: hyper::HeaderMap,
}

impl Reply {
    /// A header's value, if present and visible ASCII.
    fn header(&self, name: hyper::header::HeaderName) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The ETag header, if any.
    pub fn etag(&self) -> Option<String> {
        self.header(hyper::header::ETAG)
    }

    /// The Location header, if any (redirects).
    pub fn location(&self) -> Option<String> {
        self.header(hyper::header::LOCATION)
    }
}

impl Client {
    /// Builds a client for `server` (https://host:port).
    pub fn new(server: &str, tls: rustls::ClientConfig, bearer: Option<String>) -> Result<Self> {
        let rest = server
            .strip_prefix("https://")
            .ok_or_else(|| ClientError::Url(format!("must start with https:// (got {server:?})")))?
            .trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.to_owned(),
                p.parse::<u16>()
                    .map_err(|_| ClientError::Url(format!("bad port in {server:?}")))?,
            ),
            _ => (rest.to_owned(), 443),
        };
        let name_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let server_name = ServerName::try_from(name_host.clone()).map_err(|_| {
            ClientError::Url(format!("{name_host:?} is not a DNS name or IP address"))
        })?;
        Ok(Self {
            host: name_host,
            port,
            server_name,
            tls: Arc::new(tls),
            bearer,
        })
    }

    /// Sends one request with an optional JSON body and reads the whole reply.
    pub async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Reply> {
        self.call_with(method, path, body, "application/json").await
    }

    /// A conditional GET: `304 Not Modified` (empty body) when the resource's
    /// ETag is still `etag`.
    pub async fn get_if_none_match(&self, path: &str, etag: Option<&str>) -> Result<Reply> {
        let headers: Vec<(&str, String)> = etag
            .map(|e| vec![("if-none-match", e.to_owned())])
            .unwrap_or_default();
        let req = self.request(Method::GET, path, None, "", "application/json", &headers)?;
        self.exchange(req, MAX_BODY_BYTES).await
    }

    /// A GET whose body may hold at most `max_bytes`: a longer one is an
    /// error, not read to the end (for documents fetched from servers we do
    /// not control, such as an issuer's JWKS).
    pub async fn get_limited(&self, path: &str, max_bytes: usize) -> Result<Reply> {
        let req = self.request(Method::GET, path, None, "", "application/json", &[])?;
        self.exchange(req, max_bytes).await
    }

    /// Sends one request with a body of the given content type.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> Result<Reply> {
        let req = self.request(method, path, body, content_type, "application/json", &[])?;
        self.exchange(req, MAX_BODY_BYTES).await
    }

    /// One request on a connection of its own, its answer read whole,
    /// within [`CALL_DEADLINE`].
    async fn exchange(&self, req: Request<Full<Bytes>>, max_bytes: usize) -> Result<Reply> {
        let call = async { read_limited(self.send(req).await?, max_bytes).await };
        tokio::time::timeout(CALL_DEADLINE, call)
            .await
            .map_err(|_| ClientError::Timeout("the request"))?
    }

    /// Sends a GET asking for `text/event-stream` with extra `headers` (such as
    /// `Last-Event-ID`) and returns as soon as the response head arrives; the
    /// body is read as it streams (see [`crate::sse::SseParser`]).
    pub async fn stream(&self, path: &str, headers: &[(&str, String)]) -> Result<Streaming> {
        let req = self.request(Method::GET, path, None, "", "text/event-stream", headers)?;
        let resp = tokio::time::timeout(CALL_DEADLINE, self.send(req))
            .await
            .map_err(|_| ClientError::Timeout("the stream's answer"))??;
        let status = resp.status();
        Ok(Streaming {
            status,
            body: resp.into_body(),
        })
    }

    /// One request on a connection of its own.
    async fn send(&self, req: Request<Full<Bytes>>) -> Result<hyper::Response<Incoming>> {
        self.connect().await?.send(req).await
    }

    /// Opens a connection to the server (TCP, TLS, then HTTP/2 if the server
    /// chose it by ALPN, else HTTP/1.1), all within [`CONNECT_DEADLINE`].
    pub async fn connect(&self) -> Result<Connection> {
        tokio::time::timeout(CONNECT_DEADLINE, self.open())
            .await
            .map_err(|_| ClientError::Timeout("connecting"))?
    }

    async fn open(&self) -> Result<Connection> {
        let addr = format!("{}:{}", self.host, self.port);
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| ClientError::Connect(addr.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE)
            .with_interval(Duration::from_secs(1));
        let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
        let tls = TlsConnector::from(self.tls.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| match crate::tls::SpiffeRefusal::of_io(&e) {
                Some(r) => ClientError::Refused(addr.clone(), r.clone()),
                None => ClientError::Tls(addr.clone(), e),
            })?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        let sender = if h2 {
            Sender::Http2(
                driven(
                    hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                        .timer(hyper_util::rt::TokioTimer::new())
                        .keep_alive_interval(PING_INTERVAL)
                        .keep_alive_timeout(PING_TIMEOUT)
                        .keep_alive_while_idle(false)
                        .handshake(io),
                )
                .await?,
            )
        } else {
            Sender::Http1(driven(hyper::client::conn::http1::handshake(io)).await?)
        };
        Ok(Connection(sender))
    }

    /// A request for `path` carrying this client's `Host`, `Accept` and
    /// bearer token, with `body` (of `content_type`) if any, and `headers`.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
        accept: &str,
        headers: &[(&str, String)],
    ) -> Result<Request<Full<Bytes>>> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port))
            .header(hyper::header::ACCEPT, accept);
        if let Some(t) = &self.bearer {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        let body = match body {
            Some(b) => {
                req = req.header(hyper::header::CONTENT_TYPE, content_type);
                Full::new(Bytes::from(b))
            }
            None => Full::new(Bytes::new()),
        };
        req.body(body).map_err(|e| ClientError::Http(e.to_string()))
    }
}

/// Completes an HTTP handshake and drives its connection in a task of its
/// own until the connection ends.
async fn driven<S, C>(handshake: impl Future<Output = hyper::Result<(S, C)>>) -> Result<S>
where
    C: Future + Send + 'static,
    C::Output: Send,
{
    let (send, conn) = handshake.await.map_err(http_error)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// An open connection to the server.
pub struct Connection(Sender);

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Connection {
    /// Another handle on this connection for a concurrent request: only
    /// HTTP/2 carries several at once (`None` for HTTP/1.1, or once closed).
    pub fn share(&self) -> Option<Connection> {
        match &self.0 {
            Sender::Http2(s) if !s.is_closed() => Some(Connection(Sender::Http2(s.clone()))),
            _ => None,
        }
    }

    /// Sends one request and returns when the answer's head has arrived.
    /// An HTTP/1.1 connection serves this one request.
    pub async fn send(self, req: Request<Full<Bytes>>) -> Result<hyper::Response<Incoming>> {
        match self.0 {
            Sender::Http1(mut s) => {
                s.ready().await.map_err(http_error)?;
                s.send_request(req).await.map_err(http_error)
            }
            Sender::Http2(mut s) => {
                s.ready().await.map_err(http_error)?;
                s.send_request(req).await.map_err(http_error)
            }
        }
    }
}

/// Reads a whole body of at most `max_bytes` (a longer one is an error, not
/// read to the end).
pub async fn read_limited(resp: hyper::Response<Incoming>, max_bytes: usize) -> Result<Reply> {
    let (head, body) = resp.into_parts();
    let body = http_body_util::Limited::new(body, max_bytes)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ClientError::TooLarge(max_bytes)
            } else {
                ClientError::Http(e.to_string())
            }
        })?
        .to_bytes();
    Ok(Reply {
        status: head.status,
        body,
        headers: head.headers,
    })
}

/// A response whose body is still arriving.
pub struct Streaming {
    /// HTTP status.
    pub status: StatusCode,
    /// The body; read it frame by frame (`http_body_util::BodyExt::frame`).
    pub body: Incoming,
}
