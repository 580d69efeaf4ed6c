//! Plain sockets as tests use them: a closed connection is awaited by reading
//! it, and a loopback admin endpoint is asked over plain HTTP/1.1.

use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Reads from `s` until the peer closes it (EOF or an error such as a reset);
/// returns what arrived, or `None` if it was still open after `within`.
pub async fn read_until_closed(
    s: &mut (impl AsyncRead + Unpin),
    within: Duration,
) -> Option<Vec<u8>> {
    let mut got = vec![];
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(got)
}

/// Awaits the peer closing `s`, failing the test (naming `what`) after
/// `within`; returns how long it took.
pub async fn await_closed(
    s: &mut (impl AsyncRead + Unpin),
    within: Duration,
    what: &str,
) -> Duration {
    let t = Instant::now();
    if read_until_closed(s, within).await.is_none() {
        panic!("{what}: still open after {within:?}");
    }
    t.elapsed()
}

/// `GET path` over plain HTTP/1.1 to `addr` (`connection: close`): the whole
/// response, status line and headers included.
pub async fn http_get(addr: &str, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
