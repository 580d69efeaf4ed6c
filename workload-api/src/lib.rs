//! The SPIFFE Workload API protocol: gRPC over a unix socket.
//!
//! The standard `workload.proto` is committed as `proto/workload.proto`; it
//! has no `package`, so the gRPC paths are `/SpiffeWorkloadAPI/<Method>`
//! ([`method`]). The messages are written by hand with prost's derive
//! macros, which costs no `protoc`/`protox` build step.
//!
//! - Server side (the node agent): [`WorkloadApi`] is what a server
//!   implements, [`WorkloadApiServer`] routes the five methods to it, and
//!   every method starts with [`check_security_header`]; [`authority`]
//!   lets every gRPC stack's `:authority` through (a unix socket gives it
//!   no meaning).
//! - Client side (the sidecar, tests): [`Client`] finds the socket through
//!   `SPIFFE_ENDPOINT_SOCKET` ([`socket_path`]) and sends the security header.
#![forbid(unsafe_code)]

pub mod authority;
mod client;
mod messages;
mod server;

pub use client::{Client, ClientError, parse_address, socket_path};
pub use messages::{
    JwtBundlesRequest, JwtBundlesResponse, JwtSvid, JwtSvidRequest, JwtSvidResponse,
    ValidateJwtSvidRequest, ValidateJwtSvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509Svid, X509SvidRequest, X509SvidResponse,
};
pub use server::{ResponseStream, WorkloadApi, WorkloadApiServer};

/// The metadata key every request must carry with the value `true`.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// The environment variable naming the Workload API socket (`unix:///path`).
pub const ENDPOINT_SOCKET_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

/// The gRPC paths of the five methods (the proto has no `package`).
pub mod method {
    /// `FetchX509SVID` (server streaming).
    pub const FETCH_X509_SVID: &str = "/SpiffeWorkloadAPI/FetchX509SVID";
    /// `FetchX509Bundles` (server streaming).
    pub const FETCH_X509_BUNDLES: &str = "/SpiffeWorkloadAPI/FetchX509Bundles";
    /// `FetchJWTSVID` (unary).
    pub const FETCH_JWT_SVID: &str = "/SpiffeWorkloadAPI/FetchJWTSVID";
    /// `FetchJWTBundles` (server streaming).
    pub const FETCH_JWT_BUNDLES: &str = "/SpiffeWorkloadAPI/FetchJWTBundles";
    /// `ValidateJWTSVID` (unary).
    pub const VALIDATE_JWT_SVID: &str = "/SpiffeWorkloadAPI/ValidateJWTSVID";
}

/// Refuses a request without `workload.spiffe.io: true` (`InvalidArgument`,
/// as the Workload API standard says).
pub fn check_security_header<T>(request: &tonic::Request<T>) -> Result<(), tonic::Status> {
    match request.metadata().get(SECURITY_HEADER) {
        Some(v) if v.as_bytes() == b"true" => Ok(()),
        _ => Err(tonic::Status::invalid_argument(
            "security header missing from request: the Workload API requires metadata `workload.spiffe.io: true`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_header() {
        let mut r = tonic::Request::new(X509SvidRequest {});
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
