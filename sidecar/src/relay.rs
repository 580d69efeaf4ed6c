//! Bidirectional copy that holds a buffer only while data is in flight.
//!
//! `tokio::io::copy_bidirectional_with_sizes` owns two 64 KiB buffers per
//! connection for the connection's whole life; once a connection has carried
//! 64 KiB each way those pages stay resident, about 128 KiB per idle
//! connection (measured in docs/benchmarks.md). Here each direction borrows a
//! 64 KiB buffer from a per-thread pool for one read, keeps it only while the
//! bytes read have not all been written, and gives it back as soon as the
//! direction is drained or the read would block. Idle connections hold no copy
//! buffer at all; bulk transfers still move 64 KiB per read.
//!
//! Semantics match tokio's copy: half-close is preserved (EOF on one side shuts
//! down writing on the other, the other direction continues), the writer is
//! flushed before waiting for more input, and the first error ends the relay.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Size of one copy buffer.
const BUF: usize = 64 * 1024;
/// Buffers a worker thread keeps for reuse (1 MiB); more are freed.
const POOL_MAX: usize = 16;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take() -> Box<[u8]> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUF].into_boxed_slice())
}

fn give(b: Box<[u8]>) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(b);
        }
    });
}

/// One direction's state.
#[derive(Default)]
struct Dir {
    /// Bytes read and not yet written: `buf[pos..len]`.
    buf: Option<Box<[u8]>>,
    pos: usize,
    len: usize,
    /// The reader reached EOF.
    eof: bool,
    /// Shutdown of the writer done: this direction is finished.
    done: bool,
    /// Bytes were written since the last flush.
    need_flush: bool,
}

impl Dir {
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut r: Pin<&mut R>,
        mut w: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            // Write out what is held.
            if let Some(buf) = &self.buf {
                while self.pos < self.len {
                    let n = ready!(w.as_mut().poll_write(cx, &buf[self.pos..self.len]))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    self.pos += n;
                    self.need_flush = true;
                }
                // Drained: the buffer goes back to the pool.
                if let Some(b) = self.buf.take() {
                    give(b);
                }
                self.pos = 0;
                self.len = 0;
            }
            if self.eof {
                if self.need_flush {
                    ready!(w.as_mut().poll_flush(cx))?;
                    self.need_flush = false;
                }
                ready!(w.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            // Read into a borrowed buffer; keep it only if bytes arrived.
            let mut buf = take();
            let mut rb = ReadBuf::new(&mut buf);
            match r.as_mut().poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        give(buf);
                        self.eof = true;
                    } else {
                        self.buf = Some(buf);
                        self.pos = 0;
                        self.len = n;
                    }
                }
                Poll::Ready(Err(e)) => {
                    give(buf);
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    give(buf);
                    // Nothing to read for now: push out what was written.
                    if self.need_flush {
                        ready!(w.as_mut().poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            give(b);
        }
    }
}

/// Copies `a → b` and `b → a` until both directions reach EOF (each shutting
/// down its writer), or the first error.
pub async fn copy_bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut ab, mut ba) = (Dir::default(), Dir::default());
    poll_fn(|cx| {
        let x = ab.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let y = ba.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        if x.is_ready() && y.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_keeps_half_close_and_returns_buffers() {
        let (mut client, mut a) = tokio::io::duplex(1024);
        let (mut b, mut server) = tokio::io::duplex(1024);
        let relay = tokio::spawn(async move { copy_bidirectional(&mut a, &mut b).await });
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let send = big.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&send).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, big, "a → b intact, then EOF (half-close)");
        server
            .write_all(b"reply after the client's EOF")
            .await
            .unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"reply after the client's EOF");
        relay.await.unwrap().unwrap();
        // The buffers came back to this thread's pool once drained.
        let pooled = POOL.with(|p| p.borrow().len());
        assert!((1..=POOL_MAX).contains(&pooled), "{pooled}");
    }
}
