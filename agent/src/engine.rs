//! A minimal client of the Docker-compatible Engine API, over the runtime's
//! unix socket. Docker serves it natively; Podman serves it from
//! `podman system service` (and adds its own `libpod` API, which this client
//! uses for what the Docker API lacks: pods).
//!
//! Only reads: container inspect, image inspect, and Podman's container and
//! pod inspect. Every call has a deadline (connect, request and whole body)
//! and a body size limit; the runtime is trusted (it runs the containers) but
//! a wedged runtime must not wedge the agent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;

use crate::posture::RuntimePosture;

/// Podman's system service socket when run as root (the default).
pub const PODMAN_SOCKET: &str = "/run/podman/podman.sock";
/// Docker's socket.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// The Docker API version requested (Docker 20.10+, Podman 3+).
const COMPAT: &str = "/v1.41";
/// The libpod API version requested (Podman 4+).
const LIBPOD: &str = "/v4.0.0/libpod";

/// Why the runtime could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The socket could not be connected to: no runtime there, or no access.
    #[error("container runtime unreachable at {}: {source}", socket.display())]
    Unreachable {
        /// The socket path.
        socket: PathBuf,
        /// The connect error.
        #[source]
        source: std::io::Error,
    },
    /// The call did not complete in time.
    #[error("container runtime did not answer {path} within {after:?}")]
    Timeout {
        /// The request path.
        path: String,
        /// The deadline.
        after: Duration,
    },
    /// HTTP failed (connection reset, malformed response, ...).
    #[error("HTTP error talking to the container runtime ({path}): {source}")]
    Http {
        /// The request path.
        path: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The response body exceeded the client's limit.
    #[error("container runtime's answer to {path} is larger than {limit} bytes")]
    BodyTooLarge {
        /// The request path.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// The runtime does not know the object (a container that vanished).
    #[error("no such {kind} {id}")]
    NotFound {
        /// `container`, `pod` or `image`.
        kind: &'static str,
        /// The ID asked for.
        id: String,
    },
    /// The runtime answered with an error status.
    #[error("container runtime answered {path} with {status}: {message}")]
    Status {
        /// The request path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The runtime's message (truncated).
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("container runtime's {what} is malformed: {reason}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// An ID or name that cannot be put in a request path.
    #[error("{0:?} is not a valid container, pod or image reference")]
    InvalidReference(String),
}

/// A pod (Podman).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInfo {
    /// Pod ID.
    pub id: String,
    /// Pod name.
    pub name: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
}

/// What the runtime says about one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Full container ID (64 hex digits).
    pub id: String,
    /// Name, without Docker's leading `/`.
    pub name: String,
    /// Image name as the container was created with (`Config.Image`).
    pub image: String,
    /// Image ID (`Image`, `sha256:...`): the digest of the image configuration.
    pub image_id: String,
    /// Registry digests of the image (`RepoDigests` of the image, `name@sha256:...`),
    /// empty when the image is no longer known or was never pushed or pulled.
    pub repo_digests: Vec<String>,
    /// Container labels.
    pub labels: BTreeMap<String, String>,
    /// The pod it belongs to (Podman only).
    pub pod: Option<PodInfo>,
    /// `HostConfig.NetworkMode`: `bridge`, `host`, `none`, `container:<id>`, ...
    pub network_mode: String,
    /// `State.Pid`: PID of its init process in the runtime's PID namespace (0 when stopped).
    pub pid: u32,
    /// `State.Running`.
    pub running: bool,
    /// Whether it is a Podman pod's infra container.
    pub is_infra: bool,
    /// Privileged and read-only root.
    pub posture: RuntimePosture,
}

impl ContainerInfo {
    /// The container whose network namespace this one joined
    /// (`--network container:<id>`), if any.
    pub fn joined_network_of(&self) -> Option<&str> {
        self.network_mode.strip_prefix("container:")
    }
}

/// A container and, when it joined another's network namespace, that app
/// container (not a pod's infra container: joining it is just pod membership).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// The container asked about.
    pub container: ContainerInfo,
    /// The app container whose network namespace it shares.
    pub app: Option<ContainerInfo>,
}

/// Client of the Engine API on one unix socket.
#[derive(Debug, Clone)]
pub struct EngineClient {
    socket: PathBuf,
    timeout: Duration,
    max_body: usize,
}

struct Reply {
    path: String,
    status: StatusCode,
    podman: bool,
    body: Bytes,
}

/// Aborts the connection task when the request is done or abandoned.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawContainer {
    id: String,
    name: String,
    image: String,
    config: RawConfig,
    host_config: RawHostConfig,
    state: RawState,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    image: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawHostConfig {
    #[serde(default)]
    network_mode: String,
    // Required: a runtime that does not say is not taken as unprivileged.
    privileged: bool,
    readonly_rootfs: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawState {
    running: bool,
    pid: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawLibpodContainer {
    #[serde(default)]
    pod: String,
    #[serde(default)]
    is_infra: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawImage {
    #[serde(default)]
    repo_digests: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawPod {
    id: String,
    name: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

impl EngineClient {
    /// A client of the runtime at `socket`, with a 5 s deadline per call and
    /// a 1 MiB response limit.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        EngineClient {
            socket: socket.into(),
            timeout: Duration::from_secs(5),
            max_body: 1024 * 1024,
        }
    }

    /// The first of [`PODMAN_SOCKET`] and [`DOCKER_SOCKET`] that exists,
    /// else Podman's (so that calls fail with [`EngineError::Unreachable`]).
    pub fn detect() -> Self {
        let socket = [PODMAN_SOCKET, DOCKER_SOCKET]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or(PODMAN_SOCKET);
        Self::new(socket)
    }

    /// Sets the deadline of each call (connect, request and body).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the largest response body accepted.
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Inspects a container: Docker-API facts, the image's registry digests,
    /// and on Podman its pod (name and labels) and whether it is an infra
    /// container.
    pub async fn inspect_container(&self, id: &str) -> Result<ContainerInfo, EngineError> {
        check_reference(id)?;
        let reply = self.get(&format!("{COMPAT}/containers/{id}/json")).await?;
        let podman = reply.podman;
        let raw: RawContainer = reply.json("container", id, "container inspect")?;
        if !crate::cgroup::is_container_id(&raw.id) {
            return Err(EngineError::Malformed {
                what: "container inspect",
                reason: format!("Id {:?} is not 64 hex digits", raw.id),
            });
        }
        let mut info = ContainerInfo {
            name: raw.name.strip_prefix('/').unwrap_or(&raw.name).to_owned(),
            image: raw.config.image,
            repo_digests: self.repo_digests(&raw.image).await?,
            image_id: raw.image,
            labels: raw.config.labels.unwrap_or_default(),
            pod: None,
            network_mode: raw.host_config.network_mode,
            pid: u32::try_from(raw.state.pid).unwrap_or(0),
            running: raw.state.running,
            is_infra: false,
            posture: RuntimePosture {
                privileged: raw.host_config.privileged,
                readonly_rootfs: raw.host_config.readonly_rootfs,
            },
            id: raw.id,
        };
        if podman {
            let reply = self
                .get(&format!("{LIBPOD}/containers/{}/json", info.id))
                .await?;
            let lp: RawLibpodContainer =
                reply.json("container", &info.id, "libpod container inspect")?;
            info.is_infra = lp.is_infra;
            if !lp.pod.is_empty() {
                info.pod = Some(self.inspect_pod(&lp.pod).await?);
            }
        }
        Ok(info)
    }

    /// Inspects a container and, if it joined another container's network
    /// namespace (and that one is not its pod's infra container), that app
    /// container too. A nested join (the app itself joined a third container)
    /// is not followed.
    pub async fn inspect_workload(&self, id: &str) -> Result<Workload, EngineError> {
        let container = self.inspect_container(id).await?;
        let app = match container.joined_network_of() {
            Some(target) => {
                let app = self.inspect_container(target).await?;
                (!app.is_infra).then_some(app)
            }
            None => None,
        };
        Ok(Workload { container, app })
    }

    /// Inspects a Podman pod through the libpod API.
    pub async fn inspect_pod(&self, id: &str) -> Result<PodInfo, EngineError> {
        check_reference(id)?;
        let reply = self.get(&format!("{LIBPOD}/pods/{id}/json")).await?;
        let raw: RawPod = reply.json("pod", id, "pod inspect")?;
        Ok(PodInfo {
            id: raw.id,
            name: raw.name,
            labels: raw.labels.unwrap_or_default(),
        })
    }

    /// `RepoDigests` of an image; empty if the runtime no longer knows it.
    async fn repo_digests(&self, image_id: &str) -> Result<Vec<String>, EngineError> {
        if image_id.is_empty() {
            return Ok(Vec::new());
        }
        check_reference(image_id)?;
        let reply = self
            .get(&format!("{COMPAT}/images/{image_id}/json"))
            .await?;
        match reply.json::<RawImage>("image", image_id, "image inspect") {
            Ok(raw) => Ok(raw.repo_digests.unwrap_or_default()),
            Err(EngineError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    async fn get(&self, path: &str) -> Result<Reply, EngineError> {
        tokio::time::timeout(self.timeout, self.get_unbounded(path))
            .await
            .map_err(|_| EngineError::Timeout {
                path: path.to_owned(),
                after: self.timeout,
            })?
    }

    async fn get_unbounded(&self, path: &str) -> Result<Reply, EngineError> {
        let http = |source: Box<dyn std::error::Error + Send + Sync>| EngineError::Http {
            path: path.to_owned(),
            source,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| EngineError::Unreachable {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(e.into()))?;
        let _conn = AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "engine API connection ended");
            }
        }));
        let request = Request::get(path)
            .header(header::HOST, "localhost")
            .header(header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| http(e.into()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| http(e.into()))?;
        let status = response.status();
        let podman = response.headers().contains_key("libpod-api-version");
        let body = Limited::new(response.into_body(), self.max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    EngineError::BodyTooLarge {
                        path: path.to_owned(),
                        limit: self.max_body,
                    }
                } else {
                    http(e)
                }
            })?
            .to_bytes();
        Ok(Reply {
            path: path.to_owned(),
            status,
            podman,
            body,
        })
    }
}

impl Reply {
    fn json<T: DeserializeOwned>(
        self,
        kind: &'static str,
        id: &str,
        what: &'static str,
    ) -> Result<T, EngineError> {
        if self.status == StatusCode::NOT_FOUND {
            return Err(EngineError::NotFound {
                kind,
                id: id.to_owned(),
            });
        }
        if !self.status.is_success() {
            #[derive(Deserialize)]
            struct Message {
                message: String,
            }
            let mut message = serde_json::from_slice::<Message>(&self.body)
                .map(|m| m.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&self.body).into_owned());
            if let Some((cut, _)) = message.char_indices().nth(300) {
                message.truncate(cut);
            }
            return Err(EngineError::Status {
                path: self.path,
                status: self.status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&self.body).map_err(|e| EngineError::Malformed {
            what,
            reason: e.to_string(),
        })
    }
}

/// IDs, names and image IDs go into a request path: allow only the
/// characters they are made of (`[A-Za-z0-9_.:-]`, not starting with `.`).
fn check_reference(r: &str) -> Result<(), EngineError> {
    let ok = !r.is_empty()
        && r.len() <= 256
        && !r.starts_with('.')
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::InvalidReference(r.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        for ok in ["web", "my_app.1", "sha256:2c2d9111f183", &"a".repeat(64)] {
            assert!(check_reference(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "..",
            "../x",
            "a/b",
            "a?b",
            "a b",
            "a%2f",
            &"a".repeat(257),
        ] {
            assert!(check_reference(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod fake_runtime {
    //! The client against a fake runtime: deadlines, size limits, fail-closed parsing.
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const ID: &str = "5d47ef84118f39753f5e152e182b1c271ba93dfc1603b8af5e4abdb190ce9ef9";

    /// Serves every connection with `respond(path)`; `None` never answers.
    fn serve(dir: &Path, respond: fn(&str) -> Option<String>) -> (PathBuf, AbortOnDrop) {
        let socket = dir.join("engine.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    match respond(&path) {
                        Some(r) => {
                            let _ = s.write_all(r.as_bytes()).await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        (socket, AbortOnDrop(task))
    }

    fn reply(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn ok(body: &str) -> String {
        reply("200 OK", body)
    }

    fn docker_container(privileged: &str) -> String {
        format!(
            r#"{{"Id":"{ID}","Name":"/web","Image":"sha256:abc","State":{{"Running":true,"Pid":42}},
               "Config":{{"Image":"nginx:1","Labels":{{"app":"web"}}}},
               "HostConfig":{{"NetworkMode":"bridge"{privileged},"ReadonlyRootfs":true}}}}"#
        )
    }

    #[tokio::test]
    async fn docker_answer_is_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, _server) = serve(dir.path(), |path| {
            Some(if path.contains("/containers/") {
                ok(&docker_container(r#","Privileged":false"#))
            } else if path.contains("/images/") {
                ok(r#"{"RepoDigests":["nginx@sha256:def"]}"#)
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into()
            })
        });
        let info = EngineClient::new(socket)
            .inspect_container("web")
            .await
            .unwrap();
        assert_eq!(info.id, ID);
        assert_eq!(info.name, "web");
        assert_eq!(info.image, "nginx:1");
        assert_eq!(info.image_id, "sha256:abc");
        assert_eq!(info.repo_digests, vec!["nginx@sha256:def".to_owned()]);
        assert_eq!(info.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(info.pid, 42);
        assert!(info.pod.is_none(), "no libpod header: Docker, no pods");
        assert!(info.posture.readonly_rootfs);
    }

    /// What inspecting `web` fails with against `respond`, through the client `tune` makes.
    async fn inspect_error(
        respond: fn(&str) -> Option<String>,
        tune: impl FnOnce(EngineClient) -> EngineClient,
    ) -> EngineError {
        let dir = tempfile::tempdir().unwrap();
        let (socket, _server) = serve(dir.path(), respond);
        tune(EngineClient::new(socket))
            .inspect_container("web")
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn missing_privileged_flag_is_refused_not_taken_as_false() {
        let err = inspect_error(|_| Some(ok(&docker_container(""))), |c| c).await;
        assert!(matches!(err, EngineError::Malformed { .. }), "{err}");
    }

    #[tokio::test]
    async fn silent_runtime_times_out() {
        let err = inspect_error(|_| None, |c| c.with_timeout(Duration::from_millis(200))).await;
        assert!(matches!(err, EngineError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn oversized_answer_is_refused() {
        let err = inspect_error(
            |_| Some(ok(&format!(r#"{{"pad":"{}"}}"#, "x".repeat(100_000)))),
            |c| c.with_max_body(10_000),
        )
        .await;
        assert!(matches!(err, EngineError::BodyTooLarge { .. }), "{err}");
    }

    #[tokio::test]
    async fn errors_and_unknown_containers() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, _server) = serve(dir.path(), |path| {
            Some(if path.contains("gone") {
                reply("404 Not Found", r#"{"message":"no such container"}"#)
            } else {
                reply("500 Internal Server Error", r#"{"message":"boom"}"#)
            })
        });
        let client = EngineClient::new(socket);
        let err = client.inspect_container("gone").await.unwrap_err();
        assert!(
            matches!(
                err,
                EngineError::NotFound {
                    kind: "container",
                    ..
                }
            ),
            "{err}"
        );
        let err = client.inspect_container("web").await.unwrap_err();
        assert!(
            matches!(&err, EngineError::Status { status: 500, message, .. } if message == "boom"),
            "{err}"
        );
        let err = client.inspect_container("../secrets").await.unwrap_err();
        assert!(matches!(err, EngineError::InvalidReference(_)), "{err}");
        let err = EngineClient::new(dir.path().join("none.sock"))
            .inspect_container("web")
            .await
            .unwrap_err();
        assert!(matches!(err, EngineError::Unreachable { .. }), "{err}");
    }
}
