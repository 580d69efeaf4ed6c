//! One accepted Workload API connection, bound to the process that made it.
//!
//! `SO_PEERCRED` names the process that called `connect`, and an HTTP/2
//! connection lives for hours. A process can connect, fork, let the
//! connecting parent exit and keep the socket in the child until another
//! process is given the parent's PID: every request on that connection then
//! names the newcomer's PID. So the PID-reuse guard belongs to the
//! connection, not to each request:
//!
//! - at accept, [`PeerConn::accept`] takes the peer's credentials, the
//!   accept time (boot-time clock ticks), a pidfd for the peer's PID and the
//!   peer's start time; it holds them for the connection's life
//!   ([`ConnInfo`], what tonic hands each request);
//! - each request's attestation must find a process whose start time is the
//!   one recorded at accept and no later than the accept time (a PID reused
//!   since is refused), and the pidfd must still name a live process;
//! - when the connecting process exits, the pidfd becomes readable and the
//!   connection fails its next read: hyper closes it, and every stream on it
//!   ends at once (not at the next re-attestation).
//!
//! The kernel gives no pidfd for the connecting process itself on the
//! kernels this supports (`SO_PEERPIDFD` is newer), so a PID reused while
//! the connection still waits in the listen backlog (between `connect` and
//! `accept`; short, but longer on a loaded host) is not detected; everything
//! after the accept is. A pidfd polls readable once its process is reaped,
//! so a connection whose creator is a zombie closes when it is reaped; until
//! then its PID cannot be reused.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::Connected;

use crate::peer::{PeerCred, ProcessError, ProcessHandle, now_ticks};

/// What the agent learnt about a connection when it accepted it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The connecting process (`Err`: why it could not be identified).
    pub peer: Result<PeerCred, String>,
    /// When the connection was accepted (boot-time clock ticks).
    pub accepted: u64,
    /// The connecting process's start time, read at accept.
    pub start_time: Option<u64>,
    /// Whether the connecting process is still alive (its pidfd).
    alive: Option<std::sync::Arc<AsyncFd<OwnedFd>>>,
}

impl ConnInfo {
    /// `false` once the process that connected has exited (a connection
    /// whose peer could not be pinned counts as gone).
    pub fn peer_alive(&self) -> bool {
        self.alive.as_ref().is_some_and(|fd| !pidfd_exited(fd))
    }
}

/// Whether the pidfd's process has exited (a pidfd polls readable then).
fn pidfd_exited(fd: &AsyncFd<OwnedFd>) -> bool {
    let mut poll = [rustix::event::PollFd::new(
        fd.get_ref(),
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match rustix::event::poll(&mut poll, Some(&zero)) {
        Ok(n) => n > 0,
        Err(_) => true,
    }
}

/// An accepted unix-socket connection that fails once its peer exits.
#[derive(Debug)]
pub struct PeerConn {
    io: UnixStream,
    info: ConnInfo,
}

impl PeerConn {
    /// Pins `io`'s peer (see the module documentation). A peer that cannot
    /// be identified still gets a connection: its requests are refused with
    /// the reason.
    pub fn accept(io: UnixStream) -> Self {
        let accepted = now_ticks();
        let mut info = ConnInfo {
            peer: Err(String::new()),
            accepted,
            start_time: None,
            alive: None,
        };
        match Self::pin(&io) {
            Ok((peer, start_time, fd)) => {
                info.peer = Ok(peer);
                info.start_time = Some(start_time);
                info.alive = Some(std::sync::Arc::new(fd));
            }
            Err(e) => {
                tracing::warn!(error = %e, "Workload API connection from an unidentified peer");
                info.peer = Err(e.to_string());
            }
        }
        PeerConn { io, info }
    }

    fn pin(io: &UnixStream) -> Result<(PeerCred, u64, AsyncFd<OwnedFd>), ProcessError> {
        let peer = PeerCred::of(io)?;
        let gone = |reason: &str| ProcessError::Changed {
            pid: peer.pid,
            reason: reason.into(),
        };
        let pid = rustix::process::Pid::from_raw(peer.pid as i32).ok_or(ProcessError::NoPid)?;
        let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK).map_err(
            |e| ProcessError::Open {
                pid: peer.pid,
                source: e.into(),
            },
        )?;
        let handle = ProcessHandle::open(peer.pid)?;
        // Deprecated for types whose raw descriptor could change under the
        // reactor; an `OwnedFd` owns one descriptor for its whole life, and
        // the non-deprecated constructor is `unsafe` (forbidden here).
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(fd, tokio::io::Interest::READABLE).map_err(|e| {
            ProcessError::Open {
                pid: peer.pid,
                source: e,
            }
        })?;
        // Alive after the handle was opened: the pidfd and the handle name
        // the same process (its PID could not change hands in between).
        if pidfd_exited(&fd) {
            return Err(gone("the connecting process exited before accept"));
        }
        Ok((peer, handle.start_time(), fd))
    }

    /// Ready with an error once the peer process has exited.
    fn poll_gone(&self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(fd) = &self.info.alive else {
            return Poll::Pending;
        };
        match fd.poll_read_ready(cx) {
            Poll::Ready(_) => Poll::Ready(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the process that opened this connection exited",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Connected for PeerConn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(e) = this.poll_gone(cx) {
            tracing::info!(peer = ?this.info.peer, "closing a Workload API connection: its process exited");
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Poll::Ready(e) = this.poll_gone(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The agent's listener as tonic's incoming stream of [`PeerConn`]s.
pub fn incoming(
    listener: tokio::net::UnixListener,
) -> impl tokio_stream::Stream<Item = io::Result<PeerConn>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::UnixListenerStream::new(listener).map(|r| r.map(PeerConn::accept))
}
