//! Sidecar injection for Kubernetes manifests: the one implementation behind
//! `tessera inject` (and the admission webhook to come).
//!
//! [`Injector::inject_str`] reads multi-document YAML (or JSON), finds the
//! pod template of every Pod, Deployment, StatefulSet, DaemonSet,
//! ReplicaSet, Job and CronJob (also inside a `List`), and adds to it:
//!
//! - a `tessera-sidecar` container from the sidecar image, configured by
//!   `--set` arguments rendered from the pod's `tessera.dev/*` annotations
//!   ([`annotations`]) and validated by the sidecar's own configuration rules,
//!   with `SPIFFE_ENDPOINT_SOCKET` pointing at the node agent's socket and exec
//!   probes (`tessera-sidecar --probe`) on its `/readyz` and `/healthz`;
//! - a read-only `hostPath` volume for the agent's socket directory.
//!
//! With [`Options::native_sidecar`] the sidecar is a native sidecar (the first
//! init container, `restartPolicy: Always`, with a startup probe), so the app
//! starts only once the sidecar is ready, and pods that run to completion
//! (Jobs, CronJobs, `restartPolicy: Never|OnFailure`) complete. Without it,
//! those are refused: a classic sidecar never exits, so they never would.
//!
//! Injection is idempotent (a previous injection is replaced, so injecting
//! twice equals injecting once), skipped with `tessera.dev/inject: "false"`,
//! refused for `hostNetwork: true` and for ports the sidecar would share with
//! another container. Everything else is kept as it was, in its order; only
//! comments and formatting are lost. Objects of other kinds pass through.
//! The output is written by [`yaml`], which quotes what YAML 1.1 readers
//! (Kubernetes) would otherwise take for booleans or numbers.
//!
//! Architecture invariant: this crate only rewrites documents; it never
//! reads files or talks to a cluster (the CLI and the webhook do that).
#![forbid(unsafe_code)]

pub mod annotations;
mod pod;
pub mod yaml;

use serde_norway::{Mapping, Value};

pub use annotations::SidecarConfig;

/// The sidecar container's name, also the marker of a previous injection.
pub const SIDECAR_CONTAINER: &str = "tessera-sidecar";
/// The name of the volume holding the agent's socket directory.
pub const SOCKET_VOLUME: &str = "tessera-agent-socket";
/// Where the agent's socket directory is mounted in the sidecar.
pub const SOCKET_MOUNT: &str = "/run/tessera";
/// The sidecar's admin port (`/readyz`, `/healthz`, `/metrics`), on loopback:
/// the sidecar's default `admin_listen`, kept so the probes know it.
pub const ADMIN_PORT: u16 = 15000;
/// The sidecar image's user and group (numeric: the image has no passwd file).
pub const SIDECAR_UID: u32 = 65532;
/// Most bytes of manifest text one call reads.
pub const MAX_INPUT_BYTES: usize = 16 << 20;
/// Most YAML documents in one call.
pub const MAX_DOCUMENTS: usize = 10_000;

/// What every injected sidecar shares: where its image, its CA and the
/// node agent's socket are.
#[derive(Debug, Clone)]
pub struct Options {
    /// The sidecar image (`localhost/tessera-sidecar:<version>` by default,
    /// what `deploy/images/build.sh` tags).
    pub image: String,
    /// The CA's URL as pods reach it (revocation feed, denial reports).
    pub ca_url: String,
    /// The node agent's Workload API socket on the host
    /// (`socket_path` of the agent's configuration); its directory is
    /// mounted read-only into the sidecar.
    pub agent_socket: String,
    /// Inject a native sidecar (an init container with `restartPolicy:
    /// Always`, Kubernetes 1.29 and later) instead of a classic one.
    pub native_sidecar: bool,
}

impl Options {
    /// The default options with this CA URL.
    pub fn new(ca_url: impl Into<String>) -> Self {
        Self {
            image: concat!("localhost/tessera-sidecar:", env!("CARGO_PKG_VERSION")).into(),
            ca_url: ca_url.into(),
            agent_socket: "/run/tessera/agent.sock".into(),
            native_sidecar: false,
        }
    }
}

/// What injection refused, and where.
#[derive(Debug, thiserror::Error)]
#[error("{at}: {kind}")]
pub struct InjectError {
    /// The object refused: `document 2: Deployment/web` (with `item N` inside a `List`).
    pub at: String,
    /// Why.
    pub kind: ErrorKind,
}

/// Why injection refused an input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The options themselves are unusable.
    #[error("options: {0}")]
    Options(String),
    /// The text is not YAML, or is too large.
    #[error("{0}")]
    Input(String),
    /// A `tessera.dev/*` annotation is invalid; the first field names it.
    #[error("annotation {0}: {1}")]
    Annotation(&'static str, String),
    /// The pod uses the node's network namespace.
    #[error(
        "hostNetwork: true: the sidecar would listen on the node's addresses and the app's \
         plaintext ports would be the node's, so this pod cannot be meshed safely \
         (set tessera.dev/inject: \"false\" to leave it as it is)"
    )]
    HostNetwork,
    /// The pod runs to completion and the sidecar would keep it running.
    #[error(
        "{0}: a classic sidecar never exits, so this pod would never complete; inject a native \
         sidecar (tessera inject --native-sidecar, Kubernetes 1.29 and later) or set \
         tessera.dev/inject: \"false\""
    )]
    Completes(String),
    /// Another container declares a port the sidecar uses.
    #[error("port {port} of container {container:?} is also the sidecar's ({what})")]
    PortCollision {
        /// The port.
        port: u16,
        /// The other container.
        container: String,
        /// What the sidecar uses it for (an annotation, or its admin endpoint).
        what: String,
    },
    /// A field of the object does not have the shape Kubernetes gives it.
    #[error("{0}: {1}")]
    Malformed(String, &'static str),
}

/// Injects sidecars with one set of [`Options`].
#[derive(Debug, Clone)]
pub struct Injector {
    opts: Options,
    socket_dir: String,
    socket_file: String,
}

impl Injector {
    /// Checks the options: the CA URL by the sidecar's rule, the socket path
    /// absolute with a directory and a file name.
    pub fn new(opts: Options) -> Result<Self, InjectError> {
        let bad = |m: String| InjectError {
            at: "options".into(),
            kind: ErrorKind::Options(m),
        };
        let (dir, file) = opts
            .agent_socket
            .rsplit_once('/')
            .filter(|(d, f)| {
                opts.agent_socket.starts_with('/')
                    && !d.is_empty()
                    && !f.is_empty()
                    && opts.agent_socket.len() <= 1024
                    && !opts.agent_socket.chars().any(char::is_control)
            })
            .ok_or_else(|| {
                bad("agent socket: an absolute path like /run/tessera/agent.sock".into())
            })?;
        if opts.image.is_empty()
            || opts.image.len() > 1024
            || opts
                .image
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad("image: a non-empty image reference".into()));
        }
        let injector = Self {
            socket_dir: dir.to_owned(),
            socket_file: file.to_owned(),
            opts,
        };
        // The sidecar's own rules judge the CA URL, once, here.
        SidecarConfig::check_ca_url(&injector.opts.ca_url).map_err(bad)?;
        Ok(injector)
    }

    /// The options in use.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Injects into every document of `text` (multi-document YAML or JSON)
    /// and returns them as YAML, `---` between documents. Empty documents are
    /// dropped. Nothing is returned unless every document succeeds.
    pub fn inject_str(&self, text: &str) -> Result<String, InjectError> {
        let input = |at: String, m: String| InjectError {
            at,
            kind: ErrorKind::Input(m),
        };
        if text.len() > MAX_INPUT_BYTES {
            return Err(input(
                "input".into(),
                format!("more than {MAX_INPUT_BYTES} bytes"),
            ));
        }
        let mut out = String::new();
        for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
            let at = format!("document {}", i + 1);
            if i >= MAX_DOCUMENTS {
                return Err(input(at, format!("more than {MAX_DOCUMENTS} documents")));
            }
            let mut value = <Value as serde::Deserialize>::deserialize(doc)
                .map_err(|e| input(at.clone(), e.to_string()))?;
            if value.is_null() {
                continue;
            }
            self.inject_object(&mut value).map_err(|e| InjectError {
                at: format!("{at}: {}", e.at),
                kind: e.kind,
            })?;
            if !out.is_empty() {
                out.push_str("---\n");
            }
            out.push_str(&yaml::to_string(&value).map_err(|e| input(at, e.to_string()))?);
        }
        Ok(out)
    }

    /// Injects into one manifest object in place (a `List`'s items each).
    /// Returns how many pod templates got a sidecar. Objects that are not
    /// workloads, and pods skipped by annotation, are left untouched.
    pub fn inject_object(&self, obj: &mut Value) -> Result<usize, InjectError> {
        let name = describe(obj);
        let Some(m) = obj.as_mapping_mut() else {
            return Err(InjectError {
                at: name,
                kind: ErrorKind::Malformed("document".into(), "expected a mapping"),
            });
        };
        if str_at(m, "kind").is_some_and(|k| k == "List" || k.ends_with("List"))
            && m.get("items").is_some_and(Value::is_sequence)
        {
            let items = m.get_mut("items").and_then(Value::as_sequence_mut);
            let mut n = 0;
            for (i, item) in items.into_iter().flatten().enumerate() {
                let at = format!("{name} item {}", i + 1);
                if item
                    .get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List"))
                {
                    return Err(InjectError {
                        at,
                        kind: ErrorKind::Malformed("items".into(), "a List inside a List"),
                    });
                }
                n += self.inject_object(item).map_err(|e| InjectError {
                    at: format!("{at}: {}", e.at),
                    kind: e.kind,
                })?;
            }
            return Ok(n);
        }
        let completes = matches!(str_at(m, "kind"), Some("Job" | "CronJob"));
        let Some(template) = pod::template_of(m) else {
            return Ok(0);
        };
        let template = template.map_err(|kind| InjectError {
            at: name.clone(),
            kind,
        })?;
        pod::inject(self, template, completes, &name)
            .map(usize::from)
            .map_err(|kind| InjectError { at: name, kind })
    }
}

/// `Kind/name` of an object, for error messages.
fn describe(obj: &Value) -> String {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("object");
    let name = obj
        .get("metadata")
        .and_then(|md| md.get("name").or_else(|| md.get("generateName")))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    format!("{kind}/{name}")
}

/// The string at `key` of a mapping, if it is one.
fn str_at<'a>(m: &'a Mapping, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}
