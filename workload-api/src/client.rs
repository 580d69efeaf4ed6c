//! Our Workload API client over a unix socket (the sidecar's), which finds
//! the socket through `SPIFFE_ENDPOINT_SOCKET` and sends the security header.

use std::path::{Path, PathBuf};

use tonic::codegen::http;
use tonic::{Request, Status};

use crate::messages::{X509SvidRequest, X509SvidResponse};
use crate::{ENDPOINT_SOCKET_ENV, SECURITY_HEADER, method};

/// Largest response message our client accepts.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

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
        let path = http::uri::PathAndQuery::from_static(method::FETCH_X509_SVID);
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
}
