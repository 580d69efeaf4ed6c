//! Container attestation: from a unix-socket peer to selectors.
//!
//! [`Attestor::attest`] takes the kernel's word for who called
//! ([`PeerCred`]), finds the container from the kernel's view of that process
//! (cgroup, then mountinfo), asks the runtime about that container, checks
//! that the runtime's answer and the kernel's agree, reads the isolation
//! posture, and finally checks that the caller is still the same process.
//! Any failure is an error: no partial identity.
//!
//! Decisions:
//! - A caller outside any container gets only `unix:uid:` and `unix:gid:`,
//!   and only if its mount, PID, cgroup and user namespaces are the host's
//!   (else it is refused with the namespace that differs: a process that
//!   made its own namespaces could hide the container it is in).
//!   It gets no `posture:` selectors either: posture describes a container's
//!   confinement, and a host process has none, so an entry that requires any
//!   posture selector can never match a host process.
//! - A container that joined another's network namespace
//!   (`--network container:<app>`) is a sidecar serving that app: its
//!   `container:` and `pod:` selectors are the app's. Both containers are
//!   recorded in [`ContainerEvidence`]. The kernel must agree: the caller's
//!   network namespace must be the app's.
//! - Posture describes the calling process (kernel facts) and its own
//!   container (runtime facts). For a sidecar it is the weaker of the
//!   sidecar's and the app's (the app's init process and container): host
//!   namespaces, capabilities, root, missing limits, no `no_new_privs`,
//!   seccomp, privileged, a writable root: whatever can reach into the app
//!   can reach the sidecar beside it, and the identity is the app's.
//! - The kernel and the runtime must agree: the runtime's container has the
//!   ID the cgroup path named, is running, and its init process shares the
//!   caller's mount namespace (this rules out a mountinfo or cgroup path
//!   that merely *looks like* another container's); a Podman pod named by
//!   the cgroup path is the runtime's pod. A process that made its own mount
//!   namespace inside a container is therefore refused.
//! - Label selectors no registration entry could hold (over 512 bytes, or
//!   with control characters) are left out; leaving out a selector can only
//!   make fewer entries match.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::cgroup::{
    CgroupError, ContainerRef, container_from_cgroup, container_from_mountinfo, is_container_id,
};
use crate::engine::{ContainerInfo, EngineClient, EngineError};
use crate::peer::{PeerCred, ProcessError, ProcessHandle};
use crate::posture::{CgroupFs, HostNamespaces, KernelPosture, Posture, RuntimePosture};

/// The namespaces a caller in no container must share with the host to be
/// treated as a host process.
const HOST_PROCESS_NAMESPACES: [&str; 4] = ["mnt", "pid", "cgroup", "user"];

/// Longest selector kept (the CA's limit for an entry's selector).
const MAX_SELECTOR: usize = 512;

/// Why attestation refused to produce selectors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// The calling process could not be read, or changed during attestation.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The process's cgroups or mounts name more than one container.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The runtime could not be asked (unreachable, timeout, error, malformed answer).
    #[error("container runtime: {0}")]
    Engine(#[source] EngineError),
    /// The kernel names a container the runtime does not know (it was removed).
    #[error("container {container_id} is not known to the runtime (removed?)")]
    ContainerVanished {
        /// The ID the kernel named.
        container_id: String,
    },
    /// The runtime's container is not running.
    #[error("container {container_id} is not running")]
    NotRunning {
        /// The container ID.
        container_id: String,
    },
    /// No container was found, yet the process is not in the host's
    /// namespaces: it is not a host process either (a private mount
    /// namespace can hide a container's cgroup and mounts).
    #[error(
        "process {pid} names no container but is not in the host's {namespace} namespace; refusing to treat it as a host process"
    )]
    NotHost {
        /// The PID.
        pid: u32,
        /// The first namespace that differs from the host's.
        namespace: &'static str,
    },
    /// What the runtime says contradicts what the kernel says.
    #[error("kernel and runtime disagree about container {container_id}: {reason}")]
    Mismatch {
        /// The container ID.
        container_id: String,
        /// The contradiction.
        reason: String,
    },
}

impl From<EngineError> for AttestError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound {
                kind: "container",
                id,
            } => AttestError::ContainerVanished { container_id: id },
            other => AttestError::Engine(other),
        }
    }
}

/// How the container was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Discovery {
    /// From `/proc/<pid>/cgroup`.
    Cgroup,
    /// From `/proc/<pid>/mountinfo` (fallback).
    Mountinfo,
}

/// The evidence about a caller in a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerEvidence {
    /// How the kernel's view led to the container.
    pub found_by: Discovery,
    /// The Kubernetes pod UID or Podman pod ID on the cgroup path, if any.
    pub cgroup_pod: Option<String>,
    /// The container the calling process runs in.
    pub caller: ContainerInfo,
    /// The app container whose network namespace the caller joined: the
    /// container the `container:` and `pod:` selectors describe.
    pub serves: Option<ContainerInfo>,
    /// Isolation posture.
    pub posture: Posture,
}

impl ContainerEvidence {
    /// The container whose identity the caller gets: the app it serves, or its own.
    pub fn identity(&self) -> &ContainerInfo {
        self.serves.as_ref().unwrap_or(&self.caller)
    }
}

/// The outcome of attesting one caller: the evidence and the selectors it yields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The caller's PID (agent's PID namespace).
    pub pid: u32,
    /// The caller's UID from `SO_PEERCRED`.
    pub uid: u32,
    /// The caller's GID from `SO_PEERCRED`.
    pub gid: u32,
    /// The caller's start time (clock ticks after boot), the PID-reuse guard.
    pub start_time: u64,
    /// `None` for a caller outside any container.
    pub container: Option<ContainerEvidence>,
    /// Selectors, sorted and without duplicates.
    pub selectors: Vec<String>,
}

/// Attests the processes behind unix-socket connections.
#[derive(Debug, Clone)]
pub struct Attestor {
    engine: EngineClient,
    host_ns: HostNamespaces,
    cgroups: CgroupFs,
}

impl Attestor {
    /// An attestor using `engine`, with the host's namespaces and cgroup
    /// mounts read from this machine ([`HostNamespaces::detect`],
    /// [`CgroupFs::detect`]).
    pub fn new(engine: EngineClient) -> Result<Self, AttestError> {
        Ok(Self::with_host(
            engine,
            HostNamespaces::detect()?,
            CgroupFs::detect()?,
        ))
    }

    /// An attestor with an explicit host view.
    pub fn with_host(engine: EngineClient, host_ns: HostNamespaces, cgroups: CgroupFs) -> Self {
        Attestor {
            engine,
            host_ns,
            cgroups,
        }
    }

    /// The runtime client.
    pub fn engine(&self) -> &EngineClient {
        &self.engine
    }

    /// Attests the process behind a connection (see the module documentation).
    /// Reads of `/proc` and cgroupfs are done inline: they are served from
    /// kernel memory and do not block on I/O.
    pub async fn attest(&self, peer: PeerCred) -> Result<Attestation, AttestError> {
        let handle = ProcessHandle::open(peer.pid)?;
        let found = find_container(&handle)?;
        let mut selectors = BTreeSet::from([
            format!("unix:uid:{}", peer.uid),
            format!("unix:gid:{}", peer.gid),
        ]);
        let container = match found {
            None => {
                self.check_host_process(&handle)?;
                None
            }
            Some((cref, found_by)) => {
                let evidence = self.container_evidence(&handle, cref, found_by).await?;
                // The process must not have moved to another cgroup meanwhile.
                let again = find_container(&handle)?;
                if again.as_ref().map(|(c, _)| c.container_id.as_str())
                    != Some(evidence.caller.id.as_str())
                {
                    return Err(ProcessError::Changed {
                        pid: peer.pid,
                        reason: "it moved to another cgroup".into(),
                    }
                    .into());
                }
                container_selectors(&evidence, &mut selectors);
                Some(evidence)
            }
        };
        handle.verify_still_same()?;
        Ok(Attestation {
            pid: peer.pid,
            uid: peer.uid,
            gid: peer.gid,
            start_time: handle.start_time(),
            container,
            selectors: selectors.into_iter().collect(),
        })
    }

    /// A caller in no container is a host process only if its mount, PID,
    /// cgroup and user namespaces are the host's.
    fn check_host_process(&self, handle: &ProcessHandle) -> Result<(), AttestError> {
        for namespace in HOST_PROCESS_NAMESPACES {
            let mine = handle.read_link(&format!("ns/{namespace}"))?;
            if self.host_ns.get(namespace) != Some(mine.as_str()) {
                return Err(AttestError::NotHost {
                    pid: handle.pid(),
                    namespace,
                });
            }
        }
        Ok(())
    }

    async fn container_evidence(
        &self,
        handle: &ProcessHandle,
        cref: ContainerRef,
        found_by: Discovery,
    ) -> Result<ContainerEvidence, AttestError> {
        let kernel = KernelPosture::read(handle, &self.host_ns, &self.cgroups)?;
        let workload = self.engine.inspect_workload(&cref.container_id).await?;
        let caller = workload.container;
        let mismatch = |reason: String| AttestError::Mismatch {
            container_id: cref.container_id.clone(),
            reason,
        };
        if caller.id != cref.container_id {
            return Err(mismatch(format!("the runtime answered for {}", caller.id)));
        }
        self.check_running_and_shares(handle, &caller, "mnt")?;
        if let (Some(pod), Some(engine_pod)) = (&cref.pod_uid, &caller.pod)
            && is_container_id(pod)
            && *pod != engine_pod.id
        {
            return Err(mismatch(format!(
                "cgroup path names pod {pod}, runtime says {}",
                engine_pod.id
            )));
        }
        let mut kernel = kernel;
        let mut runtime = RuntimePosture {
            privileged: caller.posture.privileged,
            readonly_rootfs: caller.posture.readonly_rootfs,
        };
        if let Some(app) = &workload.app {
            self.check_running_and_shares(handle, app, "net")?;
            // The sidecar's identity is the app's, and whatever can reach
            // into the app (host namespaces, capabilities, no limits) can
            // reach the sidecar beside it: the weaker of the two counts.
            let init = ProcessHandle::open(app.pid)?;
            let app_kernel = KernelPosture::read(&init, &self.host_ns, &self.cgroups)?;
            init.verify_still_same()?;
            kernel = kernel.weakest(&app_kernel);
            runtime = RuntimePosture {
                privileged: runtime.privileged || app.posture.privileged,
                readonly_rootfs: runtime.readonly_rootfs && app.posture.readonly_rootfs,
            };
        }
        Ok(ContainerEvidence {
            found_by,
            cgroup_pod: cref.pod_uid,
            posture: Posture { kernel, runtime },
            caller,
            serves: workload.app,
        })
    }

    /// The container must be running and the caller must share namespace
    /// `ns` with its init process.
    fn check_running_and_shares(
        &self,
        caller: &ProcessHandle,
        container: &ContainerInfo,
        ns: &str,
    ) -> Result<(), AttestError> {
        if !container.running || container.pid == 0 {
            return Err(AttestError::NotRunning {
                container_id: container.id.clone(),
            });
        }
        let init = ProcessHandle::open(container.pid)?;
        let path = format!("ns/{ns}");
        let (mine, theirs) = (caller.read_link(&path)?, init.read_link(&path)?);
        init.verify_still_same()?;
        if mine != theirs {
            return Err(AttestError::Mismatch {
                container_id: container.id.clone(),
                reason: format!(
                    "process {} is not in the {ns} namespace of the container's init (pid {})",
                    caller.pid(),
                    container.pid
                ),
            });
        }
        Ok(())
    }
}

/// The container the process is in: cgroup first, mountinfo as a fallback.
fn find_container(
    handle: &ProcessHandle,
) -> Result<Option<(ContainerRef, Discovery)>, AttestError> {
    if let Some(c) = container_from_cgroup(&handle.read("cgroup")?)? {
        return Ok(Some((c, Discovery::Cgroup)));
    }
    Ok(container_from_mountinfo(&handle.read("mountinfo")?)?.map(|c| (c, Discovery::Mountinfo)))
}

fn container_selectors(evidence: &ContainerEvidence, out: &mut BTreeSet<String>) {
    let c = evidence.identity();
    let mut add = |s: String| {
        if s.len() <= MAX_SELECTOR && !s.chars().any(char::is_control) {
            out.insert(s);
        } else {
            tracing::warn!(
                selector_len = s.len(),
                "selector left out: too long or has control characters"
            );
        }
    };
    add(format!("container:id:{}", c.id));
    if !c.name.is_empty() {
        add(format!("container:name:{}", c.name));
    }
    if !c.image.is_empty() {
        add(format!("container:image:{}", c.image));
    }
    if !c.image_id.is_empty() {
        add(format!("container:image-digest:{}", c.image_id));
    }
    for d in &c.repo_digests {
        if let Some((_, digest)) = d.rsplit_once('@') {
            add(format!("container:image-digest:{digest}"));
        }
    }
    for (k, v) in &c.labels {
        add(format!("container:label:{k}:{v}"));
    }
    if let Some(pod) = &c.pod {
        add(format!("pod:name:{}", pod.name));
        for (k, v) in &pod.labels {
            add(format!("pod:label:{k}:{v}"));
        }
    }
    for s in evidence.posture.selectors() {
        add(s);
    }
}
