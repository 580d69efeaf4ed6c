//! Who is on the other end of a unix socket, and a guard against PID reuse.
//!
//! The caller's PID, UID and GID come from the kernel (`SO_PEERCRED`), never
//! from anything the caller sends. A PID is only a number, though: the caller
//! may exit during attestation and the number may be given to another
//! process. [`ProcessHandle`] closes that gap:
//!
//! 1. it opens the directory `/proc/<pid>` once and keeps the descriptor. A
//!    procfs directory descriptor stays bound to the process it was opened
//!    for: every file read relative to it (`openat`, `readlinkat`) belongs to
//!    that process, and once the process is gone such reads fail (`ESRCH`)
//!    even if the PID has been reused. All of the agent's reads about the
//!    caller (`stat`, `status`, `cgroup`, `mountinfo`, `ns/*`) go through it;
//! 2. it records the process start time (field 22 of `stat`, in clock ticks
//!    since boot), which differs between two processes that had the same PID;
//! 3. [`ProcessHandle::verify_still_same`], called after attestation, re-reads
//!    the start time through the held descriptor *and* through the path
//!    `/proc/<pid>/stat`, and fails if either read fails, if either start time
//!    differs, or if the process is a zombie. A reused PID therefore cannot
//!    inherit an attestation, and a caller that exited gets nothing.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::PathBuf;

use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

/// Largest procfs file the agent reads (mountinfo of a busy host is the
/// biggest); beyond this the read fails instead of growing without bound.
const MAX_PROC_FILE: u64 = 4 * 1024 * 1024;

/// The credentials of a unix-socket peer, as the kernel recorded them when it
/// connected, translated into the agent's PID and user namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCred {
    /// Process ID (never 0: a peer whose PID is not visible from the agent's
    /// PID namespace is refused).
    pub pid: u32,
    /// User ID.
    pub uid: u32,
    /// Group ID.
    pub gid: u32,
}

/// Why the caller's process could not be identified or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// `SO_PEERCRED` failed on the socket.
    #[error("reading the peer's credentials (SO_PEERCRED): {0}")]
    PeerCred(#[source] std::io::Error),
    /// The kernel gave no PID for the peer (it lives in a PID namespace the
    /// agent cannot see into).
    #[error("the peer's PID is not visible from the agent's PID namespace")]
    NoPid,
    /// `/proc/<pid>` could not be opened: no such process, or no access.
    #[error("process {pid} cannot be opened: {source}")]
    Open {
        /// The PID.
        pid: u32,
        /// The error from the kernel.
        #[source]
        source: std::io::Error,
    },
    /// A file under `/proc/<pid>` could not be read (the process may have exited).
    #[error("reading /proc/{pid}/{file}: {source}")]
    Read {
        /// The PID.
        pid: u32,
        /// The file under `/proc/<pid>`.
        file: String,
        /// The error from the kernel.
        #[source]
        source: std::io::Error,
    },
    /// The agent's reference view of the host (its namespaces or mount
    /// table) could not be read.
    #[error("reading the host view at {path}: {source}")]
    HostView {
        /// The path read.
        path: String,
        /// The error from the kernel.
        #[source]
        source: std::io::Error,
    },
    /// A procfs file did not have the expected shape.
    #[error("/proc/{pid}/{file} is malformed: {reason}")]
    Malformed {
        /// The PID.
        pid: u32,
        /// The file under `/proc/<pid>`.
        file: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// The process exited or its PID now belongs to another process.
    #[error("process {pid} changed during attestation ({reason})")]
    Changed {
        /// The PID.
        pid: u32,
        /// What changed.
        reason: String,
    },
}

/// Now, in the unit of process start times (clock ticks since boot, the
/// boot-time clock, as `/proc/<pid>/stat` field 22). A process whose start
/// time is later than this value taken when a request arrived cannot be the
/// process that sent it: its PID was reused.
pub fn now_ticks() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let hz = rustix::param::clock_ticks_per_second();
    (ts.tv_sec.max(0) as u64) * hz + (ts.tv_nsec.max(0) as u64) * hz / 1_000_000_000
}

impl PeerCred {
    /// The peer of an accepted unix-socket connection.
    pub fn of(stream: &tokio::net::UnixStream) -> Result<Self, ProcessError> {
        let cred = stream.peer_cred().map_err(ProcessError::PeerCred)?;
        let pid = cred
            .pid()
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or(ProcessError::NoPid)?;
        Ok(PeerCred {
            pid,
            uid: cred.uid(),
            gid: cred.gid(),
        })
    }

    /// The effective UID and GID of a running process, from its `status`:
    /// for attesting a PID learnt some other way than a socket (tools, tests).
    pub fn of_process(pid: u32) -> Result<Self, ProcessError> {
        let handle = ProcessHandle::open(pid)?;
        let status = handle.read("status")?;
        let field = |name: &'static str| -> Result<u32, ProcessError> {
            status_ids(&status, name)
                .and_then(|ids| ids.get(1).copied())
                .ok_or(ProcessError::Malformed {
                    pid,
                    file: "status",
                    reason: "no effective ID",
                })
        };
        Ok(PeerCred {
            pid,
            uid: field("Uid:")?,
            gid: field("Gid:")?,
        })
    }
}

/// The IDs on a `status` line such as `Uid:\t0\t0\t0\t0` (real, effective,
/// saved, filesystem).
pub(crate) fn status_ids(status: &str, name: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix(name))?;
    line.split_whitespace().map(|v| v.parse().ok()).collect()
}

/// An open handle on one process's `/proc/<pid>` directory plus its start
/// time: the PID-reuse guard (see the module documentation).
#[derive(Debug)]
pub struct ProcessHandle {
    pid: u32,
    dir: File,
    start_time: u64,
}

/// What `stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFields {
    /// Field 3: R, S, D, Z, T, ...
    pub state: char,
    /// Field 22: start time after boot, in clock ticks.
    pub start_time: u64,
}

/// Parses the contents of `/proc/<pid>/stat`. The command name (field 2) is
/// in parentheses and may itself contain spaces and parentheses, so fields
/// are counted after the *last* `)`.
pub fn parse_stat(stat: &str) -> Option<StatFields> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // `fields` now starts at field 4; field 22 is 18 further on.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(StatFields { state, start_time })
}

impl ProcessHandle {
    /// Opens `/proc/<pid>` and records the process's start time.
    pub fn open(pid: u32) -> Result<Self, ProcessError> {
        if pid == 0 {
            return Err(ProcessError::NoPid);
        }
        let dir = File::open(format!("/proc/{pid}"))
            .map_err(|source| ProcessError::Open { pid, source })?;
        let mut handle = ProcessHandle {
            pid,
            dir,
            start_time: 0,
        };
        let stat = handle.stat()?;
        if matches!(stat.state, 'Z' | 'X') {
            return Err(ProcessError::Changed {
                pid,
                reason: "the process has exited".into(),
            });
        }
        handle.start_time = stat.start_time;
        Ok(handle)
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The start time recorded when the handle was opened (clock ticks after boot).
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    /// Reads a file under this process's `/proc/<pid>` (relative name, such as
    /// `status` or `cgroup`) through the held descriptor.
    pub fn read(&self, name: &str) -> Result<String, ProcessError> {
        let err = |source| ProcessError::Read {
            pid: self.pid,
            file: name.to_owned(),
            source,
        };
        let fd = rustix::fs::openat(
            self.dir.as_fd(),
            name,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| err(e.into()))?;
        let mut text = String::new();
        File::from(fd)
            .take(MAX_PROC_FILE + 1)
            .read_to_string(&mut text)
            .map_err(err)?;
        if text.len() as u64 > MAX_PROC_FILE {
            return Err(err(std::io::Error::other("file too large")));
        }
        Ok(text)
    }

    /// Reads a symbolic link under this process's `/proc/<pid>` (such as
    /// `ns/net`) through the held descriptor.
    pub fn read_link(&self, name: &str) -> Result<String, ProcessError> {
        let target = rustix::fs::readlinkat(self.dir.as_fd(), name, Vec::new()).map_err(|e| {
            ProcessError::Read {
                pid: self.pid,
                file: name.to_owned(),
                source: e.into(),
            }
        })?;
        Ok(target.to_string_lossy().into_owned())
    }

    fn stat(&self) -> Result<StatFields, ProcessError> {
        parse_stat(&self.read("stat")?).ok_or(ProcessError::Malformed {
            pid: self.pid,
            file: "stat",
            reason: "no state or start time after the command name",
        })
    }

    /// Fails unless the process this handle was opened for is still alive and
    /// still holds the PID (see the module documentation). Call it after
    /// attestation, before handing anything to the caller.
    pub fn verify_still_same(&self) -> Result<(), ProcessError> {
        let changed = |reason: String| ProcessError::Changed {
            pid: self.pid,
            reason,
        };
        let held = self
            .stat()
            .map_err(|e| changed(format!("its /proc entry is gone: {e}")))?;
        if matches!(held.state, 'Z' | 'X') {
            return Err(changed("the process has exited".into()));
        }
        if held.start_time != self.start_time {
            return Err(changed("start time differs".into()));
        }
        let by_path = std::fs::read_to_string(PathBuf::from(format!("/proc/{}/stat", self.pid)))
            .map_err(|e| changed(format!("/proc/{}/stat: {e}", self.pid)))?;
        match parse_stat(&by_path) {
            Some(now) if now.start_time == self.start_time => Ok(()),
            _ => Err(changed("the PID now names another process".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_hostile_command_names() {
        let tail = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        for comm in [
            "sh",
            "a b",
            "x) R 1 2 3",
            "((",
            ") 9 9 9 9 9 9 9 9 9 9 9 9 9 9 9 9 9 9 9 9 9",
        ] {
            let stat = format!("42 ({comm}) {tail}");
            assert_eq!(
                parse_stat(&stat),
                Some(StatFields {
                    state: 'S',
                    start_time: 987654
                }),
                "{comm:?}"
            );
        }
        assert_eq!(parse_stat("42 (sh) S 1 2"), None);
        assert_eq!(parse_stat("no parens"), None);
    }

    #[test]
    fn start_times_are_in_the_past_of_now_ticks() {
        let me = ProcessHandle::open(std::process::id()).unwrap();
        assert!(me.start_time() <= now_ticks());
        // A child started now starts after a moment taken before it.
        let before = now_ticks();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let h = ProcessHandle::open(child.id()).unwrap();
        let started = h.start_time();
        let _ = child.kill();
        let _ = child.wait();
        assert!(started > before, "{started} > {before}");
    }

    #[test]
    fn own_process() {
        let pid = std::process::id();
        let h = ProcessHandle::open(pid).unwrap();
        assert!(h.start_time() > 0);
        assert!(h.read("status").unwrap().contains("Uid:"));
        assert!(h.read_link("ns/net").unwrap().starts_with("net:["));
        h.verify_still_same().unwrap();
        let me = PeerCred::of_process(pid).unwrap();
        assert_eq!(me.pid, pid);
    }

    #[test]
    fn exited_process_fails_verification() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let h = ProcessHandle::open(child.id()).unwrap();
        h.verify_still_same().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let err = h.verify_still_same().unwrap_err();
        assert!(matches!(err, ProcessError::Changed { .. }), "{err}");
        // Reads through the held descriptor fail too: they can never reach a
        // process that reused the PID.
        assert!(h.read("status").is_err());
        assert!(ProcessHandle::open(0).is_err());
    }

    #[tokio::test]
    async fn peer_of_a_socket_pair_is_this_process() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let peer = PeerCred::of(&a).unwrap();
        let me = PeerCred::of_process(std::process::id()).unwrap();
        assert_eq!(peer, me);
    }

    #[test]
    fn status_id_lines() {
        let s = "Name:\tsh\nUid:\t1000\t1001\t1002\t1003\nGid:\t5\t6\t7\t8\n";
        assert_eq!(status_ids(s, "Uid:"), Some(vec![1000, 1001, 1002, 1003]));
        assert_eq!(status_ids(s, "Gid:"), Some(vec![5, 6, 7, 8]));
        assert_eq!(status_ids(s, "Groups:"), None);
    }
}
