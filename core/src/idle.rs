//! Idle deadlines for connections: an [`Activity`] records the last byte read
//! and the requests in flight; [`IdleIo`] wraps a stream to record its reads.
//! Used by the CA server (a client that handshakes and then holds a slot) and
//! the sidecar (relayed connections quiet in both directions).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Last read time and requests in flight of one connection, for the idle deadline.
#[derive(Clone)]
pub struct Activity(Arc<ActivityInner>);

struct ActivityInner {
    start: std::time::Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

/// Marks a request in flight until dropped (also when the request is cancelled).
pub struct Busy(Activity);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    /// A connection that starts now, idle and with nothing in flight.
    pub fn new() -> Self {
        Activity(Arc::new(ActivityInner {
            start: std::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }))
    }

    /// Records activity now.
    pub fn touch(&self) {
        let ms = self.0.start.elapsed().as_millis() as u64;
        self.0.last_ms.store(ms, Ordering::Release);
    }

    /// Marks one request in flight until the returned guard drops.
    pub fn request(&self) -> Busy {
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Busy(self.clone())
    }

    /// Resolves once nothing is in flight and nothing was read for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        let idle_ms = idle.as_millis() as u64;
        loop {
            let now = self.0.start.elapsed().as_millis() as u64;
            let quiet = now.saturating_sub(self.0.last_ms.load(Ordering::Acquire));
            if self.0.in_flight.load(Ordering::Acquire) == 0 && quiet >= idle_ms {
                return;
            }
            tokio::time::sleep(Duration::from_millis(
                idle_ms.saturating_sub(quiet).max(idle_ms / 4).max(10),
            ))
            .await;
        }
    }
}

/// The connection's I/O, recording every successful read as activity and
/// counting the bytes read (so a relay can report them however it ends).
pub struct IdleIo<T> {
    inner: T,
    activity: Activity,
    read: u64,
}

impl<T> IdleIo<T> {
    /// Wraps `inner`, recording reads in `activity`.
    pub fn new(inner: T, activity: Activity) -> Self {
        Self {
            inner,
            activity,
            read: 0,
        }
    }

    /// Bytes read through this wrapper so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.read += (buf.filled().len() - before) as u64;
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}
