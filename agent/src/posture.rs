//! Isolation posture: how well a container's process is confined.
//!
//! The kernel is asked first, about the calling process itself: its `status`
//! (UIDs, effective capabilities, `no_new_privs`, seccomp mode), its
//! namespaces compared with the host's, and the memory and PID limits of its
//! cgroup. The runtime is asked second, for what only it knows (privileged,
//! read-only root filesystem). Each fact becomes a `posture:` selector.
//!
//! Unknown is never reported as safe: a kernel fact that cannot be read is an
//! error, and a limit that cannot be found is reported as absent (`false`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroup::{CgroupLine, CgroupMount, cgroup_mounts, parse_cgroup_file};
use crate::peer::{ProcessError, ProcessHandle, status_ids};

/// The namespaces compared with the host's, as named under `/proc/<pid>/ns/`.
pub const NAMESPACES: [&str; 7] = ["pid", "net", "ipc", "uts", "mnt", "user", "cgroup"];

/// `CAP_SYS_ADMIN` is bit 21 of the capability sets.
const CAP_SYS_ADMIN: u32 = 21;

/// At or above this, a cgroup v1 `memory.limit_in_bytes` means "no limit"
/// (the kernel's unlimited value is `PAGE_COUNTER_MAX * PAGE_SIZE`, just
/// under 2^63, and varies with the page size).
const V1_UNLIMITED_MEMORY: u64 = 1 << 62;

/// The host's namespaces, as the agent sees them: the identities
/// (`net:[4026531833]`) the caller's namespaces are compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNamespaces {
    links: BTreeMap<String, String>,
    source: PathBuf,
}

impl HostNamespaces {
    /// The namespaces of PID 1 (`/proc/1/ns`), the host's init: the right
    /// reference for an agent on the host or in a container started with the
    /// host's PID namespace. When PID 1's links cannot be read (some sandboxes
    /// deny it even to root, as on the machine this was written on), the
    /// agent's own (`/proc/self/ns`) are used instead, which is right only
    /// for an agent running in the host's namespaces; the choice is logged.
    pub fn detect() -> Result<Self, ProcessError> {
        match Self::from_dir(Path::new("/proc/1/ns")) {
            Ok(ns) => Ok(ns),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read PID 1's namespaces; comparing with the agent's own");
                Self::from_dir(Path::new("/proc/self/ns"))
            }
        }
    }

    /// The namespaces whose links are in `dir` (such as `/proc/1/ns`).
    pub fn from_dir(dir: &Path) -> Result<Self, ProcessError> {
        let mut links = BTreeMap::new();
        for ns in NAMESPACES {
            let path = dir.join(ns);
            let target = std::fs::read_link(&path).map_err(|source| ProcessError::HostView {
                path: path.display().to_string(),
                source,
            })?;
            links.insert(ns.to_owned(), target.to_string_lossy().into_owned());
        }
        Ok(HostNamespaces {
            links,
            source: dir.to_owned(),
        })
    }

    /// Where the reference was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The link of one namespace (`net:[4026531833]`).
    pub fn get(&self, ns: &str) -> Option<&str> {
        self.links.get(ns).map(String::as_str)
    }
}

/// The cgroup filesystems the agent sees, where containers' limits are read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupFs {
    mounts: Vec<CgroupMount>,
}

impl CgroupFs {
    /// The cgroup mounts in the agent's own mount table (`/proc/self/mountinfo`).
    pub fn detect() -> Result<Self, ProcessError> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| {
            ProcessError::HostView {
                path: "/proc/self/mountinfo".into(),
                source,
            }
        })?;
        Ok(Self::from_mounts(cgroup_mounts(&text)))
    }

    /// From an explicit list of mounts.
    pub fn from_mounts(mounts: Vec<CgroupMount>) -> Self {
        CgroupFs { mounts }
    }

    /// Directories where the cgroup of `line` appears: a v2 line in every
    /// cgroup2 mount, a v1 line in the mounts of the same controllers.
    fn dirs<'a>(&'a self, line: &'a CgroupLine) -> impl Iterator<Item = PathBuf> + 'a {
        self.mounts.iter().filter_map(move |m| {
            let same_hierarchy = match &m.v1_controllers {
                None => line.is_v2(),
                Some(c) => !line.is_v2() && c == &line.controllers,
            };
            if !same_hierarchy {
                return None;
            }
            let root = m.root.trim_end_matches('/');
            let rel = line.path.strip_prefix(root)?;
            if !(rel.is_empty() || rel.starts_with('/')) || rel.split('/').any(|s| s == "..") {
                return None;
            }
            Some(PathBuf::from(format!("{}{rel}", m.mount_point)))
        })
    }

    /// Whether any hierarchy sets a memory limit on the cgroup: cgroup v2
    /// `memory.max` other than `max`, or cgroup v1 `memory.limit_in_bytes`
    /// below the kernel's "unlimited". Only the process's own cgroup is read,
    /// not its ancestors.
    pub fn memory_limited(&self, lines: &[CgroupLine]) -> bool {
        lines.iter().any(|line| {
            self.dirs(line).any(|dir| {
                if line.is_v2() {
                    read_trimmed(&dir.join("memory.max")).is_some_and(|v| v != "max")
                } else if line.controllers.iter().any(|c| c == "memory") {
                    read_trimmed(&dir.join("memory.limit_in_bytes"))
                        .and_then(|v| v.parse::<u64>().ok())
                        .is_some_and(|v| v < V1_UNLIMITED_MEMORY)
                } else {
                    false
                }
            })
        })
    }

    /// Whether any hierarchy sets a PID limit on the cgroup (`pids.max`
    /// other than `max`, v1 or v2).
    pub fn pids_limited(&self, lines: &[CgroupLine]) -> bool {
        lines.iter().any(|line| {
            (line.is_v2() || line.controllers.iter().any(|c| c == "pids"))
                && self
                    .dirs(line)
                    .any(|dir| read_trimmed(&dir.join("pids.max")).is_some_and(|v| v != "max"))
        })
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Seccomp mode of a process (`Seccomp:` in `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    /// No seccomp.
    Disabled,
    /// Strict mode (read, write, exit, sigreturn only).
    Strict,
    /// A BPF filter.
    Filter,
}

impl SeccompMode {
    /// The selector value.
    pub fn as_str(self) -> &'static str {
        match self {
            SeccompMode::Disabled => "disabled",
            SeccompMode::Strict => "strict",
            SeccompMode::Filter => "filter",
        }
    }
}

/// What the kernel says about a process's confinement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelPosture {
    /// Effective UID, in the agent's user namespace.
    pub uid: u32,
    /// Whether any of the real, effective, saved or filesystem UIDs is 0
    /// (a saved UID 0 can become effective again).
    pub root: bool,
    /// Whether `CAP_SYS_ADMIN` is in the effective set.
    pub cap_sys_admin: bool,
    /// Whether `no_new_privs` is set.
    pub no_new_privs: bool,
    /// Seccomp mode.
    pub seccomp: SeccompMode,
    /// For each of [`NAMESPACES`]: whether the process is in the host's.
    pub host_ns: BTreeMap<String, bool>,
    /// Whether its cgroup has a memory limit.
    pub memory_limit: bool,
    /// Whether its cgroup has a PID limit.
    pub pids_limit: bool,
}

/// What the runtime says about a container's confinement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimePosture {
    /// `HostConfig.Privileged`.
    pub privileged: bool,
    /// `HostConfig.ReadonlyRootfs`.
    pub readonly_rootfs: bool,
}

/// The facts of a `status` file that posture uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusFacts {
    /// Real, effective, saved and filesystem UIDs.
    pub uids: Vec<u32>,
    /// Effective capability set.
    pub cap_eff: u64,
    /// `NoNewPrivs`.
    pub no_new_privs: bool,
    /// `Seccomp`.
    pub seccomp: SeccompMode,
}

/// Parses the posture facts out of `/proc/<pid>/status`; `None` if a line is
/// missing or malformed (every kernel since 4.10 has them all).
pub fn parse_status(status: &str) -> Option<StatusFacts> {
    let value = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let uids = status_ids(status, "Uid:").filter(|u| u.len() == 4)?;
    let cap_eff = u64::from_str_radix(value("CapEff:")?, 16).ok()?;
    let no_new_privs = match value("NoNewPrivs:")? {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    let seccomp = match value("Seccomp:")? {
        "0" => SeccompMode::Disabled,
        "1" => SeccompMode::Strict,
        "2" => SeccompMode::Filter,
        _ => return None,
    };
    Some(StatusFacts {
        uids,
        cap_eff,
        no_new_privs,
        seccomp,
    })
}

impl KernelPosture {
    /// Reads the posture of the process behind `handle`.
    pub fn read(
        handle: &ProcessHandle,
        host: &HostNamespaces,
        cgroups: &CgroupFs,
    ) -> Result<Self, ProcessError> {
        let facts = parse_status(&handle.read("status")?).ok_or(ProcessError::Malformed {
            pid: handle.pid(),
            file: "status",
            reason: "missing Uid, CapEff, NoNewPrivs or Seccomp",
        })?;
        let mut host_ns = BTreeMap::new();
        for ns in NAMESPACES {
            let mine = handle.read_link(&format!("ns/{ns}"))?;
            host_ns.insert(ns.to_owned(), host.get(ns) == Some(mine.as_str()));
        }
        let lines = parse_cgroup_file(&handle.read("cgroup")?);
        Ok(KernelPosture {
            uid: facts.uids[1],
            root: facts.uids.contains(&0),
            cap_sys_admin: facts.cap_eff & (1 << CAP_SYS_ADMIN) != 0,
            no_new_privs: facts.no_new_privs,
            seccomp: facts.seccomp,
            host_ns,
            memory_limit: cgroups.memory_limited(&lines),
            pids_limit: cgroups.pids_limited(&lines),
        })
    }
}

impl SeccompMode {
    /// How much it confines: disabled < filter < strict.
    fn strength(self) -> u8 {
        match self {
            SeccompMode::Disabled => 0,
            SeccompMode::Filter => 1,
            SeccompMode::Strict => 2,
        }
    }
}

impl KernelPosture {
    /// The weaker of two processes' confinement, fact by fact (for a sidecar
    /// and the app whose namespaces it shares); the UID stays `self`'s.
    pub fn weakest(&self, other: &KernelPosture) -> KernelPosture {
        let seccomp = if other.seccomp.strength() < self.seccomp.strength() {
            other.seccomp
        } else {
            self.seccomp
        };
        KernelPosture {
            uid: self.uid,
            root: self.root || other.root,
            cap_sys_admin: self.cap_sys_admin || other.cap_sys_admin,
            no_new_privs: self.no_new_privs && other.no_new_privs,
            seccomp,
            host_ns: self
                .host_ns
                .iter()
                .map(|(ns, host)| {
                    let theirs = other.host_ns.get(ns).copied().unwrap_or(true);
                    (ns.clone(), *host || theirs)
                })
                .collect(),
            memory_limit: self.memory_limit && other.memory_limit,
            pids_limit: self.pids_limit && other.pids_limit,
        }
    }
}

/// The whole posture of a container's process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posture {
    /// From the kernel, about the calling process.
    pub kernel: KernelPosture,
    /// From the runtime, about its container.
    pub runtime: RuntimePosture,
}

impl Posture {
    /// The `posture:` selectors.
    pub fn selectors(&self) -> Vec<String> {
        let k = &self.kernel;
        let mut s = vec![
            format!("posture:uid:{}", k.uid),
            format!("posture:root:{}", k.root),
            format!("posture:cap-sys-admin:{}", k.cap_sys_admin),
            format!("posture:no-new-privs:{}", k.no_new_privs),
            format!("posture:seccomp:{}", k.seccomp.as_str()),
            format!("posture:memory-limit:{}", k.memory_limit),
            format!("posture:pids-limit:{}", k.pids_limit),
            format!("posture:privileged:{}", self.runtime.privileged),
            format!("posture:readonly-rootfs:{}", self.runtime.readonly_rootfs),
        ];
        for (ns, host) in &k.host_ns {
            s.push(format!("posture:host-ns-{ns}:{host}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_of_a_default_podman_container() {
        let status = "Name:\tbusybox\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n\
                      CapInh:\t0000000000000000\nCapPrm:\t00000000800405fb\n\
                      CapEff:\t00000000800405fb\nNoNewPrivs:\t0\nSeccomp:\t2\nSeccomp_filters:\t1\n";
        let f = parse_status(status).unwrap();
        assert_eq!(f.uids, vec![0, 0, 0, 0]);
        assert_eq!(f.cap_eff & (1 << CAP_SYS_ADMIN), 0);
        assert!(!f.no_new_privs);
        assert_eq!(f.seccomp, SeccompMode::Filter);
        let privileged = status.replace("00000000800405fb", "000001ffffffffff");
        let f = parse_status(&privileged).unwrap();
        assert_ne!(f.cap_eff & (1 << CAP_SYS_ADMIN), 0);
        assert_eq!(parse_status("Uid:\t0\t0\t0\t0\n"), None);
        assert_eq!(
            parse_status(&status.replace("Seccomp:\t2", "Seccomp:\t7")),
            None
        );
    }

    #[test]
    fn limits_from_a_fake_hybrid_hierarchy() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let path = "/libpod_parent/libpod-abc";
        for (dir, file, value) in [
            ("memory", "memory.limit_in_bytes", "67108864\n"),
            ("pids", "pids.max", "max\n"),
            ("unified", "cgroup.procs", ""),
        ] {
            let d = root.join(dir).join(&path[1..]);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(file), value).unwrap();
        }
        let mount = |name: &str, v1: Option<&str>| CgroupMount {
            root: "/".into(),
            mount_point: root.join(name).display().to_string(),
            v1_controllers: v1.map(|c| vec![c.to_owned()]),
        };
        let fs = CgroupFs::from_mounts(vec![
            mount("memory", Some("memory")),
            mount("pids", Some("pids")),
            mount("unified", None),
        ]);
        let lines = parse_cgroup_file(&format!("8:pids:{path}\n4:memory:{path}\n0::{path}\n"));
        assert!(fs.memory_limited(&lines));
        assert!(!fs.pids_limited(&lines));
        std::fs::write(
            root.join("memory")
                .join(&path[1..])
                .join("memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        std::fs::write(root.join("pids").join(&path[1..]).join("pids.max"), "100\n").unwrap();
        assert!(!fs.memory_limited(&lines));
        assert!(fs.pids_limited(&lines));
        // A v2-only host.
        std::fs::write(
            root.join("unified").join(&path[1..]).join("memory.max"),
            "1048576\n",
        )
        .unwrap();
        assert!(fs.memory_limited(&parse_cgroup_file(&format!("0::{path}\n"))));
        // A path escaping the mount is not followed.
        assert!(!fs.memory_limited(&parse_cgroup_file("0::/../../etc\n")));
    }
}
