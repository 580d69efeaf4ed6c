//! The SPIFFE Workload API wire protocol: gRPC over a unix socket.
//!
//! The messages are written by hand with prost's derive macros from the
//! standard `workload.proto` (committed as `agent/proto/workload.proto`; it
//! has no `package`, so the gRPC paths are `/SpiffeWorkloadAPI/<Method>`),
//! which costs no `protoc`/`protox` build step. [`WorkloadApiServer`] routes
//! the five methods (`FetchX509SVID`, `FetchX509Bundles`, `FetchJWTSVID`,
//! `FetchJWTBundles`, `ValidateJWTSVID`) to a [`WorkloadApi`] implementation; [`Client`] is our own client (the
//! sidecar's), which finds the socket through `SPIFFE_ENDPOINT_SOCKET`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::Stream;
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::{Request, Response, Status};

/// The metadata key every request must carry with the value `true`.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// The environment variable naming the Workload API socket (`unix:///path`).
pub const ENDPOINT_SOCKET_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

/// Largest request message accepted: the X.509 requests are empty, a
/// `ValidateJWTSVID` request carries one token (at most
/// [`tessera_core::jwt::MAX_TOKEN_BYTES`]) and an audience.
const MAX_REQUEST_BYTES: usize = 24 * 1024;

/// Largest response message our client accepts.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// `X509SVIDRequest`: no parameters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct X509SvidRequest {}

/// `X509SVIDResponse`: the caller's SVIDs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidResponse {
    /// One entry per SPIFFE ID the caller is entitled to.
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<X509Svid>,
    /// DER CRLs (we send none: revocation travels in the CA's feed).
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub crl: Vec<bytes::Bytes>,
    /// Foreign trust domains' bundles (none: no federation yet).
    #[prost(map = "string, bytes", tag = "3")]
    pub federated_bundles: HashMap<String, bytes::Bytes>,
}

/// `X509SVID`: one SVID with its key and its trust domain's bundle.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct X509Svid {
    /// The SPIFFE ID.
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// DER certificates, leaf first, concatenated.
    #[prost(bytes = "bytes", tag = "2")]
    pub x509_svid: bytes::Bytes,
    /// PKCS#8 DER private key.
    #[prost(bytes = "bytes", tag = "3")]
    pub x509_svid_key: bytes::Bytes,
    /// DER CA certificates of the trust domain, concatenated.
    #[prost(bytes = "bytes", tag = "4")]
    pub bundle: bytes::Bytes,
    /// Operator guidance when several SVIDs are returned.
    #[prost(string, tag = "5")]
    pub hint: String,
}

/// `X509BundlesRequest`: no parameters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct X509BundlesRequest {}

/// `X509BundlesResponse`: bundles keyed by trust domain SPIFFE ID.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509BundlesResponse {
    /// DER CRLs (none).
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub crl: Vec<bytes::Bytes>,
    /// `spiffe://<td>` → concatenated DER CA certificates.
    #[prost(map = "string, bytes", tag = "2")]
    pub bundles: HashMap<String, bytes::Bytes>,
}

/// `JWTSVIDRequest`: audiences and, optionally, one SPIFFE ID.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct JwtSvidRequest {
    /// Audiences (`aud`), at least one.
    #[prost(string, repeated, tag = "1")]
    pub audience: Vec<String>,
    /// Only this SPIFFE ID (empty: every identity of the caller).
    #[prost(string, tag = "2")]
    pub spiffe_id: String,
}

/// `JWTSVIDResponse`: the caller's JWT-SVIDs.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct JwtSvidResponse {
    /// One token per SPIFFE ID.
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<JwtSvid>,
}

/// `JWTSVID`: one token.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct JwtSvid {
    /// The SPIFFE ID (`sub`).
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// The compact JWS.
    #[prost(string, tag = "2")]
    pub svid: String,
    /// Operator guidance when several SVIDs are returned.
    #[prost(string, tag = "3")]
    pub hint: String,
}

/// `JWTBundlesRequest`: no parameters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct JwtBundlesRequest {}

/// `JWTBundlesResponse`: JWKS documents keyed by trust domain SPIFFE ID.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtBundlesResponse {
    /// `spiffe://<td>` → JWKS (JSON) of its JWT-SVID keys.
    #[prost(map = "string, bytes", tag = "1")]
    pub bundles: HashMap<String, bytes::Bytes>,
}

/// `ValidateJWTSVIDRequest`: a token and the audience it must carry.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ValidateJwtSvidRequest {
    /// The audience the validator expects.
    #[prost(string, tag = "1")]
    pub audience: String,
    /// The token.
    #[prost(string, tag = "2")]
    pub svid: String,
}

/// `ValidateJWTSVIDResponse`: who the token names, and all its claims.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValidateJwtSvidResponse {
    /// The SPIFFE ID (`sub`).
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// Every claim of the token.
    #[prost(message, optional, tag = "2")]
    pub claims: Option<prost_types::Struct>,
}

/// A stream of responses (or a status that ends it).
pub type ResponseStream<T> = std::pin::Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What the agent serves behind the socket.
pub trait WorkloadApi: Send + Sync + 'static {
    /// `FetchX509SVID`.
    fn fetch_x509_svid(
        &self,
        request: Request<X509SvidRequest>,
    ) -> impl std::future::Future<
        Output = Result<Response<ResponseStream<X509SvidResponse>>, Status>,
    > + Send;
    /// `FetchX509Bundles`.
    fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> impl std::future::Future<
        Output = Result<Response<ResponseStream<X509BundlesResponse>>, Status>,
    > + Send;
    /// `FetchJWTSVID`.
    fn fetch_jwt_svid(
        &self,
        request: Request<JwtSvidRequest>,
    ) -> impl std::future::Future<Output = Result<Response<JwtSvidResponse>, Status>> + Send;
    /// `FetchJWTBundles`.
    fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> impl std::future::Future<
        Output = Result<Response<ResponseStream<JwtBundlesResponse>>, Status>,
    > + Send;
    /// `ValidateJWTSVID`.
    fn validate_jwt_svid(
        &self,
        request: Request<ValidateJwtSvidRequest>,
    ) -> impl std::future::Future<Output = Result<Response<ValidateJwtSvidResponse>, Status>> + Send;
}

/// Refuses a request without `workload.spiffe.io: true` (`InvalidArgument`,
/// as the Workload API standard says).
pub fn check_security_header<T>(request: &Request<T>) -> Result<(), Status> {
    match request.metadata().get(SECURITY_HEADER) {
        Some(v) if v.as_bytes() == b"true" => Ok(()),
        _ => Err(Status::invalid_argument(
            "security header missing from request: the Workload API requires metadata `workload.spiffe.io: true`",
        )),
    }
}

/// The gRPC service: routes `/SpiffeWorkloadAPI/<Method>` to `T`.
#[derive(Debug)]
pub struct WorkloadApiServer<T> {
    inner: Arc<T>,
}

impl<T> Clone for WorkloadApiServer<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T: WorkloadApi> WorkloadApiServer<T> {
    /// Serves `inner`.
    pub fn new(inner: Arc<T>) -> Self {
        Self { inner }
    }
}

struct FetchSvid<T>(Arc<T>);

impl<T: WorkloadApi> tonic::server::ServerStreamingService<X509SvidRequest> for FetchSvid<T> {
    type Response = X509SvidResponse;
    type ResponseStream = ResponseStream<X509SvidResponse>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;
    fn call(&mut self, request: Request<X509SvidRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.fetch_x509_svid(request).await })
    }
}

struct FetchBundles<T>(Arc<T>);

impl<T: WorkloadApi> tonic::server::ServerStreamingService<X509BundlesRequest> for FetchBundles<T> {
    type Response = X509BundlesResponse;
    type ResponseStream = ResponseStream<X509BundlesResponse>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;
    fn call(&mut self, request: Request<X509BundlesRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.fetch_x509_bundles(request).await })
    }
}

struct FetchJwtBundles<T>(Arc<T>);

impl<T: WorkloadApi> tonic::server::ServerStreamingService<JwtBundlesRequest>
    for FetchJwtBundles<T>
{
    type Response = JwtBundlesResponse;
    type ResponseStream = ResponseStream<JwtBundlesResponse>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;
    fn call(&mut self, request: Request<JwtBundlesRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.fetch_jwt_bundles(request).await })
    }
}

struct FetchJwtSvid<T>(Arc<T>);

impl<T: WorkloadApi> tonic::server::UnaryService<JwtSvidRequest> for FetchJwtSvid<T> {
    type Response = JwtSvidResponse;
    type Future = BoxFuture<Response<JwtSvidResponse>, Status>;
    fn call(&mut self, request: Request<JwtSvidRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.fetch_jwt_svid(request).await })
    }
}

struct ValidateJwt<T>(Arc<T>);

impl<T: WorkloadApi> tonic::server::UnaryService<ValidateJwtSvidRequest> for ValidateJwt<T> {
    type Response = ValidateJwtSvidResponse;
    type Future = BoxFuture<Response<ValidateJwtSvidResponse>, Status>;
    fn call(&mut self, request: Request<ValidateJwtSvidRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.validate_jwt_svid(request).await })
    }
}

fn grpc<M1, M2>() -> tonic::server::Grpc<tonic_prost::ProstCodec<M1, M2>>
where
    M1: prost::Message + Send + 'static,
    M2: prost::Message + Default + Send + 'static,
{
    tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
        .max_decoding_message_size(MAX_REQUEST_BYTES)
}

impl<T, B> Service<http::Request<B>> for WorkloadApiServer<T>
where
    T: WorkloadApi,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        match req.uri().path() {
            "/SpiffeWorkloadAPI/FetchX509SVID" => {
                Box::pin(async move { Ok(grpc().server_streaming(FetchSvid(inner), req).await) })
            }
            "/SpiffeWorkloadAPI/FetchX509Bundles" => {
                Box::pin(async move { Ok(grpc().server_streaming(FetchBundles(inner), req).await) })
            }
            "/SpiffeWorkloadAPI/FetchJWTSVID" => {
                Box::pin(async move { Ok(grpc().unary(FetchJwtSvid(inner), req).await) })
            }
            "/SpiffeWorkloadAPI/FetchJWTBundles" => {
                Box::pin(
                    async move { Ok(grpc().server_streaming(FetchJwtBundles(inner), req).await) },
                )
            }
            "/SpiffeWorkloadAPI/ValidateJWTSVID" => {
                Box::pin(async move { Ok(grpc().unary(ValidateJwt(inner), req).await) })
            }
            other => {
                let msg = format!("unknown method {other}");
                Box::pin(async move { Ok(Status::unimplemented(msg).into_http()) })
            }
        }
    }
}

/// Errors of our Workload API client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No socket was configured and `SPIFFE_ENDPOINT_SOCKET` is unset.
    #[error("no Workload API socket: set SPIFFE_ENDPOINT_SOCKET=unix:///path or configure one")]
    NoSocket,
    /// The address is not `unix:///absolute/path` (or an absolute path).
    #[error("Workload API address {0:?} is not unix:///absolute/path")]
    BadAddress(String),
    /// The channel could not be set up.
    #[error("connecting to the Workload API at {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The agent answered with an error status.
    #[error("Workload API: {code:?}: {message}")]
    Status {
        /// gRPC code.
        code: tonic::Code,
        /// The agent's message.
        message: String,
    },
}

impl From<Status> for ClientError {
    fn from(s: Status) -> Self {
        ClientError::Status {
            code: s.code(),
            message: s.message().to_owned(),
        }
    }
}

/// Parses a Workload API address: `unix:///path` (or a bare absolute path).
pub fn parse_address(addr: &str) -> Result<PathBuf, ClientError> {
    let path = addr
        .strip_prefix("unix://")
        .or_else(|| addr.starts_with('/').then_some(addr))
        .ok_or_else(|| ClientError::BadAddress(addr.to_owned()))?;
    if !path.starts_with('/') || path.len() < 2 {
        return Err(ClientError::BadAddress(addr.to_owned()));
    }
    Ok(PathBuf::from(path))
}

/// The socket to use: `configured` if given, else `SPIFFE_ENDPOINT_SOCKET`.
pub fn socket_path(configured: Option<&str>) -> Result<PathBuf, ClientError> {
    match configured.filter(|s| !s.is_empty()) {
        Some(c) => parse_address(c),
        None => match std::env::var(ENDPOINT_SOCKET_ENV) {
            Ok(v) if !v.is_empty() => parse_address(&v),
            _ => Err(ClientError::NoSocket),
        },
    }
}

/// Our Workload API client over a unix socket.
#[derive(Clone)]
pub struct Client {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
}

impl Client {
    /// A client for the socket at `path` (connects lazily, on the first call).
    pub fn new(path: &Path) -> Result<Self, ClientError> {
        let path = path.to_owned();
        let p = path.clone();
        let channel = tonic::transport::Endpoint::from_static("http://workload-api.invalid")
            .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                let p = p.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(p).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                }
            }));
        Ok(Self {
            grpc: tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES),
        })
    }

    fn request<M>(message: M) -> Request<M> {
        let mut r = Request::new(message);
        r.metadata_mut().insert(
            SECURITY_HEADER,
            tonic::metadata::MetadataValue::from_static("true"),
        );
        r
    }

    /// Opens a `FetchX509SVID` stream.
    pub async fn fetch_x509_svid(
        &mut self,
    ) -> Result<tonic::codec::Streaming<X509SvidResponse>, ClientError> {
        self.grpc.ready().await.map_err(|e| ClientError::Status {
            code: tonic::Code::Unavailable,
            message: e.to_string(),
        })?;
        let path = http::uri::PathAndQuery::from_static("/SpiffeWorkloadAPI/FetchX509SVID");
        let r = self
            .grpc
            .server_streaming(
                Self::request(X509SvidRequest {}),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await?;
        Ok(r.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("unix:///run/tessera/agent.sock").unwrap(),
            PathBuf::from("/run/tessera/agent.sock")
        );
        assert_eq!(
            parse_address("/tmp/a.sock").unwrap(),
            PathBuf::from("/tmp/a.sock")
        );
        for bad in [
            "unix://relative",
            "tcp://127.0.0.1:1",
            "unix:///",
            "",
            "a.sock",
        ] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
        // A configured socket wins over the environment.
        assert_eq!(
            socket_path(Some("unix:///x/y.sock")).unwrap(),
            PathBuf::from("/x/y.sock")
        );
    }

    #[test]
    fn security_header() {
        let mut r = Request::new(X509SvidRequest {});
        assert_eq!(
            check_security_header(&r).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        r.metadata_mut()
            .insert(SECURITY_HEADER, "false".parse().unwrap());
        assert!(check_security_header(&r).is_err());
        r.metadata_mut()
            .insert(SECURITY_HEADER, "true".parse().unwrap());
        assert!(check_security_header(&r).is_ok());
    }
}
