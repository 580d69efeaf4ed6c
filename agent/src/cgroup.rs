//! PID → container: which container a process runs in, from what the kernel
//! says about it.
//!
//! The cgroup path (`/proc/<pid>/cgroup`) is the primary source: the kernel
//! puts a container's processes in a cgroup the runtime named after the
//! container, and an unprivileged process cannot leave it. The mount table
//! (`/proc/<pid>/mountinfo`) is a fallback for runtimes or setups whose cgroup
//! paths carry no container ID: Docker and Podman bind-mount `hostname`,
//! `hosts` and `resolv.conf` from a directory named after the container.
//!
//! Both parsers only look at text; reading the files (through the PID-reuse
//! guard) is the caller's job, so every real-world line can be tested here.

use serde::{Deserialize, Serialize};

/// The container a process belongs to, as its cgroup path or mounts name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRef {
    /// The full container ID (64 lowercase hex digits).
    pub container_id: String,
    /// The pod the path names, when it names one: the Kubernetes pod UID
    /// (dashed form, also when systemd wrote it with underscores) or the
    /// Podman pod ID (64 hex digits).
    pub pod_uid: Option<String>,
}

/// Why a process could not be mapped to one container.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CgroupError {
    /// Two hierarchies (or two mounts) name different containers; the agent
    /// refuses to guess.
    #[error("the process's {source_file} names two containers: {first} and {second}")]
    Conflict {
        /// `cgroup` or `mountinfo`.
        source_file: &'static str,
        /// The first container ID found.
        first: String,
        /// A different container ID found in the same file.
        second: String,
    },
}

/// One line of `/proc/<pid>/cgroup`: `hierarchy-ID:controller-list:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    /// Hierarchy ID; 0 is the cgroup v2 (unified) hierarchy.
    pub hierarchy: u32,
    /// The v1 controllers bound to the hierarchy (`memory`, `pids`,
    /// `name=systemd`, ...); empty for cgroup v2.
    pub controllers: Vec<String>,
    /// The cgroup path, relative to the reader's cgroup namespace root.
    pub path: String,
}

impl CgroupLine {
    /// Whether this is the cgroup v2 line (`0::/path`).
    pub fn is_v2(&self) -> bool {
        self.hierarchy == 0 && self.controllers.is_empty()
    }
}

/// Parses `/proc/<pid>/cgroup`; malformed lines are skipped.
pub fn parse_cgroup_file(contents: &str) -> Vec<CgroupLine> {
    contents
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy = parts.next()?.parse().ok()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            if !path.starts_with('/') {
                return None;
            }
            Some(CgroupLine {
                hierarchy,
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                path: path.to_owned(),
            })
        })
        .collect()
}

/// The container named by the contents of `/proc/<pid>/cgroup`.
///
/// `Ok(None)` means a process outside any container (`0::/init.scope`, a
/// login session, a runtime helper such as `conmon`). Every line is read
/// (cgroup v1 hierarchies and the v2 one); lines naming different containers
/// are a [`CgroupError::Conflict`].
pub fn container_from_cgroup(contents: &str) -> Result<Option<ContainerRef>, CgroupError> {
    let mut found: Option<ContainerRef> = None;
    for line in parse_cgroup_file(contents) {
        if let Some(c) = container_from_cgroup_path(&line.path) {
            merge(&mut found, c, "cgroup")?;
        }
    }
    Ok(found)
}

/// The container named by one cgroup path, such as
/// `/libpod_parent/<pod-id>/libpod-<id>` or
/// `/kubepods.slice/.../cri-containerd-<id>.scope`.
///
/// Segments are read from the deepest up and the first one that names a
/// container wins, so a process in a sub-cgroup of its container (systemd in a
/// container, `libpod-<id>.scope/container`) still maps to it, and of two
/// 64-hex IDs on one path (pod, then container) the container is taken. A
/// runtime helper segment (`libpod-conmon-<id>`, `crio-conmon-<id>`) stops the
/// search: that process is the runtime's, on the host, not the container's.
pub fn container_from_cgroup_path(path: &str) -> Option<ContainerRef> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for i in (0..segments.len()).rev() {
        let parent = i.checked_sub(1).map(|p| segments[p]);
        match classify(segments[i], parent) {
            Segment::Container(id) => {
                return Some(ContainerRef {
                    container_id: id.to_owned(),
                    pod_uid: pod_of(&segments[..i]),
                });
            }
            Segment::Helper | Segment::PodmanPod => return None,
            Segment::Other => {}
        }
    }
    None
}

enum Segment<'a> {
    Container(&'a str),
    PodmanPod,
    Helper,
    Other,
}

/// Runtime prefixes in front of a container ID in a cgroup directory name.
const CONTAINER_PREFIXES: [&str; 4] = ["docker-", "libpod-", "cri-containerd-", "crio-"];
/// Prefixes of the runtime's own monitor processes, which live outside the container.
const HELPER_PREFIXES: [&str; 2] = ["libpod-conmon-", "crio-conmon-"];

fn classify<'a>(segment: &'a str, parent: Option<&str>) -> Segment<'a> {
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    if HELPER_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Segment::Helper;
    }
    for prefix in CONTAINER_PREFIXES {
        if let Some(id) = name.strip_prefix(prefix)
            && is_container_id(id)
        {
            return Segment::Container(id);
        }
    }
    if is_container_id(name) {
        // cgroupfs Podman puts a pod's containers under
        // /libpod_parent/<pod-id>/; the pod's own directory is not a container.
        if parent == Some("libpod_parent") {
            return Segment::PodmanPod;
        }
        return Segment::Container(name);
    }
    Segment::Other
}

/// The pod named by the segments above the container's.
fn pod_of(ancestors: &[&str]) -> Option<String> {
    // Podman, cgroupfs: /libpod_parent/<pod-id>/libpod-<id>.
    for pair in ancestors.windows(2) {
        if pair[0] == "libpod_parent" && is_container_id(pair[1]) {
            return Some(pair[1].to_owned());
        }
    }
    // Podman, systemd: /machine.slice/machine-libpod_pod_<pod-id>.slice/libpod-<id>.scope.
    for seg in ancestors {
        let name = seg.strip_suffix(".slice").unwrap_or(seg);
        if let Some((_, id)) = name.split_once("libpod_pod_")
            && is_container_id(id)
        {
            return Some(id.to_owned());
        }
    }
    // Kubernetes: /kubepods/<qos>/pod<uid>/<id> (cgroupfs) or
    // /kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_with_underscores>.slice/...
    if !ancestors.first().is_some_and(|s| s.starts_with("kubepods")) {
        return None;
    }
    for seg in ancestors.iter().rev() {
        let name = seg.strip_suffix(".slice").unwrap_or(seg);
        let uid = match name.strip_prefix("pod") {
            Some(uid) => uid,
            None => match name.rsplit_once("-pod") {
                Some((_, uid)) => uid,
                None => continue,
            },
        };
        let uid = uid.replace('_', "-");
        if is_uuid(&uid) {
            return Some(uid);
        }
    }
    None
}

/// The container named by the contents of `/proc/<pid>/mountinfo`: the
/// source of a bind mount under `.../containers/<id>/...` (Docker:
/// `/var/lib/docker/containers/<id>/hostname`) or
/// `.../overlay-containers/<id>/userdata/...` (Podman, any `*-containers`
/// storage driver directory).
///
/// Only the mount's root within its filesystem (field 4) is read, never the
/// mount point: the host's own table lists every container's `shm` under
/// such a directory as a mount point. Different IDs are a
/// [`CgroupError::Conflict`]. Kubernetes pods are not recognised here (their
/// bind mounts name the pod sandbox, not the container).
pub fn container_from_mountinfo(contents: &str) -> Result<Option<ContainerRef>, CgroupError> {
    let mut found = None;
    for line in contents.lines() {
        let Some(root) = line.split(' ').nth(3) else {
            continue;
        };
        let root = unescape_mountinfo(root);
        let segments: Vec<&str> = root.split('/').filter(|s| !s.is_empty()).collect();
        // <...>containers / <id> / <at least one more segment>
        for w in segments.windows(3) {
            if w[0].ends_with("containers") && is_container_id(w[1]) {
                merge(
                    &mut found,
                    ContainerRef {
                        container_id: w[1].to_owned(),
                        pod_uid: None,
                    },
                    "mountinfo",
                )?;
            }
        }
    }
    Ok(found)
}

fn merge(
    found: &mut Option<ContainerRef>,
    next: ContainerRef,
    source_file: &'static str,
) -> Result<(), CgroupError> {
    match found {
        None => *found = Some(next),
        Some(first) if first.container_id != next.container_id => {
            return Err(CgroupError::Conflict {
                source_file,
                first: first.container_id.clone(),
                second: next.container_id,
            });
        }
        Some(first) => {
            if first.pod_uid.is_none() {
                first.pod_uid = next.pod_uid;
            }
        }
    }
    Ok(())
}

/// A cgroup filesystem the agent sees, from its own `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// The cgroup path at the root of this mount (`/` on the host).
    pub root: String,
    /// Where it is mounted (`/sys/fs/cgroup/memory`, `/sys/fs/cgroup/unified`, ...).
    pub mount_point: String,
    /// `None` for cgroup v2; the v1 controllers otherwise.
    pub v1_controllers: Option<Vec<String>>,
}

/// The cgroup v1 and v2 mounts in a mount table (`/proc/self/mountinfo`).
pub fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next()?;
            let options = right.next().unwrap_or("");
            let root = unescape_mountinfo(left.get(3)?);
            let mount_point = unescape_mountinfo(left.get(4)?);
            let v1_controllers = match fstype {
                "cgroup2" => None,
                "cgroup" => Some(
                    options
                        .split(',')
                        .filter(|o| *o != "rw" && *o != "ro")
                        .map(str::to_owned)
                        .collect(),
                ),
                _ => return None,
            };
            Some(CgroupMount {
                root,
                mount_point,
                v1_controllers,
            })
        })
        .collect()
}

/// Mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A full container ID: 64 lowercase hex digits.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "3f1c8e7a9b2d4c6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e";
    const P: &str = "0fefd229209e7146d3feba6b9d9a4cc8509676badda9142b08092cf87b368b5f";
    const UID: &str = "8b1f6e2c-4a3d-4e5f-9a7b-1c2d3e4f5a6b";

    fn c(id: &str, pod: Option<&str>) -> Option<ContainerRef> {
        Some(ContainerRef {
            container_id: id.to_owned(),
            pod_uid: pod.map(str::to_owned),
        })
    }

    #[test]
    fn cgroup_lines_from_real_runtimes() {
        let uid_ = UID.replace('-', "_");
        let cases: Vec<(&str, String, Option<ContainerRef>)> = vec![
            (
                "docker, systemd driver, cgroup v2",
                format!("0::/system.slice/docker-{C}.scope"),
                c(C, None),
            ),
            (
                "docker, cgroupfs, cgroup v1",
                format!("12:memory:/docker/{C}\n11:pids:/docker/{C}\n1:name=systemd:/docker/{C}"),
                c(C, None),
            ),
            (
                "docker, cgroupfs, v2",
                format!("0::/docker/{C}"),
                c(C, None),
            ),
            (
                "podman on this host (cgroupfs, hybrid)",
                format!(
                    "9:name=systemd:/libpod_parent/libpod-{C}\n4:memory:/libpod_parent/libpod-{C}\n0::/libpod_parent/libpod-{C}"
                ),
                c(C, None),
            ),
            (
                "podman pod, cgroupfs: two 64-hex IDs, the container is the last",
                format!("0::/libpod_parent/{P}/libpod-{C}"),
                c(C, Some(P)),
            ),
            (
                "podman, systemd driver",
                format!("0::/machine.slice/libpod-{C}.scope"),
                c(C, None),
            ),
            (
                "podman, systemd, nested container cgroup",
                format!("0::/machine.slice/libpod-{C}.scope/container"),
                c(C, None),
            ),
            (
                "podman pod, systemd driver",
                format!("0::/machine.slice/machine-libpod_pod_{P}.slice/libpod-{C}.scope"),
                c(C, Some(P)),
            ),
            (
                "rootless podman",
                format!(
                    "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{C}.scope"
                ),
                c(C, None),
            ),
            (
                "podman conmon is not the container",
                format!("0::/machine.slice/libpod-conmon-{C}.scope"),
                None,
            ),
            (
                "podman pod conmon is not the container nor the pod",
                format!("0::/libpod_parent/{P}/libpod-conmon-{C}"),
                None,
            ),
            (
                "the podman pod's own cgroup is not a container",
                format!("0::/libpod_parent/{P}"),
                None,
            ),
            (
                "kubernetes containerd, systemd driver",
                format!(
                    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{C}.scope"
                ),
                c(C, Some(UID)),
            ),
            (
                "kubernetes guaranteed pod, systemd driver",
                format!("0::/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{C}.scope"),
                c(C, Some(UID)),
            ),
            (
                "kubernetes containerd, cgroupfs",
                format!("0::/kubepods/besteffort/pod{UID}/{C}"),
                c(C, Some(UID)),
            ),
            (
                "kubernetes v1 cgroupfs (docker shim)",
                format!(
                    "11:pids:/kubepods/burstable/pod{UID}/{C}\n4:memory:/kubepods/burstable/pod{UID}/{C}"
                ),
                c(C, Some(UID)),
            ),
            (
                "kubernetes cri-o",
                format!(
                    "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-{C}.scope"
                ),
                c(C, Some(UID)),
            ),
            (
                "cri-o conmon is not the container",
                format!(
                    "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-conmon-{C}.scope"
                ),
                None,
            ),
            (
                "docker in docker: the innermost container",
                format!("0::/docker/{P}/docker/{C}"),
                c(C, None),
            ),
            ("host: systemd", "0::/init.scope".into(), None),
            (
                "host: login session",
                "0::/user.slice/user-1000.slice/session-3.scope".into(),
                None,
            ),
            ("host: root", "0::/".into(), None),
            (
                "host: a service",
                "0::/system.slice/docker.service".into(),
                None,
            ),
            (
                "host: this machine (32-hex job ID in the memory hierarchy)",
                "9:name=systemd:/\n4:memory:/process_api/cc6590273ab998a564d160b254afee01\n0::/"
                    .into(),
                None,
            ),
            (
                "kubepods slice without a container",
                "0::/kubepods.slice/kubepods-burstable.slice".into(),
                None,
            ),
            ("short ID", "0::/docker/3f1c8e7a9b2d".into(), None),
            (
                "uppercase hex is not an ID",
                format!("0::/docker/{}", C.to_uppercase()),
                None,
            ),
            ("garbage", "not a cgroup file\n:::\n".into(), None),
        ];
        for (name, contents, want) in cases {
            assert_eq!(container_from_cgroup(&contents), Ok(want), "{name}");
        }
    }

    #[test]
    fn hierarchies_naming_different_containers_conflict() {
        let got = container_from_cgroup(&format!("4:memory:/docker/{C}\n0::/docker/{P}"));
        assert!(matches!(got, Err(CgroupError::Conflict { .. })), "{got:?}");
    }

    #[test]
    fn mountinfo_fallback() {
        let podman = format!(
            "77 50 0:40 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/containers/storage/overlay/l/AOCC\n\
             85 77 254:0 /run/containers/storage/overlay-containers/{C}/userdata/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw\n\
             86 77 254:0 /var/lib/containers/storage/overlay-containers/{C}/userdata/resolv.conf /etc/resolv.conf rw - ext4 /dev/vda rw"
        );
        assert_eq!(container_from_mountinfo(&podman), Ok(c(C, None)));
        let docker = format!(
            "600 599 8:1 /var/lib/docker/containers/{C}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/sda1 rw\n\
             601 599 8:2 /containers/{C}/hostname /etc/hostname rw,relatime - ext4 /dev/sda2 rw"
        );
        assert_eq!(container_from_mountinfo(&docker), Ok(c(C, None)));
        // The host's own table lists containers' shm as mount points: not a match.
        let host = format!(
            "45 27 0:39 / /var/lib/containers/storage/overlay-containers/{C}/userdata/shm rw - tmpfs shm rw\n\
             27 1 254:0 / / rw - ext4 /dev/vda rw"
        );
        assert_eq!(container_from_mountinfo(&host), Ok(None));
        let two = format!(
            "1 0 8:1 /var/lib/docker/containers/{C}/hosts /etc/hosts rw - ext4 /dev/sda1 rw\n\
             2 0 8:1 /var/lib/docker/containers/{P}/hostname /etc/hostname rw - ext4 /dev/sda1 rw"
        );
        assert!(matches!(
            container_from_mountinfo(&two),
            Err(CgroupError::Conflict { .. })
        ));
    }

    #[test]
    fn cgroup_mounts_of_a_hybrid_host() {
        let mi = "35 27 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                  40 27 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
                  41 27 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                  27 1 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
                  42 1 0:39 / /with\\040space rw - cgroup2 cgroup2 rw";
        let m = cgroup_mounts(mi);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].mount_point, "/sys/fs/cgroup/memory");
        assert_eq!(
            m[0].v1_controllers.as_deref(),
            Some(&["memory".to_owned()][..])
        );
        assert_eq!(m[2].v1_controllers, None);
        assert_eq!(m[3].mount_point, "/with space");
    }
}
