//! The server side: the [`WorkloadApi`] trait a server implements and the
//! tonic service that routes `/SpiffeWorkloadAPI/<Method>` to it.

use std::sync::Arc;

use futures_util::Stream;
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::{Request, Response, Status};

use crate::messages::{
    JwtBundlesRequest, JwtBundlesResponse, JwtSvidRequest, JwtSvidResponse, ValidateJwtSvidRequest,
    ValidateJwtSvidResponse, X509BundlesRequest, X509BundlesResponse, X509SvidRequest,
    X509SvidResponse,
};
use crate::method;

/// Largest request message accepted: the X.509 requests are empty, a
/// `ValidateJWTSVID` request carries one token (at most
/// [`tessera_core::jwt::MAX_TOKEN_BYTES`]) and an audience.
const MAX_REQUEST_BYTES: usize = 24 * 1024;
const _: () = assert!(MAX_REQUEST_BYTES > tessera_core::jwt::MAX_TOKEN_BYTES + 4096);

/// A stream of responses (or a status that ends it).
pub type ResponseStream<T> = std::pin::Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What a Workload API server (the node agent) serves behind the socket.
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

/// One method of `T`, as a plain function so one adapter serves every method.
type Method<T, Req, Resp> = fn(Arc<T>, Request<Req>) -> BoxFuture<Response<Resp>, Status>;

/// A unary method as tonic's service.
struct Unary<T, Req, Resp>(Arc<T>, Method<T, Req, Resp>);

impl<T, Req, Resp> tonic::server::UnaryService<Req> for Unary<T, Req, Resp> {
    type Response = Resp;
    type Future = BoxFuture<Response<Resp>, Status>;
    fn call(&mut self, request: Request<Req>) -> Self::Future {
        (self.1)(self.0.clone(), request)
    }
}

/// A server-streaming method as tonic's service.
struct Streaming<T, Req, Resp>(Arc<T>, Method<T, Req, ResponseStream<Resp>>);

impl<T, Req, Resp> tonic::server::ServerStreamingService<Req> for Streaming<T, Req, Resp> {
    type Response = Resp;
    type ResponseStream = ResponseStream<Resp>;
    type Future = BoxFuture<Response<ResponseStream<Resp>>, Status>;
    fn call(&mut self, request: Request<Req>) -> Self::Future {
        (self.1)(self.0.clone(), request)
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
            method::FETCH_X509_SVID => {
                let svc = Streaming(inner, |t, r| {
                    Box::pin(async move { t.fetch_x509_svid(r).await })
                });
                Box::pin(async move { Ok(grpc().server_streaming(svc, req).await) })
            }
            method::FETCH_X509_BUNDLES => {
                let svc = Streaming(inner, |t, r| {
                    Box::pin(async move { t.fetch_x509_bundles(r).await })
                });
                Box::pin(async move { Ok(grpc().server_streaming(svc, req).await) })
            }
            method::FETCH_JWT_SVID => {
                let svc = Unary(inner, |t, r| {
                    Box::pin(async move { t.fetch_jwt_svid(r).await })
                });
                Box::pin(async move { Ok(grpc().unary(svc, req).await) })
            }
            method::FETCH_JWT_BUNDLES => {
                let svc = Streaming(inner, |t, r| {
                    Box::pin(async move { t.fetch_jwt_bundles(r).await })
                });
                Box::pin(async move { Ok(grpc().server_streaming(svc, req).await) })
            }
            method::VALIDATE_JWT_SVID => {
                let svc = Unary(inner, |t, r| {
                    Box::pin(async move { t.validate_jwt_svid(r).await })
                });
                Box::pin(async move { Ok(grpc().unary(svc, req).await) })
            }
            other => {
                let msg = format!("unknown method {other}");
                Box::pin(async move { Ok(Status::unimplemented(msg).into_http()) })
            }
        }
    }
}
